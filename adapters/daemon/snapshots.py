"""Snapshots of the daemon's state (``engine.snapshot``): a restart loads the newest valid
one and applies only the journal after it (``adapters.daemon.rebuild``).

A snapshot holds the state of this build's classes and the models' state: it is valid
only for the same config, the same code and the same registry versions (``snapshot_key``),
and it covers, besides the engine, the objects outside it that follow its inputs
(``snapshot_extras``).

Trust: a snapshot is written and loaded only with an HMAC key from the environment
(``[journal] snapshot_key_env``; without one, none is written or loaded and a restart
replays in full, logged once), signed over its header and payload, and it records the
digest of the journal up to its offset (``journal_digest``): a snapshot whose journal
differs from the one it was taken on (edited, truncated, another journal's) is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Final

import msgspec

from adapters.daemon.background import Background
from adapters.daemon.core import LiveCore
from adapters.journal_file import FileJournalReader, FileJournalWriter, JournalPosition
from adapters.journal_folder import journal_files, read_snapshot, snapshot_files, write_snapshot
from adapters.mqtt.command_guard import CommandGuard
from adapters.reconciliation import FillLedger, History
from engine.assembly import ModelPins, ModelSwitcher
from engine.config import Config
from engine.engine import Engine
from engine.errors import AdapterError, JournalError
from engine.snapshot import (
    STATE_VERSION,
    SnapshotHeader,
    capture_state,
    check_mac,
    payload_digest,
    restore_state,
    sign_snapshot,
)

log = logging.getLogger("tradeloop.daemon")

# the shortest HMAC key accepted (bytes): a shorter one is no key
MIN_KEY_BYTES: Final = 16
_warned: set[str] = set()  # the env names already logged as missing (once per process)


def snapshot_mac_key(config: Config) -> bytes | None:
    """The snapshots' HMAC key from ``$[journal] snapshot_key_env`` (None: no key, or one
    shorter than ``MIN_KEY_BYTES``; then no snapshot is written or loaded, logged once)."""
    name = config.journal.snapshot_key_env
    key = os.environ.get(name, "").encode()
    if len(key) >= MIN_KEY_BYTES:
        return key
    if name not in _warned:
        _warned.add(name)
        log.warning(
            "no snapshot key in $%s (at least %d bytes): snapshots are neither written nor "
            "loaded, a restart replays the whole journal", name, MIN_KEY_BYTES,
        )  # fmt: skip
    return None


_CHUNK: Final = 1 << 20


class JournalDigest:
    """The digest of a journal folder's bytes up to a position (``journal_sha256`` of a
    snapshot): sha256 over each journal file, oldest first, its name and the sha256 of
    its bytes (the last one's up to the offset). Incremental: a later position of the same
    journal reads only the bytes since the last one (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._done = hashlib.sha256()  # the files before ``_file``
        self._done_files: list[str] = []
        self._file = ""
        self._offset = 0
        self._current = hashlib.sha256()

    def _reset(self) -> None:
        self._done = hashlib.sha256()
        self._done_files = []
        self._file = ""
        self._offset = 0
        self._current = hashlib.sha256()

    def _fold(self) -> None:
        if self._file:
            self._done.update(self._file.encode() + b"\0" + self._current.digest())
            self._done_files.append(self._file)
        self._file = ""
        self._offset = 0
        self._current = hashlib.sha256()

    def _read(self, path: Path, start: int, end: int | None) -> None:
        """Hash ``path``'s bytes from ``start`` to ``end`` (None: its end) into the current
        file's hash."""
        try:
            with path.open("rb") as f:
                f.seek(start)
                position = start
                while end is None or position < end:
                    chunk = f.read(_CHUNK if end is None else min(_CHUNK, end - position))
                    if not chunk:
                        break
                    self._current.update(chunk)
                    position += len(chunk)
        except OSError as exc:
            raise JournalError(str(path), start, f"unreadable: {exc}") from exc
        if end is not None and position != end:
            raise JournalError(str(path), position, f"shorter than {end} bytes")
        self._offset = position

    def at(self, file: str, offset: int) -> str:
        """The digest of the journal up to byte ``offset`` of ``file``.

        Raises:
            JournalError: a file is unreadable or shorter than ``offset``.
        """
        with self._lock:
            names = [p.name for p in journal_files(self.directory)]
            if file not in names:
                if offset:
                    raise JournalError(file, offset, "no such journal file")
                names.append(file)  # the next record starts a file not created yet
            path = names[: names.index(file) + 1]
            done = len(self._done_files)
            resumable = path[:done] == self._done_files and (
                not self._file
                or (
                    len(path) > done
                    and self._file == path[done]
                    and (self._file != file or offset >= self._offset)
                )
            )
            if not resumable:
                self._reset()
            for name in path[len(self._done_files) : -1]:  # whole files before ``file``
                if self._file != name:
                    self._fold()
                    self._file = name
                self._read(self.directory / name, self._offset, None)
                self._fold()
            if self._file != file:
                self._fold()
                self._file = file
            if offset > self._offset:
                self._read(self.directory / file, self._offset, offset)
            final = self._done.copy()
            final.update(file.encode() + b"\0" + self._current.digest())
            return final.hexdigest()


def journal_digest(directory: Path, file: str, offset: int) -> str:
    """``JournalDigest(directory).at(file, offset)``, from scratch."""
    return JournalDigest(directory).at(file, offset)


def seal_snapshot(
    directory: Path, header: SnapshotHeader, payload: bytes, key: bytes,
    digest: JournalDigest | None = None,
) -> SnapshotHeader:  # fmt: skip
    """``header`` with the digest of ``directory``'s journal up to its offset and the HMAC
    with ``key`` over it and ``payload``: what ``write_snapshot`` writes.

    Raises:
        JournalError: the journal up to the offset is unreadable or shorter.
    """
    digest = digest or JournalDigest(directory)
    journal_sha256 = digest.at(header.journal_file, header.journal_offset)
    return sign_snapshot(
        msgspec.structs.replace(header, journal_sha256=journal_sha256), payload, key
    )


def load_snapshot(
    engine: Engine,
    journal_dir: Path,
    *,
    config_sha256: str,
    before_seq: int | None = None,
    extras: dict[str, object] | None = None,
    key: bytes | None = None,
) -> tuple[SnapshotHeader | None, int]:
    """Restore the newest valid snapshot of ``journal_dir`` into a fresh ``engine`` (and
    ``extras``); returns its header (None: none valid, the engine untouched) and how
    many were skipped as invalid. Valid: intact (checksums), signed with ``key`` (HMAC;
    without a key none is loaded), of this config and state version, covering a record
    before ``before_seq`` (the journal's next), the journal's digest up to its offset is
    the one it recorded, and the journal has that record's successor where it says."""
    invalid = 0
    for stale in journal_dir.glob(".snapshot-*.tmp"):  # a write cut short by a crash
        stale.unlink(missing_ok=True)
    files = snapshot_files(journal_dir)
    if key is None:
        if files:
            log.warning("%d snapshot(s) not loaded: no snapshot key", len(files))
        return None, 0
    for path in files:
        try:
            header, payload = read_snapshot(path)
            check_mac(header, payload, key, str(path))
            if header.config_sha256 != config_sha256:
                raise JournalError(str(path), 0, "taken with another config")
            if header.state_version != STATE_VERSION:
                raise JournalError(str(path), 0, f"state version {header.state_version}")
            if before_seq is not None and header.seq >= before_seq:
                raise JournalError(str(path), 0, f"covers seq {header.seq}, past the journal")
            digest = journal_digest(journal_dir, header.journal_file, header.journal_offset)
            if digest != header.journal_sha256:
                raise JournalError(
                    str(path), 0, "the journal before it is not the one it was taken on"
                )
            _check_tail_start(journal_dir, header, before_seq)
            restore_state(engine, payload, extras)
        except (JournalError, AdapterError) as exc:
            invalid += 1
            log.error("snapshot %s ignored: %s", path.name, exc)
            continue
        log.info("snapshot %s loaded: state after seq %d", path.name, header.seq)
        return header, invalid
    return None, invalid


def _check_tail_start(journal_dir: Path, header: SnapshotHeader, before_seq: int | None) -> None:
    start = JournalPosition(
        file=header.journal_file, offset=header.journal_offset, seq=header.seq + 1
    )
    first = None
    # the reader checks that the record there is ``start.seq``; one record is enough
    for first in FileJournalReader(journal_dir, start=start):  # noqa: B007
        break
    if first is None and before_seq is not None and before_seq != start.seq:
        raise JournalError(header.journal_file, start.offset, "no record where the tail starts")


_CODE_PACKAGES: Final = ("engine", "adapters", "strategies")


def snapshot_key(config_sha256: str, strategy_class: type) -> str:
    """What a snapshot is valid for: sha256 over the config's hash and the source of every
    module whose objects a snapshot may hold (tradeloop's packages and the strategy
    plugin's module). ``STATE_VERSION`` is bumped by hand when a class changes; this
    catches the change nobody remembered to announce, at the cost of a full replay
    after any upgrade."""
    digest = hashlib.sha256(config_sha256.encode())
    root = Path(__file__).resolve().parents[2]
    files = sorted(p for package in _CODE_PACKAGES for p in (root / package).rglob("*.py"))
    plugin = inspect.getsourcefile(strategy_class)
    if plugin is not None and Path(plugin).resolve() not in files:
        files.append(Path(plugin).resolve())
    for path in files:
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path).encode())
        try:
            digest.update(path.read_bytes())
        except OSError:  # a module that went away: its code is not this build's either
            digest.update(b"<missing>")
    return digest.hexdigest()


