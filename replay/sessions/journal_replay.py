"""Replay of a live session: the same ``Engine`` fed the same sequenced input stream.

A live daemon (``adapters/daemon/``) leaves in its journal folder the day files of the
input journal, the exact config that ran (``session-{id}.toml``), what it was started with
(``session-{id}.json``) and the decisions its engine emitted (``decisions-{id}.jsonl``).
This module builds that engine again with the daemon's own composition
(``build_live_engine``), a router that matches the mode (the simulated venue in paper, a
recording sender in shadow and live, where the venue's reports come from the journal), and
applies every journal record of the session in sequence order with the daemon's own
``apply_record``. What the engine emits of ``DECISION_TYPES`` is collected for
``replay.sessions.parity`` to compare with the log.

A timer record (the journal format has one; this daemon writes none) says a timer came
due and the core was about to fire it: timers fire on the replayed clock, so the record is
not applied but checked against the timers the replay fires at that point.
"""

from __future__ import annotations

import argparse
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import msgspec

from adapters.daemon.assembly import build_live_engine, build_router
from adapters.daemon.core import DECISION_TYPES, apply_record
from adapters.daemon.rebuild import HISTORY_PER_SESSION, history_apply
from adapters.daemon.switching import model_switcher
from adapters.explanations import Explainers, ExplanationCollector, explain_line
from adapters.journal_file import FileJournalReader
from adapters.journal_folder import journal_files
from adapters.reconciliation import apply_history, session_starts
from engine.assembly import ModelPins
from engine.clock import ReplayClock, TimerFired
from engine.config import Config, load_config
from engine.engine import Engine
from engine.errors import ConfigError, DataError, TradeloopError
from engine.events import CancelRequest, Event, OrderRequest
from engine.journal import AnyRecord, ClockRecord, TimerRecord
from engine.model_registry import RegistryReader
from engine.ports import OrderRouter, SendOnly
from engine.registry_types import Stage

LiveMode = Literal["shadow", "paper", "live"]
SESSION_PREFIX: Final = "session-"
DECISIONS_PREFIX: Final = "decisions-"


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``session-{id}.json``: what the daemon was started with.

    Attributes:
        session_id: the session's id (also in the file names).
        mode: ``shadow``, ``paper`` or ``live``.
        order_id_prefix: prefix of the engine's client order ids in this session.
        config_sha256: sha256 of ``session-{id}.toml`` (checked when present).
        start_ns: the session's first receive time, also its first clock reading; orders
            the sessions of a folder.
        first_seq: the session's first journal record, where the daemon says it (a folder
            may hold several sessions' records, one after the other). Without it, a
            session starts at its first clock reading (``ts_recv == start_ns``).
        rebuilt_records: how many records of the earlier sessions the daemon applied to
            its engine before going live (0 for a daemon that started cold); the replay
            applies the same ones first.
        model_version, model_stage, challenger_version: the registry versions the session
            ran (a registry model only): the replay runs these, not what the aliases name
            by then.
        history_versions: ``per_session`` when the daemon rebuilt each earlier session on
            the versions that session ran (``adapters.daemon.rebuild.history_apply``) and then
            switched to its own; "" for a daemon before that, which rebuilt the earlier
            sessions on its own versions: the replay does what the daemon did.
    """

    session_id: str
    mode: LiveMode
    order_id_prefix: str
    start_ns: int
    config_sha256: str = ""
    first_seq: int | None = None
    rebuilt_records: int = 0
    model_version: str = ""
    model_stage: Stage | None = None
    challenger_version: str = ""
    history_versions: str = ""

    @property
    def pins(self) -> ModelPins | None:
        if not self.model_version or self.model_stage is None:
            return None
        return ModelPins(self.model_version, self.model_stage, self.challenger_version)


@dataclass(frozen=True)
class Session:
    """One session of a journal folder, its files read and validated.

    ``later`` are the sessions started after it in the same folder: the records from the
    first of them on are not this session's.
    """

    journal_dir: Path
    info: SessionInfo
    config: Config
    config_path: Path
    decisions_path: Path
    later: tuple[SessionInfo, ...] = ()


class RecordingSender:
    """The sending port of a replayed live or shadow session: keeps what would have left."""

    def __init__(self) -> None:
        self.orders: list[OrderRequest] = []
        self.cancels: list[CancelRequest] = []

    def submit(self, order: OrderRequest) -> None:
        self.orders.append(order)

    def cancel(self, request: CancelRequest) -> None:
        self.cancels.append(request)


class WatchedClock(ReplayClock):
    """A ``ReplayClock`` that keeps every timer it fires, in firing order."""

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__(start_ns)
        self.fired: list[TimerFired] = []

    def pop_due(self, ts_ns: int) -> list[TimerFired]:
        due = super().pop_due(ts_ns)
        self.fired.extend(due)
        return due


@dataclass
class JournalReplayResult:
    """What a replay of a session did.

    Attributes:
        session: the session replayed.
        decisions: events of ``DECISION_TYPES`` the engine emitted, in order.
        records: journal records applied, by record tag (``market_data``, ``report``, ...).
        ticks: market-data ticks processed.
        orders: orders that passed the risk gates and went to the router.
        cancels: cancels sent to the router.
        timers_fired: timers the replayed clock fired.
        timers_journaled: timer records in the session's journal.
        timer_differences: where the journal's timer records and the replay's firings
            disagree (empty when they agree, or when the journal has no timer records).
        engine: the engine after the last record.
        history_records: records of the earlier sessions applied first (the daemon's
            rebuild before it went live).
    """

    session: Session
    decisions: list[Event]
    records: dict[str, int]
    ticks: int
    orders: int
    cancels: int
    timers_fired: int
    timers_journaled: int
    timer_differences: list[str]
    engine: Engine = field(repr=False)
    history_records: int = 0

    @property
    def record_count(self) -> int:
        return sum(self.records.values())


def is_journal_dir(path: Path) -> bool:
    """Whether ``path`` is a live session's journal folder (a session file or a day file)."""
    return path.is_dir() and (
        any(path.glob(f"{SESSION_PREFIX}*.json")) or bool(journal_files(path))
    )


