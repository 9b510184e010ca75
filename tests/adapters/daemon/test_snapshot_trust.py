"""A snapshot is trusted only when it is signed with the daemon's key (HMAC over header
and payload) and taken on the journal it sits next to (the digest of the journal up to
its offset): a forged one, one with bytes prepended to a genuine payload, or one whose
journal differs is refused, and the restart replays in full to the same state. Without
a key no snapshot is written or loaded."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import msgspec
import pytest

from adapters.daemon.snapshots import (
    JournalDigest,
    journal_digest,
    load_snapshot,
    snapshot_mac_key,
)
from adapters.journal_folder import journal_files, snapshot_files
from engine.config import Config
from engine.journal import HEADER_PREFIX_BYTES, header_length
from engine.snapshot import (
    capture_state,
    decode_snapshot,
    encode_snapshot,
    payload_digest,
    restore_state,
    sign_snapshot,
)
from tests.adapters.test_journal_file import SNAP_KEY, _rebuilt, _session, _snap_engine
from tests.engine.test_snapshot import state_differences


def _rewrite(path: Path, payload: bytes, **changes: object) -> None:
    """Write ``payload`` into snapshot ``path`` with a header whose checksums describe it
    (what anyone can recompute)."""
    header, _ = decode_snapshot(path.read_bytes())
    header = msgspec.structs.replace(
        header, payload_bytes=len(payload), payload_sha256=payload_digest(payload), **changes
    )
    path.write_bytes(encode_snapshot(header, payload))


def _forged_payload(path: Path, tmp_path: Path) -> bytes:
    """The genuine state of ``path`` with a position the journal never filled."""
    _, payload = decode_snapshot(path.read_bytes())
    engine, extras = _snap_engine(tmp_path)
    restore_state(engine, payload, extras)  # type: ignore[arg-type]
    engine.portfolio.positions[0] += 4.0  # type: ignore[attr-defined]
    return capture_state(engine, extras)  # type: ignore[arg-type]


def test_snapshot_forged_with_valid_format_and_wrong_hmac_is_refused(tmp_path: Path) -> None:
    _session(tmp_path, 200, 60)
    full, _ = _rebuilt(tmp_path, snapshots=False)
    for path in snapshot_files(tmp_path / "journal"):
        forged = _forged_payload(path, tmp_path)
        header, _ = decode_snapshot(path.read_bytes())
        header = msgspec.structs.replace(
            header, payload_bytes=len(forged), payload_sha256=payload_digest(forged)
        )
        signed = sign_snapshot(header, forged, b"the attacker's own key, 32 bytes")
        path.write_bytes(encode_snapshot(signed, forged))
    fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == 0 and history.snapshots_invalid == 2  # type: ignore[attr-defined]
    assert state_differences(fast, full) == []  # type: ignore[arg-type]


def test_snapshot_forged_with_recomputed_checksums_and_the_old_mac_is_refused(
    tmp_path: Path,
) -> None:
    _session(tmp_path, 200, 60)
    full, _ = _rebuilt(tmp_path, snapshots=False)
    for path in snapshot_files(tmp_path / "journal"):
        _rewrite(path, _forged_payload(path, tmp_path))
    fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == 0 and history.snapshots_invalid == 2  # type: ignore[attr-defined]
    assert state_differences(fast, full) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", [b"\x00" * 19, b"\x80" * 19, b"\x91\xa1x" + b"\x00" * 16])
def test_snapshot_with_prepended_bytes_is_refused(
    tmp_path: Path, prefix: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused by the HMAC, before a byte of the payload is decoded."""
    _session(tmp_path, 200, 60)
    full, _ = _rebuilt(tmp_path, snapshots=False)
    for path in snapshot_files(tmp_path / "journal"):
        _, payload = decode_snapshot(path.read_bytes())
        _rewrite(path, prefix + payload)
    with caplog.at_level(logging.ERROR):
        fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == 0 and history.snapshots_invalid == 2  # type: ignore[attr-defined]
    assert caplog.text.count("HMAC mismatch") == 2
    assert state_differences(fast, full) == []  # type: ignore[arg-type]


