"""The live composition root (``tradeloop run``): the same ``Engine`` as replay, fed by the
MQTT session, every input journaled before the engine acts on it.

Live and replay differ only here: the clock is a ``ReplayClock`` advanced by journaled
receive times, the source is the session's inbox and the router depends on the mode:

==========  =================================================================
mode        router
==========  =================================================================
``shadow``  ``SendOnly(ShadowSender)``: intended orders logged, nothing sent
``paper``   ``SimulatedVenue`` from ``[venue.sim]``, driven on receive time
``live``    ``SendOnly(QueueSender)``: QoS 1 on the OMS's orders topic
==========  =================================================================

The loop and its ordering guarantees
------------------------------------
One task consumes the inbox. A turn takes every item waiting (up to ``MAX_TURN_ITEMS``),
merges consecutive market data into one micro-batch, turns each into journal inputs, appends them all, calls ``journal.commit()`` (so a report
or command is as durable as the fsync policy asks before anything acts on it), then applies
them to the engine in the same order through ``apply_input``. The heartbeat is a turn of
the same task, taken between item turns, never beside them, so everything that reaches
the engine is serialized in the journal's order:

- ``MarketData`` -> the batch (``engine.process_batch``); after it, if the feed was lost and
  every instrument has quoted since, ``FeedStatus("restored")``.
- ``ReportIn`` -> the report (``engine.on_report``); ``CommandIn`` -> the command
  (``engine.on_command``), each after ``engine.advance_to(ts_recv)``.
- ``Connection(False)`` -> ``FeedStatus("lost")``; ``Connection(True)`` -> nothing (the
  feed is restored by fresh quotes, not by the connection).
- ``Overflow`` -> ``FeedStatus("overflow")`` (the engine treats it as lost data).
- heartbeat -> a clock record (``engine.advance_to``: timers, order timeouts), then
  ``FeedStatus("lost")`` if an instrument's last quote is older than its
  ``max_quote_age``, or if the feed is still lost after an operator's resume cleared the
  data-loss claim.
- an order the outbox had no room for -> an ``OrderRejected`` report for it and a
  ``reduce_only`` command from issuer ``daemon`` (sticky until an operator resumes).
- stop (SIGTERM/SIGINT) -> a ``kill`` command from issuer ``daemon`` if
  ``live.cancel_on_stop`` (HALTED cancels every open order).

Receive times entering the engine never go backwards: the receive clock is
``LiveClock`` made non-decreasing, read only by the session at receipt and by the
heartbeat, and an item stamped before the last applied time (it waited for room in a
full inbox) is journaled and applied at that time (counted, ``receive_time_clamped``).

A replay of the journal applies each record with ``apply_record``: same stream, same
engine, same decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import inspect
import json
import logging
import os
import secrets
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Final, ParamSpec, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from adapters.explanations import (
    Explainers,
    ExplanationCollector,
    ExplanationWorker,
    explanations_path,
)
from adapters.journal_file import (
    FileJournalReader,
    FileJournalWriter,
    JournalPosition,
    read_snapshot,
    snapshot_files,
    write_snapshot,
)
from adapters.live_sender import Outgoing, QueueSender, ShadowSender
from adapters.metrics import (
    DaemonMetrics,
    publish_engine_monitors,
    publish_monitor,
    tradeloop_version,
)
from adapters.model_registry_store import Registry
from adapters.mqtt.command_guard import CommandGuard
from adapters.mqtt.ingest import CommandIn, Connection, Inbound, MarketData, Overflow, ReportIn
from adapters.mqtt.session import MqttSession
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.status import ModelStatus, Status, encode_status
from adapters.mqtt.topics import Topics
from adapters.reconciliation import (
    SHUTDOWN_REASON,
    ClaimHolder,
    ExternalOrders,
    FillLedger,
    History,
    OmsSnapshot,
    adoptions,
    alarms_of,
    apply_history,
    fetch_over_mqtt,
    missed_fills,
    order_reports,
    position_differences,
    session_starts,
    unanswered,
    verdict,
)
from adapters.sim_venue import SimulatedVenue
from engine.assembly import (
    ModelPins,
    ModelSwitcher,
    PreparedModel,
    attach_challenger,
    build_engine,
    find_challenger,
    resolve_model_config,
)
from engine.challenger import ChallengerShadow
from engine.clock import LiveClock
from engine.codec import EventCodec
from engine.config import Config, load_config
from engine.engine import Engine
from engine.errors import AdapterError, ConfigError, JournalError, TradeloopError
from engine.events import (
    Alarm,
    CancelRequest,
    ChallengerSignal,
    Command,
    Event,
    Fill,
    ModelSwitched,
    OrderRejected,
    OrderRequest,
    RiskRejected,
    Signal,
    TradingState,
)
from engine.instruments import InstrumentTable
from engine.journal import (
    AdoptRecord,
    AnyRecord,
    ClockRecord,
    CommandRecord,
    ExternalOrder,
    FeedRecord,
    FeedStatus,
    MarketDataRecord,
    ModelSwitch,
    ModelSwitchRecord,
    ReportRecord,
    TimerRecord,
)
from engine.model_registry import ALIASES_DIR, RegistryReader, resolve_version
from engine.monitor import ModelMonitor
from engine.ports import ExecutionReport, OrderRouter, OrderSender, SendOnly
from engine.registry_types import STAGES, Alias
from engine.snapshot import (
    STATE_VERSION,
    SnapshotHeader,
    capture_state,
    payload_digest,
    restore_state,
)
from engine.strategy import NoParams, Strategy
from engine.ticks import QUOTE, TickBatch
from engine.units import parse_duration_ns

log = logging.getLogger("tradeloop.daemon")
_P = ParamSpec("_P")
_R = TypeVar("_R")

LIVE_MODES = ("shadow", "paper", "live")
# items taken per turn: bounds how long one turn holds the loop (the broker's reader and
# the order publisher wait meanwhile) while still amortising one commit over many items
MAX_TURN_ITEMS = 1024
# latencies kept raw for percentiles (bench, logs): about 8 MB at most
_LATENCY_SAMPLES = 1_000_000

InputBody = TickBatch | ExecutionReport | Command | FeedStatus | ExternalOrder | ModelSwitch | None
"""One input of the stream: ``None`` is a clock reading."""

DECISION_TYPES = (
    Signal,
    OrderRequest,
    CancelRequest,
    RiskRejected,
    TradingState,
    Alarm,
    ChallengerSignal,
    ModelSwitched,
)
MODEL_COMMANDS: Final = ("promote", "rollback")


# the receive clock


class ReceiveClock:
    """Wall-clock receive times made non-decreasing (``max`` with the last reading).

    Args:
        source: raw time source in ns (default ``LiveClock().now_ns``).
    """

    def __init__(self, source: Callable[[], int] | None = None) -> None:
        self._source = source if source is not None else LiveClock().now_ns
        self._last = 0
        self.steps_back = 0

    def __call__(self) -> int:
        t = self._source()
        if t < self._last:
            self.steps_back += 1
            return self._last
        self._last = t
        return t


def new_session_id(now_ns: int) -> str:
    """A session id unique across restarts: the UTC start time in ms, base 36 (sorts by
    time while the width stays 8, until 2059), and 4 random hex digits (two daemons
    started in the same ms)."""
    ms = now_ns // 1_000_000
    digits = ""
    while True:
        ms, r = divmod(ms, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if ms == 0:
            break
    return f"{digits}{secrets.token_hex(2)}"


# one way for an input to reach the engine, live and in replay


def apply_input(
    engine: Engine, ts_recv: int, body: InputBody, switcher: ModelSwitcher | None = None
) -> None:
    """Apply one journaled input to the engine, the way the daemon does.

    A batch carries its receive times; every other input first moves the engine to its
    ``ts_recv`` (timers and venue events due by then, order timeouts). A model switch
    needs the session's ``switcher`` (``model_switcher``).

    Raises:
        ConfigError: a model switch and no registry model to switch.
    """
    if isinstance(body, TickBatch):
        engine.process_batch(body)
        return
    engine.advance_to(ts_recv)
    match body:
        case None:
            pass
        case Command():
            for alarm in alarms_of(body):  # a reconciliation kill names each difference
                engine.emit(alarm)
            engine.on_command(body)
        case FeedStatus(status="restored"):
            engine.market_data_restored(body.reason)
        case FeedStatus():
            engine.market_data_lost(body.reason)
        case ExternalOrder():
            engine.desk.adopt(
                body.order,
                body.filled_qty,
                venue_order_id=body.venue_order_id,
                fills_follow_qty=body.fills_follow_qty,
            )
        case ModelSwitch():
            if switcher is None:
                raise ConfigError("model.registry", "the journal switches models, the config "
                                  "names no registry model")  # fmt: skip
            switcher.apply(engine, body)
        case _:
            engine.on_report(body)


def apply_record(engine: Engine, record: AnyRecord, switcher: ModelSwitcher | None = None) -> None:
    """Apply one record of a journal (the replay of a live session)."""
    match record:
        case MarketDataRecord():
            apply_input(engine, record.ts_recv, record.ticks.to_batch())
        case ReportRecord():
            apply_input(engine, record.ts_recv, record.report)
        case CommandRecord():
            apply_input(engine, record.ts_recv, record.command)
        case FeedRecord():
            apply_input(engine, record.ts_recv, record.feed)
        case AdoptRecord():
            apply_input(engine, record.ts_recv, record.external)
        case ModelSwitchRecord():
            apply_input(engine, record.ts_recv, record.switch, switcher)
        case ClockRecord() | TimerRecord():
            # the daemon journals no timer firings: timers fire inside the engine as the
            # clock moves, so a timer record only moves time
            apply_input(engine, record.ts_recv, None)


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
) -> History:
    """Apply the journal's records (those before ``before_seq``) to a fresh engine, each
    session under its own client order id prefix (``adapters.reconciliation``): what a
    restarted daemon does before it goes live, and what the replay of a later session
    does first. The engine's router must send nothing meanwhile.

    Each session's records are applied on the registry versions that session ran
    (``history_apply``), switched to at its first record; ``switcher`` must then know the
    versions ``engine`` was built with (``model_switcher(config, pins)``).

    With ``config_sha256`` the newest valid snapshot of that config (``engine.snapshot``)
    is loaded first, into the engine and ``extras`` (objects outside the engine that
    follow its inputs, as when the snapshot was taken), and only the records after it
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
            extras=extras,
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


