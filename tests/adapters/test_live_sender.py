"""QueueSender: synchronous sends queued for one async publisher, in order, bounded."""

from __future__ import annotations

import asyncio

import pytest

from adapters.live_sender import Outgoing, QueueSender, ShadowSender
from engine.errors import AdapterError
from engine.events import CancelRequest, OrderRequest


def _order(n: int, ts: int = 100) -> OrderRequest:
    return OrderRequest(ts_event=ts, ts_recv=ts, client_order_id=f"c{n}", instrument="X",
                        side="buy", qty=1.0)  # fmt: skip


def _cancel(n: int) -> CancelRequest:
    return CancelRequest(ts_event=1, ts_recv=1, client_order_id=f"c{n}", instrument="X")


@pytest.mark.asyncio
async def test_queue_sender_publishes_in_order_with_trigger_and_time() -> None:
    sent: list[Outgoing] = []
    seen: list[tuple[str, str, int]] = []

    async def publish(item: Outgoing) -> None:
        await asyncio.sleep(0)
        sent.append(item)

    sender = QueueSender(
        8,
        wall_clock=lambda: 1_000,
        on_published=lambda item, trigger, ns: seen.append((item.client_order_id, trigger, ns)),
    )
    task = asyncio.create_task(sender.drain(publish))
    sender.trigger = "market_data"
    sender.submit(_order(1))
    sender.cancel(_cancel(1))
    sender.trigger = "report"
    sender.submit(_order(2))
    assert await sender.wait_empty(1.0)
    task.cancel()
    assert [i.client_order_id for i in sent] == ["c1", "c1", "c2"]
    assert isinstance(sent[1], CancelRequest)
    assert seen == [
        ("c1", "market_data", 1000),
        ("c1", "market_data", 1000),
        ("c2", "report", 1000),
    ]
    assert sender.published == 3 and sender.empty()


@pytest.mark.asyncio
async def test_queue_sender_over_capacity_drops_orders_never_cancels() -> None:
    sender = QueueSender(2, wall_clock=lambda: 0)
    for n in range(4):
        sender.submit(_order(n))
    for n in range(3):
        sender.cancel(_cancel(n))
    assert sender.dropped == 2
    assert [o.client_order_id for o in sender.take_dropped()] == ["c2", "c3"]
    assert sender.take_dropped() == []
    assert len(sender) == 5  # 2 orders + 3 cancels


@pytest.mark.asyncio
async def test_queue_sender_capacity_frees_as_orders_are_published() -> None:
    sender = QueueSender(1, wall_clock=lambda: 0)

    async def publish(item: Outgoing) -> None:
        pass

    task = asyncio.create_task(sender.drain(publish))
    sender.submit(_order(1))
    assert await sender.wait_empty(1.0)
    sender.submit(_order(2))
    assert await sender.wait_empty(1.0)
    task.cancel()
    assert sender.dropped == 0 and sender.published == 2


@pytest.mark.asyncio
async def test_queue_sender_failed_publish_is_counted_and_the_rest_goes_out() -> None:
    sent: list[str] = []

    async def publish(item: Outgoing) -> None:
        if item.client_order_id == "c1":
            raise AdapterError("broker gone")
        sent.append(item.client_order_id)

    sender = QueueSender(4, wall_clock=lambda: 0)
    task = asyncio.create_task(sender.drain(publish))
    sender.submit(_order(1))
    sender.submit(_order(2))
    assert await sender.wait_empty(1.0)
    task.cancel()
    assert sent == ["c2"] and sender.failed == 1


@pytest.mark.asyncio
async def test_queue_sender_wait_empty_times_out_when_the_publisher_hangs() -> None:
    gate = asyncio.Event()

    async def publish(item: Outgoing) -> None:
        await gate.wait()

    sender = QueueSender(4, wall_clock=lambda: 0)
    task = asyncio.create_task(sender.drain(publish))
    sender.submit(_order(1))
    assert not await sender.wait_empty(0.05)
    gate.set()
    assert await sender.wait_empty(1.0)
    task.cancel()


def test_queue_sender_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        QueueSender(0, wall_clock=lambda: 0)


def test_shadow_sender_counts_and_sends_nothing() -> None:
    shadow = ShadowSender()
    shadow.submit(_order(1))
    shadow.cancel(_cancel(1))
    assert (shadow.orders, shadow.cancels) == (1, 1)


@pytest.mark.asyncio
async def test_queue_sender_publish_now_sends_inside_submit_with_trigger_and_time() -> None:
    now: list[str] = []
    queued: list[str] = []
    seen: list[tuple[str, str, int]] = []

    def publish_now(item: Outgoing) -> bool:
        now.append(item.client_order_id)
        return True

    async def publish(item: Outgoing) -> None:
        queued.append(item.client_order_id)

    sender = QueueSender(
        4,
        wall_clock=lambda: 7,
        on_published=lambda item, trigger, ns: seen.append((item.client_order_id, trigger, ns)),
    )
    sender.submit(_order(0))  # drain not running yet: queued, nothing sent synchronously
    assert now == [] and len(sender) == 1
    task = asyncio.create_task(sender.drain(publish, publish_now=publish_now))
    assert await sender.wait_empty(1.0)
    sender.trigger = "market_data"
    sender.submit(_order(1))
    sender.cancel(_cancel(1))
    assert now == ["c1", "c1"] and sender.empty()  # sent before submit returned
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sender.submit(_order(2))  # drain stopped: queued again
    assert queued == ["c0"] and now == ["c1", "c1"] and len(sender) == 1
    assert seen == [("c0", "", 7), ("c1", "market_data", 7), ("c1", "market_data", 7)]
    assert sender.published == 3


@pytest.mark.asyncio
async def test_queue_sender_publish_now_declined_queues_and_nothing_overtakes() -> None:
    accept = False
    sent: list[str] = []
    gate = asyncio.Event()

    def publish_now(item: Outgoing) -> bool:
        if accept:
            sent.append(item.client_order_id)
        return accept

    async def publish(item: Outgoing) -> None:
        await gate.wait()
        sent.append(item.client_order_id)

    sender = QueueSender(4, wall_clock=lambda: 0)
    task = asyncio.create_task(sender.drain(publish, publish_now=publish_now))
    await asyncio.sleep(0)
    sender.submit(_order(1))  # declined (e.g. reconnecting): queued
    accept = True
    sender.submit(_order(2))  # would go at once, but c1 waits before it
    sender.cancel(_cancel(2))
    assert sent == [] and len(sender) == 3
    gate.set()
    assert await sender.wait_empty(1.0)
    sender.submit(_order(3))  # the queue is empty again: at once
    assert sent == ["c1", "c2", "c2", "c3"]
    task.cancel()
    assert sender.published == 4 and sender.dropped == 0


@pytest.mark.asyncio
async def test_queue_sender_publish_now_failure_is_counted_not_queued() -> None:
    def publish_now(item: Outgoing) -> bool:
        raise AdapterError("broker gone")

    async def publish(item: Outgoing) -> None:
        raise AssertionError("not queued")

    sender = QueueSender(4, wall_clock=lambda: 0)
    task = asyncio.create_task(sender.drain(publish, publish_now=publish_now))
    await asyncio.sleep(0)
    sender.submit(_order(1))
    assert sender.failed == 1 and sender.published == 0 and sender.empty()
    task.cancel()