def _alter_a_fill_before(journal: Path, offset: int) -> None:
    """Change one journaled fill's id (same length, frame CRC fixed): the journal still
    reads, byte offsets and seqs are unchanged, its history is another one."""
    data = bytearray(journal.read_bytes())
    pos = header_length(bytes(data[:HEADER_PREFIX_BYTES]))
    while pos < offset:
        length = int.from_bytes(data[pos : pos + 4], "little")
        body = data[pos + 8 : pos + 8 + length]
        where = body.find(b"oms-")
        if where >= 0:
            body[where : where + 4] = b"OMS-"
            data[pos + 8 : pos + 8 + length] = body
            data[pos + 4 : pos + 8] = zlib.crc32(body).to_bytes(4, "little")
            journal.write_bytes(bytes(data))
            return
        pos += 8 + length
    raise AssertionError("no fill before the offset")


def test_snapshot_whose_journal_digest_does_not_match_is_refused(tmp_path: Path) -> None:
    _session(tmp_path, 200, 60)
    directory = tmp_path / "journal"
    oldest = snapshot_files(directory)[-1]
    header, _ = decode_snapshot(oldest.read_bytes())
    _alter_a_fill_before(directory / header.journal_file, header.journal_offset)
    full, _ = _rebuilt(tmp_path, snapshots=False)  # the journal as it now reads
    fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == 0 and history.snapshots_invalid == 2  # type: ignore[attr-defined]
    assert state_differences(fast, full) == []  # type: ignore[arg-type]


def test_snapshot_signed_but_of_another_journal_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _session(tmp_path, 200, 60)
    for path in snapshot_files(tmp_path / "journal"):
        header, payload = decode_snapshot(path.read_bytes())
        other = msgspec.structs.replace(header, journal_sha256="0" * 64)
        path.write_bytes(encode_snapshot(sign_snapshot(other, payload, SNAP_KEY), payload))
    with caplog.at_level(logging.ERROR):
        _, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == 0 and history.snapshots_invalid == 2  # type: ignore[attr-defined]
    assert "not the one it was taken on" in caplog.text


def test_journal_digest_incremental_equals_from_scratch(tmp_path: Path) -> None:
    _session(tmp_path, 150, 50)
    directory = tmp_path / "journal"
    name = journal_files(directory)[-1].name
    size = (directory / name).stat().st_size
    digest = JournalDigest(directory)
    for offset in (100, 2_000, size // 2, size):
        assert digest.at(name, offset) == journal_digest(directory, name, offset)
    assert digest.at(name, 100) == journal_digest(directory, name, 100)  # back: recomputed
    assert journal_digest(directory, name, size) != journal_digest(directory, name, size - 1)


def test_snapshot_without_a_key_is_neither_written_nor_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config()
    monkeypatch.delenv(config.journal.snapshot_key_env, raising=False)
    with caplog.at_level(logging.WARNING):
        assert snapshot_mac_key(config) is None
        assert snapshot_mac_key(config) is None
    assert caplog.text.count("no snapshot key") <= 1  # logged once per process
    monkeypatch.setenv(config.journal.snapshot_key_env, "short")
    assert snapshot_mac_key(config) is None
    monkeypatch.setenv(config.journal.snapshot_key_env, "k" * 32)
    assert snapshot_mac_key(config) == b"k" * 32
    _session(tmp_path, 150, 50)
    engine, extras = _snap_engine(tmp_path)
    header, invalid = load_snapshot(
        engine, tmp_path / "journal", config_sha256="cfg", extras=extras, key=None,  # type: ignore[arg-type]
    )  # fmt: skip
    assert header is None and invalid == 0
