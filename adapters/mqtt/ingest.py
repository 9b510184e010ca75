"""Inbound MQTT messages to the items of the one ordered input stream.

``Ingest.decode`` takes every message one wake-up of the session drained, in arrival
order, and returns the items for the inbox: consecutive quote and trade messages become ONE
``TickBatch`` (a micro-batch, in arrival order), consecutive depth messages one
``DepthBatch`` (``DepthData``); each execution report and each operator command is an item
of its own between batches. A depth message between ticks cuts the tick batch (and a tick
the depth batch): the inbox keeps the order of receipt across the two.

One validation path, one message at a time: each message is decoded into its typed
Struct, checked (``adapters.mqtt.validation``: timestamps, age and skew of market data,
bounds of prices, sizes and fees, a known instrument; retained market data is dropped),
and only then committed (a row of the batch's columns, an item). A refusal is counted
(``bad_messages`` and ``bad_<reason>``) and logged with its raw bytes (at most
``_LOGS_PER_SECOND`` lines per reason per second of receipt time; the rest is counted and
summed up in one line). Nothing of a refused message stays behind, and no exception
leaves ``decode``: a failure of our own while handling one message refuses that message
(``bad_internal``, logged with its traceback) and the next is decoded as usual.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import numpy as np

from adapters.mqtt.auth import verify
from adapters.mqtt.command_guard import CommandGuard
from adapters.mqtt.topics import Topics
from adapters.mqtt.validation import (
    PRICE_MAX,
    PRICE_MIN,
    SIZE_MAX,
    SIZE_MIN,
    TS_MAX_NS,
    TS_MIN_NS,
    MessageLimits,
    command_problem,
    depth_problem,
    quote_problem,
    report_problem,
    trade_problem,
)
from engine.book.batch import DepthBatch
from engine.codec import EventCodec, Format
from engine.errors import BadMessage
from engine.events import (
    CancelRejected,
    Command,
    DepthUpdate,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    Quote,
    Trade,
)
from engine.instruments import InstrumentTable
from engine.ports import ExecutionReport
from engine.ticks import QUOTE, TRADE, TickBatch

log = logging.getLogger(__name__)

# how much of a bad payload goes into the log line
_LOGGED_BYTES = 200
# refusals logged per reason per second of receipt time; a flood is counted, not logged
_LOGS_PER_SECOND = 10

_ROUTE_QUOTE = 0
_ROUTE_TRADE = 1
_ROUTE_REPORT = 2
_ROUTE_COMMAND = 3
_ROUTE_DEPTH = 4
_ROUTE_NAMES = ("quote", "trade", "report", "command", "depth")
_REPORT_TYPES = (OrderAccepted, OrderRejected, Fill, OrderCancelled, CancelRejected)


@dataclass(frozen=True, slots=True)
class MarketData:
    """Several market-data messages merged into one micro-batch (arrival order)."""

    batch: TickBatch
    ts_recv: int
    messages: int


@dataclass(frozen=True, slots=True)
class DepthData:
    """Consecutive depth messages as one batch of depth rows (arrival order), each update
    stamped with our receipt."""

    batch: DepthBatch
    ts_recv: int
    messages: int


@dataclass(frozen=True, slots=True)
class ReportIn:
    """One execution report from the OMS."""

    report: ExecutionReport
    ts_recv: int


@dataclass(frozen=True, slots=True)
class CommandIn:
    """One operator command whose signature verified."""

    command: Command
    ts_recv: int


@dataclass(frozen=True, slots=True)
class Connection:
    """The broker connection came up (``connected``) or was lost."""

    connected: bool
    ts_recv: int
    reason: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """Market data was dropped because the inbox stayed full (the daemon reduces only)."""

    dropped_messages: int
    ts_recv: int


Inbound = MarketData | DepthData | ReportIn | CommandIn | Connection | Overflow

RawMessage = tuple[str, bytes, str | None, bool]
"""``(topic, payload, signature, retained)``: the signature is read only on the command
topic; ``retained`` is the MQTT retain flag (a retained message sent at subscription)."""


_Row = tuple[int, int, int, float, float, float, float, float, float, int]


class _Columns:
    """Ticks of one run of consecutive market-data messages.

    One tuple per tick (``ts_event, instrument, kind, bid, ask, bid_size, ask_size,
    price, size, side``), turned into columns once per batch: one append per message
    instead of ten is most of what this costs on a busy feed. A row is appended only
    for a message that passed every check, so its conversion cannot fail.
    """

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: list[_Row] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add_quote(self, quote: Quote, instrument: int) -> None:
        q = quote
        nan = math.nan
        self.rows.append(
            (q.ts_event, instrument, QUOTE, q.bid, q.ask, q.bid_size, q.ask_size, nan, nan, 0)
        )

    def add_trade(self, trade: Trade, instrument: int) -> None:
        side = 1 if trade.side == "buy" else -1
        nan = math.nan
        self.rows.append(
            (trade.ts_event, instrument, TRADE, nan, nan, nan, nan, trade.price, trade.size, side)
        )

    def take(self, ts_recv: int) -> MarketData:
        # the rows leave the buffer before their conversion: whatever happens to them,
        # the next batch starts empty
        rows, self.rows = self.rows, []
        n = len(rows)
        if n == 1:
            batch = _one_tick(rows[0], ts_recv)
            return MarketData(batch=batch, ts_recv=ts_recv, messages=1)
        ts_event, instrument, kind, bid, ask, bid_size, ask_size, price, size, side = zip(
            *rows, strict=True
        )
        # built directly in arrival order, not with TickBatch.merge: live, arrival is the
        # order of truth and the engine counts a ts_event going backwards itself
        batch = TickBatch(
            ts_event=np.array(ts_event, np.int64),
            ts_recv=np.full(n, ts_recv, np.int64),
            instrument=np.array(instrument, np.int32),
            kind=np.array(kind, np.int8),
            bid=np.array(bid, np.float64),
            ask=np.array(ask, np.float64),
            bid_size=np.array(bid_size, np.float64),
            ask_size=np.array(ask_size, np.float64),
            price=np.array(price, np.float64),
            size=np.array(size, np.float64),
            side=np.array(side, np.int8),
        )
        return MarketData(batch=batch, ts_recv=ts_recv, messages=n)


def _one_tick(row: _Row, ts_recv: int) -> TickBatch:
    """A one-tick batch (the live loop's usual one) from four arrays instead of eleven:
    each column is a one-element slice of an array of its dtype. A one-element view is
    C-contiguous, so the kernels see the same array types (no new numba signature), and
    the values are the same conversions as ``np.array`` of the column."""
    ts_event, instrument, kind, bid, ask, bid_size, ask_size, price, size, side = row
    ints = np.array((ts_event, ts_recv), np.int64)
    floats = np.array((bid, ask, bid_size, ask_size, price, size), np.float64)
    small = np.array((kind, side), np.int8)
    return TickBatch(
        ts_event=ints[0:1],
        ts_recv=ints[1:2],
        instrument=np.array((instrument,), np.int32),
        kind=small[0:1],
        bid=floats[0:1],
        ask=floats[1:2],
        bid_size=floats[2:3],
        ask_size=floats[3:4],
        price=floats[4:5],
        size=floats[5:6],
        side=small[1:2],
    )


class Ingest:
    """Decodes drained messages into inbox items; built once per session.

    Args:
        topics: the topic contract.
        instruments: subscribed instruments; a tick's ``instrument`` column is the dense
            index from this table.
        fmt: payload format on the wire.
        max_payload_bytes: larger payloads are refused unread (counter ``oversized``).
        command_key: HMAC key of operator commands (None: every command is refused).
        counters: where counts go (shared with the session).
        command_guard: refuses a verified command that is stale, future-dated or a copy
            of one accepted before (counters ``bad_command_stale``, ``_future``,
            ``_duplicate``); the daemon passes the one it primed from its journal
            (None: a fresh guard with the default ``[live] command_max_age``).
        limits: the configured bounds of the checks (``[live] max_tick_age``,
            ``max_tick_future``, ``max_fee_bps``; None: their defaults).
    """

    def __init__(
        self,
        topics: Topics,
        instruments: InstrumentTable,
        *,
        fmt: Format,
        max_payload_bytes: int,
        command_key: bytes | None,
        counters: Counter[str],
        command_guard: CommandGuard | None = None,
        limits: MessageLimits | None = None,
    ) -> None:
        self.topics = topics
        self.instruments = instruments
        self.counters = counters
        self.limits = MessageLimits() if limits is None else limits
        self._max_payload = max_payload_bytes
        self._command_key = command_key
        self.command_guard = CommandGuard() if command_guard is None else command_guard
        self._codec = EventCodec(fmt, source="mqtt")
        # exact topic -> (route, instrument index, symbol): one dict lookup per message
        self._routes: dict[str, tuple[int, int, str]] = {
            topics.reports: (_ROUTE_REPORT, -1, ""),
            topics.command: (_ROUTE_COMMAND, -1, ""),
        }
        for index, inst in enumerate(instruments.instruments):
            self._routes[topics.quote(inst.venue, inst.symbol)] = (_ROUTE_QUOTE, index, inst.symbol)
            self._routes[topics.trade(inst.venue, inst.symbol)] = (_ROUTE_TRADE, index, inst.symbol)
            self._routes[topics.depth(inst.venue, inst.symbol)] = (_ROUTE_DEPTH, index, inst.symbol)
        self._in_counter = tuple(f"messages_in_{name}" for name in _ROUTE_NAMES)
        self._columns = _Columns()
        self._depth: list[DepthUpdate] = []
        # the log's rate limit: refusals logged per reason in the current second
        self._now = 0
        self._log_second = 0
        self._logged: Counter[str] = Counter()
        self._not_logged: Counter[str] = Counter()

    def decode(self, messages: Iterable[RawMessage], ts_recv: int) -> list[Inbound]:
        """Items for the inbox from ``messages`` (arrival order), all stamped ``ts_recv``.

        Bad messages are counted and logged, never returned; nothing raises.
        """
        out: list[Inbound] = []
        columns = self._columns
        add_quote = columns.add_quote
        routes = self._routes
        counters = self.counters
        limits = self.limits
        self._now = ts_recv
        # a quote's whole time check in one chained comparison: in range, not older than
        # max_tick_age at its receipt, not further ahead of it than max_tick_future
        earliest = max(TS_MIN_NS, ts_recv - limits.max_tick_age_ns)
        latest = min(TS_MAX_NS - 1, ts_recv + limits.max_tick_future_ns)
        received = [0, 0, 0, 0, 0]  # per route, added to the counters once per call
        problem: str | None
        for message in messages:
            try:
                topic, payload, signature, retained = message
                route = routes.get(topic)
                if route is None:
                    self._bad(topic, payload, "unknown_topic")
                    continue
                kind, index, symbol = route
                received[kind] += 1
                if len(payload) > self._max_payload:
                    self._bad(topic, payload, "oversized", detail=f"{len(payload)} bytes")
                    continue
                if kind == _ROUTE_COMMAND and not verify(
                    payload, signature, self._command_key, self.topics, self.counters
                ):
                    self._unauthenticated(topic, payload, signature)
                    continue
                if retained and kind in (_ROUTE_QUOTE, _ROUTE_TRADE, _ROUTE_DEPTH):
                    # sent at subscription, of any age: never a fresh feed
                    self._bad(topic, payload, "retained")
                    continue
                try:
                    event = self._codec.decode(payload)
                except BadMessage as exc:  # deeply nested input too (RecursionError)
                    self._bad(topic, payload, "undecodable", detail=exc.reason)
                    continue
                if kind == _ROUTE_DEPTH:
                    if type(event) is not DepthUpdate:
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    problem = self._instrument_problem(event.instrument, symbol)
                    problem = problem or depth_problem(event, ts_recv, limits)
                    if problem is not None:
                        self._bad(topic, payload, problem, detail=_times(event, ts_recv))
                        continue
                    if len(columns):
                        self._take(out, ts_recv)
                    self._depth.append(msgspec.structs.replace(event, ts_recv=ts_recv))
                    continue
                if self._depth:
                    self._take_depth(out, ts_recv)
                if kind == _ROUTE_QUOTE:
                    if type(event) is not Quote:
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    q = event
                    # the common case in one chained comparison (false for NaN too); the
                    # reason is looked up only for a quote that fails it
                    if not (
                        q.instrument == symbol
                        and earliest <= q.ts_event <= latest
                        and PRICE_MIN <= q.bid < q.ask <= PRICE_MAX
                        and SIZE_MIN <= q.bid_size <= SIZE_MAX
                        and SIZE_MIN <= q.ask_size <= SIZE_MAX
                    ):
                        problem = self._instrument_problem(q.instrument, symbol)
                        problem = problem or quote_problem(q, ts_recv, limits)
                        if problem is not None:
                            self._bad(topic, payload, problem, detail=_times(q, ts_recv))
                            continue
                    add_quote(q, index)
                    continue
                if kind == _ROUTE_TRADE:
                    if type(event) is not Trade:
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    problem = self._instrument_problem(event.instrument, symbol)
                    problem = problem or trade_problem(event, ts_recv, limits)
                    if problem is not None:
                        self._bad(topic, payload, problem, detail=_times(event, ts_recv))
                        continue
                    columns.add_trade(event, index)
                elif kind == _ROUTE_REPORT:
                    if not isinstance(event, _REPORT_TYPES):
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    problem = report_problem(event, ts_recv, limits, self.instruments.index)
                    if problem is not None:
                        self._bad(topic, payload, problem, detail=_times(event, ts_recv))
                        continue
                    if len(columns):
                        self._take(out, ts_recv)
                    out.append(ReportIn(report=event, ts_recv=ts_recv))
                else:
                    if not isinstance(event, Command):
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    problem = command_problem(event)
                    if problem is not None:
                        self._bad(topic, payload, problem, detail=_times(event, ts_recv))
                        continue
                    # after the signature: only the key holder's commands are remembered
                    refusal = self.command_guard.check(event, ts_recv)
                    if refusal is not None:
                        detail = f"ts_event {event.ts_event}, received {ts_recv}"
                        self._bad(topic, payload, f"command_{refusal}", detail=detail)
                        continue
                    if len(columns):
                        self._take(out, ts_recv)
                    out.append(CommandIn(command=event, ts_recv=ts_recv))
            except Exception as exc:  # a bug of ours: this message's refusal, nothing more
                self._internal(message, exc)
        for route_kind, count in enumerate(received):
            if count:
                counters[self._in_counter[route_kind]] += count
        if len(columns):
            self._take(out, ts_recv)
        if self._depth:
            self._take_depth(out, ts_recv)
        return out

    def _take_depth(self, out: list[Inbound], ts_recv: int) -> None:
        updates, self._depth = self._depth, []
        try:
            batch = DepthBatch.from_updates(updates, self.instruments.index)
            out.append(DepthData(batch=batch, ts_recv=ts_recv, messages=len(updates)))
        except Exception as exc:  # checked updates convert; if not, they go, counted
            n = len(updates)
            self.counters["bad_messages"] += n
            self.counters["bad_internal"] += n
            log.error("%d depth messages refused: their batch failed: %r", n, exc,
                      exc_info=exc)  # fmt: skip

    def _take(self, out: list[Inbound], ts_recv: int) -> None:
        columns = self._columns
        n = len(columns)
        try:
            out.append(columns.take(ts_recv))
        except Exception as exc:  # checked rows convert; if not, they go, counted
            columns.rows = []
            self.counters["bad_messages"] += n
            self.counters["bad_internal"] += n
            log.error("%d market-data messages refused: their batch failed: %r", n, exc,
                      exc_info=exc)  # fmt: skip

    def _internal(self, message: object, exc: Exception) -> None:
        self.counters["bad_messages"] += 1
        self.counters["bad_internal"] += 1
        topic = payload = None
        if isinstance(message, tuple) and len(message) >= 2:
            topic, payload = message[0], message[1]
        if self._may_log("internal"):
            raw = payload[:_LOGGED_BYTES] if isinstance(payload, bytes | bytearray) else payload
            log.error("message on %s refused: handling it failed: %r: %r", topic, exc, raw,
                      exc_info=exc)  # fmt: skip

    def _unauthenticated(self, topic: str, payload: bytes, signature: str | None) -> None:
        self.counters["commands_unauthenticated"] += 1
        why = "no command key configured" if self._command_key is None else "bad signature"
        if self._command_key is not None and not signature:
            why = "unsigned"
        if self._may_log("unauthenticated"):
            log.warning("command refused on %s (%s): %r", topic, why, payload[:_LOGGED_BYTES])

    def _instrument_problem(self, symbol: str, expected: str) -> str | None:
        if symbol == expected:
            return None
        if symbol in self.instruments.index:
            return "instrument_mismatch"
        return "unknown_symbol"

    def _bad(
        self,
        topic: str,
        payload: bytes,
        reason: str,
        *,
        detail: str = "",
    ) -> None:
        self.counters["bad_messages"] += 1
        self.counters["oversized" if reason == "oversized" else f"bad_{reason}"] += 1
        if self._may_log(reason):
            log.warning(
                "bad message on %s (%s%s): %r",
                topic,
                reason,
                f": {detail}" if detail else "",
                payload[:_LOGGED_BYTES],
            )

    def _may_log(self, reason: str) -> bool:
        second = self._now // 1_000_000_000
        if second != self._log_second:
            self._log_second = second
            self._logged.clear()
            if self._not_logged:
                log.warning("refusals not logged in the last second(s) (counted): %s",
                            dict(self._not_logged))  # fmt: skip
                self._not_logged.clear()
        if self._logged[reason] < _LOGS_PER_SECOND:
            self._logged[reason] += 1
            return True
        self._not_logged[reason] += 1
        return False


def _times(event: Quote | Trade | DepthUpdate | ExecutionReport | Command, ts_recv: int) -> str:
    return f"ts_event {event.ts_event}, received {ts_recv}"