def list_sessions(journal_dir: Path) -> list[tuple[SessionInfo, Path]]:
    """The sessions of a journal folder with their json files, oldest first.

    Raises:
        DataError: the folder does not exist, or a session file is not valid.
    """
    if not journal_dir.is_dir():
        raise DataError(str(journal_dir), "not a folder")
    found: list[tuple[SessionInfo, Path]] = []
    for path in journal_dir.glob(f"{SESSION_PREFIX}*.json"):
        try:
            info = msgspec.json.decode(path.read_bytes(), type=SessionInfo)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DataError(str(path), f"not a valid session file: {exc}") from exc
        except OSError as exc:
            raise DataError(str(path), f"cannot read: {exc.strerror}") from exc
        if path.name != f"{SESSION_PREFIX}{info.session_id}.json":
            raise DataError(str(path), f"holds session {info.session_id!r}, not its file's")
        found.append((info, path))
    found.sort(key=lambda item: (item[0].start_ns, item[0].first_seq or 0, item[0].session_id))
    return found


def load_session(journal_dir: Path, session: str | None = None) -> Session:
    """Pick a session of the folder (the latest unless ``session`` names one) and load it.

    Raises:
        DataError: no session in the folder, an unknown session, a missing decisions log.
        ConfigError: the session's config copy is invalid or differs from its recorded hash.
    """
    journal_dir = Path(journal_dir)
    sessions = list_sessions(journal_dir)
    if not sessions:
        raise DataError(
            str(journal_dir), f"no {SESSION_PREFIX}*.json here: not a live session's journal folder"
        )
    index = len(sessions) - 1
    if session is not None:
        ids = [info.session_id for info, _ in sessions]
        if session not in ids:
            raise DataError(
                str(journal_dir), f"no session {session!r} (sessions here: {', '.join(ids)})"
            )
        index = ids.index(session)
    info, _ = sessions[index]
    later = tuple(i for i, _ in sessions[index + 1 :])
    config_path = journal_dir / f"{SESSION_PREFIX}{info.session_id}.toml"
    config, digest = load_config(config_path)
    if info.config_sha256 and digest != info.config_sha256:
        raise ConfigError(
            str(config_path),
            f"sha256 {digest} differs from the session's {info.config_sha256}: "
            "not the config that ran",
        )
    if config.mode != info.mode:
        raise DataError(
            str(config_path), f"mode {config.mode!r}, but the session ran in {info.mode!r}"
        )
    decisions_path = journal_dir / f"{DECISIONS_PREFIX}{info.session_id}.jsonl"
    if not decisions_path.is_file():
        raise DataError(str(decisions_path), "missing: the session's decisions log")
    return Session(journal_dir, info, config, config_path, decisions_path, later)


