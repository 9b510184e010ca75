"""The session's way in: the ordered input stream (``MqttSession.inbox``), bounded, and what
waits while it is full.

Back-pressure. When the inbox is full, items wait in a pending list, still in order:
reports, commands and connection changes are never dropped; consecutive market data
merges into one batch, and beyond ``max_pending_ticks`` the oldest ticks are dropped,
counted, and announced by an ``Overflow`` item just before the batch they were cut from.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from adapters.mqtt.ingest import Inbound, MarketData, Overflow
from engine.ticks import TickBatch

# the session's records keep the session's logger name
log = logging.getLogger("adapters.mqtt.session")

# Market data held while the inbox is full: 100k ticks is ~9 MB of columns, seconds of a
# busy feed; beyond that the oldest ticks go (counted) rather than memory growing.
MAX_PENDING_TICKS = 100_000


class _PendingMarket:
    """Market data waiting for room in the inbox; parts are concatenated on delivery."""

    __slots__ = ("dropped", "parts", "ticks", "ts_recv")

    def __init__(self, item: MarketData) -> None:
        self.parts: list[TickBatch] = [item.batch]
        self.ticks = len(item.batch)
        self.dropped = 0
        self.ts_recv = item.ts_recv

    def add(self, item: MarketData) -> None:
        self.parts.append(item.batch)
        self.ticks += len(item.batch)
        self.ts_recv = item.ts_recv

    def drop_oldest(self, count: int) -> int:
        dropped = 0
        while count > 0 and self.parts:
            first = self.parts[0]
            n = len(first)
            if n <= count:
                self.parts.pop(0)
                cut = n
            else:
                self.parts[0] = first.slice(count, n)
                cut = count
            count -= cut
            dropped += cut
        self.ticks -= dropped
        self.dropped += dropped
        return dropped

    def take(self) -> MarketData:
        batch = TickBatch.concat(self.parts)
        return MarketData(batch=batch, ts_recv=self.ts_recv, messages=len(batch))


class Inbox:
    """The ordered input stream and its pending list: ``add`` keeps the order, ``deliver``
    (a background task) moves what waits into the stream as it makes room.

    Args:
        size: bound of the stream, in items (``inbox_size``).
        counters: the session's counters (``dropped_market_data``).

    Attributes:
        queue: the stream (the session's ``inbox``).
        max_pending_ticks: market data held while the stream is full, before the oldest
            is dropped.
    """

    def __init__(self, size: int, counters: collections.Counter[str]) -> None:
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=size)
        self.max_pending_ticks = MAX_PENDING_TICKS
        self._counters = counters
        self._pending: collections.deque[Inbound | _PendingMarket] = collections.deque()
        self._pending_ready = asyncio.Event()
        self._delivering = False

    def add(self, item: Inbound) -> None:
        """Put ``item`` in the stream after everything before it: at once if nothing waits
        and there is room, else in the pending list."""
        pending = self._pending
        if isinstance(item, MarketData) and pending and isinstance(pending[-1], _PendingMarket):
            pending[-1].add(item)
            self._bound_pending()
            return
        if not pending and not self._delivering:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                pass
        if isinstance(item, MarketData):
            pending.append(_PendingMarket(item))
            self._bound_pending()
        else:
            pending.append(item)
        self._pending_ready.set()

    def _bound_pending(self) -> None:
        held = [p for p in self._pending if isinstance(p, _PendingMarket)]
        excess = sum(p.ticks for p in held) - self.max_pending_ticks
        for p in held:
            if excess <= 0:
                break
            first_drop = p.dropped == 0
            dropped = p.drop_oldest(excess)
            excess -= dropped
            self._counters["dropped_market_data"] += dropped
            if first_drop and dropped:
                log.warning(
                    "inbox full: dropping the oldest market data beyond %d ticks",
                    self.max_pending_ticks,
                )

    async def deliver(self) -> None:
        """Move what waits into the stream, in order, as it makes room (a background task)."""
        pending = self._pending
        while True:
            await self._pending_ready.wait()
            self._pending_ready.clear()
            while pending:
                head = pending.popleft()
                self._delivering = True
                if isinstance(head, _PendingMarket):
                    if head.dropped:
                        await self.queue.put(
                            Overflow(dropped_messages=head.dropped, ts_recv=head.ts_recv)
                        )
                    if head.ticks:
                        await self.queue.put(head.take())
                else:
                    await self.queue.put(head)
            self._delivering = False
