"""A simulated OMS on the broker (``tradeloop oms-sim``): the far side of the OMS contract,
for paper sessions, demos and tests of the daemon.

It reads orders and cancels on ``topics.orders``, reconciliation requests on
``topics.requests`` and the market data of the configured instruments, and answers with
execution reports (QoS 1) on ``topics.reports``. The state and the rules are
``adapters.tools.oms.simulated_oms.SimulatedOms`` (fills by the simulated venue, on the OMS's own
time axis): every message is stamped with the time the OMS read it, ticks and orders
alike. The senders' clocks (a tick file's ``ts_event``, the daemon's) never mix with it.

An order resent with a ``client_order_id`` the OMS already holds gets the order's latest
report again. Payloads are decoded as JSON or MessagePack, whichever the bytes are (a JSON
payload starts with ``{``, a MessagePack event with a map marker); reports go out in the
configured format, answers in the format of their request.

When enabled, it cancels a node's working orders once the node is gone (its status
offline, or its heartbeat lapsed): cancel-on-disconnect, ``adapters.tools.oms.disconnect``.

For fault tests of the daemon, ``AnswerFault`` makes it misbehave the way real OMSs do:
late, twice, out of order, or never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, cast

import aiomqtt
import msgspec
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.feed_protocol import PINGREQ, FeedProtocol, open_feed
from adapters.mqtt.ingest import RawMessage
from adapters.mqtt.reconcile import ReconcileCodec, ReconcileResponse, RequestFailed
from adapters.mqtt.topics import Topics
from adapters.tools.oms.disconnect import CancelOnDisconnect, NodeWatch
from adapters.tools.oms.simulated_oms import SimulatedOms, TickRow, tick_batch
from engine.clock import Clock, LiveClock
from engine.codec import EventCodec, Format
from engine.errors import AdapterError, BadMessage
from engine.events import (
    CancelRejected,
    CancelRequest,
    OrderRejected,
    OrderRequest,
    Quote,
    Trade,
    side_sign,
)
from engine.ports import ExecutionReport
from engine.ticks import QUOTE, TRADE

log = logging.getLogger(__name__)

AnswerMode = Literal["normal", "late", "twice", "shuffled", "never"]


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


def payload_format(raw: bytes) -> Format:
    """``"json"`` if the bytes start like a JSON object, else ``"msgpack"``.

    Unambiguous for events: a MessagePack event starts with a map marker (0x80-0x8f,
    0xde, 0xdf), while ``{`` and whitespace would be a bare integer in MessagePack.
    """
    return "json" if raw[:1] in (b"{", b" ", b"\n", b"\r", b"\t") else "msgpack"


# what a market-data topic carries (``MqttOmsSimulator._routes``)
_ROUTE_QUOTE = 0
_ROUTE_TRADE = 1


class _ReceiptQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's message queue (its documented ``queue_type``): nothing is queued, each
    message is handed to ``take`` in the turn of the loop paho parses it. aiomqtt's
    iterator costs a task and an ``asyncio.wait`` per message; here it only reports the
    connection's loss."""

    def __init__(self, take: Callable[[aiomqtt.Message], None]) -> None:
        super().__init__()
        self._take = take

    def put_nowait(self, item: aiomqtt.Message) -> None:
        self._take(item)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


SimState = Literal["new", "connected", "serving", "closed"]

# reconnect back-off after a lost broker (``serve(reconnect=True)``): quick, because a
# daemon that reconnects first asks for reconciliation at once and halts for 2 s when
# nobody answers (the soak saw it after 14 of 20 broker restarts with a 2 s cap); capped
# at twice a second so a broker that is down for long is not hammered
_RECONNECT_MIN_S = 0.05
_RECONNECT_MAX_S = 0.5
_KEEPALIVE_S = 30


class MqttOmsSimulator:
    """``SimulatedOms`` on a broker: an async context manager that connects and subscribes
    on entry; ``serve`` answers until its ``stop`` event is set.

    Two connections, as the daemon's session has (``adapters.mqtt.session``): orders,
    cancels and reconciliation requests on an MQTT 5 connection (aiomqtt; request/response
    needs MQTT 5), which also carries every report and answer at QoS 1; market data at
    QoS 0 on a minimal MQTT 3.1.1 subscriber (``adapters.mqtt.feed_protocol``) that hands
    over every publish of a socket read at once, decoded into one ``TickBatch``. paho's
    per-message MQTT 5 parsing (a ``Properties`` object per quote) was 73 % of the old
    simulator's time, which fell behind above ~5.6k quotes/s here. With
    ``market_data_qos`` 1 or 2, market data stays on the MQTT 5 connection.

    Across the two connections the order is receipt order: a quote and an order published
    at about the same time by two clients may be read in either order (as by a real OMS,
    whose market data and order entry are separate links). Each message is stamped with
    the OMS's time when read; an order is matched against the ticks read before it.

    Reports are handed to paho without waiting for the broker's PUBACK (one round trip
    per report otherwise); those not acknowledged when the connection is lost go out
    again, first and in order, after ``serve(reconnect=True)`` reconnects (QoS 1: at least
    once; the daemon books a fill once by its id).

    Args:
        oms: the state and rules.
        host: broker host.
        port: broker port.
        topics: the topic contract (prefix and account).
        username: broker user, or None.
        password: the user's password.
        client_id: MQTT client id (the market-data connection's is ``<client_id>-md``).
        report_format: format of the execution reports.
        market_data_qos: QoS of the market-data subscriptions.
        clock: where receive times come from (default the wall clock).
        fault: how reports are answered (default: normally).
        cancel_on_disconnect: when a gone daemon's orders are cancelled (default: never).
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
        fault: AnswerFault | None = None,
        cancel_on_disconnect: CancelOnDisconnect | None = None,
    ) -> None:
        self.oms = oms
        self.fault = fault if fault is not None else AnswerFault()
        self.cancel_on_disconnect = cancel_on_disconnect or CancelOnDisconnect()
        self._nodes = NodeWatch(self.cancel_on_disconnect, topics.prefix)
        self.topics = topics
        self.state: SimState = "new"
        self.bad_messages: Counter[str] = Counter()  # by source: orders, market_data, requests
        self._where = f"{host}:{port}"
        self._login = (host, port, username, password, client_id)
        self._market_data_qos = market_data_qos
        self._clock: Clock = clock if clock is not None else LiveClock()
        self._events = {"json": EventCodec("json", "oms"), "msgpack": EventCodec("msgpack", "oms")}
        self._reconcile = {
            "json": ReconcileCodec("json", topics.requests),
            "msgpack": ReconcileCodec("msgpack", topics.requests),
        }
        self._reports = self._events[report_format]
        # exact market-data topic -> (route, instrument index, symbol)
        self._routes: dict[str, tuple[int, int, str]] = {}
        for index, inst in enumerate(oms.instruments.instruments):
            self._routes[topics.quote(inst.venue, inst.symbol)] = (_ROUTE_QUOTE, index, inst.symbol)
            self._routes[topics.trade(inst.venue, inst.symbol)] = (_ROUTE_TRADE, index, inst.symbol)
        self._rows: list[TickRow] = []
        self._flush_soon: asyncio.Handle | None = None
        self._late: deque[tuple[float, ExecutionReport]] = deque()
        self._late_added = asyncio.Event()
        self._held: dict[str, list[ExecutionReport]] = {}
        self._wake = asyncio.Event()
        self._last_ns = 0
        # made on entry (they bind the running loop), again on each reconnect
        self._client: aiomqtt.Client | None = None
        self._paho: Any = None
        self._feed: FeedProtocol | None = None
        self._feed_counters: Counter[str] = Counter()
        # handed to paho, no PUBACK yet: message id -> (topic, payload, properties)
        self._unacked: dict[int, tuple[str, bytes, Properties | None]] = {}
        self._acked_early: set[int] = set()
        # reports made while no connection was up, sent first after the reconnect
        self._backlog: list[tuple[str, bytes, Properties | None]] = []
        self._settled = asyncio.Event()  # nothing unacknowledged, nothing in the backlog
        self._settled.set()
        self._failure: BaseException | None = None

    @property
    def counters(self) -> Counter[str]:
        return self.oms.counters

    async def __aenter__(self) -> MqttOmsSimulator:
        try:
            await self._connect()
        except (aiomqtt.MqttError, ConnectionError, AdapterError) as exc:
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
        await self._disconnect()

    async def serve(
        self, stop: asyncio.Event, *, drain_timeout_s: float = 5.0, reconnect: bool = False
    ) -> None:
        """Answer orders, cancels and requests until ``stop`` is set, then wait (up to
        ``drain_timeout_s``) for the broker to acknowledge every report sent.

        Args:
            stop: set it to stop serving.
            drain_timeout_s: how long to wait for the last reports' acknowledgements.
            reconnect: after a lost broker, connect again (back-off 50 to 500 ms) with the
                same OMS state, and send the unacknowledged reports first; without it a
                lost broker ends ``serve``.

        Raises:
            AdapterError: the broker connection was lost (and ``reconnect`` is False).
        """
        if self.state != "connected":
            raise AdapterError(f"oms-sim: serve() needs a connected simulator, not {self.state}")
        self.state = "serving"
        try:
            async with asyncio.TaskGroup() as tg:
                links = tg.create_task(self._keep_links(reconnect), name="oms-sim-links")
                timer = tg.create_task(self._venue_timer(), name="oms-sim-venue-timer")
                late = tg.create_task(self._publish_late(), name="oms-sim-late")
                stopped = tg.create_task(stop.wait(), name="oms-sim-stop")
                lapse = tg.create_task(self._watch_heartbeats(), name="oms-sim-heartbeats")
                await asyncio.wait([links, stopped], return_when=asyncio.FIRST_COMPLETED)
                for task in (timer, late, stopped, lapse):
                    task.cancel()
                if not links.done():
                    self._flush_ticks()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(drain_timeout_s):
                            await self._settled.wait()
                    links.cancel()
        except* AdapterError as group:
            raise group.exceptions[0] from None
        finally:
            self.state = "connected"

    async def _connect(self) -> None:
        host, port, username, password, client_id = self._login
        client = aiomqtt.Client(
            host,
            port,
            username=username,
            password=password,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=_KEEPALIVE_S,
            queue_type=cast("type[asyncio.Queue[aiomqtt.Message]]", self._receipt_queue),
        )
        await client.__aenter__()
        try:
            await client.subscribe(self.topics.orders, qos=1)
            await client.subscribe(self.topics.requests, qos=1)
            if self.cancel_on_disconnect.enabled:
                await client.subscribe(self._nodes.topic_filter, qos=1)
            if self._market_data_qos != 0:
                for topic in self._routes:
                    await client.subscribe(topic, qos=self._market_data_qos)
            else:
                self._feed = await open_feed(
                    host=host,
                    port=port,
                    tls=None,
                    client_id=f"{client_id}-md",
                    username=username,
                    password=password,
                    keepalive_s=_KEEPALIVE_S,
                    filters=list(self._routes),
                    max_payload_bytes=1 << 20,
                    counters=self._feed_counters,
                    on_messages=self._on_feed,
                    timeout_s=10.0,
                )
                self._feed.start()
        except BaseException:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise
        self._client = client
        self._paho = client._client  # aiomqtt 2.x has no public handle on its paho client
        acknowledged = self._paho.on_publish
        self._paho.on_publish = lambda c, u, mid, code, props: self._acked(
            acknowledged, c, u, mid, code, props
        )

    async def _disconnect(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        client, self._client, self._paho = self._client, None, None
        if client is not None:
            # when the feed noticed the loss first, nothing awaits aiomqtt's disconnection
            # future, and asyncio would log its MqttError as never retrieved
            disconnected = getattr(client, "_disconnected", None)
            if isinstance(disconnected, asyncio.Future):
                disconnected.add_done_callback(_retrieve)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    def _receipt_queue(self, maxsize: int) -> asyncio.Queue[aiomqtt.Message]:
        return _ReceiptQueue(self._on_message)

    async def _keep_links(self, reconnect: bool) -> None:
        attempt = 0
        while True:
            reason = await self._watch()
            self.counters["connections_lost"] += 1
            if not reconnect:
                raise AdapterError(f"oms-sim: lost the broker at {self._where}: {reason}")
            log.warning("oms-sim: lost the broker at %s: %s; reconnecting", self._where, reason)
            self._requeue()
            await self._disconnect()
            while True:
                delay = min(_RECONNECT_MAX_S, _RECONNECT_MIN_S * 2**attempt)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                attempt += 1
                try:
                    await self._connect()
                    break
                except (aiomqtt.MqttError, ConnectionError, AdapterError) as exc:
                    log.warning("oms-sim: reconnect attempt %d failed: %s", attempt, exc)
            attempt = 0
            self.counters["reconnects"] += 1
            log.info("oms-sim: reconnected to %s", self._where)
            backlog, self._backlog = self._backlog, []
            for topic, payload, props in backlog:
                self._send(topic, payload, props)

    async def _watch(self) -> str:
        """Until either connection is lost: the reason. Keeps the market-data one alive
        (it sends nothing else, and the broker drops a client silent for 1.5 keepalives)."""
        client = self._connected()
        loop = asyncio.get_running_loop()

        async def main_link() -> str:
            try:
                async for _ in client.messages:  # nothing is queued: only the loss ends it
                    pass
            except aiomqtt.MqttError as exc:
                return f"orders/reports: {exc}"
            return "orders/reports: closed"

        watch = asyncio.create_task(main_link(), name="oms-sim-watch")
        last_ping = loop.time()
        try:
            while True:
                feed = self._feed
                waits: list[asyncio.Future[str]] = [watch]
                if feed is not None:
                    waits.append(feed.lost)
                await asyncio.wait(waits, timeout=_KEEPALIVE_S / 2, return_when="FIRST_COMPLETED")
                if watch.done():
                    return watch.result()
                if feed is not None:
                    if feed.lost.done():
                        return f"market data: {feed.lost.result()}"
                    if loop.time() - last_ping >= _KEEPALIVE_S / 2:
                        feed.send(PINGREQ)
                        last_ping = loop.time()
        finally:
            watch.cancel()

    def _stamp(self) -> int:
        # the OMS's time axis never goes backwards, even if the wall clock is stepped back
        self._last_ns = max(self._clock.now_ns(), self._last_ns)
        return self._last_ns

    def _on_message(self, message: aiomqtt.Message) -> None:
        # called from inside paho's reader: a bug here is logged with its traceback and
        # counted, not left to unwind through paho
        try:
            topic = message.topic.value
            raw = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            now = self._stamp()
            if topic == self.topics.orders:
                self._flush_ticks()  # the ticks read before the order reach the venue first
                self._on_order(bytes(raw), now)
            elif topic == self.topics.requests:
                self._flush_ticks()
                self._on_request(bytes(raw), message.properties, now)
            elif self._nodes.is_status(topic):
                self._on_status(topic, bytes(raw), now)
            else:  # market data at QoS 1 or 2 (on this connection)
                self._on_market_data([(topic, bytes(raw), None, False)], now)
                if self._flush_soon is None:
                    loop = asyncio.get_running_loop()
                    self._flush_soon = loop.call_soon(self._flush_ticks)
        except Exception:
            self.counters["errors"] += 1
            log.exception("oms-sim: error handling a message")

    def _on_feed(self, messages: list[RawMessage]) -> None:
        # one read of the market-data socket: one stamp, one TickBatch
        self._on_market_data(messages, self._stamp())
        self._flush_ticks()

    def _on_market_data(self, messages: list[RawMessage], now: int) -> None:
        rows = self._rows
        routes = self._routes
        events = self._events
        nan = math.nan
        for topic, raw, _, _ in messages:
            route = routes.get(topic)
            if route is None:
                self._bad(
                    "market_data", raw, f"{topic}: not market data of a configured instrument"
                )
                continue
            kind, index, symbol = route
            try:
                event = events[payload_format(raw)].decode(raw)
            except BadMessage as exc:
                self._bad("market_data", raw, f"{topic}: {exc.reason}")
                continue
            if type(event) is Quote and kind == _ROUTE_QUOTE and event.instrument == symbol:
                q = event
                rows.append((now, index, QUOTE, q.bid, q.ask, q.bid_size, q.ask_size, nan, nan, 0))
            elif type(event) is Trade and kind == _ROUTE_TRADE and event.instrument == symbol:
                t = event
                side = side_sign(t.side)
                rows.append((now, index, TRADE, nan, nan, nan, nan, t.price, t.size, side))
            elif getattr(event, "instrument", None) != symbol:
                self._bad(
                    "market_data", raw, f"{topic}: not market data of a configured instrument"
                )
            else:
                self._bad("market_data", raw, f"{topic}: a {type(event).__name__} payload")

    def _flush_ticks(self) -> None:
        self._flush_soon = None
        if self._rows:
            rows, self._rows = self._rows, []
            self._emit(self.oms.on_ticks(tick_batch(rows)))

    def _on_order(self, raw: bytes, now: int) -> None:
        fmt = payload_format(raw)
        try:
            event = self._events[fmt].decode(raw)
        except BadMessage as exc:
            self._refuse(raw, fmt, exc.reason, now)
            return
        match event:
            case OrderRequest():
                self._emit(self.oms.on_order(event, now))
            case CancelRequest():
                self._emit(self.oms.on_cancel(event, now))
            case _:
                reason = f"a {type(event).__name__} is neither an order nor a cancel"
                self._refuse(raw, fmt, reason, now)
                return
        self._wake.set()  # the venue's next event may be sooner now

    def _on_status(self, topic: str, raw: bytes, now: int) -> None:
        try:
            gone = self._nodes.on_status(topic, raw, asyncio.get_running_loop().time())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._bad("status", raw, str(exc))
            return
        if gone is not None:
            self.counters["nodes_offline"] += 1
            self._cancel_node(*gone, now=now)

    async def _watch_heartbeats(self) -> None:
        lapse = self.cancel_on_disconnect.heartbeat_lapse_s
        while self.cancel_on_disconnect.enabled and lapse is not None:
            await asyncio.sleep(lapse / 4)
            for node, reason in self._nodes.lapsed(asyncio.get_running_loop().time()):
                self.counters["heartbeats_lapsed"] += 1
                self._cancel_node(node, reason, now=self._stamp())

    def _cancel_node(self, node: str, reason: str, *, now: int) -> None:
        self._flush_ticks()
        log.warning("oms-sim: %s: cancelling the working orders of node %s", reason, node)
        self._emit(self.oms.cancel_orders_of(node, now, reason))
        self._wake.set()  # the cancels reach the venue after its latency

    def _refuse(self, raw: bytes, fmt: Format, reason: str, now: int) -> None:
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
        self._emit([report])

    def _on_request(self, raw: bytes, props: Properties | None, now: int) -> None:
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
        self._send(answer_to, codec.encode(answer), out)

    def _emit(self, reports: Iterable[ExecutionReport]) -> None:
        if self.fault.mode == "shuffled":
            self._shuffle(reports)
            return
        for report in reports:
            match self.fault.mode:
                case "normal":
                    self._publish(report)
                case "late":
                    due = asyncio.get_running_loop().time() + self.fault.delay_s
                    self._late.append((due, report))
                    self._late_added.set()
                case "twice":
                    self._publish(report)
                    self._publish(report)
                case "never":
                    self.counters["reports_withheld"] += 1

    def _publish(self, report: ExecutionReport) -> None:
        self._send(self.topics.reports, self._reports.encode(report), None)

    def _send(self, topic: str, payload: bytes, props: Properties | None) -> None:
        """Hand a QoS 1 publish to paho now; no connection: kept for the reconnect."""
        self._settled.clear()
        paho = self._paho
        if paho is None:
            self._backlog.append((topic, payload, props))
            return
        info = paho.publish(topic, payload, qos=1, properties=props)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # the connection is going: the watch reports it; this goes out after it
            self._backlog.append((topic, payload, props))
            return
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise AdapterError(f"oms-sim: could not publish to {topic}: {info.rc}")
        if info.mid not in self._acked_early:
            self._unacked[info.mid] = (topic, payload, props)
        else:
            self._acked_early.discard(info.mid)
            self.counters["published"] += 1
        self._check_settled()

    def _acked(
        self, acknowledged: Any, client: Any, userdata: Any, mid: int, code: Any, props: Any
    ) -> None:
        if acknowledged is not None:
            acknowledged(client, userdata, mid, code, props)
        if self._unacked.pop(mid, None) is None:
            # paho may call on_publish before its publish() returns
            self._acked_early.add(mid)
            return
        self.counters["published"] += 1
        self._check_settled()

    def _check_settled(self) -> None:
        if not self._unacked and not self._backlog:
            self._settled.set()

    def _requeue(self) -> None:
        # sent on the lost connection without an acknowledgement: first after the
        # reconnect, in the order they were made (answers to requests are not: the
        # requester has given up on them and asks again)
        again = [item for item in self._unacked.values() if item[0] == self.topics.reports]
        self._backlog[:0] = again
        self._unacked.clear()
        self._acked_early.clear()
        self._check_settled()

    def _shuffle(self, reports: Iterable[ExecutionReport]) -> None:
        # all of one call first, then the closed orders' reports newest first: an order
        # acked and filled in one step (a market order at latency 0) also shows its fill
        # before its ack
        closed: list[str] = []
        for report in reports:
            cid = report.client_order_id
            order = self.oms.orders.get(cid)
            if order is None or isinstance(report, CancelRejected):
                self._publish(report)  # says nothing about the order's progress
                continue
            self._held.setdefault(cid, []).append(report)
            if order.status in _CLOSED and cid not in closed:
                closed.append(cid)
        for cid in closed:
            for report in reversed(self._held.pop(cid)):
                self._publish(report)

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
            self._publish(report)

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
            self._flush_ticks()
            self._emit(self.oms.advance_to(self._stamp()))

    def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            raise AdapterError("oms-sim: not connected (use it as an async context manager)")
        return self._client

    def _bad(self, source: str, raw: bytes, reason: str) -> None:
        self.bad_messages[source] += 1
        log.warning("oms-sim: bad message on %s (%d bytes): %s", source, len(raw), reason)
