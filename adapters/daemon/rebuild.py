"""The rebuild from the journal: what a restarted daemon does before it goes live, and
what the replay of a later session does first. Every earlier session's records are applied
to a fresh engine (from the newest valid snapshot on, ``adapters.daemon.snapshots``), each
on the registry versions that session ran, as its manifest records them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from adapters.daemon.core import apply_record
from adapters.daemon.snapshots import load_snapshot
from adapters.journal_file import FileJournalReader, JournalPosition
from adapters.reconciliation import History, apply_history, session_starts
from engine.assembly import ModelPins, ModelSwitcher
from engine.engine import Engine
from engine.journal import AnyRecord
from engine.registry_types import STAGES
from engine.snapshot import SnapshotHeader

log = logging.getLogger("tradeloop.daemon")

HISTORY_PER_SESSION: Final = "per_session"
"""A session manifest's ``history_versions``: its daemon rebuilt each earlier session on
the versions that session ran (``history_apply``), then switched to its own."""


def session_versions(journal_dir: Path) -> dict[str, ModelPins | None]:
    """The registry versions each session of a journal folder ran, as its manifest
    (``session-{id}.json``) records them: session id -> pins (None: the manifest records
    none, a daemon older than the record or a model without a registry). An unreadable
    manifest is left out (``session_starts`` logs it)."""
    found: dict[str, ModelPins | None] = {}
    for path in journal_dir.glob("session-*.json"):
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
            continue
        version, stage = data.get("model_version"), data.get("model_stage")
        challenger = data.get("challenger_version") or ""
        found[data["session_id"]] = None
        for known in STAGES:  # the stage as a ``Stage``, or no pins
            if (
                isinstance(version, str)
                and version
                and isinstance(challenger, str)
                and (stage == known)
            ):
                found[data["session_id"]] = ModelPins(version, known, challenger)
    return found


def history_apply(
    journal_dir: Path, switcher: ModelSwitcher | None
) -> Callable[[Engine, AnyRecord], None]:
    """How a rebuild applies a record of the journal's history (``apply_history``): at
    each session's first record the engine is first switched to the registry versions
    that session ran (``ModelSwitcher.align``), as its daemon built it, so each session's
    records are decided again by the models that decided them live, whatever the
    registry names now. A session whose manifest records no versions is applied on what
    ran before it: logged and counted (``ModelSwitcher.sessions_without_versions``)."""
    if switcher is None:
        return apply_record
    sessions = session_starts(journal_dir)
    versions = session_versions(journal_dir)

    def apply(engine: Engine, record: AnyRecord) -> None:
        for session in sessions:
            if not session.starts_at(record):
                continue
            pins = versions.get(session.session_id)
            if pins is None:
                switcher.sessions_without_versions.append(session.session_id)
                log.warning("session %s recorded no model versions: its records are "
                            "applied on the versions that ran before it",
                            session.session_id)  # fmt: skip
            else:
                switcher.align(engine, pins, reason=f"session {session.session_id} start")
        apply_record(engine, record, switcher)

    return apply


def rebuild(
    engine: Engine,
    journal_dir: Path,
    *,
    before_seq: int | None = None,
    config_sha256: str | None = None,
    extras: dict[str, object] | None = None,
    switcher: ModelSwitcher | None = None,
    snapshot_mac_key: bytes | None = None,
) -> History:
    """Apply the journal's records (those before ``before_seq``) to a fresh engine, each
    session under its own client order id prefix (``adapters.reconciliation``): what a
    restarted daemon does before it goes live, and what the replay of a later session
    does first. The engine's router must send nothing meanwhile.

    Each session's records are applied on the registry versions that session ran
    (``history_apply``), switched to at its first record; ``switcher`` must then know the
    versions ``engine`` was built with (``model_switcher(config, pins)``).

    With ``config_sha256`` the newest valid snapshot of that config (``engine.snapshot``),
    signed with ``snapshot_mac_key`` (without a key none is loaded), is loaded first, into
    the engine and ``extras`` (objects outside the engine that follow its inputs, as when
    the snapshot was taken), and only the records after it
    are applied: the same state as applying them all. A torn, damaged or foreign
    snapshot is skipped, counted (``History.snapshots_invalid``) and logged; the one
    before it, or the whole journal, is used instead.

    Raises:
        JournalError: a journal file is corrupt.
        AdapterError: the folder cannot be read.
    """
    if not journal_dir.is_dir():
        return History()
    stop = None if before_seq is None else (lambda record: record.seq >= before_seq)
    header: SnapshotHeader | None = None
    invalid = 0
    if config_sha256 is not None:
        header, invalid = load_snapshot(
            engine, journal_dir, config_sha256=config_sha256, before_seq=before_seq,
            extras=extras, key=snapshot_mac_key,
        )  # fmt: skip
    start = None
    if header is not None:
        start = JournalPosition(
            file=header.journal_file, offset=header.journal_offset, seq=header.seq + 1
        )
    if header is not None and switcher is not None:
        switcher.restored(engine)  # the champion the snapshot ran, if not the build's
    tail = apply_history(
        engine, FileJournalReader(journal_dir, start=start), session_starts(journal_dir),
        history_apply(journal_dir, switcher), stop=stop,
    )  # fmt: skip
    tail.snapshots_invalid = invalid
    if header is None:
        return tail
    return History(
        records=header.records + tail.records,
        sessions=[*header.sessions, *tail.sessions],
        last_seq=tail.last_seq or header.seq,
        last_ts=max(header.ts_recv, tail.last_ts),
        snapshot_seq=header.seq,
        snapshots_invalid=invalid,
    )


__all__ = ["HISTORY_PER_SESSION", "history_apply", "rebuild", "session_versions"]