def snapshot_header(
    journal: FileJournalWriter, payload: bytes, *, records: int, sessions: list[str],
    ts_recv: int, config_sha256: str,
) -> SnapshotHeader | None:  # fmt: skip
    """The header of a snapshot of the state after the journal's last record (None when
    the journal has no file yet)."""
    position = journal.position()
    if position is None:
        return None
    return SnapshotHeader(
        seq=position.seq - 1, ts_recv=ts_recv, records=records, sessions=sessions,
        journal_file=position.file, journal_offset=position.offset,
        config_sha256=config_sha256, state_version=STATE_VERSION,
        payload_bytes=len(payload), payload_sha256=payload_digest(payload),
    )  # fmt: skip


def snapshot_extras(
    ledger: FillLedger,
    command_guard: CommandGuard,
    switcher: ModelSwitcher | None,
) -> dict[str, object]:
    """The daemon's objects outside the engine that a snapshot holds besides it (the
    trading-state claims and their holders are the engine's own state)."""
    # they follow the engine's inputs (as sinks; the switcher's memory of each
    # version's monitor, through the journaled switches), so their state is part of
    # the rebuild's
    extras: dict[str, object] = {"ledger": ledger, "command_guard": command_guard}
    if switcher is not None:
        extras["models"] = switcher.memory
    return extras