def load_snapshot(
    engine: Engine,
    journal_dir: Path,
    *,
    config_sha256: str,
    before_seq: int | None = None,
    extras: dict[str, object] | None = None,
) -> tuple[SnapshotHeader | None, int]:
    """Restore the newest valid snapshot of ``journal_dir`` into a fresh ``engine`` (and
    ``extras``); returns its header (None: none valid, the engine untouched) and how
    many were skipped as invalid. Valid: intact (checksums), of this config and state
    version, covering a record before ``before_seq`` (the journal's next), and the
    journal has that record's successor where the snapshot says."""
    invalid = 0
    for stale in journal_dir.glob(".snapshot-*.tmp"):  # a write cut short by a crash
        stale.unlink(missing_ok=True)
    for path in snapshot_files(journal_dir):
        try:
            header, payload = read_snapshot(path)
            if header.config_sha256 != config_sha256:
                raise JournalError(str(path), 0, "taken with another config")
            if header.state_version != STATE_VERSION:
                raise JournalError(str(path), 0, f"state version {header.state_version}")
            if before_seq is not None and header.seq >= before_seq:
                raise JournalError(str(path), 0, f"covers seq {header.seq}, past the journal")
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
    root = Path(__file__).resolve().parents[1]
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


class SwitchSender:
    """The sending port of the daemon's engine: nothing leaves while the journal's history
    is applied (``target`` None), then everything goes to ``target``."""

    def __init__(self) -> None:
        self.target: OrderSender | None = None
        self.held = 0

    def submit(self, order: OrderRequest) -> None:
        if self.target is None:
            self.held += 1
        else:
            self.target.submit(order)

    def cancel(self, request: CancelRequest) -> None:
        if self.target is None:
            self.held += 1
        else:
            self.target.cancel(request)


# the composition


def build_router(config: Config, sender: QueueSender | None) -> OrderRouter:
    """The router of the config's mode (``sender`` is the live mode's queue)."""
    if config.mode == "paper":
        sim = config.venue.sim
        return SimulatedVenue(sim.latency_ns, sim.fee_bps, sim.maker_fee_bps)
    if config.mode == "live":
        assert sender is not None
        return SendOnly(sender)
    return SendOnly(ShadowSender())


def build_live_engine(
    config: Config,
    router: OrderRouter,
    *,
    order_id_prefix: str,
    strategy: Strategy | None = None,
    pins: ModelPins | None = None,
) -> Engine:
    """The engine a config describes, with the daemon's settings (``engine.assembly``):
    receive time as the time axis, not strict, order timeouts in ``live`` mode, the
    model monitor attached and, for a registry model with ``[registry]
    shadow_challenger``, the challenger scored in shadow beside it, so the replay of a
    journal builds exactly the same engine.

    Args:
        pins: the registry versions to run (``session_pins``; the replay of a session
            passes the ones it recorded); None: what the aliases name now.

    Raises:
        ConfigError, PluginLoadError, ModelError, RegistryError: before any socket opens.
    """
    engine, _monitor = build_engine(
        config, router, live=True, order_id_prefix=order_id_prefix, strategy=strategy, pins=pins
    )
    challenger = pins.challenger if pins is not None else _challenger_version(config)
    if challenger and config.registry.shadow_challenger:
        attach_challenger(engine, config, challenger)
    return engine


def _challenger_version(config: Config) -> str:
    """The registry's challenger now ("" when the config has no registry or the alias is
    unset: nothing to score in shadow)."""
    if config.model is None or config.model.registry is None:
        return ""
    try:
        return resolve_version(config.model.registry, "challenger").version
    except TradeloopError as exc:
        if "is not set" not in str(exc):
            raise
        return ""


def session_pins(config: Config) -> ModelPins | None:
    """What the config's registry aliases name now, resolved once at start: the session
    runs these versions and records them, so its replay runs them too (None: no registry).

    Raises:
        RegistryError, AuditChainError: as ``resolve_model_config``.
    """
    _, source = resolve_model_config(config)
    if source is None:
        return None
    challenger = _challenger_version(config) if config.registry.shadow_challenger else ""
    return ModelPins(version=source.version, stage=source.stage, challenger=challenger)


def model_switcher(config: Config, pins: ModelPins | None = None) -> ModelSwitcher | None:
    """The switcher of a registry model's config (None: the model cannot be switched).
    ``pins``: the versions the engine was built with (``build_live_engine``'s)."""
    if config.model is None or config.model.registry is None:
        return None
    return ModelSwitcher(config, pins)


class _WarmUpStrategy(Strategy):
    """Asks for the same signals as the real strategy and does nothing with them."""

    name = "warm_up"

    def __init__(self, thresholds: Sequence[float]) -> None:
        super().__init__(NoParams())
        self._thresholds = tuple(thresholds)

    def thresholds(self) -> Sequence[float]:
        return self._thresholds


def warm_up(config: Config, thresholds: Sequence[float]) -> None:
    """Run one quote and one trade per instrument through a throwaway engine of the same
    config, so numba compiles (or loads from its cache) every kernel before the first
    real tick: a first order must not wait a second for the compiler."""
    n = len(config.instruments)
    index = np.arange(n, dtype=np.int32)
    ts = np.arange(1, n + 1, dtype=np.int64)
    price = np.full(n, 100.0)
    size = np.ones(n)
    batch = TickBatch.merge(
        TickBatch.quotes(ts, ts, index, price, price + 1.0, size, size),
        TickBatch.trades(ts, ts, index, price, size, np.ones(n, np.int8)),
    )
    router = build_router(config, None) if config.mode == "paper" else SendOnly(ShadowSender())
    engine = build_live_engine(
        config, router, order_id_prefix="warm-up", strategy=_WarmUpStrategy(thresholds)
    )
    engine.process_batch(batch)
    engine.advance_to(int(ts[-1]) + 1)


# feed health, decided from the stream alone (so a replay journals nothing new)


