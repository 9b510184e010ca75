"""The engine loop runs on asyncio and yields to other tasks between batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine.ticks import TickBatch
from tests.support import Scripted, make_engine, quotes

T = 1_700_000_000_000_000_000


@pytest.mark.asyncio
async def test_engine_run_consumes_an_async_source_and_interleaves_with_other_tasks() -> None:
    strat = Scripted()
    engine = make_engine(strat)
    seen: list[str] = []

    async def source() -> AsyncIterator[TickBatch]:
        for k in range(5):
            seen.append(f"batch{k}")
            yield quotes([(T + k, 99.0, 101.0, 1.0, 1.0)])

    async def heartbeat() -> None:
        for k in range(5):
            seen.append(f"beat{k}")
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(engine.run(source()), name="engine")
        tg.create_task(heartbeat(), name="heartbeat")
    assert engine.counters["ticks"] == 5
    # the heartbeat ran between batches, not after the whole source
    assert seen.index("beat1") < seen.index("batch4")
    assert engine.clock.now_ns() == T + 4


@pytest.mark.asyncio
async def test_engine_run_accepts_a_plain_iterable_and_finishes() -> None:
    strat = Scripted()
    engine = make_engine(strat)
    await engine.run(
        [quotes([(T, 99.0, 101.0, 1.0, 1.0)]), quotes([(T + 1, 99.0, 101.0, 1.0, 1.0)])]
    )
    assert engine.counters["ticks"] == 2 and "orders_open_at_end" in engine.counters
