"""Inbound MQTT messages to the items of the one ordered input stream.

``Ingest.decode`` takes every message one wake-up of the session drained, in arrival
order, and returns the items for the inbox: consecutive market-data messages become ONE
``TickBatch`` (a micro-batch, in arrival order); each execution report and each operator
command is an item of its own between batches. Nothing bad is enqueued: it is counted
(``bad_messages`` and one counter per reason) and logged with its raw bytes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from adapters.mqtt.auth import verify
from adapters.mqtt.command_guard import CommandGuard
from adapters.mqtt.topics import Topics
from engine.codec import EventCodec, Format
from engine.errors import BadMessage
from engine.events import (
    CancelRejected,
    Command,
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

_ROUTE_QUOTE = 0
_ROUTE_TRADE = 1
_ROUTE_REPORT = 2
_ROUTE_COMMAND = 3
_ROUTE_NAMES = ("quote", "trade", "report", "command")
_REPORT_TYPES = (OrderAccepted, OrderRejected, Fill, OrderCancelled, CancelRejected)
_INF = math.inf


@dataclass(frozen=True, slots=True)
class MarketData:
    """Several market-data messages merged into one micro-batch (arrival order)."""

    batch: TickBatch
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


Inbound = MarketData | ReportIn | CommandIn | Connection | Overflow

RawMessage = tuple[str, bytes, str | None]
"""``(topic, payload, signature)``; the signature is read only on the command topic."""


_Row = tuple[int, int, int, float, float, float, float, float, float, int]


class _Columns:
    """Ticks of one run of consecutive market-data messages.

    One tuple per tick (``ts_event, instrument, kind, bid, ask, bid_size, ask_size,
    price, size, side``), turned into columns once per batch: one append per message
    instead of ten is most of what this costs on a busy feed.
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
        rows = self.rows
        n = len(rows)
        if n == 1:
            batch = _one_tick(rows[0], ts_recv)
            self.rows = []
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
        self.rows = []
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


def _quote_problem(q: Quote) -> str | None:
    if not (
        math.isfinite(q.bid)
        and math.isfinite(q.ask)
        and math.isfinite(q.bid_size)
        and math.isfinite(q.ask_size)
    ):
        return "non_finite"
    if q.bid <= 0.0 or q.ask <= 0.0 or q.bid_size <= 0.0 or q.ask_size <= 0.0:
        return "non_positive"
    if q.bid >= q.ask:
        return "crossed"
    return None


def _trade_problem(t: Trade) -> str | None:
    if not (math.isfinite(t.price) and math.isfinite(t.size)):
        return "non_finite"
    if t.price <= 0.0 or t.size <= 0.0:
        return "non_positive"
    return None


def _fill_problem(f: Fill) -> str | None:
    if not (math.isfinite(f.price) and math.isfinite(f.qty) and math.isfinite(f.fee)):
        return "non_finite"
    if f.price <= 0.0 or f.qty <= 0.0:
        return "non_positive"
    return None


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
    ) -> None:
        self.topics = topics
        self.instruments = instruments
        self.counters = counters
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
        self._in_counter = tuple(f"messages_in_{name}" for name in _ROUTE_NAMES)
        self._columns = _Columns()

    def decode(self, messages: Iterable[RawMessage], ts_recv: int) -> list[Inbound]:
        """Items for the inbox from ``messages`` (arrival order), all stamped ``ts_recv``.

        Bad messages are counted and logged, never returned.
        """
        out: list[Inbound] = []
        columns = self._columns
        add_quote = columns.add_quote
        routes = self._routes
        counters = self.counters
        received = [0, 0, 0, 0]  # per route, added to the counters once per call
        problem: str | None
        try:
            for topic, payload, signature in messages:
                route = routes.get(topic)
                if route is None:
                    self._bad(topic, payload, "unknown_topic")
                    continue
                kind, index, symbol = route
                received[kind] += 1
                if len(payload) > self._max_payload:
                    self._bad(topic, payload, "oversized", detail=f"{len(payload)} bytes")
                    continue
                if kind == _ROUTE_COMMAND and not verify(payload, signature, self._command_key):
                    self._unauthenticated(topic, payload, signature)
                    continue
                try:
                    event = self._codec.decode(payload)
                except BadMessage as exc:
                    self._bad(topic, payload, "undecodable", detail=exc.reason)
                    continue
                if kind == _ROUTE_QUOTE:
                    if type(event) is not Quote:
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    q = event
                    # the common case in one chained comparison (false for NaN too); the
                    # reason is looked up only for a quote that fails it
                    if not (
                        q.instrument == symbol
                        and 0.0 < q.bid < q.ask < _INF
                        and 0.0 < q.bid_size < _INF
                        and 0.0 < q.ask_size < _INF
                    ):
                        problem = self._instrument_problem(q.instrument, symbol)
                        problem = problem or _quote_problem(q)
                        if problem is not None:
                            self._bad(topic, payload, problem)
                            continue
                    add_quote(q, index)
                    continue
                if kind == _ROUTE_TRADE:
                    if type(event) is not Trade:
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    problem = self._instrument_problem(event.instrument, symbol)
                    if problem is None:
                        problem = _trade_problem(event)
                    if problem is not None:
                        self._bad(topic, payload, problem)
                        continue
                    columns.add_trade(event, index)
                elif kind == _ROUTE_REPORT:
                    if not isinstance(event, _REPORT_TYPES):
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    if isinstance(event, Fill):
                        problem = _fill_problem(event)
                        if problem is not None:
                            self._bad(topic, payload, problem)
                            continue
                    if len(columns):
                        out.append(columns.take(ts_recv))
                    out.append(ReportIn(report=event, ts_recv=ts_recv))
                else:
                    if not isinstance(event, Command):
                        self._bad(topic, payload, "wrong_type", detail=type(event).__name__)
                        continue
                    # after the signature: only the key holder's commands are remembered
                    refusal = self.command_guard.check(event, ts_recv)
                    if refusal is not None:
                        detail = f"ts_event {event.ts_event}, received {ts_recv}"
                        self._bad(topic, payload, f"command_{refusal}", detail=detail)
                        continue
                    if len(columns):
                        out.append(columns.take(ts_recv))
                    out.append(CommandIn(command=event, ts_recv=ts_recv))
        finally:
            for route_kind, count in enumerate(received):
                if count:
                    counters[self._in_counter[route_kind]] += count
        if len(columns):
            out.append(columns.take(ts_recv))
        return out

    def _unauthenticated(self, topic: str, payload: bytes, signature: str | None) -> None:
        self.counters["commands_unauthenticated"] += 1
        why = "no command key configured" if self._command_key is None else "bad signature"
        if self._command_key is not None and not signature:
            why = "unsigned"
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
        log.warning(
            "bad message on %s (%s%s): %r",
            topic,
            reason,
            f": {detail}" if detail else "",
            payload[:_LOGGED_BYTES],
        )
