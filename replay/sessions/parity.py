"""Parity of a live session: the replay of its journal against its decisions log.

DESIGN.md promises that replaying the journal gives the same decisions, bit for bit. This
module checks it: the decisions the replay emits (``replay.sessions.journal_replay``) are compared
with ``decisions-{id}.jsonl`` event by event, in order, as the JSON documents the daemon
writes. Both sides go through msgspec's JSON encoding, which writes every finite float as
the shortest text that reads back to the same bits, so two equal documents mean equal
events; floats are then compared by their bits (``0.0`` and ``-0.0`` differ). The timers
the journal records must be the ones the replayed clock fires, at the same point.
"""

from __future__ import annotations

import argparse
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.errors import DataError
from engine.events import Event
from replay.sessions.journal_replay import JournalReplayResult, load_session, replay_session

MAX_SHOWN: Final = 20
_MAX_VALUE_CHARS: Final = 80


@dataclass(frozen=True)
class ParityResult:
    """The outcome of ``parity``.

    Attributes:
        ok: the replay's decisions equal the log's and the timers agree.
        differences: the first ``MAX_SHOWN`` differences, one line each, human-readable.
        difference_count: every difference found (decisions and timers).
        decisions_replayed: decisions the replay emitted.
        decisions_logged: lines in the decisions log.
        decisions_equal: positions where both sides hold the same decision.
        replay: the replay itself (records, ticks, orders, the engine).
    """

    ok: bool
    differences: list[str]
    difference_count: int
    decisions_replayed: int
    decisions_logged: int
    decisions_equal: int
    replay: JournalReplayResult

    @property
    def session_id(self) -> str:
        return self.replay.session.info.session_id


def parity(journal_dir: Path, *, session: str | None = None) -> ParityResult:
    """Replay a session's journal and compare its decisions with the session's log.

    Args:
        journal_dir: the daemon's journal folder.
        session: the session id; None picks the latest session of the folder.

    Raises:
        DataError: no session, no decisions log, or a record the engine refused
            (``JournalError`` for a corrupt journal).
        ConfigError, PluginLoadError: the session's config cannot be built again.
        AdapterError: a file cannot be read.
    """
    loaded = load_session(Path(journal_dir), session)
    try:
        logged = loaded.decisions_path.read_bytes().splitlines()
    except OSError as exc:
        raise DataError(str(loaded.decisions_path), f"cannot read: {exc.strerror}") from exc
    result = replay_session(loaded)
    return compare_decisions(result, logged)


def compare_decisions(result: JournalReplayResult, logged: list[bytes]) -> ParityResult:
    """Compare a replay's decisions with the lines of a decisions log."""
    encoder = msgspec.json.Encoder()
    differences: list[str] = []
    equal = 0
    count = 0
    replayed = result.decisions
    for index in range(max(len(replayed), len(logged))):
        if index < len(replayed) and index < len(logged):
            difference = _compare(index, logged[index], replayed[index], encoder)
        elif index < len(logged):
            difference = (
                f"decision {index}: logged {_describe_line(logged[index])}, replay has none"
            )
        else:
            difference = f"decision {index}: replay has {_describe(replayed[index])}, log has none"
        if difference is None:
            equal += 1
            continue
        count += 1
        if len(differences) < MAX_SHOWN:
            differences.append(difference)
    for line in result.timer_differences:
        count += 1
        if len(differences) < MAX_SHOWN:
            differences.append(line)
    return ParityResult(
        ok=count == 0,
        differences=differences,
        difference_count=count,
        decisions_replayed=len(replayed),
        decisions_logged=len(logged),
        decisions_equal=equal,
        replay=result,
    )


def _compare(index: int, line: bytes, event: Event, encoder: msgspec.json.Encoder) -> str | None:
    try:
        logged = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return f"decision {index}: log line {index + 1} is not JSON ({exc})"
    replayed = msgspec.json.decode(encoder.encode(event))
    if not isinstance(logged, dict):
        return f"decision {index}: log line {index + 1} is not a JSON object"
    if logged.get("type") != replayed["type"]:
        return (
            f"decision {index}: type: log {logged.get('type')!r}, replay {replayed['type']!r} "
            f"(log {_describe_line(line)}; replay {_describe(event)})"
        )
    fields = [
        f"{name}: log {_show(logged.get(name, '<missing>'))}, "
        f"replay {_show(replayed.get(name, '<missing>'))}"
        for name in [*replayed, *(k for k in logged if k not in replayed)]
        if name not in logged or name not in replayed or not _same(logged[name], replayed[name])
    ]
    if not fields:
        return None
    return f"decision {index} ({replayed['type']}): " + "; ".join(fields)


def _same(a: Any, b: Any) -> bool:
    """Equal JSON values, floats bit for bit, ``1`` and ``1.0`` told apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return _bits(a) == _bits(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _show(value: Any) -> str:
    text = (
        repr(value)
        if isinstance(value, float) and math.isfinite(value)
        else msgspec.json.encode(value).decode()
    )
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _describe(event: Event) -> str:
    text = msgspec.json.encode(event).decode()
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _describe_line(line: bytes) -> str:
    text = line.decode(errors="replace")
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def parity_report(result: ParityResult) -> list[str]:
    """What ``tradeloop parity`` prints: one line when equal, else the counts and the first
    differences."""
    replay = result.replay
    if result.ok:
        return [
            f"parity: {result.decisions_equal} decisions equal "
            f"(session {result.session_id}: {replay.record_count} records, {replay.ticks} ticks, "
            f"{replay.orders} orders, {replay.timers_fired} timers)"
        ]
    shown = len(result.differences)
    lines = [
        f"parity: {result.difference_count} differences in session {result.session_id} "
        f"({result.decisions_replayed} decisions replayed, {result.decisions_logged} logged, "
        f"{result.decisions_equal} equal; {replay.record_count} records, {replay.ticks} ticks, "
        f"{replay.orders} orders, {replay.timers_fired} timers)"
        + (f"; the first {shown}:" if shown < result.difference_count else ":")
    ]
    lines += [f"  {line}" for line in result.differences]
    return lines


def cmd_parity(args: argparse.Namespace) -> int:
    """``tradeloop parity JOURNAL_DIR [--session ID]``: 0 when the replay's decisions equal
    the log, 1 on a difference.

    Raises:
        TradeloopError: as ``parity`` (the CLI prints it on one line).
    """
    result = parity(Path(args.journal_dir), session=getattr(args, "session", None))
    for line in parity_report(result):
        print(line)
    return 0 if result.ok else 1


__all__ = [
    "MAX_SHOWN",
    "ParityResult",
    "cmd_parity",
    "compare_decisions",
    "parity",
    "parity_report",
]
