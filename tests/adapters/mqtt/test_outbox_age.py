"""The outbox never hands over a new order older than ``max_order_age``: an order that
waited out a dead connection is withdrawn and reported; cancels and statuses still go."""

from __future__ import annotations

import asyncio
import collections

import pytest

from adapters.mqtt.outbox import Outbox, Publish

SECOND = 1_000_000_000


class _FakeWriter:
    """The connection's writer: records what was handed over."""

    def __init__(self) -> None:
        self.sent: list[Publish] = []

    def publish(self, item: Publish) -> int:
        self.sent.append(item)
        return len(self.sent)


def _order(coid: str, decided_ns: int) -> Publish:
    return Publish("oms/a/orders", coid.encode(), 1, False, "published_order",
                   client_order_id=coid, decided_ns=decided_ns)  # fmt: skip


def _cancel(coid: str) -> Publish:
    return Publish("oms/a/orders", b"cancel " + coid.encode(), 1, False, "published_cancel")


def _outbox(now: list[int], withdrawn: list[Publish]) -> Outbox:
    return Outbox(
        16, collections.Counter(), lambda: False,
        max_age_ns=3 * SECOND, now=lambda: now[0], withdrawn=withdrawn.append,
    )  # fmt: skip


@pytest.mark.asyncio
async def test_outbox_order_older_than_max_age_after_reconnect_withdrawn_cancel_sent() -> None:
    now = [100 * SECOND]
    withdrawn: list[Publish] = []
    outbox = _outbox(now, withdrawn)
    # the connection is down: both wait
    await outbox.put(_order("N-1", decided_ns=now[0]))
    await outbox.put(_cancel("N-1"))
    await outbox.put(_order("N-2", decided_ns=now[0] + 23 * SECOND))
    now[0] += 24 * SECOND  # the reconnect comes 24 s after the first decision
    writer = _FakeWriter()
    outbox._writer = writer  # type: ignore[assignment]  # the connection is back
    task = asyncio.create_task(outbox.write())
    await asyncio.sleep(0)
    task.cancel()
    assert [p.payload for p in writer.sent] == [b"cancel N-1", b"N-2"]
    assert [p.client_order_id for p in withdrawn] == ["N-1"]
    assert outbox._counters["orders_withdrawn_stale"] == 1
    for mid in (1, 2):
        outbox._acked(mid, 0)
    assert outbox.empty()  # the withdrawn order is settled, not left pending


def test_outbox_send_now_stale_order_withdrawn_not_written() -> None:
    now = [100 * SECOND]
    withdrawn: list[Publish] = []
    outbox = _outbox(now, withdrawn)
    writer = _FakeWriter()
    outbox._writer = writer  # type: ignore[assignment]
    assert outbox.send_now(_order("N-1", decided_ns=now[0] - 4 * SECOND))
    assert outbox.send_now(_order("N-2", decided_ns=now[0] - 2 * SECOND))
    assert outbox.send_now(_cancel("N-9"))
    assert [p.payload for p in writer.sent] == [b"N-2", b"cancel N-9"]
    assert [p.client_order_id for p in withdrawn] == ["N-1"]
    outbox._acked(1, 0)
    outbox._acked(2, 0)
    assert outbox.empty()


@pytest.mark.asyncio
async def test_outbox_order_unacked_at_loss_then_too_old_withdrawn_as_handed() -> None:
    """An order written before the loss, without its PUBACK, may have been forwarded: it
    is withdrawn as ``handed`` (the session then sends its cancel), a cancel goes."""
    now = [100 * SECOND]
    withdrawn: list[Publish] = []
    outbox = _outbox(now, withdrawn)
    outbox._writer = _FakeWriter()  # type: ignore[assignment]
    assert outbox.send_now(_order("N-1", decided_ns=now[0]))
    outbox.disconnected()  # no PUBACK came
    now[0] += 10 * SECOND
    writer = _FakeWriter()
    outbox._writer = writer  # type: ignore[assignment]
    outbox.enqueue(_cancel("N-7"))
    task = asyncio.create_task(outbox.write())
    await asyncio.sleep(0)
    task.cancel()
    assert [(p.client_order_id, p.handed) for p in withdrawn] == [("N-1", True)]
    assert [p.payload for p in writer.sent] == [b"cancel N-7"]
