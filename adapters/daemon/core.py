"""The live core: every input journaled, committed, then applied to the engine in the
journal's order (no asyncio, no broker), and the one way an input reaches the engine, live
and in replay.

The loop and its ordering guarantees
------------------------------------
One task consumes the inbox (``adapters.daemon.run``). A turn takes every item waiting (up
to ``MAX_TURN_ITEMS``), merges consecutive market data into one micro-batch, turns each into
journal inputs, appends them all, calls ``journal.commit()`` (so a report or command is as
durable as the fsync policy asks before anything acts on it), then applies them to the
engine in the same order through ``apply_input``. The heartbeat is a turn of the same task,
taken between item turns, never beside them, so everything that reaches the engine is
serialized in the journal's order:

- ``MarketData`` -> the batch (``engine.process_batch``); after it, if the feed was lost and
  every instrument has quoted since, ``FeedStatus("restored")``.
- ``DepthData`` -> the depth rows (``engine.process_depth``: the book, the venue's queues);
  before them, if they put an instrument's book out of sync (a gap in update ids, a reset),
  ``FeedStatus("lost")``: an out-of-sync book is lost data, under the same claim and the
  same precedence as a lost feed, restored once every book is back in sync (a snapshot)
  and every instrument has quoted since.
- ``ReportIn`` -> the report (``engine.on_report``); ``CommandIn`` -> the command
  (``engine.on_command``), each after ``engine.advance_to(ts_recv)``.
- ``Connection(False)`` -> ``FeedStatus("lost")``; ``Connection(True)`` -> nothing (the
  feed is restored by fresh quotes, not by the connection).
- ``Overflow`` -> ``FeedStatus("overflow")`` (the engine treats it as lost data).
- heartbeat -> a clock record (``engine.advance_to``: timers, order timeouts, cancels
  due again), a ``ClockJump`` if the wall clock jumped since the last one (a critical
  Alarm and ``[live] on_clock_jump``), then ``FeedStatus("lost")`` if an instrument's
  last quote is older than its ``max_quote_age``, or if the feed is still lost after an
  operator's resume cleared the data-loss claim.
- an order the outbox had no room for -> an ``OrderRejected`` report for it and a
  ``reduce_only`` command from issuer ``daemon`` (sticky until an operator resumes).
- stop (SIGTERM/SIGINT) -> a ``kill`` command from issuer ``daemon`` if
  ``live.cancel_on_stop`` (HALTED cancels every open order).
- the journal's disk below ``[journal] min_free_bytes`` at a heartbeat -> a
  ``reduce_only`` command from issuer ``daemon`` whose reason says so (an Alarm, the
  state REDUCE_ONLY, sticky until an operator resumes), once per crossing.

A journal that cannot be written (disk full, I/O error) raises ``JournalFailed``: nothing
more can be acted on, since nothing more can be journaled; the daemon cancels its working
orders without journaling them and exits (``adapters.daemon.run``).

Receive times entering the engine never go backwards: the receive clock
(``ReceiveClock``) runs on the monotonic clock, placed on the wall clock's scale at the
start and never below the journal's last receive time; it is read by the session at
receipt, by the heartbeat and by what the daemon journals itself. An item stamped before
the last applied time (it waited for room in a full inbox) is journaled and applied at
that time (counted, ``receive_time_clamped``).

A replay of the journal applies each record with ``apply_record``: same stream, same
engine, same decisions.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Final, Literal, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from adapters.daemon.disk_watch import DISK_LOW_REASON, DiskWatermark
from adapters.journal_file import FileJournalWriter
from adapters.live_sender import QueueSender
from adapters.metrics import DaemonMetrics
from adapters.mqtt.ingest import (
    CommandIn,
    Connection,
    DepthData,
    Inbound,
    MarketData,
    Overflow,
    ReportIn,
)
from adapters.reconciliation import alarms_of
from engine.assembly import ModelSwitcher
from engine.book.batch import DepthBatch
from engine.book.book import OrderBook
from engine.clock import monotonic_clock_ns, wall_clock_ns
from engine.codec import EventCodec
from engine.config import LiveConfig
from engine.engine import Engine
from engine.errors import AdapterError, ConfigError, TradeloopError
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
    TradingStateName,
)
from engine.journal import (
    AdoptRecord,
    AnyRecord,
    ClockJump,
    ClockJumpRecord,
    ClockRecord,
    CommandRecord,
    DepthRecord,
    ExternalOrder,
    FeedRecord,
    FeedStatus,
    JournalLossRecord,
    MarketDataRecord,
    ModelSwitch,
    ModelSwitchRecord,
    ReportRecord,
    TimerRecord,
)
from engine.ports import ExecutionReport
from engine.ticks import QUOTE, TickBatch

log = logging.getLogger("tradeloop.daemon")
_P = ParamSpec("_P")
_R = TypeVar("_R")

InputBody = (
    TickBatch | DepthBatch | ExecutionReport | Command | FeedStatus | ExternalOrder | ModelSwitch
    | ClockJump | None
)  # fmt: skip
"""One input of the stream: ``None`` is a clock reading."""
ClockJumpPolicy = Literal["alarm", "reduce_only", "halt"]
_DEFAULT_LIVE: Final = LiveConfig()

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


class JournalFailed(AdapterError):
    """The journal could not be written: the daemon may act on nothing more."""


# the receive clock


class ReceiveClock:
    """Receive times on the monotonic clock, placed on the wall clock's scale once.

    The engine runs on receive time: quote ages, order timeouts, timers, the heartbeat's
    feed check and command freshness are differences of these readings, so they are
    measured on the monotonic clock and a wall clock that steps (NTP, a hand-set date)
    moves none of them. A reading is ``monotonic + base``, with ``base`` the wall clock
    minus the monotonic clock when the clock was made (raised by ``continue_from`` so a
    restart never goes back in time from its journal); the readings are what the daemon
    journals, so a replay of the journal sees the very same times.

    The wall clock is read only to place the readings and to watch for jumps: ``jumped``
    compares wall minus monotonic with its value at the last call, and a change beyond
    ``jump_ns`` either way is a ``ClockJump`` the daemon journals (a critical Alarm and
    ``policy``), never followed and never absorbed silently.

    Args:
        wall: the wall-clock source, ns since the epoch (default ``wall_clock_ns``).
        monotonic: the monotonic source, ns (default ``monotonic_clock_ns``).
        jump_ns: the change of wall minus monotonic that is a jump (``[live] clock_jump``).
        policy: what a jump does to the engine's claim (``[live] on_clock_jump``).
    """

    def __init__(
        self,
        wall: Callable[[], int] | None = None,
        monotonic: Callable[[], int] | None = None,
        *,
        jump_ns: int = _DEFAULT_LIVE.clock_jump_ns,
        policy: ClockJumpPolicy = _DEFAULT_LIVE.on_clock_jump,
    ) -> None:
        self._wall = wall if wall is not None else wall_clock_ns
        self._monotonic = monotonic if monotonic is not None else monotonic_clock_ns
        self.jump_ns = jump_ns
        self.policy: ClockJumpPolicy = policy
        mono = self._monotonic()
        offset = self._wall() - mono
        self._base = offset  # reading = monotonic + base
        self._offset = offset  # wall - monotonic at the last ``jumped``
        self._pending: list[ClockJump] = []

    def __call__(self) -> int:
        return self._monotonic() + self._base

    def continue_from(self, last_ns: int) -> None:
        """Readings from now on are at or after ``last_ns`` (the journal's last receive
        time): the engine's time never goes back across a restart. A wall clock behind it
        by more than ``jump_ns`` (it stepped back while the daemon was down, or the last
        session ran on a clock that was ahead) is a jump, reported by the next
        ``jumped``; the readings then run ahead of the wall clock by that gap, on the
        monotonic clock, until the next restart on a wall clock past them."""
        now = self()
        if now >= last_ns:
            return
        gap = last_ns - now
        self._base += gap
        if gap > self.jump_ns:
            self._jump(-gap, f"wall clock {gap / 1e9:.3f} s behind the journal's last "
                             "receive time at start: receive times continue from the "
                             "journal on the monotonic clock")  # fmt: skip

    def jumped(self) -> list[ClockJump]:
        """The jumps since the last call: reads both clocks (the daemon calls it at each
        heartbeat); empty unless wall minus monotonic moved by more than ``jump_ns``."""
        mono = self._monotonic()
        offset = self._wall() - mono
        step = offset - self._offset
        self._offset = offset
        if abs(step) > self.jump_ns:
            self._jump(step, f"wall clock jumped {step / 1e9:+.3f} s against the monotonic "
                             "clock: receive times keep to the monotonic clock")  # fmt: skip
        out, self._pending = self._pending, []
        return out

    def _jump(self, step_ns: int, reason: str) -> None:
        wall = self._wall()
        log.critical("%s (on_clock_jump = %s)", reason, self.policy)
        self._pending.append(ClockJump(step_ns=step_ns, wall_ns=wall, policy=self.policy,
                                       reason=reason))  # fmt: skip


_JUMP_STATE: Final[dict[ClockJumpPolicy, TradingStateName]] = {
    "reduce_only": "REDUCE_ONLY",
    "halt": "HALTED",
}


def _clock_jumped(engine: Engine, ts_recv: int, jump: ClockJump) -> None:
    """The engine's answer to a wall-clock jump: a critical Alarm and, unless the policy
    is ``alarm``, its own claim at the policy's state, sticky (the jump does not end in
    a way the engine can see: an operator checks the host's time and resumes)."""
    engine.counters["clock_jumps"] += 1
    engine.emit(Alarm(ts_event=ts_recv, ts_recv=ts_recv, source="clock", severity="critical",
                      message=f"{jump.reason} (on_clock_jump = {jump.policy})"))  # fmt: skip
    state = _JUMP_STATE.get(jump.policy)
    if state is not None:
        engine.raise_automatic(state, f"wall clock jump: {jump.reason}", sticky=True)


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
    if isinstance(body, DepthBatch):
        engine.process_depth(body)
        return
    engine.advance_to(ts_recv)
    match body:
        case None:
            pass
        case Command():
            for alarm in alarms_of(body):  # a reconciliation kill names each difference
                engine.emit(alarm)
            if body.issuer == "daemon" and body.reason.startswith(DISK_LOW_REASON):
                engine.emit(Alarm(ts_event=ts_recv, ts_recv=ts_recv, source="journal",
                                  severity="critical", message=body.reason))  # fmt: skip
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
        case ClockJump():
            _clock_jumped(engine, ts_recv, body)
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
        case DepthRecord():
            apply_input(engine, record.ts_recv, record.depth.to_batch())
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
        case ClockJumpRecord():
            apply_input(engine, record.ts_recv, record.jump)
        case ClockRecord() | TimerRecord() | JournalLossRecord():
            # the daemon journals no timer firings: timers fire inside the engine as the
            # clock moves, so a timer record only moves time; an accepted journal loss
            # is an audit record (reconciliation settles what the lost records did)
            apply_input(engine, record.ts_recv, None)


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
        # the depth stream's continuity, under the book's own rules (a book of a few cells:
        # only its status is read), and the instruments whose book is out of sync
        self._sync: OrderBook | None = None
        self._out_of_sync: set[int] = set()

    def on_market_data(self, batch: TickBatch) -> FeedStatus | None:
        """``restored`` once every instrument quoted since a loss (nothing to do, and no
        cost, while the feed is fine: staleness is read from the engine at heartbeats)."""
        if not self.lost:
            return None
        quotes = batch.kind == QUOTE
        if not quotes.any():
            return None
        self._awaiting.difference_update(np.unique(batch.instrument[quotes]).tolist())
        return self._restored()

    def on_depth(self, batch: DepthBatch) -> FeedStatus | None:
        """``lost`` when these rows put an instrument's book out of sync; ``restored`` when
        they bring the last one back (a snapshot) and nothing else is lost."""
        if self._sync is None:
            self._sync = OrderBook(len(self.symbols), levels=1, grid_cells=64)
        self._sync.apply(batch)
        was = self._out_of_sync
        now = {
            i for i in np.unique(batch.instrument).tolist() if self._sync.status(i) == "out_of_sync"
        } | {i for i in was if self._sync.status(i) == "out_of_sync"}
        self._out_of_sync = now
        newly = sorted(now - was)
        if newly:
            names = ", ".join(self.symbols[i] for i in newly)
            return self._lose("lost", f"order book out of sync (update ids) for {names}")
        return self._restored() if was and not now else None

    def _restored(self) -> FeedStatus | None:
        if self._awaiting or not self.connected or self._out_of_sync:
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
            try:
                self._file.write(self._codec.encode(event) + b"\n")
            except OSError as exc:  # the journal's disk, full: the daemon stops the same way
                raise JournalFailed(f"decisions log write failed: {exc}") from exc
            self.lines += 1

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            raise JournalFailed(f"decisions log write failed: {exc}") from exc

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
        # whether a report is this daemon's to book (``adapters.daemon.own_reports``)
        self.owns: Callable[[ExecutionReport], bool] | None = None
        # the wall-clock jumps since the last heartbeat (``ReceiveClock.jumped``)
        self.clock_jumps: Callable[[], list[ClockJump]] | None = None
        # the journal disk's watermark (``[journal] min_free_bytes``)
        self.disk: DiskWatermark | None = None

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
        if self.clock_jumps is not None:
            inputs += [(ts, jump, "clock_jump") for jump in self.clock_jumps()]
        # the engine runs on receive time: its last quote stamps are receive times
        lost = self.feed.check(ts, self.engine.market.quote_ts, claim_cleared)
        if lost is not None:
            inputs.append((ts, lost, "feed"))
        low_disk = self.disk.check(ts) if self.disk is not None else None
        if low_disk is not None:
            self.counters["journal_disk_low"] += 1
            inputs.append((ts, low_disk, "command"))
        self._run(inputs)
        try:
            self._timed(self.journal.sync)  # market data of an idle stretch is synced too
        except (TradeloopError, OSError) as exc:
            raise JournalFailed(f"journal write failed: {exc}") from exc

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
            case DepthData():
                # the loss, if these rows cause one, is journaled before them: the engine
                # reduces before it would act on a book it no longer trusts
                status = self.feed.on_depth(item.batch)
                if status is not None:
                    out.append((ts, status, "feed"))
                rows = item.batch
                if int(rows.ts_recv.min()) < floor:
                    rows = replace(rows, ts_recv=np.maximum(rows.ts_recv, floor))
                out.append((ts, rows, "depth"))
            case ReportIn():
                # on a shared account another node's reports are counted, never journaled
                if self.owns is None or self.owns(item.report):
                    out.append((ts, item.report, "report"))
                else:
                    self.counters["reports_other_node"] += 1
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
        try:
            for ts, body, _ in inputs:
                if body is None:
                    self._timed(journal.append_clock, ts)
                else:
                    self._timed(journal.append, ts, body)
            self._timed(journal.commit)
        except (TradeloopError, OSError) as exc:
            raise JournalFailed(f"journal write failed: {exc}") from exc
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


__all__ = [
    "DECISION_TYPES",
    "MODEL_COMMANDS",
    "DecisionLog",
    "FeedMonitor",
    "InputBody",
    "JournalFailed",
    "LiveCore",
    "ReceiveClock",
    "apply_input",
    "apply_record",
]