class SnapshotTaker:
    """Takes the session's snapshots: every ``[journal] snapshot_every_records`` records or
    ``snapshot_every_s`` seconds, and at a graceful stop.

    Args:
        config: the session's config (``[journal]``).
        config_sha256: sha256 of the config's bytes.
        pins: the registry versions the session runs (part of the key).
        engine: the engine whose state is captured.
        extras: ``snapshot_extras`` of the daemon.
        background: where a snapshot is written while the session runs.
    """

    def __init__(
        self,
        config: Config,
        config_sha256: str,
        pins: ModelPins | None,
        engine: Engine,
        extras: dict[str, object],
        background: Background,
    ) -> None:
        self.config = config
        self.engine = engine
        self.extras = extras
        self.background = background
        # a snapshot holds the state of this build's classes: valid only for the same
        # config and the same code (a daemon upgraded between stop and start replays)
        # ... and for the same registry versions (a snapshot holds the models' state)
        pinned = "" if pins is None else f":{pins.version}:{pins.stage}:{pins.challenger}"
        self.key = snapshot_key(config_sha256 + pinned, type(engine.strategy))
        self.counts: Counter[str] = Counter()  # written, failed
        # the HMAC key (None: no snapshots written, nor loaded by the rebuild)
        self.mac_key = snapshot_mac_key(config)
        self.digest = JournalDigest(Path(config.journal.dir))
        self.history = History()
        self.session_id = ""
        self._first_seq = 1  # the session's first journal record
        self._snapshot_seq = 0  # the last record a snapshot of this session covers
        self._snapshot_at = 0.0  # loop time of that snapshot
        self._task: asyncio.Task[None] | None = None

    def begin(self, history: History, session_id: str, first_seq: int) -> None:
        """The session starts at journal record ``first_seq``, after ``history``."""
        self.history = history
        self.session_id = session_id
        self._first_seq = first_seq
        self._snapshot_seq = first_seq - 1 if history.snapshot_seq else 0

    def maybe_take(self, core: LiveCore, *, final: bool = False) -> None:
        """Capture the state after the journal's last record, if due (``final``: at a
        graceful stop, whenever there is something new), and write it: in a thread while
        the session runs, at once at the stop. Called between turns, when every record
        journaled has been applied, and after the journal was synced."""
        journal = core.journal
        seq = journal.next_seq - 1
        if seq <= self._snapshot_seq or self.mac_key is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not final:
            if self._task is not None:  # the last one is still being written
                return
            every = self.config.journal
            due = seq - self._snapshot_seq >= every.snapshot_every_records or (
                now - self._snapshot_at >= every.snapshot_every_s
            )
            if not due:
                return
        self._snapshot_seq = seq
        self._snapshot_at = now
        journal.sync()  # the records a snapshot covers are on disk before it is
        try:
            payload = capture_state(self.engine, self.extras)
        except JournalError as exc:
            self.counts["failed"] += 1
            log.error("snapshot of seq %d not taken: %s", seq, exc)
            return
        header = snapshot_header(
            journal, payload,
            records=self.history.records + journal.next_seq - self._first_seq,
            sessions=[*self.history.sessions, self.session_id], ts_recv=core.last_ts,
            config_sha256=self.key,
        )  # fmt: skip
        if header is None:
            return
        directory = Path(self.config.journal.dir)
        tasks = self.background.tasks
        if final or tasks is None:
            self._write(directory, header, payload)
            return

        async def write() -> None:
            try:
                await asyncio.to_thread(self._write, directory, header, payload)
            finally:
                self._task = None

        self._task = tasks.create_task(write(), name="snapshot-writer")

    def _write(self, directory: Path, header: SnapshotHeader, payload: bytes) -> None:
        key = self.mac_key
        if key is None:
            return
        try:
            # the journal up to the snapshot's offset is on disk (synced before the capture)
            # and never changes: its digest may be taken here, in the writer's thread
            header = seal_snapshot(directory, header, payload, key, self.digest)
            path = write_snapshot(directory, header, payload)
        except (AdapterError, JournalError) as exc:
            self.counts["failed"] += 1
            log.error("snapshot of seq %d not written: %s", header.seq, exc)
            return
        self.counts["written"] += 1
        log.info("snapshot %s written (%d bytes)", path.name, header.payload_bytes)


__all__ = [
    "JournalDigest",
    "SnapshotTaker",
    "journal_digest",
    "load_snapshot",
    "seal_snapshot",
    "snapshot_extras",
    "snapshot_header",
    "snapshot_key",
    "snapshot_mac_key",
]
