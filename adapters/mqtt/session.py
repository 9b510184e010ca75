"""The daemon's session with the broker: market data, execution reports and operator
commands in, as ONE ordered stream (``inbox``); orders and status out, through a bounded
outbox that survives reconnects.

Two connections. Reports, commands, orders, status and the last will use one MQTT 5
connection (aiomqtt). Market data at QoS 0 (the default ``market_data_qos``) comes on a
second connection of its own, client id ``<client_id>-md``: a minimal MQTT 3.1.1
subscriber (``adapters.mqtt.feed_protocol``) that parses every complete PUBLISH of a
socket read in one loop and hands them to the decoder as one list, so a burst becomes
one ``TickBatch`` (paho's per-message MQTT 5 parsing capped ingest near 4-6k msgs/s
here). With ``market_data_qos`` 1 or 2, market data stays on the MQTT 5 connection.

Draining (the MQTT 5 connection). aiomqtt's message iterator costs a task and an
``asyncio.wait`` per message, and its reader callback parses one packet per turn of the
event loop. The session hands aiomqtt its own queue (the documented ``queue_type``
parameter). With market data on this connection, the session wakes once through the
iterator (which is also how aiomqtt reports a lost connection), then takes every message
already queued with ``get_nowait`` and gives the loop a few more turns
(``_DRAIN_TURNS``) while packets keep arriving, so a burst becomes one micro-batch. All
messages of one wake-up share one receive stamp. With market data on its own
connection, this one carries only reports and commands, one item each: the queue takes
each message in as paho hands it over (``_ReceiptQueue``), in the same turn of the loop
as its packet, and the iterator only reports the connection's loss.

Ordering. Inbox items are in arrival order at the session, stamped by ``receive_clock``
(never decreasing). Each connection keeps the broker's order; across the two, the order
is receipt order: the order in which the event loop read the two sockets (market data
when a read of the feed is parsed, a report or a command when paho parses its packet).
The broker does not order its writes across connections (mosquitto acknowledges a
publish before it forwards it, measured here by tens of ms under load), so a quote and a
report published in that order may arrive the other way round; the inbox holds what was
received, in that order, which is what the journal records and replay reproduces.
Consecutive market data is one batch; a report or a command always splits batches.

Connection items. ``Connection`` describes the session, not a socket: the session is
connected when every connection it uses is up. The first loss of either connection
emits ONE ``Connection(False)`` (its reason names the connection), a loss of the other
while it is down emits nothing, and ``Connection(True)`` comes only when both are back;
so the items alternate, starting with ``Connection(True)``. ``connection_lost`` and
``reconnects`` count these items; ``feed_connection_lost`` and ``feed_reconnects`` count
the market-data connection alone. Market data that arrives on a live feed connection
while the MQTT 5 connection is down is still delivered (fresh data, after the
``Connection(False)``); the daemon's feed monitor does not call the feed restored
before ``Connection(True)``.

Sending (``adapters.mqtt.outbox``). Orders, cancels and statuses go out at QoS 1 on the
MQTT 5 connection, in the order they were accepted, through a bounded outbox that survives
reconnects: written before the call returns when nothing waits before them and the
connection is up, else handed over in order by a writer task once it is.

Back-pressure (``adapters.mqtt.inbox``). When the inbox is full, items wait in a pending
list, still in order; only the oldest market data beyond ``max_pending_ticks`` is dropped,
counted and announced by an ``Overflow`` item.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Literal, cast

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from adapters.mqtt.auth import SIGNATURE_PROPERTY
from adapters.mqtt.command_guard import CommandGuard
from adapters.mqtt.feed_protocol import PINGREQ, FeedProtocol, open_feed
from adapters.mqtt.inbox import Inbox
from adapters.mqtt.ingest import (
    CommandIn,
    Connection,
    Inbound,
    Ingest,
    MarketData,
    Overflow,
    RawMessage,
    ReportIn,
)
from adapters.mqtt.outbox import Outbox, Publish, reason_value
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.topics import Topics
from engine.codec import EventCodec
from engine.errors import AdapterError
from engine.events import CancelRequest, OrderRejected, OrderRequest
from engine.instruments import InstrumentTable

__all__ = [
    "CommandIn",
    "Connection",
    "Inbound",
    "MarketData",
    "MqttSession",
    "Overflow",
    "ReportIn",
    "SessionState",
]

log = logging.getLogger(__name__)

SessionState = Literal["new", "connecting", "connected", "reconnecting", "closed"]

# Extra event-loop turns per wake-up while packets keep arriving: each turn lets aiomqtt's
# reader parse one more packet (~50 us each here), so a burst is cut into batches of up
# to ~64 messages and the first one waits at most a few ms; an idle feed costs one turn.
_DRAIN_TURNS = 64

# Bound of the market-data connection's handshake (connect, CONNACK, SUBACK), as
# aiomqtt's default timeout on the other connection.
_HANDSHAKE_TIMEOUT_S = 10.0

# paho leaves Nagle on: a PUBLISH written while an earlier segment is unacknowledged would
# wait for the broker's ACK (up to the delayed-ACK timer, ~40 ms on Linux)
_SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

# the two connections, by the name their losses are reported under
_MAIN = "reports/commands"
_FEED = "market data"

# CONNACK reason codes that retrying cannot fix (MQTT 5, 3.2.2.2): client id invalid,
# bad user name or password, not authorized, banned, bad authentication method.
_REFUSALS = frozenset({0x85, 0x86, 0x87, 0x8A, 0x8C})

# DISCONNECT reason code of a broker that let another connection take our client id
SESSION_TAKEN_OVER = 0x8E
# what paho reports for a socket the broker closed without a DISCONNECT ("unspecified")
_CLOSED_BY_BROKER = 0x80
# takeovers from this count on raise an alarm (one can be our own stale connection)
_TAKEOVER_ALARM_AT = 2


class _ReceiptQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's message queue when market data has its own connection: nothing is
    queued, each message is handed to ``take`` as paho parses it (aiomqtt's callback puts
    with ``put_nowait``), so a report or a command is ordered by its receipt against the
    market-data connection, not by when the iterator would have woken."""

    def __init__(self, take: Callable[[aiomqtt.Message], None]) -> None:
        super().__init__()
        self._take = take

    def put_nowait(self, item: aiomqtt.Message) -> None:
        self._take(item)