def build_session_engine(
    config: Config, *, order_id_prefix: str, clock: ReplayClock, pins: ModelPins | None = None
) -> tuple[Engine, OrderRouter]:
    """The engine the daemon builds for ``config`` (``adapters.daemon.assembly.build_live_engine``:
    arrival order, not strict, the order timeout in live mode), on ``clock``.

    The router matches the mode: the daemon's simulated venue in paper, a ``SendOnly``
    into a ``RecordingSender`` in shadow and live. ``pins``: the registry versions the
    session recorded (a session of a registry model that recorded none ran before they
    were recorded: its aliases are resolved now, as before).

    Raises:
        ConfigError, PluginLoadError, ModelError: before any record is read.
    """
    router = build_router(config, None) if config.mode == "paper" else SendOnly(RecordingSender())
    engine = build_live_engine(config, router, order_id_prefix=order_id_prefix, pins=pins)
    # build_live_engine makes its own ReplayClock; nothing has read it yet (the engine
    # starts at the first record), so a fresh clock that also reports its firings
    # replaces it
    engine.clock = clock
    return engine, router


def history_records(session: Session) -> Iterator[AnyRecord]:
    """The records of the sessions before ``session``: what its daemon applied to its
    engine before going live (``adapters.daemon.rebuild.rebuild``).

    Raises:
        JournalError: a journal file is corrupt or the sequence has a gap.
        AdapterError: the folder cannot be read.
    """
    info = session.info
    for record in FileJournalReader(session.journal_dir):
        if _starts(info, record):
            return
        yield record


def session_records(session: Session) -> Iterator[AnyRecord]:
    """The session's journal records in sequence order.

    The session starts at its ``first_seq``, or else at its first clock reading (the
    daemon's first record: ``ts_recv == start_ns``); it ends where a later session of the
    folder starts.

    Raises:
        JournalError: a journal file is corrupt or the sequence has a gap.
        AdapterError: the folder cannot be read.
        DataError: the session's first record is not in the journal.
    """
    info = session.info
    started = False
    for record in FileJournalReader(session.journal_dir):
        if any(_starts(later, record) for later in session.later):
            if started:
                return
            continue
        started = started or _starts(info, record)
        if started:
            yield record
    if not started:
        where = (
            f"seq {info.first_seq}"
            if info.first_seq is not None
            else f"clock reading {info.start_ns}"
        )
        raise DataError(
            str(session.journal_dir),
            f"session {info.session_id}'s first record ({where}) is not in the journal",
        )


def _starts(info: SessionInfo, record: AnyRecord) -> bool:
    if info.first_seq is not None:
        return record.seq == info.first_seq
    return isinstance(record, ClockRecord) and record.ts_recv == info.start_ns


def replay_journal(journal_dir: Path, *, session: str | None = None) -> JournalReplayResult:
    """Replay a live session's journal through the engine that ran it.

    Args:
        journal_dir: the daemon's journal folder.
        session: the session id; None picks the latest session of the folder.

    Raises:
        DataError: no such session, a missing decisions log, or the engine refused a
            record (``JournalError`` for a corrupt journal).
        ConfigError, PluginLoadError: the session's config cannot be built again.
        AdapterError: the folder cannot be read.
    """
    return replay_session(load_session(Path(journal_dir), session))


