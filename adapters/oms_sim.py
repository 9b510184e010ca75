"""A simulated OMS on the broker (``tradeloop oms-sim``): the far side of the OMS contract,
for paper sessions, demos and tests of the daemon.

It reads orders and cancels on ``topics.orders``, reconciliation requests on
``topics.requests`` and the market data of the configured instruments, and answers with
execution reports (QoS 1) on ``topics.reports``. Fills follow the simulated venue's rules
(``adapters.sim_venue``, README "Simulated venue"), run on the OMS's own time axis: every
message is stamped with the time the OMS read it, ticks and orders alike, so an order
reaches the venue ``latency`` after the OMS received it and fills against the quotes the
OMS had seen by then. The senders' clocks (a tick file's ``ts_event``, the daemon's) never
mix with it.

Idempotent on resend: an ``OrderRequest`` whose ``client_order_id`` the OMS already holds
is not a new order; the OMS sends the order's latest report again (nothing while the order
is still on its way to the venue). Payloads are decoded as JSON or MessagePack, whichever
the bytes are (a JSON payload starts with ``{``, a MessagePack event with a map marker);
reports go out in the configured format, answers in the format of their request.

For fault tests of the daemon, ``AnswerFault`` makes it misbehave the way real OMSs do:
late, twice, out of order, or never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import aiomqtt
import msgspec
import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.reconcile import (
    FillsResponse,
    FillsSinceRequest,
    OpenOrder,
    OpenOrdersRequest,
    OpenOrdersResponse,
    PositionsRequest,
    PositionsResponse,
    ReconcileCodec,
    ReconcileRequest,
    ReconcileResponse,
    RequestFailed,
)
from adapters.mqtt.topics import Topics
from adapters.sim_venue import SimulatedVenue
from engine.clock import Clock, LiveClock
from engine.codec import EventCodec, Format
from engine.errors import AdapterError, BadMessage
from engine.events import (
    CancelRejected,
    CancelRequest,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Quote,
    Trade,
    side_sign,
)
from engine.instruments import InstrumentTable
from engine.market import MarketState
from engine.ports import ExecutionReport
from engine.ticks import QUOTE, TRADE, TickBatch

log = logging.getLogger(__name__)

AnswerMode = Literal["normal", "late", "twice", "shuffled", "never"]
OrderState = Literal["pending", "accepted", "partially_filled", "filled", "cancelled", "rejected"]

# Quantities are sums of floats on a lot grid; 1e-12 is far below any lot and far above
# the rounding noise of summing a few thousand fills.
_QTY_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class AnswerFault:
    """How the simulator answers orders and cancels (fault tests of the daemon).

    - ``normal``: each report as soon as the venue makes it.
    - ``late``: each report ``delay_s`` after the venue made it, in order.
    - ``twice``: each report published twice (QoS 1 redelivery at its worst).
    - ``shuffled``: an order's reports held until the order is closed (filled, cancelled,
      rejected), then published newest first: a fill before its ack, a cancel
      confirmation before the fill that preceded it.
    - ``never``: no report and no answer to a reconciliation request (an OMS that reads
      and takes orders but whose answers never arrive).

    The OMS's own state is the venue's in every mode: only what it publishes changes.
    """

    mode: AnswerMode = "normal"
    delay_s: float = 0.0


_CLOSED: frozenset[str] = frozenset({"filled", "cancelled", "rejected"})


@dataclass(slots=True)
class _Order:
    request: OrderRequest  # as received, with the sender's timestamps
    status: OrderState = "pending"
    filled_qty: float = 0.0
    venue_order_id: str = ""
    last_report: ExecutionReport | None = None


class SimulatedOms:
    """The OMS's state and rules, without I/O: orders, fills and positions, with matching
    delegated to a ``SimulatedVenue`` driven the way the engine drives it.

    Every method takes the OMS's time (``now_ns``, or the ticks' ``ts_event``), which must
    not go backwards, and returns the execution reports it produced, already applied to
    the state.

    Args:
        instruments: what can be traded; anything else is rejected by the venue.
        venue: the matching rules, latency and fees.
    """

    def __init__(self, instruments: InstrumentTable, venue: SimulatedVenue) -> None:
        self.instruments = instruments
        self.venue = venue
        self.market = MarketState(len(instruments))
        venue.bind(self.market, instruments)
        # the market scan marks equity to these; the OMS has no cash account
        self._flat = np.zeros(len(instruments))
        self._cash = np.zeros(1)
        self.orders: dict[str, _Order] = {}
        self.fills: list[Fill] = []
        self.positions: dict[str, float] = dict.fromkeys(instruments.symbols, 0.0)
        self.counters: Counter[str] = Counter()

    def next_event_ns(self) -> int | None:
        """When the next order or cancel reaches the venue, if any is on its way."""
        return self.venue.next_event_ns()

    def on_order(self, order: OrderRequest, now_ns: int) -> list[ExecutionReport]:
        """Take an order received at ``now_ns``; a known client order id is a resend."""
        known = self.orders.get(order.client_order_id)
        if known is not None:
            self.counters["resends"] += 1
            return [] if known.last_report is None else [known.last_report]
        self.counters["orders"] += 1
        self.orders[order.client_order_id] = _Order(order)
        self.venue.submit(msgspec.structs.replace(order, ts_event=now_ns, ts_recv=now_ns))
        return self.advance_to(now_ns)

    def on_cancel(self, cancel: CancelRequest, now_ns: int) -> list[ExecutionReport]:
        """Take a cancel received at ``now_ns``; the venue answers it after latency."""
        self.counters["cancels"] += 1
        self.venue.cancel(msgspec.structs.replace(cancel, ts_event=now_ns, ts_recv=now_ns))
        return self.advance_to(now_ns)

    def advance_to(self, now_ns: int) -> list[ExecutionReport]:
        """Handle the orders and cancels that reached the venue by ``now_ns``."""
        self.venue.advance_to(now_ns)
        return self._apply(self.venue.drain_reports())

    def on_ticks(self, batch: TickBatch) -> list[ExecutionReport]:
        """Apply ticks (stamped with the OMS's receive time), filling resting orders.

        An order or cancel arriving at ``T`` is handled after every tick stamped at or
        before ``T`` and before the first one after it, as in the engine's loop.
        """
        n = len(batch)
        if n == 0:
            return []
        ts = batch.ts_event
        self.counters["ticks"] += n
        self.market.begin_batch(n)
        pos = 0
        while pos < n:
            self.venue.advance_to(int(ts[pos]) - 1)
            nxt = self.venue.next_event_ns()
            end = n if nxt is None else int(np.searchsorted(ts, nxt, side="right"))
            stop = self.venue.match(batch, pos, end)
            self.market.update(batch, pos, stop, self._flat, self._cash)
            self.venue.commit()
            pos = stop
        self.market.end_batch()
        return self._apply(self.venue.drain_reports())

    def answer(self, request: ReconcileRequest, now_ns: int) -> ReconcileResponse:
        """The answer to a reconciliation request, as of ``now_ns``."""
        self.counters["requests"] += 1
        match request:
            case OpenOrdersRequest():
                return OpenOrdersResponse(as_of_ns=now_ns, orders=self.open_orders())
            case FillsSinceRequest(since_ns=since):
                fills = [f for f in self.fills if f.ts_event >= since]
                return FillsResponse(as_of_ns=now_ns, fills=fills)
            case PositionsRequest():
                return PositionsResponse(as_of_ns=now_ns, positions=dict(self.positions))

    def open_orders(self) -> list[OpenOrder]:
        """Working orders in the order they were received."""
        return [
            OpenOrder(
                order=o.request,
                status=o.status,
                filled_qty=o.filled_qty,
                venue_order_id=o.venue_order_id,
            )
            for o in self.orders.values()
            if o.status in ("pending", "accepted", "partially_filled")
        ]

    def _apply(self, reports: list[ExecutionReport]) -> list[ExecutionReport]:
        for report in reports:
            self.counters["reports"] += 1
            if isinstance(report, CancelRejected):
                self.counters["cancels_rejected"] += 1
                continue  # the order's state is what it was
            order = self.orders[report.client_order_id]
            order.last_report = report
            match report:
                case OrderAccepted():
                    order.venue_order_id = report.venue_order_id
                    if order.status == "pending":
                        order.status = "accepted"
                case OrderRejected():
                    order.status = "rejected"
                    self.counters["orders_rejected"] += 1
                case Fill():
                    self._book(order, report)
                case OrderCancelled():
                    order.status = "cancelled"
        return reports

    def _book(self, order: _Order, fill: Fill) -> None:
        self.counters["fills"] += 1
        self.fills.append(fill)
        order.filled_qty = round(order.filled_qty + fill.qty, 12)
        done = order.filled_qty >= order.request.qty - _QTY_EPS
        order.status = "filled" if done else "partially_filled"
        held = self.positions.get(fill.instrument, 0.0)
        self.positions[fill.instrument] = round(held + side_sign(fill.side) * fill.qty, 12)


def payload_format(raw: bytes) -> Format:
    """``"json"`` if the bytes start like a JSON object, else ``"msgpack"``.

    Unambiguous for events: a MessagePack event starts with a map marker (0x80-0x8f,
    0xde, 0xdf), while ``{`` and whitespace would be a bare integer in MessagePack.
    """
    return "json" if raw[:1] in (b"{", b" ", b"\n", b"\r", b"\t") else "msgpack"


@dataclass
class _TickColumns:
    ts: list[int] = field(default_factory=list)
    instrument: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    bid: list[float] = field(default_factory=list)
    ask: list[float] = field(default_factory=list)
    bid_size: list[float] = field(default_factory=list)
    ask_size: list[float] = field(default_factory=list)
    price: list[float] = field(default_factory=list)
    size: list[float] = field(default_factory=list)
    side: list[int] = field(default_factory=list)

    def add_quote(self, ts: int, index: int, q: Quote) -> None:
        self._add(ts, index, QUOTE, q.bid, q.ask, q.bid_size, q.ask_size, math.nan, math.nan, 0)

    def add_trade(self, ts: int, index: int, t: Trade) -> None:
        nan = math.nan
        self._add(ts, index, TRADE, nan, nan, nan, nan, t.price, t.size, side_sign(t.side))

    def _add(self, *values: Any) -> None:
        for column, value in zip(self._columns(), values):
            column.append(value)

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.ts,
            self.instrument,
            self.kind,
            self.bid,
            self.ask,
            self.bid_size,
            self.ask_size,
            self.price,
            self.size,
            self.side,
        )

    def take(self) -> TickBatch:
        ts = np.array(self.ts, np.int64)
        batch = TickBatch(
            ts,
            ts,
            np.array(self.instrument, np.int32),
            np.array(self.kind, np.int8),
            np.array(self.bid),
            np.array(self.ask),
            np.array(self.bid_size),
            np.array(self.ask_size),
            np.array(self.price),
            np.array(self.size),
            np.array(self.side, np.int8),
        )
        for column in self._columns():
            column.clear()
        return batch


SimState = Literal["new", "connected", "serving", "closed"]


class MqttOmsSimulator:
    """``SimulatedOms`` on a broker: an async context manager that connects (MQTT 5) and
    subscribes on entry; ``serve`` answers until its ``stop`` event is set.

    Args:
        oms: the state and rules.
        host: broker host.
        port: broker port.
        topics: the topic contract (prefix and account).
        username: broker user, or None.
        password: the user's password.
        client_id: MQTT client id.
        report_format: format of the execution reports.
        market_data_qos: QoS of the market-data subscriptions.
        clock: where receive times come from (default the wall clock).
        outbox_size: reports and answers waiting for the broker before reading stops.
        fault: how reports are answered (default: normally).
    """

    def __init__(
        self,
        oms: SimulatedOms,
        *,
        host: str,
        port: int,
        topics: Topics,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "tradeloop-oms-sim",
        report_format: Format = "json",
        market_data_qos: int = 0,
        clock: Clock | None = None,
        outbox_size: int = 10_000,
        fault: AnswerFault | None = None,
    ) -> None:
        self.oms = oms
        self.fault = fault if fault is not None else AnswerFault()
        self._late: deque[tuple[float, ExecutionReport]] = deque()
        self._late_added = asyncio.Event()
        self._held: dict[str, list[ExecutionReport]] = {}
        self.topics = topics
        self.state: SimState = "new"
        self.bad_messages: Counter[str] = Counter()  # by source: orders, market_data, requests
        self._where = f"{host}:{port}"
        self._login = (host, port, username, password, client_id)
        self._client: aiomqtt.Client | None = None  # made on entry: it binds the running loop
        self._market_data_qos = market_data_qos
        self._clock: Clock = clock if clock is not None else LiveClock()
        self._events = {"json": EventCodec("json", "oms"), "msgpack": EventCodec("msgpack", "oms")}
        self._reconcile = {
            "json": ReconcileCodec("json", topics.requests),
            "msgpack": ReconcileCodec("msgpack", topics.requests),
        }
        self._reports = self._events[report_format]
        self._outbox: asyncio.Queue[tuple[str, bytes, Properties | None]] = asyncio.Queue(
            outbox_size
        )
        self._ticks = _TickColumns()
        self._wake = asyncio.Event()
        self._last_ns = 0
        self._stack = contextlib.AsyncExitStack()

    @property
    def counters(self) -> Counter[str]:
        return self.oms.counters

    async def __aenter__(self) -> MqttOmsSimulator:
        host, port, username, password, client_id = self._login
        self._client = client = aiomqtt.Client(
            host,
            port,
            username=username,
            password=password,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=30,
        )
        try:
            await self._stack.enter_async_context(client)
            await client.subscribe(self.topics.orders, qos=1)
            await client.subscribe(self.topics.requests, qos=1)
            for inst in self.oms.instruments.instruments:
                topic = self.topics.market_data(inst.venue, inst.symbol)
                await client.subscribe(topic, qos=self._market_data_qos)
        except aiomqtt.MqttError as exc:
            await self._stack.aclose()
            raise AdapterError(f"oms-sim: cannot use the broker at {self._where}: {exc}") from exc
        self.state = "connected"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.state = "closed"
        with contextlib.suppress(aiomqtt.MqttError):
            await self._stack.aclose()

    async def serve(self, stop: asyncio.Event, *, drain_timeout_s: float = 5.0) -> None:
        """Answer orders, cancels and requests until ``stop`` is set, then publish what is
        still queued (up to ``drain_timeout_s``).

        Raises:
            AdapterError: the broker connection was lost.
        """
        if self.state != "connected":
            raise AdapterError(f"oms-sim: serve() needs a connected simulator, not {self.state}")
        self.state = "serving"
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read(), name="oms-sim-read")
                timer = tg.create_task(self._venue_timer(), name="oms-sim-venue-timer")
                writer = tg.create_task(self._write(), name="oms-sim-write")
                late = tg.create_task(self._publish_late(), name="oms-sim-late")
                await stop.wait()
                reader.cancel()
                timer.cancel()
                late.cancel()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(drain_timeout_s):
                        await self._outbox.join()
                writer.cancel()
        except* aiomqtt.MqttError as group:
            raise AdapterError(
                f"oms-sim: lost the broker at {self._where}: {group.exceptions[0]}"
            ) from group
        finally:
            self.state = "connected"

    def _stamp(self) -> int:
        # the OMS's time axis never goes backwards, even if the wall clock is stepped back
        self._last_ns = max(self._clock.now_ns(), self._last_ns)
        return self._last_ns

    async def _read(self) -> None:
        messages = self._connected().messages
        async for message in messages:
            await self._dispatch(message, self._stamp())
            if len(messages) == 0:  # everything waiting is read: one micro-batch
                await self._flush_ticks()

    async def _dispatch(self, message: aiomqtt.Message, now: int) -> None:
        topic = message.topic.value
        raw = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if topic == self.topics.orders:
            await self._flush_ticks()  # the ticks read before the order reach the venue first
            await self._on_order(raw, now)
        elif topic == self.topics.requests:
            await self._flush_ticks()
            await self._on_request(raw, message.properties, now)
        else:
            self._on_market_data(topic, raw, now)

    def _on_market_data(self, topic: str, raw: bytes, now: int) -> None:
        parsed = self.topics.parse_market_data(topic)
        try:
            event = self._events[payload_format(raw)].decode(raw)
        except BadMessage as exc:
            self._bad("market_data", raw, f"{topic}: {exc.reason}")
            return
        index = self.oms.instruments.index.get(getattr(event, "instrument", ""))
        if parsed is None or index is None or parsed[1] != getattr(event, "instrument", None):
            self._bad("market_data", raw, f"{topic}: not market data of a configured instrument")
            return
        match event:
            case Quote() if parsed[2] == "quote":
                self._ticks.add_quote(now, index, event)
            case Trade() if parsed[2] == "trade":
                self._ticks.add_trade(now, index, event)
            case _:
                self._bad("market_data", raw, f"{topic}: a {type(event).__name__} payload")

    async def _flush_ticks(self) -> None:
        if self._ticks.ts:
            await self._emit(self.oms.on_ticks(self._ticks.take()))

    async def _on_order(self, raw: bytes, now: int) -> None:
        fmt = payload_format(raw)
        try:
            event = self._events[fmt].decode(raw)
        except BadMessage as exc:
            await self._refuse(raw, fmt, exc.reason, now)
            return
        match event:
            case OrderRequest():
                await self._emit(self.oms.on_order(event, now))
            case CancelRequest():
                await self._emit(self.oms.on_cancel(event, now))
            case _:
                reason = f"a {type(event).__name__} is neither an order nor a cancel"
                await self._refuse(raw, fmt, reason, now)
                return
        self._wake.set()  # the venue's next event may be sooner now

    async def _refuse(self, raw: bytes, fmt: Format, reason: str, now: int) -> None:
        """Count a malformed order; answer it when a client order id can be read from it
        (and is not one of an order the OMS holds, whose state it would contradict)."""
        self._bad("orders", raw, reason)
        decoder = msgspec.json.decode if fmt == "json" else msgspec.msgpack.decode
        try:
            fields = decoder(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        cid = fields.get("client_order_id") if isinstance(fields, dict) else None
        if not isinstance(cid, str) or not cid or cid in self.oms.orders:
            return
        report: ExecutionReport
        if fields.get("type") == "cancel_request":
            report = CancelRejected(
                ts_event=now, ts_recv=now, client_order_id=cid, reason=f"malformed cancel: {reason}"
            )
        else:
            report = OrderRejected(
                ts_event=now, ts_recv=now, client_order_id=cid, reason=f"malformed order: {reason}"
            )
        await self._emit([report])

    async def _on_request(self, raw: bytes, props: Properties | None, now: int) -> None:
        answer_to = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        if not answer_to:
            self._bad("requests", raw, "request without a response topic")
            return
        if self.fault.mode == "never":
            self.counters["requests_unanswered"] += 1
            return
        codec = self._reconcile[payload_format(raw)]
        answer: ReconcileResponse
        try:
            answer = self.oms.answer(codec.decode_request(raw), now)
        except BadMessage as exc:
            self._bad("requests", raw, exc.reason)
            answer = RequestFailed(reason=f"undecodable request: {exc.reason}")
        out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation is not None:
            out.CorrelationData = correlation
        await self._outbox.put((answer_to, codec.encode(answer), out))

    async def _emit(self, reports: Iterable[ExecutionReport]) -> None:
        for report in reports:
            match self.fault.mode:
                case "normal":
                    await self._publish(report)
                case "late":
                    due = asyncio.get_running_loop().time() + self.fault.delay_s
                    self._late.append((due, report))
                    self._late_added.set()
                case "twice":
                    await self._publish(report)
                    await self._publish(report)
                case "shuffled":
                    await self._hold(report)
                case "never":
                    self.counters["reports_withheld"] += 1

    async def _publish(self, report: ExecutionReport) -> None:
        await self._outbox.put((self.topics.reports, self._reports.encode(report), None))

    async def _hold(self, report: ExecutionReport) -> None:
        cid = report.client_order_id
        order = self.oms.orders.get(cid)
        if order is None or isinstance(report, CancelRejected):
            await self._publish(report)  # says nothing about the order's progress
            return
        held = self._held.setdefault(cid, [])
        held.append(report)
        if order.status in _CLOSED:
            del self._held[cid]
            for r in reversed(held):
                await self._publish(r)

    async def _publish_late(self) -> None:
        # one queue, due times in the order reports were made: late, never reordered
        loop = asyncio.get_running_loop()
        while True:
            if not self._late:
                self._late_added.clear()
                await self._late_added.wait()
                continue
            due, report = self._late[0]
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
                continue
            self._late.popleft()
            await self._publish(report)

    async def _venue_timer(self) -> None:
        # Orders and cancels reach the venue ``latency`` after they were read, whether or
        # not a tick comes in meanwhile: sleep until the next one is due, or until an
        # order makes it sooner.
        while True:
            nxt = self.oms.next_event_ns()
            wait = None if nxt is None else (nxt - self._clock.now_ns()) / 1e9
            if wait is None or wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            await self._flush_ticks()
            await self._emit(self.oms.advance_to(self._stamp()))

    async def _write(self) -> None:
        while True:
            topic, payload, props = await self._outbox.get()
            try:
                await self._connected().publish(topic, payload, qos=1, properties=props)
                self.counters["published"] += 1
            finally:
                self._outbox.task_done()

    def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            raise AdapterError("oms-sim: not connected (use it as an async context manager)")
        return self._client

    def _bad(self, source: str, raw: bytes, reason: str) -> None:
        self.bad_messages[source] += 1
        log.warning("oms-sim: bad message on %s (%d bytes): %s", source, len(raw), reason)