def _signature(message: aiomqtt.Message) -> str | None:
    properties = message.properties
    pairs = getattr(properties, "UserProperty", None) if properties is not None else None
    for key, value in pairs or ():
        if key == SIGNATURE_PROPERTY:
            return str(value)
    return None


def _loss_code(exc: BaseException) -> int | None:
    # aiomqtt's iterator raises a plain MqttError from the MqttCodeError holding the code
    for candidate in (exc, exc.__cause__):
        rc = getattr(candidate, "rc", None)
        if isinstance(rc, (int, ReasonCode)):
            return reason_value(rc)
    return None


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__
    return f"{exc}: {cause}" if cause is not None else str(exc)


class MqttSession:
    """The daemon's connection to the broker, as an async context manager.

    ``async with`` connects (retrying transport failures with backoff; a refusal by the
    broker raises), subscribes, and starts the background tasks; leaving it disconnects
    cleanly (no last will). Call ``flush`` before leaving to send what is queued.

    Args:
        settings: connection settings, secrets resolved.
        topics: the topic contract.
        instruments: instruments whose market data is subscribed; a tick's ``instrument``
            column is the dense index from this table.
        receive_clock: integer nanoseconds; stamps ``ts_recv`` of every item (readings
            are clamped so stamps never decrease).
        will_payload: the last will, published retained on ``topics.status`` by the
            broker if the connection dies without a disconnect.

    Attributes:
        inbox: the ordered input stream, bounded by ``settings.inbox_size``.
        counters: ``messages_in_{quote,trade,report,command}`` (received, before checks),
            ``bad_messages`` and ``bad_<reason>``, ``oversized``,
            ``commands_unauthenticated``, ``dropped_market_data``, ``connection_lost`` and
            ``reconnects`` (of the session: one per ``Connection`` item),
            ``feed_connection_lost`` and ``feed_reconnects`` (of the market-data
            connection alone), ``feed_frames_malformed``, ``feed_frames_oversized``,
            ``feed_qos_refused``, ``subscriptions_refused``, ``session_taken_over``
            (the broker closed the main connection for another one with our client id:
            reason 0x8E, or closed it while the market-data connection stayed up) and
            ``session_takeover_alarms`` (from the second takeover on, logged critical),
            ``published_{order,cancel,status}``, ``published`` (generic).
        state: ``new``, ``connecting``, ``connected`` (every connection up),
            ``reconnecting`` or ``closed``.
        max_pending_ticks: market data held while the inbox is full, before the oldest
            is dropped.

    Raises:
        AdapterError: TLS files cannot be loaded; on entry, the broker refused either
            connection.
    """

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        instruments: InstrumentTable,
        *,
        receive_clock: Callable[[], int],
        will_payload: bytes,
        command_guard: CommandGuard | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.instruments = instruments
        self.counters: collections.Counter[str] = collections.Counter()
        self.state: SessionState = "new"
        self._inbox = Inbox(settings.inbox_size, self.counters)
        self.inbox: asyncio.Queue[Inbound] = self._inbox.queue
        self._clock = receive_clock
        self._last_ts = 0
        self._will = aiomqtt.Will(topics.status, will_payload, qos=1, retain=True)
        self._tls = settings.ssl_context()
        self._codec = EventCodec(settings.format, source="mqtt")
        self._ingest = Ingest(
            topics,
            instruments,
            fmt=settings.format,
            max_payload_bytes=settings.max_payload_bytes,
            command_key=settings.command_key,
            counters=self.counters,
            command_guard=command_guard,
            limits=settings.limits,
        )
        self._command_topic = topics.command
        # market data on its own MQTT 3.1.1 connection (QoS 0 only)
        self._split_feed = settings.market_data_qos == 0
        # every client of this session puts into this one queue, which only we drain
        self._raw: asyncio.Queue[aiomqtt.Message] = (
            _ReceiptQueue(self._ingest_one) if self._split_feed else asyncio.Queue()
        )
        self._outbox = Outbox(
            settings.outbox_size, self.counters, lambda: self.state == "closed",
            max_age_ns=settings.max_order_age_ns, now=receive_clock, withdrawn=self._withdrawn,
        )  # fmt: skip
        self._tasks: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self._market_filters = [
            topics.market_data(i.venue, i.symbol) for i in instruments.instruments
        ]
        self._up = dict.fromkeys((_MAIN, _FEED) if self._split_feed else (_MAIN,), False)
        self._was_connected = False
        self._loss_codes: set[int | None] = set()  # of the last loss of the main connection

    @property
    def max_pending_ticks(self) -> int:
        return self._inbox.max_pending_ticks

    @max_pending_ticks.setter
    def max_pending_ticks(self, ticks: int) -> None:
        self._inbox.max_pending_ticks = ticks

    async def __aenter__(self) -> MqttSession:
        if self.state != "new":
            raise AdapterError(f"an MqttSession is entered once (state {self.state})")
        self.state = "connecting"
        try:
            client = await self._connect_first()
            try:
                feed = await self._connect_feed_first() if self._split_feed else None
            except BaseException:
                self._outbox.disconnected()
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.__aexit__(None, None, None)
                raise
        except BaseException:
            self.state = "closed"
            raise
        self._link_up(_MAIN)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._background = [
            self._tasks.create_task(self._inbox.deliver(), name="mqtt-deliver"),
            self._tasks.create_task(self._run(client), name="mqtt-connection"),
        ]
        if feed is not None:
            self._link_up(_FEED)
            feed.start()  # after the Connection(True) item: what it held goes in now
            self._background.append(
                self._tasks.create_task(self._run_feed(feed), name="mqtt-market-data")
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.state = "closed"
        self._outbox.close()  # publishers waiting for room see the session closed
        if self._tasks is None:
            return None
        for task in self._background:
            task.cancel()
        await self._tasks.__aexit__(exc_type, exc, tb)
        return None

    async def publish_order(self, order: OrderRequest | CancelRequest) -> None:
        """Publish an order or a cancel on ``topics.orders`` at QoS 1.

        Written at once when nothing waits before it and the connection is up (the
        coroutine then returns without suspending), else queued. Waits while the outbox is
        full (back-pressure). Queued messages survive a reconnect and are sent after it,
        in order.

        Raises:
            AdapterError: the session is closed.
        """
        await self._outbox.put(self._order_publish(order))

    def publish_order_now(self, order: OrderRequest | CancelRequest) -> bool:
        """Write an order or a cancel to the broker now, if it can go at once.

        It can when the connection is up, nothing waits in the outbox before it and the
        outbox has room; otherwise nothing happens and the caller queues it through
        ``publish_order``. Once written it is the session's like any queued message
        (resent after a reconnect until the broker acknowledges it).

        Returns:
            True if the message was handed to the connection, False if nothing was done.
        """
        return self._outbox.send_now(self._order_publish(order))

    def _order_publish(self, order: OrderRequest | CancelRequest) -> Publish:
        payload = self._codec.encode(order)
        if isinstance(order, OrderRequest):  # withdrawn, never sent, once too old
            return Publish(self.topics.orders, payload, 1, False, "published_order",
                           client_order_id=order.client_order_id, decided_ns=order.ts_event,
                           instrument=order.instrument)  # fmt: skip
        return Publish(self.topics.orders, payload, 1, False, "published_cancel")

    def _withdrawn(self, item: Publish) -> None:
        # an order never sent is a rejection the engine applies like the OMS's own: it
        # goes through the inbox, so the daemon journals it before acting on it
        ts = self._stamp()
        report = OrderRejected(ts_event=ts, ts_recv=ts, client_order_id=item.client_order_id,
                               reason="not sent: older than max_order_age")  # fmt: skip
        self._inbox.add(ReportIn(report=report, ts_recv=ts))
        if item.handed:  # the broker may have forwarded it before the loss: cancel it too
            cancel = CancelRequest(ts_event=ts, ts_recv=ts, client_order_id=item.client_order_id,
                                   instrument=item.instrument, reason="not sent: withdrawn")  # fmt: skip
            self._outbox.enqueue(self._order_publish(cancel))

    async def publish_status(self, payload: bytes) -> None:
        """Queue a status message: retained, QoS 1, on ``topics.status``.

        Raises:
            AdapterError: the session is closed.
        """
        await self._outbox.put(Publish(self.topics.status, payload, 1, True, "published_status"))

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Queue any message (tools use it).

        Raises:
            AdapterError: the session is closed.
        """
        await self._outbox.put(Publish(topic, payload, qos, retain, "published"))

    def outbox_empty(self) -> bool:
        """True when every queued message has been sent (and acknowledged, at QoS 1)."""
        return self._outbox.empty()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queued message is sent and acknowledged; False if ``timeout_s``
        passed first."""
        return await self._outbox.flush(timeout_s)

    def _raw_queue(self, maxsize: int) -> asyncio.Queue[aiomqtt.Message]:
        return self._raw  # aiomqtt's ``queue_type(maxsize=0)``: ours, unbounded, drained fast

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        username, client_id = s.login()
        return aiomqtt.Client(
            s.host,
            s.port,
            username=username,
            password=s.password,
            identifier=client_id,
            queue_type=cast("type[asyncio.Queue[aiomqtt.Message]]", self._raw_queue),
            protocol=aiomqtt.ProtocolVersion.V5,
            will=self._will,
            keepalive=s.keepalive_s,
            tls_context=self._tls,
            socket_options=_SOCKET_OPTIONS,
        )

    async def _connect(self) -> aiomqtt.Client:
        client = self._client()
        await client.__aenter__()
        try:
            await self._subscribe(client)
        except BaseException:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise
        log.info("mqtt connected to %s:%d", self.settings.host, self.settings.port)
        self._outbox.connected(client)  # publishes may go from here on
        return client

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        market = SubscribeOptions(qos=self.settings.market_data_qos)
        # a retained command or report would be replayed on every reconnect
        live_only = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        subscriptions = (
            [] if self._split_feed else [(topic, market) for topic in self._market_filters]
        )
        subscriptions += [(self.topics.reports, live_only), (self.topics.command, live_only)]
        codes: Sequence[int | ReasonCode] = await client.subscribe(subscriptions)
        for (topic, _), code in zip(subscriptions, codes):
            if reason_value(code) >= 0x80:
                self.counters["subscriptions_refused"] += 1
                log.error("mqtt subscription to %s refused by the broker: %s", topic, code)

    async def _connect_first(self) -> aiomqtt.Client:
        attempt = 0
        started = asyncio.get_running_loop().time()
        while True:
            try:
                return await self._connect()
            except MqttConnectError as exc:
                if exc.rc is not None and reason_value(exc.rc) in _REFUSALS:
                    raise AdapterError(
                        f"broker {self.settings.host}:{self.settings.port} refused the "
                        f"connection: {exc}"
                    ) from exc
                self._first_failure(attempt, started, _reason(exc), exc)
            except aiomqtt.MqttError as exc:
                self._first_failure(attempt, started, _reason(exc), exc)
            attempt += 1
            await asyncio.sleep(self._backoff(attempt))

    def _first_failure(self, attempt: int, started: float, cause: str, exc: BaseException) -> None:
        """A failed first connection: said once in full (where, why, what to check), then
        one line per retry; past ``first_connect_timeout_s`` it is the session's error."""
        settings = self.settings
        limit = settings.first_connect_timeout_s
        if limit is not None and asyncio.get_running_loop().time() - started >= limit:
            raise AdapterError(
                f"{settings.unreachable(cause)} (gave up after {limit:g} s)"
            ) from exc
        if attempt == 0:
            until = f"for {limit:g} s" if limit is not None else "until it answers"
            log.error("%s; retrying %s", settings.unreachable(cause), until)
        else:
            log.warning("mqtt broker %s:%s still unreachable (attempt %d): %s",
                        settings.host, settings.port, attempt + 1, cause)  # fmt: skip

    async def _reconnect(self) -> aiomqtt.Client:
        attempt = 0
        while True:
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1
            try:
                return await self._connect()
            except aiomqtt.MqttError as exc:
                log.warning("mqtt reconnect attempt %d failed: %s", attempt, _reason(exc))

    async def _open_feed(self) -> FeedProtocol:
        s = self.settings
        username, client_id = s.login("md")
        protocol = await open_feed(
            host=s.host,
            port=s.port,
            tls=self._tls,
            client_id=client_id,
            username=username,
            password=s.password,
            keepalive_s=s.keepalive_s,
            filters=self._market_filters,
            max_payload_bytes=s.max_payload_bytes,
            counters=self.counters,
            on_messages=self._ingest_market,
            timeout_s=_HANDSHAKE_TIMEOUT_S,
        )
        log.info("mqtt market-data connection to %s:%d up", s.host, s.port)
        return protocol

    async def _connect_feed_first(self) -> FeedProtocol:
        attempt = 0
        started = asyncio.get_running_loop().time()
        while True:
            try:
                return await self._open_feed()  # a refusal (AdapterError) is not retried
            except ConnectionError as exc:
                self._first_failure(attempt, started, str(exc), exc)
            attempt += 1
            await asyncio.sleep(self._backoff(attempt))

    async def _reconnect_feed(self) -> FeedProtocol:
        attempt = 0
        while True:
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1
            try:
                return await self._open_feed()
            except (ConnectionError, AdapterError) as exc:
                log.warning("mqtt market-data reconnect attempt %d failed: %s", attempt, exc)

    def _backoff(self, attempt: int) -> float:
        # capped exponential backoff with full jitter: a fleet of daemons does not return
        # in lockstep after a broker restart
        bound = min(
            self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2.0 ** min(attempt, 30)
        )
        return random.uniform(0.0, bound)

    def _count_takeover(self) -> None:
        # another connection logged in with our client id: with client ids bound to users
        # (docs/mosquitto.conf) only a holder of our own credentials can, so a repeat means
        # a second daemon on our user or stolen credentials; the daemon raises an Alarm
        self.counters["session_taken_over"] += 1
        times = self.counters["session_taken_over"]
        if times < _TAKEOVER_ALARM_AT:
            log.error("mqtt session taken over by another connection with client id %s",
                      self.settings.login()[1])  # fmt: skip
            return
        # repeated: not a network blip; someone holds our credentials (or a second daemon
        # runs on our user); an operator must look, so it is an alarm, counted
        self.counters["session_takeover_alarms"] += 1
        log.critical("ALARM: mqtt session taken over %d times: another client logs in as %s "
                     "with our client id (stolen credentials or a second daemon on this user)",
                     times, self.settings.login()[0])  # fmt: skip

    def _link_up(self, link: str) -> None:
        """``link`` is up; the session is connected once every link is (one item)."""
        self._up[link] = True
        if not all(self._up.values()):
            return
        self.state = "connected"
        reason = "reconnected" if self._was_connected else "connected"
        if self._was_connected:
            self.counters["reconnects"] += 1
        self._was_connected = True
        self._inbox.add(Connection(connected=True, ts_recv=self._stamp(), reason=reason))

    def _link_down(self, link: str, reason: str) -> None:
        """``link`` is lost; the first loss of a connected session is one item."""
        log.warning("mqtt %s connection lost: %s", link, reason)
        was_connected = all(self._up.values())
        self._up[link] = False
        if not was_connected:
            return
        self.state = "reconnecting"
        self.counters["connection_lost"] += 1
        self._inbox.add(
            Connection(connected=False, ts_recv=self._stamp(), reason=f"{link}: {reason}")
        )

    async def _run(self, client: aiomqtt.Client) -> None:
        while True:
            self._loss_codes = set()
            reason = await self._serve(client)
            feed_losses = self.counters["feed_connection_lost"]
            self._link_down(_MAIN, reason)
            client = await self._reconnect()
            # taken over: the broker says so (0x8E), or (mosquitto 2.0.11 closes the old
            # connection without a DISCONNECT) it closed this connection while the
            # market-data one stayed up all along, which a broker restart or a network
            # loss would not
            if SESSION_TAKEN_OVER in self._loss_codes or (
                _CLOSED_BY_BROKER in self._loss_codes
                and self._split_feed
                and self.counters["feed_connection_lost"] == feed_losses
                and self._up[_FEED]
            ):
                self._count_takeover()
            self._link_up(_MAIN)

    async def _run_feed(self, protocol: FeedProtocol) -> None:
        while True:
            reason = await self._serve_feed(protocol)
            self.counters["feed_connection_lost"] += 1
            self._link_down(_FEED, reason)
            protocol = await self._reconnect_feed()
            self.counters["feed_reconnects"] += 1
            self._link_up(_FEED)
            protocol.start()

    async def _serve_feed(self, protocol: FeedProtocol) -> str:
        """Keep the market-data connection alive until it is lost; the reason.

        PINGREQ every half ``keepalive_s`` (we send nothing else, and the broker drops a
        client silent for 1.5 times it: pinging at the full keepalive left a loaded loop's
        late wake-up as the only margin, and the soak saw the broker drop the feed 10
        times); a broker that sent nothing for 1.5 times it is gone.
        """
        loop = asyncio.get_running_loop()
        keepalive = float(self.settings.keepalive_s)
        last_ping = loop.time()
        try:
            while not protocol.lost.done():
                await asyncio.wait([protocol.lost], timeout=keepalive / 4)
                now = loop.time()
                if now - protocol.last_received > 1.5 * keepalive:
                    protocol.reset(f"nothing from the broker for {1.5 * keepalive:g} s")
                elif now - last_ping >= keepalive / 2:
                    protocol.send(PINGREQ)
                    last_ping = now
            return protocol.lost.result()
        finally:
            protocol.close()  # DISCONNECT when we leave (cancelled); no-op once lost

    async def _serve(self, client: aiomqtt.Client) -> str:
        """Read and write on one connection until it is lost; the reason."""
        reason = "connection lost"
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(client), name="mqtt-read")
                group.create_task(self._outbox.write(), name="mqtt-write")
        except* aiomqtt.MqttError as lost:
            reason = "; ".join(_reason(e) for e in lost.exceptions)
            self._loss_codes = {_loss_code(e) for e in lost.exceptions}
        finally:
            # handed over and not acknowledged: first out after the reconnect, in order
            self._outbox.disconnected()
            # what arrived before the loss goes in before the Connection(False) item
            self._take_waiting()
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
        return reason

    async def _read(self, client: aiomqtt.Client) -> None:
        raw = self._raw
        # the iterator is the wake-up (and aiomqtt's way of saying the connection is
        # gone); what else is queued is taken without it
        async for first in client.messages:
            group = [first]
            turns = 0
            while True:
                while not raw.empty():
                    group.append(raw.get_nowait())
                if turns == _DRAIN_TURNS:
                    break
                await asyncio.sleep(0)
                turns += 1
                if raw.empty():
                    break
            self._ingest_group(group)

    def submit_command(self, payload: bytes, signature: str) -> str | None:
        """A signed operator command that reached the daemon another way than the bus (the
        dashboard), through the command topic's own ingest: signature, target, freshness
        and repeats are checked as for a message on the topic, the counters count it, and
        an accepted command enters the inbox in receipt order, to be journaled and
        applied like any other. Returns None if it was accepted, else the reason counted
        (``commands_unauthenticated``, ``bad_command_stale``, ...). Never raises."""
        before = self.counters.copy()
        try:
            items = self._ingest.decode(
                [(self._command_topic, payload, signature, False)], self._stamp()
            )
        except Exception:  # the ingest never raises; if it ever did, the loop must not see it
            log.exception("command from the dashboard refused")
            return "internal"
        accepted = False
        for item in items:
            accepted = accepted or isinstance(item, CommandIn)
            self._inbox.add(item)
        if accepted:
            return None
        grown = [k for k, v in self.counters.items()
                 if v > before.get(k, 0) and k not in ("bad_messages", "messages_in_command")]  # fmt: skip
        return next(
            (k for k in grown if k.startswith("bad_command")), grown[0] if grown else "refused"
        )

    def _ingest_one(self, message: aiomqtt.Message) -> None:
        self._ingest_group([message])

    def _ingest_market(self, messages: list[RawMessage]) -> None:
        # the feed connection's reads, in order: every publish of one read, one stamp
        for item in self._ingest.decode(messages, self._stamp()):
            self._inbox.add(item)

    def _take_waiting(self) -> None:
        group = []
        while not self._raw.empty():
            group.append(self._raw.get_nowait())
        if group:
            self._ingest_group(group)

    def _ingest_group(self, group: list[aiomqtt.Message]) -> None:
        # runs inside paho's callback: nothing may leave it (it would drop the connection)
        command = self._command_topic
        messages: list[RawMessage] = []
        for m in group:
            try:
                topic = m.topic.value
                signature = _signature(m) if topic == command else None
                messages.append((topic, m.payload, signature, bool(m.retain)))
            except Exception:
                self.counters["bad_messages"] += 1
                self.counters["bad_internal"] += 1
                log.exception("mqtt message refused: its topic or properties cannot be read")
        for item in self._ingest.decode(messages, self._stamp()):
            self._inbox.add(item)

    def _stamp(self) -> int:
        ts = self._clock()
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        return ts