def replay_session(
    session: Session, *, attach: Callable[[Engine], Callable[[], None] | None] | None = None
) -> JournalReplayResult:
    """``replay_journal`` for a session already loaded.

    Args:
        session: the session.
        attach: called with the engine once the earlier sessions are applied, before
            the session's first record (add a sink); what it returns, if anything, is
            called after each record is applied.
    """
    clock = WatchedClock()
    engine, router = build_session_engine(
        session.config, order_id_prefix=session.info.order_id_prefix, clock=clock,
        pins=session.info.pins,
    )  # fmt: skip
    switcher = model_switcher(session.config, session.info.pins)
    apply = functools.partial(apply_record, switcher=switcher)
    decisions: list[Event] = []

    def keep(event: Event) -> None:
        if isinstance(event, DECISION_TYPES):
            decisions.append(event)

    # the earlier sessions first, as the daemon rebuilt them, each under its own prefix;
    # their decisions, orders and timers are not this session's
    # (each on the registry versions it ran, switched to at its first record, where the
    # daemon did so)
    per_session = session.info.history_versions == HISTORY_PER_SESSION
    history = apply_history(
        engine,
        history_records(session) if session.info.rebuilt_records else (),
        session_starts(session.journal_dir),
        history_apply(session.journal_dir, switcher) if per_session else apply,
    )
    if history.records != session.info.rebuilt_records:
        raise DataError(
            str(session.journal_dir),
            f"session {session.info.session_id} was rebuilt from "
            f"{session.info.rebuilt_records} earlier records, the journal holds "
            f"{history.records} before it",
        )
    engine.desk.begin_session(session.info.order_id_prefix)
    pins = session.info.pins
    if per_session and pins is not None and switcher is not None:  # as its daemon did
        switcher.align(engine, pins, reason=f"session {session.info.session_id} start")
    before = engine.counters["orders_sent"], engine.counters["ticks"]
    sent_before = _sent(router)
    clock.fired.clear()
    engine.sinks.append(keep)
    after_record = attach(engine) if attach is not None else None
    records: Counter[str] = Counter()
    journaled: list[tuple[TimerFired, int, int]] = []  # timer, seq, inputs applied before it
    fired_at: list[int] = []  # per replay firing: the index of the input that fired it
    applied = 0
    for record in session_records(session):
        tag = type(record).__struct_config__.tag
        records[str(tag)] += 1
        if isinstance(record, TimerRecord):
            journaled.append((record.timer, record.seq, applied))
            continue
        try:
            apply(engine, record)
        except TradeloopError as exc:
            raise DataError(
                str(session.journal_dir), f"record seq {record.seq} ({tag}) refused: {exc}"
            ) from exc
        fired_at.extend([applied] * (len(clock.fired) - len(fired_at)))
        applied += 1
        if after_record is not None:
            after_record()
    sent = router.sender if isinstance(router, SendOnly) else None
    return JournalReplayResult(
        session=session,
        decisions=decisions,
        records=dict(records),
        ticks=engine.counters["ticks"] - before[1],
        orders=engine.counters["orders_sent"] - before[0],
        cancels=(
            len(sent.cancels) - sent_before
            if isinstance(sent, RecordingSender)
            else _cancels(decisions)
        ),
        timers_fired=len(clock.fired),
        timers_journaled=len(journaled),
        # a journal without timer records (this daemon's) leaves timers to the clock
        timer_differences=_timer_differences(journaled, clock.fired, fired_at) if journaled else [],
        engine=engine,
        history_records=history.records,
    )


def _sent(router: OrderRouter) -> int:
    sender = router.sender if isinstance(router, SendOnly) else None
    return len(sender.cancels) if isinstance(sender, RecordingSender) else 0


def _cancels(decisions: list[Event]) -> int:
    return sum(isinstance(d, CancelRequest) for d in decisions)


