"""The sending role of the live router (``engine.ports.OrderSender``).

The engine sends synchronously, from inside its loop; the broker is reached by awaiting.
``QueueSender`` joins the two: ``submit`` and ``cancel`` append to a bounded queue and
return at once, and one task (``drain``) publishes the queue in order. Given a
``publish_now`` (``MqttSession.publish_order_now``), an item that would be first in the
queue is offered to it before it is queued: on a connected session the order is written
to the broker inside ``submit``, before the engine's turn ends, rather than after the
drain task's wake-up and the session's own. ``publish_now`` declines (the item is then
queued) whenever the session could not send at once, so publish order stays submit
order. Orders beyond the bound are not queued: they are counted and handed to the daemon (``take_dropped``), which
tells the engine through the journaled input stream, so a replay of the journal takes
the same decisions. Cancels are always queued: there is at most one per open order, and
dropping one would leave risk working at the venue.

``ShadowSender`` is the shadow mode's: it logs what would have been sent and sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from engine.errors import TradeloopError
from engine.events import CancelRequest, OrderRequest

log = logging.getLogger("tradeloop.sender")

Outgoing = OrderRequest | CancelRequest
Publish = Callable[[Outgoing], Awaitable[None]]
PublishNow = Callable[[Outgoing], bool]
"""Sends an item at once and returns True, or does nothing and returns False."""
Published = Callable[[Outgoing, str, int], None]
"""Called after each publish with the item, the kind of input that caused it and the
publish time (ns, from the sender's ``wall_clock``)."""


class QueueSender:
    """An ``OrderSender`` that queues for an async publisher.

    Args:
        capacity: most orders waiting to be published; more are dropped and counted.
        wall_clock: time source for publish times (metrics only; never the engine's).
        on_published: called after each successful publish (metrics).
    """

    def __init__(
        self,
        capacity: int,
        *,
        wall_clock: Callable[[], int],
        on_published: Published | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.trigger = ""  # the kind of input the engine is handling (set by the daemon)
        self.published = 0
        self.dropped = 0
        self.failed = 0
        self._wall_clock = wall_clock
        self._on_published = on_published
        self._queue: deque[tuple[Outgoing, str]] = deque()
        self._orders_queued = 0
        self._dropped_pending: list[OrderRequest] = []
        self._publish_now: PublishNow | None = None  # while ``drain`` runs
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, order: OrderRequest) -> None:
        """Send an order at once if it can go (see the module), else queue it; beyond
        ``capacity`` it is dropped and kept for ``take_dropped``."""
        if self._send_now(order):
            return
        if self._orders_queued >= self.capacity:
            self.dropped += 1
            self._dropped_pending.append(order)
            log.error(
                "outbox full: order not sent",
                extra={"client_order_id": order.client_order_id, "capacity": self.capacity},
            )
            return
        self._orders_queued += 1
        self._put(order)

    def cancel(self, request: CancelRequest) -> None:
        """Send a cancel at once if it can go, else queue it (never dropped)."""
        if not self._send_now(request):
            self._put(request)

    def _send_now(self, item: Outgoing) -> bool:
        publish_now = self._publish_now
        if publish_now is None or self._queue:  # nothing overtakes what is queued
            return False
        try:
            if not publish_now(item):
                return False
        except TradeloopError as exc:
            self._failed(item, exc)
            return True
        self._done(item, self.trigger)
        return True

    def _put(self, item: Outgoing) -> None:
        self._queue.append((item, self.trigger))
        self._idle.clear()
        self._ready.set()

    def take_dropped(self) -> list[OrderRequest]:
        """The orders dropped since the last call (the daemon turns them into inputs)."""
        dropped, self._dropped_pending = self._dropped_pending, []
        return dropped

    def empty(self) -> bool:
        return not self._queue

    async def drain(self, publish: Publish, *, publish_now: PublishNow | None = None) -> None:
        """Publish queued items in order, forever (run as a task; cancel to stop).

        Args:
            publish: publishes one item, waiting while the publisher is full.
            publish_now: sends one item at once or declines (see the module); offered
                ``submit`` and ``cancel`` while this task runs and the queue is empty.

        A publish that fails with a ``TradeloopError`` (the session's ``AdapterError``) is
        logged and counted; the order then gets no answer and the engine's order timeout
        makes it UNKNOWN.
        """
        queue = self._queue
        self._publish_now = publish_now
        try:
            while True:
                while queue:
                    item, trigger = queue[0]
                    try:
                        await publish(item)
                    except TradeloopError as exc:
                        self._failed(item, exc)
                    else:
                        self._done(item, trigger)
                    queue.popleft()
                    if isinstance(item, OrderRequest):
                        self._orders_queued -= 1
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
        finally:
            self._publish_now = None

    def _done(self, item: Outgoing, trigger: str) -> None:
        self.published += 1
        if self._on_published is not None:
            self._on_published(item, trigger, self._wall_clock())

    def _failed(self, item: Outgoing, exc: TradeloopError) -> None:
        self.failed += 1
        log.error("publish failed: %s", exc, extra={"client_order_id": item.client_order_id})

    async def wait_empty(self, timeout_s: float) -> bool:
        """Wait until everything queued is published; False if ``timeout_s`` ran out."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class ShadowSender:
    """An ``OrderSender`` that sends nothing: shadow mode logs the intended orders (the
    decisions log holds them too) and the engine keeps them as working orders."""

    def __init__(self) -> None:
        self.orders = 0
        self.cancels = 0

    def submit(self, order: OrderRequest) -> None:
        self.orders += 1
        log.info(
            "shadow: order not sent",
            extra={
                "client_order_id": order.client_order_id,
                "instrument": order.instrument,
                "side": order.side,
                "qty": order.qty,
                "order_type": order.order_type,
                "limit_price": order.limit_price,
            },
        )

    def cancel(self, request: CancelRequest) -> None:
        self.cancels += 1
        log.info(
            "shadow: cancel not sent",
            extra={"client_order_id": request.client_order_id, "reason": request.reason},
        )


__all__ = ["Outgoing", "PublishNow", "QueueSender", "ShadowSender"]