class FeedMonitor:
    """Tracks whether market data is flowing, per instrument.

    Args:
        symbols: instruments in dense-index order.
        max_age_ns: per instrument, the quote age that counts as a lost feed (None: none).
        start_ns: the session's first clock reading (an instrument that never quoted is
            stale ``max_age`` after it).
    """

    def __init__(
        self, symbols: tuple[str, ...], max_age_ns: list[int | None], start_ns: int
    ) -> None:
        self.symbols = symbols
        self.max_age_ns = max_age_ns
        self.start_ns = start_ns
        self.lost = False
        self.connected = True
        self._awaiting: set[int] = set()

    def on_market_data(self, batch: TickBatch) -> FeedStatus | None:
        """``restored`` once every instrument quoted since a loss (nothing to do, and no
        cost, while the feed is fine: staleness is read from the engine at heartbeats)."""
        if not self.lost:
            return None
        quotes = batch.kind == QUOTE
        if not quotes.any():
            return None
        self._awaiting.difference_update(np.unique(batch.instrument[quotes]).tolist())
        if self._awaiting or not self.connected:
            return None
        self.lost = False
        return FeedStatus(status="restored", reason="a fresh quote for every instrument")

    def on_connection(self, connected: bool, reason: str) -> FeedStatus | None:
        self.connected = connected
        if connected:
            return None
        return self._lose("lost", f"broker connection lost: {reason}")

    def on_overflow(self, dropped: int) -> FeedStatus:
        status = self._lose("overflow", f"inbound queue overflow: {dropped} messages dropped")
        return replace(status, dropped=dropped)

    def check(
        self, now_ns: int, quote_ns: npt.NDArray[np.int64], claim_cleared: bool
    ) -> FeedStatus | None:
        """At a heartbeat: ``lost`` when a quote is too old (``quote_ns``: receive time of
        each instrument's last quote, 0 if none), or again when the feed is still lost but
        an operator's resume cleared the engine's data-loss claim."""
        if self.lost:
            if claim_cleared:
                return FeedStatus(status="lost", reason="market data still lost after resume")
            return None
        stale = [
            self.symbols[i]
            for i, age in enumerate(self.max_age_ns)
            if age is not None and now_ns - max(int(quote_ns[i]), self.start_ns) > age
        ]
        if not stale:
            return None
        return self._lose("lost", f"no quote within max_quote_age for {', '.join(stale)}")

    def _lose(self, status: str, reason: str) -> FeedStatus:
        self.lost = True
        self._awaiting = set(range(len(self.symbols)))
        if status == "overflow":
            return FeedStatus(status="overflow", reason=reason)
        return FeedStatus(status="lost", reason=reason)


# the decisions log