def _timer_differences(
    journaled: list[tuple[TimerFired, int, int]], fired: list[TimerFired], fired_at: list[int]
) -> list[str]:
    """Timer records against the replay's firings, one by one.

    The daemon journals a timer as it comes due, just before or while applying the input
    that makes it due, so a timer record with ``k`` inputs before it must match a firing
    during input ``k - 1`` or ``k``.
    """
    out: list[str] = []
    for i, ((timer, seq, before), (replayed, during)) in enumerate(
        zip(journaled, zip(fired, fired_at))
    ):
        if timer != replayed:
            out.append(
                f"timer {i}: journal seq {seq} has {_timer(timer)}, replay fired {_timer(replayed)}"
            )
        elif during not in (before - 1, before):
            out.append(
                f"timer {i}: journal seq {seq} has {_timer(timer)} after input {before}, "
                f"replay fired it while applying input {during + 1}"
            )
    if len(journaled) > len(fired):
        timer, seq, _ = journaled[len(fired)]
        out.append(
            f"timers: journal has {len(journaled)}, replay fired {len(fired)}; first "
            f"unmatched: seq {seq} {_timer(timer)}"
        )
    elif len(fired) > len(journaled):
        out.append(
            f"timers: journal has {len(journaled)}, replay fired {len(fired)}; first "
            f"unmatched: {_timer(fired[len(journaled)])}"
        )
    return out


def _timer(timer: TimerFired) -> str:
    every = f" every {timer.interval_ns} ns" if timer.interval_ns else ""
    return f"{timer.name!r} due {timer.ts_event}{every}"


def recompute_explanations(journal_dir: Path, *, session: str | None = None) -> list[bytes]:
    """The lines of ``explanations-{id}.jsonl`` recomputed from the journal: the session
    replayed with the daemon's collector, each signal explained as the daemon's worker
    does (the same kernel on the same row). Equal to the live file unless the live worker
    dropped some (counted in the session file's ``models.explanations.dropped``).

    Raises:
        DataError, ConfigError, PluginLoadError, JournalError: as ``replay_journal``.
    """
    loaded = load_session(Path(journal_dir), session)
    model = loaded.config.model
    collectors: list[ExplanationCollector] = []

    def attach(engine: Engine) -> Callable[[], None]:
        collector = ExplanationCollector(engine)
        engine.sinks.append(collector)
        collectors.append(collector)
        return collector.end_input

    replay_session(loaded, attach=attach)
    if model is None:
        return []
    registry, path = model.registry, model.path

    def folder_of(version: str) -> Path:
        if version and registry is not None:
            return RegistryReader(registry).version_dir(version)
        return Path(path or "")

    explainers = Explainers(folder_of)
    lines: list[bytes] = []
    for job in collectors[0].take():
        explainer = explainers.get(job.version)
        if explainer is not None:
            lines.append(explain_line(job, explainer, loaded.config.live.explain_top))
    return lines


def replay_summary(result: JournalReplayResult) -> str:
    """One line: the session, the records, ticks, orders and decisions."""
    records = ", ".join(f"{n} {tag}" for tag, n in sorted(result.records.items()))
    return (
        f"replayed session {result.session.info.session_id} ({result.session.info.mode}): "
        f"{result.record_count} records ({records or 'none'}), {result.ticks} ticks, "
        f"{result.orders} orders, {result.cancels} cancels, {result.timers_fired} timers, "
        f"{len(result.decisions)} decisions"
    )


def cmd_replay_journal(args: argparse.Namespace) -> int:
    """``tradeloop replay JOURNAL_DIR [--session ID]``: replay a session, print a summary
    (with ``--out``, the dispatcher writes its run folder: ``replay.backtest.session_report``).

    Raises:
        TradeloopError: as ``replay_journal``.
    """
    result = replay_journal(Path(args.data), session=getattr(args, "session", None))
    print(replay_summary(result))
    for line in result.timer_differences[:20]:
        print(f"  {line}")
    return 0


__all__ = [
    "DECISION_TYPES",
    "JournalReplayResult",
    "RecordingSender",
    "Session",
    "SessionInfo",
    "WatchedClock",
    "build_session_engine",
    "cmd_replay_journal",
    "is_journal_dir",
    "list_sessions",
    "load_session",
    "recompute_explanations",
    "replay_journal",
    "replay_session",
    "replay_summary",
]
