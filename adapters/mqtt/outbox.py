"""The session's way out: orders, cancels and statuses go out at QoS 1 on the MQTT 5
connection, in the order they were accepted.

An item accepted while nothing waits before it and the connection is up is handed to paho
and written to the socket before the call returns (``MqttSession.publish_order_now``, and
``publish_order`` without suspending): no task wakes between the engine's decision and the
write. Otherwise it waits in the outbox, which a writer task hands over in order once the
connection is up. An item is done when its PUBACK comes; items handed over but not
acknowledged when the connection is lost go out again, first, after the reconnect (so the
OMS may see one twice: it is idempotent by client order id). A new order is never handed
over once it is older than ``max_order_age`` (from its decision, on the receive clock):
orders that waited out a dead connection are withdrawn instead, each reported to the
session (``withdrawn``), which tells the engine through the journaled input stream and,
for an order handed over before the loss (the broker may have forwarded it), sends its
cancel; cancels and statuses always go. At most ``outbox_size`` items
are accepted and not yet acknowledged; beyond that ``publish_*`` waits (back-pressure) and
``publish_order_now`` declines. The socket has TCP_NODELAY (the session's
``_SOCKET_OPTIONS``): paho leaves Nagle on, which holds a small PUBLISH written while an
earlier one is unacknowledged at the TCP level.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt.client import Client as PahoClient
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from engine.errors import AdapterError

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

# the session's records keep the session's logger name
log = logging.getLogger("adapters.mqtt.session")


@dataclass(frozen=True, slots=True)
class Publish:
    """One message to send, and the counter its acknowledgement adds to."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    counter: str
    # a new order: its client order id and its decision time (receive clock, ns); an
    # item with a decision time is withdrawn rather than sent once older than the limit
    client_order_id: str = ""
    decided_ns: int | None = None
    instrument: str = ""
    # handed to a connection since lost without its PUBACK: the broker may have
    # forwarded it, so a withdrawn one is cancelled too
    handed: bool = False


def reason_value(code: int | ReasonCode) -> int:
    """An MQTT reason code as an int (paho hands over either)."""
    return code.value if isinstance(code, ReasonCode) else int(code)