class DecisionLog:
    """Every decision the engine emits (signals, orders, cancels, risk refusals, state
    changes, alarms), one JSON event per line: what a parity check compares."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._codec = EventCodec("json")
        self._file: IO[bytes] = path.open("ab")
        self.lines = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, DECISION_TYPES):
            self._file.write(self._codec.encode(event) + b"\n")
            self.lines += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


# the core: journal, then apply (no asyncio, no broker)


class LiveCore:
    """Journals and applies the input stream, one turn at a time.

    Args:
        engine: the engine.
        journal: the open journal writer.
        feed: the feed-health tracker.
        metrics: the daemon's metrics.
        sender: the live mode's queue (dropped orders become inputs), else None.
    """

    def __init__(
        self,
        engine: Engine,
        journal: FileJournalWriter,
        feed: FeedMonitor,
        metrics: DaemonMetrics,
        sender: QueueSender | None = None,
        switcher: ModelSwitcher | None = None,
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.feed = feed
        self.metrics = metrics
        self.sender = sender
        self.switcher = switcher
        # promote/rollback commands applied this turn: the daemon carries them out
        self.model_commands: list[Command] = []
        # called after each input is applied (the explanation collector's boundary)
        self.after_input: Callable[[], None] | None = None
        self.counters: Counter[str] = Counter()
        self.last_ts = 0
        self.dirty = False  # a fill or a state change since the last status
        self.reconnected = False  # the session came back since the daemon last looked

    def handle(self, items: list[Inbound]) -> None:
        """One turn over inbox items: journal all, commit, apply all in order."""
        inputs: list[tuple[int, InputBody, str]] = []
        run: list[MarketData] = []
        for item in items:
            if isinstance(item, MarketData):
                run.append(item)
                continue
            if run:
                self._inputs_of(_merged(run), inputs)
                run.clear()
            self._inputs_of(item, inputs)
        if run:
            self._inputs_of(_merged(run), inputs)
        self._run(inputs)

    def heartbeat(self, ts_ns: int) -> None:
        """A clock reading (and what the feed's health says at it), journaled and applied."""
        ts = max(ts_ns, self.last_ts)
        claim_cleared = self.engine.risk.trading.claim("data_loss") == "ACTIVE"
        inputs: list[tuple[int, InputBody, str]] = [(ts, None, "clock")]
        # the engine runs on receive time: its last quote stamps are receive times
        lost = self.feed.check(ts, self.engine.market.quote_ts, claim_cleared)
        if lost is not None:
            inputs.append((ts, lost, "feed"))
        self._run(inputs)
        self._timed(self.journal.sync)  # market data of an idle stretch is synced too

    def inject(self, ts_ns: int, body: InputBody, kind: str) -> None:
        """An input the daemon makes itself (stop, outbox overflow), journaled first."""
        self._run([(max(ts_ns, self.last_ts), body, kind)])

    def inject_all(self, inputs: list[tuple[int, InputBody, str]]) -> None:
        """Inputs the daemon makes itself (reconciliation), journaled, committed, applied."""
        self._run([(max(ts, self.last_ts), body, kind) for ts, body, kind in inputs])

    def _inputs_of(self, item: Inbound, out: list[tuple[int, InputBody, str]]) -> None:
        floor = self.last_ts
        ts = item.ts_recv
        if ts < floor:
            self.counters["receive_time_clamped"] += 1
            ts = floor
        self.last_ts = ts
        match item:
            case MarketData():
                batch = item.batch
                if int(batch.ts_recv[0]) < floor:
                    batch = replace(batch, ts_recv=np.maximum(batch.ts_recv, floor))
                out.append((ts, batch, "market_data"))
                restored = self.feed.on_market_data(batch)
                if restored is not None:
                    out.append((ts, restored, "feed"))
            case ReportIn():
                out.append((ts, item.report, "report"))
            case CommandIn():
                out.append((ts, item.command, "command"))
            case Connection():
                self.metrics.broker_connected.set(1 if item.connected else 0)
                log.warning("broker %s: %s", "connected" if item.connected else "lost",
                            item.reason)  # fmt: skip
                if item.connected and item.reason == "reconnected":
                    self.reconnected = True
                status = self.feed.on_connection(item.connected, item.reason)
                if status is not None:
                    out.append((ts, status, "feed"))
            case Overflow():
                self.counters["overflow_dropped"] += item.dropped_messages
                out.append((ts, self.feed.on_overflow(item.dropped_messages), "feed"))

    def _run(self, inputs: list[tuple[int, InputBody, str]]) -> None:
        journal = self.journal
        for ts, body, _ in inputs:
            if body is None:
                self._timed(journal.append_clock, ts)
            else:
                self._timed(journal.append, ts, body)
        self._timed(journal.commit)
        engine = self.engine
        sender = self.sender
        for ts, body, kind in inputs:
            self.last_ts = max(self.last_ts, ts)
            if sender is not None:
                sender.trigger = kind
            apply_input(engine, ts, body, self.switcher)
            if self.after_input is not None:
                self.after_input()
            if isinstance(body, Command) and body.action in MODEL_COMMANDS:
                self.model_commands.append(body)
        if sender is not None:
            sender.trigger = ""
            dropped = sender.take_dropped()
            if dropped:
                self._dropped(dropped)

    def _dropped(self, orders: list[OrderRequest]) -> None:
        ts = self.last_ts
        inputs: list[tuple[int, InputBody, str]] = []
        for order in orders:
            self.metrics.orders.labels("dropped").inc()
            inputs.append((ts, OrderRejected(ts_event=ts, ts_recv=ts,
                                             client_order_id=order.client_order_id,
                                             reason="not sent: outbox full"), "report"))  # fmt: skip
        inputs.append((ts, Command(ts_event=ts, ts_recv=ts, action="reduce_only", issuer="daemon",
                                   reason=f"outbox full: {len(orders)} orders not sent"), "command"))  # fmt: skip
        self._run(inputs)

    def _timed(self, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        before = self.journal.fsyncs
        t0 = time.perf_counter()
        result = call(*args, **kwargs)
        if self.journal.fsyncs != before:
            self.metrics.journal_fsync.observe(time.perf_counter() - t0)
        return result

    def on_event(self, event: Event) -> None:
        """Engine sink: note what changes the status."""
        if isinstance(event, Fill | TradingState):
            self.dirty = True

    def book(self) -> tuple[list[float], list[float]]:
        """Positions and PnL (realized + unrealized, net of fees) per instrument."""
        e = self.engine
        mids = e.market.mids()
        unrealized = np.nan_to_num(e.portfolio.unrealized(mids))
        return e.portfolio.positions.tolist(), (e.portfolio.realized + unrealized).tolist()


def _merged(run: list[MarketData]) -> MarketData:
    """Consecutive market-data items of one turn as one micro-batch (arrival order kept):
    under load the loop catches up in larger batches, one journal record and one pass of
    the kernels each; batch invariance makes the split irrelevant to decisions."""
    if len(run) == 1:
        return run[0]
    return MarketData(
        batch=TickBatch.concat([m.batch for m in run]),
        ts_recv=run[-1].ts_recv,
        messages=sum(m.messages for m in run),
    )


# the session the daemon talks to (``adapters.mqtt.session.MqttSession``; a fake in tests)


class LiveSession(Protocol):
    inbox: asyncio.Queue[Inbound]
    counters: Counter[str]

    async def publish_order(self, order: OrderRequest | CancelRequest) -> None: ...
    def publish_order_now(self, order: OrderRequest | CancelRequest) -> bool: ...
    async def publish_status(self, payload: bytes) -> None: ...
    def outbox_empty(self) -> bool: ...
    async def flush(self, timeout_s: float) -> bool: ...


SessionFactory = Callable[
    [MqttSettings, Topics, InstrumentTable, Callable[[], int], bytes, CommandGuard],
    contextlib.AbstractAsyncContextManager[LiveSession],
]


ReconcileFetch = Callable[[int, float], Awaitable[OmsSnapshot]]
"""Asks the OMS for its snapshot: fills since a time (ns), with a timeout per request (s).
Raises ``AdapterError``."""


def mqtt_session(
    settings: MqttSettings,
    topics: Topics,
    instruments: InstrumentTable,
    receive_clock: Callable[[], int],
    will_payload: bytes,
    command_guard: CommandGuard,
) -> contextlib.AbstractAsyncContextManager[LiveSession]:
    """The real session: ``MqttSession`` over aiomqtt."""
    return MqttSession(
        settings, topics, instruments, receive_clock=receive_clock, will_payload=will_payload,
        command_guard=command_guard,
    )  # fmt: skip


def _env(name: str | None, where: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(where, f"environment variable {name} is not set")
    return value


def mqtt_settings(config: Config) -> MqttSettings:
    """``MqttSettings`` from ``[mqtt]`` and ``[live]``, secrets from the environment.

    Raises:
        ConfigError: a named environment variable is not set.
    """
    m = config.mqtt
    key = os.environ.get(config.live.command_key_env)
    if not key:
        log.warning("no command key in $%s: every operator command will be refused",
                    config.live.command_key_env)  # fmt: skip
    return MqttSettings(
        host=m.host,
        port=m.port,
        username=_env(m.username_env, "mqtt.username_env"),
        password=_env(m.password_env, "mqtt.password_env"),
        client_id=m.client_id or f"tradeloop-{config.live.node}",
        tls=m.tls,
        ca_file=m.ca_file,
        cert_file=m.cert_file,
        key_file=m.key_file,
        format=m.format,
        market_data_qos=m.market_data_qos,
        max_payload_bytes=m.max_payload_bytes,
        inbox_size=m.inbox_size,
        outbox_size=m.outbox_size,
        keepalive_s=max(1, parse_duration_ns(m.keepalive) // 1_000_000_000),
        reconnect_min_s=parse_duration_ns(m.reconnect_min) / 1e9,
        reconnect_max_s=parse_duration_ns(m.reconnect_max) / 1e9,
        command_key=key.encode() if key else None,
    )


@dataclass
class SessionFiles:
    """What a session leaves next to the journal besides the journal itself."""

    session_id: str
    config: Path
    manifest: Path
    decisions: Path


def write_session_files(
    config: Config, config_bytes: bytes, directory: Path, session_id: str, start_ns: int,
    order_id_prefix: str, *, first_seq: int | None = None, extra: dict[str, object] | None = None,
) -> SessionFiles:  # fmt: skip
    """``session-{id}.toml`` (the config that ran, byte for byte) and ``session-{id}.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = SessionFiles(
        session_id=session_id,
        config=directory / f"session-{session_id}.toml",
        manifest=directory / f"session-{session_id}.json",
        decisions=directory / f"decisions-{session_id}.jsonl",
    )
    files.config.write_bytes(config_bytes)
    started = dt.datetime.fromtimestamp(start_ns / 1e9, dt.UTC)
    manifest: dict[str, object] = {
        "session_id": session_id,
        "mode": config.mode,
        "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
        "config_file": files.config.name,
        "decisions_file": files.decisions.name,
        "start_ns": start_ns,
        "start_utc": started.isoformat(timespec="milliseconds"),
        "order_id_prefix": order_id_prefix,
        "node": config.live.node,
        "account": config.live.account,
        "version": tradeloop_version(),
    }
    if first_seq is not None:
        manifest["first_seq"] = first_seq
    manifest.update(extra or {})
    files.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    return files


_SwitchResult = tuple[ModelSwitch, PreparedModel | None] | None
"""What a switch job found: the record to journal and, unless refused, the prepared model
(None: nothing to switch)."""


def _model_status(
    role: str, model: str, version: str, stage: str, monitor: ModelMonitor
) -> ModelStatus:
    fig = monitor.latest()
    return ModelStatus(role=role, model=model, version=version, stage=stage, ic=fig["ic"],
                       hit_ratio=fig["hit_ratio"], scored=int(fig["scored"]),
                       alarms={k: int(v) for k, v in fig["alarms"].items()})  # fmt: skip


def _challenger_label(shadow: ChallengerShadow) -> str:
    return f"{shadow.model.name}@{shadow.version[:12]} (challenger)"


class Daemon:
    """One live session: composition, the loop, a graceful stop.

    Build with ``Daemon.create``; run with ``run``.
    """

    def __init__(
        self,
        config: Config,
        config_bytes: bytes,
        *,
        receive_clock: Callable[[], int],
        session_factory: SessionFactory,
        reconcile_fetch: ReconcileFetch | None = None,
        explain: bool | None = None,
    ) -> None:
        if config.mode not in LIVE_MODES:
            raise ConfigError(
                "mode", f"tradeloop run needs shadow, paper or live, got {config.mode!r}"
            )
        self.config = config
        self.config_bytes = config_bytes
        self.receive_clock = receive_clock
        self.session_factory = session_factory
        self.settings = mqtt_settings(config)  # secrets checked before anything starts
        self.start_ns = receive_clock()
        self.session_id = new_session_id(self.start_ns)
        self.order_id_prefix = f"{config.live.node}-{self.session_id}"
        self.topics = Topics(config.mqtt.topic_prefix, config.live.node, config.live.account)
        self.latencies_ns: deque[int] = deque(maxlen=_LATENCY_SAMPLES)
        self._wall = LiveClock().now_ns  # publish times for metrics, never the engine's
        self.sender = (
            QueueSender(config.mqtt.outbox_size, wall_clock=self._wall,
                        on_published=self._published)
            if config.mode == "live" else None
        )  # fmt: skip
        # nothing leaves while the journal's history is applied (paper: the venue is ours)
        self.switch = SwitchSender()
        router = build_router(config, None) if config.mode == "paper" else SendOnly(self.switch)
        # the registry versions this session runs, resolved once and recorded in the
        # session file, so its replay runs them whatever the aliases name by then
        self.pins = session_pins(config)
        self.switcher = model_switcher(config, self.pins)
        self.engine = build_live_engine(
            config, router, order_id_prefix=self.order_id_prefix, pins=self.pins
        )
        # (alias -> (version, stage)) the engine runs now, followed through ModelSwitched
        self.models: dict[str, tuple[str, str]] = {}
        if self.pins is not None:
            self.models["champion"] = (self.pins.version, self.pins.stage)
            if self.pins.challenger and self.switcher is not None:
                found = resolve_version(self.switcher.registry, self.pins.challenger)
                self.models["challenger"] = (self.pins.challenger, found.stage)
        self.engine.sinks.append(self._on_model_switched)
        # ``[live] explain`` unless the caller decides (tests, benchmarks)
        self.explain = config.live.explain if explain is None else explain
        self.explainer: ExplanationWorker | None = None
        self.collector: ExplanationCollector | None = None
        self._switch_queue: deque[tuple[str, Callable[[], _SwitchResult]]] = deque()
        self._switch_task: asyncio.Task[None] | None = None
        self._switch_results: deque[tuple[str, _SwitchResult]] = deque()
        self._alias_stats: dict[str, tuple[int, int, int] | None] = {}
        self.model_switches: Counter[str] = Counter()
        self._signals_at_start = 0
        self.ledger = FillLedger()
        self.claims = ClaimHolder(self.engine)
        # remembers every command the engine applies, the rebuild's too: a copy of one
        # applied before a restart is refused as a duplicate
        self.command_guard = CommandGuard(config.live.command_max_age_ns)
        self.engine.sinks += [self.ledger, self.claims, self.command_guard]
        self.reconcile_fetch = reconcile_fetch
        # orders the OMS has and we never sent: flagged (an Alarm) or adopted as ours
        self.external_orders: ExternalOrders = config.live.external_orders
        self.reconcile_timeout_s = config.live.reconcile_timeout_s
        self.reconcile_retry_s = config.live.reconcile_retry_s
        self.history = History()
        self.config_sha256 = hashlib.sha256(config_bytes).hexdigest()
        # a snapshot holds pickled objects of this build's classes: valid only for the same
        # config and the same code (a daemon upgraded between stop and start replays)
        # ... and for the same registry versions (a snapshot holds the models' state)
        pinned = "" if self.pins is None else (
            f":{self.pins.version}:{self.pins.stage}:{self.pins.challenger}"
        )  # fmt: skip
        self.snapshot_key = snapshot_key(self.config_sha256 + pinned, type(self.engine.strategy))
        self.rebuild_ms = 0
        self.snapshots: Counter[str] = Counter()  # written, failed
        self._first_seq = 1  # the session's first journal record
        self._snapshot_seq = 0  # the last record a snapshot of this session covers
        self._snapshot_at = 0.0  # loop time of that snapshot
        self._snapshot_task: asyncio.Task[None] | None = None
        self.reconciliation: Counter[str] = Counter()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._reconcile_result: tuple[OmsSnapshot | AdapterError, set[str] | None, int] | None = (
            None
        )
        self._reconcile_due: float | None = None
        self._after_reconnect = False  # a reconciliation after a reconnect has not succeeded
        self._reconcile_retries = 0
        self._tasks: asyncio.TaskGroup | None = None
        warm_up(config, self.engine.strategy.thresholds())
        self.metrics = DaemonMetrics(self.engine.instruments.symbols)
        self.heartbeat_seq = 0
        self.metrics_port: int | None = None
        self.files: SessionFiles | None = None
        self.core: LiveCore | None = None
        self.session: LiveSession | None = None  # while connected
        self._status_slot: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._waiting: asyncio.Timeout | None = None

    @classmethod
    def create(
        cls,
        config_path: str | Path,
        *,
        receive_clock: Callable[[], int] | None = None,
        session_factory: SessionFactory | None = None,
        reconcile_fetch: ReconcileFetch | None = None,
        explain: bool | None = None,
    ) -> Daemon:
        """Load and validate the config, resolve plugins and secrets: no I/O beyond reading.

        Without a ``session_factory`` the daemon talks to the broker of the config and
        reconciles over it (``reconcile_fetch`` default); a test's own session
        reconciles only through the ``reconcile_fetch`` it passes.

        Raises:
            ConfigError, PluginLoadError, ModelError: the config cannot run.
        """
        config, _ = load_config(config_path)
        daemon = cls(
            config,
            Path(config_path).read_bytes(),
            receive_clock=receive_clock or ReceiveClock(),
            session_factory=session_factory or mqtt_session,
            reconcile_fetch=reconcile_fetch,
            explain=explain,
        )
        if session_factory is None and reconcile_fetch is None:
            settings, topics = daemon.settings, daemon.topics

            async def fetch(since_ns: int, timeout_s: float) -> OmsSnapshot:
                return await fetch_over_mqtt(settings, topics, since_ns, timeout_s)

            daemon.reconcile_fetch = fetch
        return daemon

    def _published(self, item: Outgoing, trigger: str, published_ns: int) -> None:
        if isinstance(item, OrderRequest):
            self.metrics.orders.labels("published").inc()
            if trigger == "market_data":
                latency = max(0, published_ns - item.ts_event)
                self.latencies_ns.append(latency)
                self.metrics.tick_to_order.observe(latency / 1e9)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; returns the exit code (0 after a clean stop).

        Raises:
            AdapterError: the journal or the broker failed beyond recovery.
        """
        cfg = self.config
        journal_dir = Path(cfg.journal.dir)
        journal = FileJournalWriter(
            journal_dir, session_id=self.session_id, fsync=cfg.journal.fsync
        )
        engine = self.engine
        decisions: DecisionLog | None = None
        try:
            journal.open()  # a torn tail (kill -9 mid-write) is cut and counted here
            t0 = time.perf_counter()
            self.history = rebuild(
                engine, journal_dir, before_seq=journal.next_seq,
                config_sha256=self.snapshot_key, extras=self._snapshot_extras(),
                switcher=self.switcher,
            )  # fmt: skip
            self.rebuild_ms = round((time.perf_counter() - t0) * 1000)
            self._first_seq = journal.next_seq
            self._snapshot_seq = journal.next_seq - 1 if self.history.snapshot_seq else 0
            engine.desk.begin_session(self.order_id_prefix)
            # this session sends from here on: what the start's switch decides (cancels of
            # working orders beyond a lower stage's limit) must reach the OMS, or the desk
            # would believe them sent and never cancel those orders again
            self.switch.target = self.sender if self.sender is not None else ShadowSender()
            if self.pins is not None and self.switcher is not None:
                # the rebuild left the engine on what the last session ran last: this
                # session runs its own versions from its first record on, as a later
                # rebuild does from this session's manifest (not journaled)
                self.switcher.align(engine, self.pins, reason=f"session {self.session_id} start")
                if find_challenger(engine) is None:  # detached: this session scores none
                    self.models.pop("challenger", None)
            self.start_ns = max(self.start_ns, self.history.last_ts)
            self.command_guard.expire(self.start_ns)  # what the rebuild primed and aged out
            self.files = write_session_files(
                cfg, self.config_bytes, journal_dir, self.session_id, self.start_ns,
                self.order_id_prefix, first_seq=journal.next_seq,
                extra={"rebuilt_records": self.history.records,
                       "torn_tails_cut": journal.torn_tails_cut,
                       "torn_bytes_cut": journal.torn_bytes_cut,
                       "snapshot_seq": self.history.snapshot_seq,
                       "snapshots_invalid": self.history.snapshots_invalid,
                       "rebuild_ms": self.rebuild_ms, **self._pins_manifest(),
                       "history_versions": HISTORY_PER_SESSION,
                       "sessions_without_versions": self._sessions_without_versions()},
            )  # fmt: skip
            log.info("session %s starting", self.session_id,
                     extra={"mode": cfg.mode, "order_id_prefix": self.order_id_prefix,
                            "journal": str(journal_dir), "rebuilt_records": self.history.records,
                            "torn_tails_cut": journal.torn_tails_cut})  # fmt: skip
            decisions = DecisionLog(self.files.decisions)
            limits = [lim.max_quote_age_ns for lim in engine.risk.limits]
            feed = FeedMonitor(engine.instruments.symbols, limits, self.start_ns)
            core = self.core = LiveCore(
                engine, journal, feed, self.metrics, self.sender, self.switcher
            )
            core.last_ts = self.history.last_ts
            engine.sinks += [decisions, self.metrics.on_event, core.on_event]
            self._start_explanations(core, journal_dir)
            self.metrics.trading_state.set(0)
            if cfg.live.metrics_port:
                self.metrics_port = self.metrics.serve(cfg.live.metrics_port)
            core.heartbeat(self.start_ns)  # the first clock reading starts the strategy
            self._realign_models(core)
            self._alias_stats = self._stat_aliases()
            will = encode_status(self._status(online=False, state="offline"))
            connected = asyncio.Event()
            main = asyncio.create_task(
                self._connect_and_run(will, core, stop, decisions, connected)
            )
            guard = asyncio.create_task(self._stop_while_connecting(stop, connected, main))
            try:
                await main
            except asyncio.CancelledError:
                if not (stop.is_set() and not connected.is_set()):
                    raise
                # nothing was sent: no order can be working, only the journal to close
                log.warning("session %s stopped before the broker answered", self.session_id)
            finally:
                guard.cancel()
            log.info("session %s stopped", self.session_id, extra=dict(core.counters))
            self._close_explanations()
            self._write_model_summary()
            return 0
        finally:
            self._close_explanations()
            self.metrics.close()
            if decisions is not None:
                decisions.close()
            journal.close()

    async def _connect_and_run(
        self, will: bytes, core: LiveCore, stop: asyncio.Event, decisions: DecisionLog,
        connected: asyncio.Event,
    ) -> None:  # fmt: skip
        engine = self.engine
        async with self.session_factory(self.settings, self.topics, engine.instruments,
                                        self.receive_clock, will,
                                        self.command_guard) as session:  # fmt: skip
            connected.set()
            self.session = session
            self.metrics.watch_session(lambda: session.counters)
            await self._run_session(session, core, stop, decisions)

    @staticmethod
    async def _stop_while_connecting(
        stop: asyncio.Event, connected: asyncio.Event, main: asyncio.Task[None]
    ) -> None:
        """A stop while the session still retries its first connection cancels it (once
        connected, the loop stops gracefully by itself)."""
        await stop.wait()
        if not connected.is_set():
            main.cancel()

    async def _run_session(
        self, session: LiveSession, core: LiveCore, stop: asyncio.Event, decisions: DecisionLog
    ) -> None:
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            background = [
                tasks.create_task(self._publish_statuses(session), name="status-publisher"),
                tasks.create_task(self._watch_stop(stop), name="stop-watcher"),
            ]
            # nothing is published and nothing consumed until the OMS has been asked
            await self._reconcile_at_start(core)
            if self.sender is not None:
                background.append(
                    tasks.create_task(
                        self.sender.drain(
                            session.publish_order, publish_now=session.publish_order_now
                        ),
                        name="order-publisher",
                    )
                )
            self._offer_status(self._status())
            await self._consume(session, core, stop, decisions)
            await self._stop(session, core)
            for task in background:
                task.cancel()
            if self._reconcile_task is not None:
                self._reconcile_task.cancel()

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake()

    def _wake(self) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.expired():  # wake the consumer now
            # a timeout that is expiring (its deadline passed, the consumer not yet
            # resumed) refuses to be rescheduled: the consumer wakes by itself then
            with contextlib.suppress(RuntimeError):
                waiting.reschedule(asyncio.get_running_loop().time())

    # reconciliation (``adapters.reconciliation``): fetched in the background, applied by
    # the consumer between turns, every input journaled

    async def _reconcile_at_start(self, core: LiveCore) -> None:
        if self.config.mode != "live" or self.reconcile_fetch is None:
            return
        if self.history.records == 0:
            # a first session: nothing of ours to check, the OMS may still hold positions
            self._start_reconciliation(asked_open=False)
            return
        t0 = time.perf_counter()
        mark = len(self.ledger.entries)
        try:
            snapshot = await self.reconcile_fetch(
                self.ledger.last_fill_ns, self.reconcile_timeout_s
            )
        except AdapterError as exc:
            self._reconcile_failed(core, exc, halt=True)
            return
        self._apply_snapshot(core, snapshot, None, mark)
        self.reconciliation["start_ms"] = round((time.perf_counter() - t0) * 1000)

    def _start_reconciliation(self, *, asked_open: bool) -> None:
        fetch = self.reconcile_fetch
        if fetch is None or self._tasks is None or self._reconcile_task is not None:
            return
        self._reconcile_due = None
        asked = (
            {o.client_order_id for o in self.engine.orders.open_orders()} if asked_open else None
        )
        mark = len(self.ledger.entries)
        since = self.ledger.last_fill_ns

        async def run() -> None:
            result: OmsSnapshot | AdapterError
            try:
                result = await fetch(since, self.reconcile_timeout_s)
            except AdapterError as exc:
                result = exc
            self._reconcile_result = (result, asked, mark)
            self._reconcile_task = None
            self._wake()

        self._reconcile_task = self._tasks.create_task(run(), name="reconciliation")

    def _finish_reconciliation(self, core: LiveCore) -> None:
        assert self._reconcile_result is not None
        result, asked, mark = self._reconcile_result
        self._reconcile_result = None
        if isinstance(result, AdapterError):
            # after a reconnect nobody knows what became of the orders in flight: an OMS
            # that does not answer halts trading as at a restart, and is asked again until
            # it does (a fresh feed alone must not bring back ACTIVE on a wrong position)
            self._reconcile_failed(core, result, halt=self._after_reconnect)
        else:
            self._apply_snapshot(core, result, asked, mark)

    def _reconcile_failed(self, core: LiveCore, error: AdapterError, *, halt: bool) -> None:
        self.reconciliation["failed"] += 1
        log.error("reconciliation: %s", error)
        if halt and not self.claims.held_by_reconciliation():
            ts = max(self.receive_clock(), core.last_ts)
            core.inject(ts, unanswered(error, ts), "command")
        if self.claims.held_by_reconciliation() or self._reconcile_retries < 3:
            self._reconcile_retries += 1
            self._reconcile_due = asyncio.get_running_loop().time() + self.reconcile_retry_s

    def _apply_snapshot(
        self, core: LiveCore, snapshot: OmsSnapshot, asked: set[str] | None, mark: int
    ) -> None:
        engine = self.engine
        ts = max(self.receive_clock(), core.last_ts)
        fills = missed_fills(self.ledger, snapshot)
        adopted = adoptions(engine, snapshot, fills) if self.external_orders == "adopt" else []
        if adopted:  # before the fills: an adopted order's fills then find their order
            core.inject_all([(ts, external, "adopt") for external in adopted])
        if fills:
            core.inject_all([(ts, fill, "report") for fill in fills])
        reports = order_reports(engine, snapshot, ts, asked=asked, external=self.external_orders)
        if reports:
            core.inject_all([(ts, report, "report") for report in reports])
        known = {fill.fill_id for fill in snapshot.fills}
        differences = position_differences(engine, snapshot, self.ledger.booked_after(mark, known))
        command = verdict(differences, self.claims, ts)
        if command is not None:
            core.inject(ts, command, "command")
        self._reconcile_retries = 0
        self._after_reconnect = False
        counts = self.reconciliation
        counts["runs"] += 1
        counts["missed_fills"] += len(fills)
        counts["adopted"] += len(adopted)
        counts["order_reports"] += len(reports)
        counts["position_differences"] += len(differences)
        log.info("reconciliation: %d missed fills applied, %d order reports, %d position "
                 "differences", len(fills), len(reports), len(differences),
                 extra={"reads": snapshot.reads, "verdict": command.action if command else ""})  # fmt: skip
        if self.claims.held_by_reconciliation():
            self._reconcile_due = asyncio.get_running_loop().time() + self.reconcile_retry_s

    async def _consume(
        self, session: LiveSession, core: LiveCore, stop: asyncio.Event, decisions: DecisionLog
    ) -> None:
        inbox = session.inbox
        loop = asyncio.get_running_loop()
        period = self.config.live.heartbeat_ns / 1e9
        next_beat = loop.time() + period
        items: list[Inbound] = []
        while not stop.is_set():
            if self._reconcile_result is not None:
                self._finish_reconciliation(core)
            if self._switch_results:
                self._finish_switches(core)
            if core.reconnected:  # reports sent while we were away are lost: ask the OMS
                core.reconnected = False
                if self._reconcile_task is not None:  # asked over the lost connection
                    self._reconcile_task.cancel()
                    self._reconcile_task = None
                self._after_reconnect = True
                self._start_reconciliation(asked_open=True)
            while len(items) < MAX_TURN_ITEMS:
                try:
                    items.append(inbox.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if items:
                core.handle(items)
                items.clear()
                self._after_turn(core)
                await asyncio.sleep(0)  # the publisher and the broker's reader run now
            now = loop.time()
            if now >= next_beat:
                self._heartbeat(core, decisions)
                next_beat = max(next_beat + period, now)
                if self._reconcile_due is not None and now >= self._reconcile_due:
                    self._start_reconciliation(asked_open=True)
                continue
            if inbox.empty() and not stop.is_set():
                try:
                    async with asyncio.timeout_at(next_beat) as waiting:
                        self._waiting = waiting
                        items.append(await inbox.get())
                except TimeoutError:
                    pass
                finally:
                    self._waiting = None

    def _after_turn(self, core: LiveCore) -> None:
        # the turn's orders are in the outbox now: only then are its signals explained
        self._hand_explanations()
        if core.model_commands:
            for command in core.model_commands:
                self._queue_switch("command", functools.partial(self._command_switch, command))
            core.model_commands.clear()
        if core.dirty:
            self._offer_status(self._status())

    def _heartbeat(self, core: LiveCore, decisions: DecisionLog) -> None:
        core.heartbeat(self.receive_clock())
        self._maybe_snapshot(core)
        self.heartbeat_seq += 1
        positions, pnl = core.book()
        self.metrics.set_book(positions, pnl)
        self._publish_monitors()
        self._poll_aliases()
        decisions.flush()
        self._offer_status(self._status())

    def _status(self, *, online: bool = True, state: str | None = None) -> Status:
        e = self.engine
        if self.core is not None:
            positions, pnl = self.core.book()
            self.core.dirty = False
        else:
            positions, pnl = [0.0] * len(e.instruments), [0.0]
        return Status(
            node=self.config.live.node,
            mode=self.config.mode,
            state=state or e.risk.state,
            online=online,
            ts_ns=e.clock.now_ns(),
            positions=dict(zip(e.instruments.symbols, positions)),
            pnl=float(sum(pnl)),
            heartbeat_seq=self.heartbeat_seq,
            models=self._model_statuses(),
        )

    def _model_statuses(self) -> list[ModelStatus]:
        """Champion and challenger monitor figures for the status (what the monitors hold,
        nothing recomputed)."""
        engine = self.engine
        out: list[ModelStatus] = []
        monitor = next((o for o in engine.observers if isinstance(o, ModelMonitor)), None)
        if monitor is not None and engine.model is not None:
            stage = self.models.get("champion", ("", ""))[1]
            out.append(_model_status("champion", engine.model.name, engine.model_version,
                                     stage, monitor))  # fmt: skip
        shadow = find_challenger(engine)
        if shadow is not None and shadow.monitor is not None:
            stage = self.models.get("challenger", ("", ""))[1]
            out.append(_model_status("challenger", shadow.model.name, shadow.version, stage,
                                     shadow.monitor))  # fmt: skip
        return out

    def _offer_status(self, status: Status) -> None:
        payload = encode_status(status)
        slot = self._status_slot
        if slot.full():  # only the newest status matters
            slot.get_nowait()
        slot.put_nowait(payload)

    async def _publish_statuses(self, session: LiveSession) -> None:
        while True:
            payload = await self._status_slot.get()
            await session.publish_status(payload)

    async def _stop(self, session: LiveSession, core: LiveCore) -> None:
        """Stop new orders, cancel open ones, flush, say goodbye."""
        cfg = self.config.live
        deadline = asyncio.get_running_loop().time() + parse_duration_ns(cfg.shutdown_timeout) / 1e9
        ts = self.receive_clock()
        if cfg.cancel_on_stop:
            core.inject(ts, Command(ts_event=ts, ts_recv=ts, action="kill", issuer="daemon",
                                    reason=SHUTDOWN_REASON), "command")  # fmt: skip
        loop = asyncio.get_running_loop()
        if self.sender is not None and not await self.sender.wait_empty(
            max(0.0, deadline - loop.time())
        ):
            log.error("shutdown: %d orders/cancels not published", len(self.sender))
        # reports that arrived meanwhile (cancel acks) are journaled and applied too
        items: list[Inbound] = []
        while True:
            try:
                items.append(session.inbox.get_nowait())
            except asyncio.QueueEmpty:
                break
        if items:
            core.handle(items)
            self._hand_explanations()
        # the goodbye goes straight out, after every status still waiting
        with contextlib.suppress(asyncio.QueueEmpty):
            self._status_slot.get_nowait()
        await session.publish_status(encode_status(self._status(online=False, state="offline")))
        if not await session.flush(max(0.0, deadline - loop.time())):
            log.error("shutdown: the outbox did not drain in %s", cfg.shutdown_timeout)
        core.journal.sync()
        self._maybe_snapshot(core, final=True)

    # model governance: the registry versions the session runs, switches at journaled
    # points (an operator's command, or an alias changed by hand), and the side-by-side
    # figures of champion and challenger

    def _publish_monitors(self) -> None:
        """Both models' monitor figures on Prometheus. A registry model's are labelled by
        version and role (``name@version``, ``name@version (challenger)``): each label then
        has one monitor for good (``ModelSwitcher`` keeps a version's monitor across
        switches, and a snapshot restores them), so a label's counters follow one
        monitor; ``publish_monitor`` starts a new baseline if a label's monitor is ever
        replaced or reset."""
        engine = self.engine
        if self.pins is None:
            publish_engine_monitors(self.metrics, engine)
            return
        model = engine.model
        monitor = next((o for o in engine.observers if isinstance(o, ModelMonitor)), None)
        if monitor is not None and model is not None:
            label = f"{model.name}@{engine.model_version[:12]}"
            publish_monitor(self.metrics, monitor, label=label)
        shadow = find_challenger(engine)
        if shadow is not None and shadow.monitor is not None:
            publish_monitor(self.metrics, shadow.monitor, label=_challenger_label(shadow))

    def _pins_manifest(self) -> dict[str, object]:
        pins = self.pins
        if pins is None:
            return {}
        return {"model_version": pins.version, "model_stage": pins.stage,
                "challenger_version": pins.challenger}  # fmt: skip

    def _sessions_without_versions(self) -> int:
        return len(self.switcher.sessions_without_versions) if self.switcher is not None else 0

    def _on_model_switched(self, event: Event) -> None:
        if isinstance(event, ModelSwitched):
            self.models[event.alias] = (event.version, event.stage)

    def _realign_models(self, core: LiveCore) -> None:
        """After the rebuild and the session-start ``align`` (which already put the
        engine on this session's versions, unjournaled, from its manifest): a journaled
        switch back only if the engine still runs another version (kept as a guard; a
        session of an older daemon journaled these switches, and they replay as
        recorded)."""
        pins = self.pins
        if pins is None or self.switcher is None:
            return
        if self.models.get("champion") != (pins.version, pins.stage):
            core.inject(self.start_ns, ModelSwitch(
                alias="champion", version=pins.version, stage=pins.stage, issuer="daemon",
                reason="session start: the version the registry names"), "model_switch")  # fmt: skip
        shadow = find_challenger(self.engine)
        if pins.challenger and (shadow is None or shadow.version != pins.challenger):
            stage = resolve_version(self.switcher.registry, pins.challenger).stage
            core.inject(self.start_ns, ModelSwitch(
                alias="challenger", version=pins.challenger, stage=stage, issuer="daemon",
                reason="session start: the version the registry names"), "model_switch")  # fmt: skip

    def _queue_switch(self, origin: str, job: Callable[[], _SwitchResult]) -> None:
        """Run ``job`` (load and check a version, write the registry) on a worker thread,
        one at a time, in the order asked; the consumer journals what it found."""
        self._switch_queue.append((origin, job))
        self._next_switch()

    def _next_switch(self) -> None:
        if self._switch_task is not None or not self._switch_queue or self._tasks is None:
            return
        origin, job = self._switch_queue.popleft()

        async def run() -> None:
            try:
                result = await asyncio.to_thread(job)
            finally:
                self._switch_task = None
            self._switch_results.append((origin, result))
            self._wake()

        self._switch_task = self._tasks.create_task(run(), name="model-switch")

    def _command_switch(self, command: Command) -> _SwitchResult:
        """A ``promote``/``rollback`` command, on a worker thread: the version is loaded and
        checked first, and only then is the registry's audit entry written (who and why
        from the signed command), so a version that fails changes nothing anywhere."""
        switcher = self.switcher
        target = command.target or ("challenger" if command.action == "promote" else "")
        stage = command.stage if command.stage in STAGES else None
        champion_stage = self.models.get("champion", ("", "shadow"))[1]
        try:
            if switcher is None:
                raise ConfigError("model.registry", "the model is not a registry model")
            if command.stage and stage is None:
                raise ConfigError("stage", f"unknown stage {command.stage!r} ({', '.join(STAGES)})")
            if not command.issuer.strip() or not command.reason.strip():
                raise ConfigError("command", f"{command.action} needs an issuer and a reason "
                                  "(the audit log's who and why)")  # fmt: skip
            registry = Registry(switcher.registry)
            if command.action == "promote":
                prepared = switcher.prepare("champion", target, stage)
                entry = registry.promote(prepared.source.version, alias="champion",
                                         who=command.issuer, reason=command.reason,
                                         stage=stage)  # fmt: skip
            else:
                back = registry.rollback_target("champion")
                prepared = switcher.prepare("champion", back)
                entry = registry.rollback("champion", who=command.issuer,
                                          reason=command.reason, expect=back)  # fmt: skip
            if (entry.version, entry.stage) != (prepared.source.version, prepared.source.stage):
                prepared = switcher.prepare("champion", entry.version, entry.stage)
        except TradeloopError as exc:
            log.error("%s refused: %s", command.action, exc)
            return ModelSwitch(alias="champion", version=target or "rollback",
                               stage=stage or champion_stage,  # type: ignore[arg-type]
                               issuer=command.issuer, reason=command.reason,
                               refused=str(exc)), None  # fmt: skip
        switch = ModelSwitch(alias="champion", version=entry.version, stage=entry.stage,
                             audit_entry_sha256=entry.entry_sha256, issuer=entry.who,
                             reason=entry.reason)  # fmt: skip
        return switch, prepared

    def _alias_switch(self, alias: Alias) -> _SwitchResult:
        """An alias file changed (``tradeloop models promote`` by hand): what it names now,
        loaded and checked, on a worker thread; None when that is what runs already."""
        switcher = self.switcher
        assert switcher is not None
        try:
            found = resolve_version(switcher.registry, alias)
            state = RegistryReader(switcher.registry).state()
            entry = next(e for e in reversed(state.entries) if e.alias == alias)
            if self.models.get(alias, ("", ""))[0] == found.version and (
                alias == "challenger" or self.models[alias][1] == found.stage
            ):
                return None
            prepared = switcher.prepare(alias, found.version, found.stage)
        except TradeloopError as exc:
            log.error("alias %s changed, its version refused: %s", alias, exc)
            stage = self.models.get("champion", ("", "shadow"))[1]
            return ModelSwitch(alias=alias, version="(alias file)", stage=stage,  # type: ignore[arg-type]
                               issuer="registry", reason=f"{alias} changed",
                               refused=str(exc)), None  # fmt: skip
        switch = ModelSwitch(alias=alias, version=found.version, stage=found.stage,
                             audit_entry_sha256=entry.entry_sha256, issuer=entry.who,
                             reason=entry.reason)  # fmt: skip
        return switch, prepared

    def _finish_switches(self, core: LiveCore) -> None:
        while self._switch_results:
            origin, result = self._switch_results.popleft()
            if result is None:
                continue
            switch, prepared = result
            if prepared is not None and self.switcher is not None:
                current = self.models.get(switch.alias)
                if (
                    origin == "alias"
                    and current is not None
                    and current[0] == switch.version
                    and (switch.alias == "challenger" or current[1] == switch.stage)
                ):
                    continue  # a command of ours got there first
                self.switcher.offer(prepared)
            self.model_switches["refused" if switch.refused else "applied"] += 1
            core.inject(max(self.receive_clock(), core.last_ts), switch, "model_switch")
            self._offer_status(self._status())
        self._next_switch()

    def _stat_aliases(self) -> dict[str, tuple[int, int, int] | None]:
        if self.switcher is None:
            return {}
        folder = Path(self.switcher.registry) / ALIASES_DIR
        out: dict[str, tuple[int, int, int] | None] = {}
        for alias in ("champion", "challenger"):
            try:
                st = (folder / alias).stat()
                out[alias] = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                out[alias] = None
        return out

    def _poll_aliases(self) -> None:
        """On the heartbeat: two ``stat`` calls; an alias file that changed (written by
        temp + rename, so a new inode) sends the version it names through the same
        load, check and journaled switch as a command."""
        if self.switcher is None or self._switch_task is not None or self._switch_queue:
            return
        stats = self._stat_aliases()
        for alias in ("champion", "challenger"):
            if stats.get(alias) == self._alias_stats.get(alias) or stats.get(alias) is None:
                continue
            if alias == "challenger" and not self.config.registry.shadow_challenger:
                continue
            self._queue_switch("alias", functools.partial(self._alias_switch, alias))
        self._alias_stats = stats

    def _write_model_summary(self) -> None:
        """Champion and challenger side by side in the session file, at the stop."""
        if self.files is None or self.pins is None:
            return
        engine = self.engine
        monitor = next((o for o in engine.observers if isinstance(o, ModelMonitor)), None)
        figures = monitor.latest() if monitor is not None else {}
        champion = {
            "version": engine.model_version,
            "stage": self.models.get("champion", ("", ""))[1],
            "model": engine.model.name if engine.model is not None else "",
            "signals": engine.counters["signals"] - self._signals_at_start,
            "ic": figures.get("ic"),
            "hit_ratio": figures.get("hit_ratio"),
            "scored": figures.get("scored"),
        }
        shadow = find_challenger(engine)
        summary: dict[str, object] = {"champion": champion,
                                      "switches": dict(self.model_switches)}  # fmt: skip
        if shadow is not None:
            summary["challenger"] = shadow.summary()
        if self.explainer is not None:
            worker = self.explainer
            summary["explanations"] = {
                "written": worker.written, "dropped": worker.dropped, "failed": worker.failed,
                "mean_us": round(worker.seconds / worker.written * 1e6, 1) if worker.written else None,
            }  # fmt: skip
        try:
            doc = json.loads(self.files.manifest.read_text())
            doc["models"] = summary
            self.files.manifest.write_text(json.dumps(doc, indent=2) + "\n")
        except (OSError, ValueError) as exc:
            log.error("session file %s: model summary not written: %s", self.files.manifest, exc)

    def _start_explanations(self, core: LiveCore, journal_dir: Path) -> None:
        self._signals_at_start = self.engine.counters["signals"]
        if not self.explain or self.engine.model is None:
            return
        model_config = self.config.model
        assert model_config is not None
        registry = model_config.registry
        path = model_config.path
        if registry is None and (path is None or model_config.kind != "lightgbm"):
            return  # TreeSHAP explains LightGBM trees; a registry's versions say their kind

        def folder_of(version: str) -> Path:
            if version and registry is not None:
                return RegistryReader(registry).version_dir(version)
            if path is None:
                raise ConfigError("model.path", "no model folder to explain")
            return Path(path)

        self.collector = ExplanationCollector(self.engine)
        self.engine.sinks.append(self.collector)
        core.after_input = self.collector.end_input
        self.explainer = ExplanationWorker(
            explanations_path(journal_dir, self.session_id),
            Explainers(folder_of),
            top=self.config.live.explain_top,
        )

    def _hand_explanations(self) -> None:
        if self.collector is not None and self.explainer is not None:
            jobs = self.collector.take()
            if jobs:
                self.explainer.submit(jobs)

    def _close_explanations(self) -> None:
        if self.explainer is not None:
            self._hand_explanations()
            self.explainer.close()

    # snapshots of the engine's state (``engine.snapshot``): a restart applies only the
    # journal after the newest

    def _snapshot_extras(self) -> dict[str, object]:
        # they follow the engine's inputs (as sinks; the switcher's memory of each
        # version's monitor, through the journaled switches), so their state is part of
        # the rebuild's
        extras: dict[str, object] = {"ledger": self.ledger, "claims": self.claims,
                                     "command_guard": self.command_guard}  # fmt: skip
        if self.switcher is not None:
            extras["models"] = self.switcher.memory
        return extras

    def _maybe_snapshot(self, core: LiveCore, *, final: bool = False) -> None:
        """Capture the state after the journal's last record, if due (``final``: at a
        graceful stop, whenever there is something new), and write it: in a thread while
        the session runs, at once at the stop. Called between turns, when every record
        journaled has been applied, and after the journal was synced."""
        journal = core.journal
        seq = journal.next_seq - 1
        if seq <= self._snapshot_seq:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not final:
            if self._snapshot_task is not None:  # the last one is still being written
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
            payload = capture_state(self.engine, self._snapshot_extras())
        except JournalError as exc:
            self.snapshots["failed"] += 1
            log.error("snapshot of seq %d not taken: %s", seq, exc)
            return
        header = snapshot_header(
            journal, payload,
            records=self.history.records + journal.next_seq - self._first_seq,
            sessions=[*self.history.sessions, self.session_id], ts_recv=core.last_ts,
            config_sha256=self.snapshot_key,
        )  # fmt: skip
        if header is None:
            return
        directory = Path(self.config.journal.dir)
        if final or self._tasks is None:
            self._write_snapshot(directory, header, payload)
            return

        async def write() -> None:
            try:
                await asyncio.to_thread(self._write_snapshot, directory, header, payload)
            finally:
                self._snapshot_task = None

        self._snapshot_task = self._tasks.create_task(write(), name="snapshot-writer")

    def _write_snapshot(self, directory: Path, header: SnapshotHeader, payload: bytes) -> None:
        try:
            path = write_snapshot(directory, header, payload)
        except AdapterError as exc:
            self.snapshots["failed"] += 1
            log.error("snapshot of seq %d not written: %s", header.seq, exc)
            return
        self.snapshots["written"] += 1
        log.info("snapshot %s written (%d bytes)", path.name, header.payload_bytes)


async def run_daemon(
    config_path: str | Path,
    *,
    stop: asyncio.Event | None = None,
    receive_clock: Callable[[], int] | None = None,
    session_factory: SessionFactory | None = None,
    on_ready: Callable[[Daemon], None] | None = None,
    reconcile_fetch: ReconcileFetch | None = None,
    explain: bool | None = None,
) -> int:
    """Run the daemon of ``config_path`` on the running loop until ``stop`` is set (or,
    without ``stop``, until SIGTERM or SIGINT). Returns the exit code.

    Args:
        config_path: the TOML config (mode shadow, paper or live).
        stop: set it to stop the daemon gracefully (in-process use, tests).
        receive_clock: the receive clock (default: wall time made non-decreasing).
        session_factory: builds the session (default: ``MqttSession``; tests pass a fake).
        on_ready: called with the daemon once it is built, before it connects.
        reconcile_fetch: asks the OMS for its snapshot (default: over the config's broker
            when ``session_factory`` is the default, else no reconciliation).
        explain: write an explanation per champion signal (TreeSHAP, off the loop); None:
            as ``[live] explain`` says (the top ``[live] explain_top`` contributions).

    Raises:
        ConfigError, PluginLoadError, ModelError: the config cannot run.
        AdapterError: the journal or broker failed.
    """
    daemon = Daemon.create(
        config_path,
        receive_clock=receive_clock,
        session_factory=session_factory,
        reconcile_fetch=reconcile_fetch,
        explain=explain,
    )
    if on_ready is not None:
        on_ready(daemon)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                continue
            installed.append(sig)
    try:
        return await daemon.run(stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


__all__ = [
    "DECISION_TYPES",
    "HISTORY_PER_SESSION",
    "Daemon",
    "DecisionLog",
    "FeedMonitor",
    "LiveCore",
    "ReceiveClock",
    "apply_input",
    "apply_record",
    "build_live_engine",
    "history_apply",
    "load_snapshot",
    "new_session_id",
    "rebuild",
    "run_daemon",
]