class _Writer:
    """Publishes on one connection's paho client and writes the packet at once.

    aiomqtt's ``publish`` is a coroutine (a task must run it) and registers the socket for
    writing through ``call_soon_threadsafe``: the packet leaves two turns of the event loop
    later. Here the session calls paho's ``publish`` itself and, through paho's public
    external-loop callbacks (``on_socket_register_write``, ``loop_write``, ``on_publish``),
    writes while paho asks for the socket to be registered; whatever a full socket buffer
    leaves unwritten is registered with aiomqtt as before. Only the session's own publishes
    write at once: a packet paho queues from inside its reader (a PUBACK) keeps aiomqtt's
    path, as paho itself never writes from inside its callbacks.
    """

    def __init__(self, client: aiomqtt.Client, on_ack: Callable[[int, int], None]) -> None:
        # aiomqtt 2.x has no public handle on its paho client; 3.x drops paho altogether
        paho: PahoClient = client._client
        self._paho = paho
        self._on_ack = on_ack
        self._now = False
        self._register = paho.on_socket_register_write
        self._acknowledged: Any = paho.on_publish
        paho.on_socket_register_write = self._register_write
        paho.on_publish = self._published

    def publish(self, item: Publish) -> int:
        """Hand ``item`` to paho and write it now; its message id."""
        self._now = True
        try:
            info = self._paho.publish(item.topic, item.payload, item.qos, item.retain)
        finally:
            self._now = False
        # MQTT_ERR_NO_CONN: the connection is going; the reader reports it and the item
        # goes out again after the reconnect
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish to {item.topic}")
        return info.mid

    def _register_write(self, client: PahoClient, userdata: Any, sock: SocketLike) -> None:
        if self._now:
            self._now = False
            client.loop_write()  # on a broken socket paho reports the loss (on_disconnect)
            if not client.want_write():
                return
        if self._register is not None:
            self._register(client, userdata, sock)

    def _published(
        self,
        client: PahoClient,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if self._acknowledged is not None:
            self._acknowledged(client, userdata, mid, reason_code, properties)
        self._on_ack(mid, reason_value(reason_code))


class Outbox:
    """The session's outbound messages: accepted in order, handed to one connection's paho
    client, done when the broker acknowledges them.

    Args:
        size: the most items accepted and not yet acknowledged (``outbox_size``).
        counters: the session's counters: ``item.counter`` per acknowledged item,
            ``publish_refused``.
        closed: whether the session is closed (nothing more is accepted).
        max_age_ns: a new order older than this (``now() - decided_ns``) is withdrawn,
            never sent (None: no limit).
        now: the receive clock the decision times are on.
        withdrawn: told of each withdrawn order (the session turns it into a rejection).
    """

    def __init__(
        self,
        size: int,
        counters: collections.Counter[str],
        closed: Callable[[], bool],
        *,
        max_age_ns: int | None = None,
        now: Callable[[], int] | None = None,
        withdrawn: Callable[[Publish], None] | None = None,
    ) -> None:
        self._size = size
        self._counters = counters
        self._closed = closed
        self._max_age_ns = max_age_ns
        self._now = now
        self._withdrawn = withdrawn
        # waiting (in order, first to go first), then handed to the connection's paho
        # client and waiting for the PUBACK (by message id, in publish order)
        self._waiting: collections.deque[Publish] = collections.deque()
        self._unacked: dict[int, Publish] = {}
        self._writer: _Writer | None = None  # while the MQTT 5 connection serves
        self._unsent = 0  # accepted and not acknowledged: waiting + unacked
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._settled = asyncio.Event()
        self._settled.set()

    async def put(self, item: Publish) -> None:
        """Send ``item`` now if it can go at once, else queue it; waits while the outbox
        is full.

        Raises:
            AdapterError: the session is closed.
        """
        self._check_open(item.topic)
        if self.send_now(item):
            return
        while self._unsent >= self._size:
            self._room.clear()
            await self._room.wait()
            self._check_open(item.topic)
        self._waiting.append(item)
        self._accepted()
        self._ready.set()

    def enqueue(self, item: Publish) -> None:
        """Queue ``item`` behind what waits, room or not (a withdrawn order's cancel: one
        per withdrawn order, and it must not wait for room inside the writer)."""
        self._waiting.append(item)
        self._accepted()
        self._ready.set()

    def send_now(self, item: Publish) -> bool:
        """Hand ``item`` to the connection if it can go at once; False if nothing was done."""
        # nothing may overtake what waits in the outbox
        if self._writer is None or self._waiting or self._unsent >= self._size or self._closed():
            return False
        if self._too_old(item):
            self._withdraw(item)
            return True
        try:
            self._send(item)
        except aiomqtt.MqttError:
            return False  # queued instead: the writer meets the error and reconnects
        self._accepted()
        return True

    def connected(self, client: aiomqtt.Client) -> None:
        """Publishes may go on ``client`` from here on (what waits still goes first)."""
        self._writer = _Writer(client, self._acked)

    def disconnected(self) -> None:
        """The connection is gone: what was handed over and not acknowledged goes out
        first after the reconnect, in order."""
        self._writer = None
        self._waiting.extendleft(
            replace(item, handed=True) for item in reversed(self._unacked.values())
        )
        self._unacked.clear()

    def close(self) -> None:
        """Wake the publishers waiting for room: they see the session closed."""
        self._room.set()

    def empty(self) -> bool:
        """True when every accepted message has been sent and acknowledged."""
        return self._unsent == 0

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every accepted message is acknowledged; False if ``timeout_s``
        passed first."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def write(self) -> None:
        """Hand the outbox to the connection, in order; a lost connection ends this task
        through the session's reader (``disconnected`` puts what is unacknowledged back)."""
        waiting = self._waiting
        while True:
            while waiting:
                item = waiting[0]
                if self._too_old(item):
                    waiting.popleft()
                    self._withdraw(item)
                    self._settle()
                    continue
                self._send(item)
                waiting.popleft()
            self._ready.clear()
            await self._ready.wait()

    def _check_open(self, topic: str) -> None:
        if self._closed():
            raise AdapterError(f"publish to {topic} on a closed MqttSession")

    def _send(self, item: Publish) -> None:
        """Hand ``item`` to the connection's client; it stays ours until its PUBACK."""
        assert self._writer is not None
        mid = self._writer.publish(item)
        self._unacked[mid] = item

    def _too_old(self, item: Publish) -> bool:
        if item.decided_ns is None or self._max_age_ns is None or self._now is None:
            return False
        return self._now() - item.decided_ns > self._max_age_ns

    def _withdraw(self, item: Publish) -> None:
        """``item`` is never sent: counted, logged, reported (it was accepted or is being
        accepted: ``write`` settles a waiting one, ``send_now`` never counted it)."""
        assert self._now is not None and item.decided_ns is not None
        age_s = (self._now() - item.decided_ns) / 1e9
        self._counters["orders_withdrawn_stale"] += 1
        log.error("order %s not sent: %.3f s after its decision, older than max_order_age",
                  item.client_order_id, age_s)  # fmt: skip
        if self._withdrawn is not None:
            self._withdrawn(item)

    def _accepted(self) -> None:
        self._unsent += 1
        self._settled.clear()

    def _acked(self, mid: int, code: int) -> None:
        item = self._unacked.pop(mid, None)
        if item is None:  # not ours (aiomqtt's own calls) or from a connection since lost
            return
        if code >= 0x80:
            self._counters["publish_refused"] += 1
            log.error("broker refused a publish to %s: reason code 0x%02x", item.topic, code)
        else:
            self._counters[item.counter] += 1
        self._settle()

    def _settle(self) -> None:
        self._unsent -= 1
        self._room.set()
        if self._unsent == 0:
            self._settled.set()
