"""No look-ahead in per-tick hooks: whatever a strategy reads in any hook (features, last
quotes, positions, open quantities, the clock, the trading state, for every instrument)
equals what it reads with one tick per batch, for any split of the ticks into batches.

The probe reads everything in every hook and trades a little on what it reads (limit
orders that rest and fill, market orders, cancels, a timer), so positions and open
quantities move inside batches too. Before the fix, ``ctx.features`` returned the feature
state at the end of the micro-batch: the wrong change that makes this fail is
``EngineContext.features`` reading ``features.current(feature_state, i)`` again.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import TimerFired
from engine.events import Fill, OrderAccepted, OrderCancelled, Quote, Signal, Trade
from engine.strategy import Strategy
from engine.ticks import TickBatch
from replay.backtest.runner import build_engine, run_loop, tick_batches
from replay.files.readers import BadRowCounts
from replay.files.sample_data import generate
from tests.conftest import make_config

SYMBOLS = ("BTC-USD", "ETH-USD")
TICKS = 3_000


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


class Probe(Strategy):
    """Reads everything in every hook; trades on what it read."""

    name = "probe"

    def __init__(self) -> None:
        super().__init__(Strategy.Params())
        self.log: list[tuple[Any, ...]] = []
        self.n = 0
        self.working: list[str] = []

    def thresholds(self) -> tuple[float, ...]:
        return (0.0,)

    def _read(self, hook: str) -> None:
        ctx = self.ctx
        seen: list[Any] = [hook, ctx.now_ns(), ctx.trading_state]
        for sym in SYMBOLS:
            q = ctx.last_quote(sym)
            quote = None if q is None else (q.ts_event, q.bid, q.ask, q.bid_size, q.ask_size)
            seen.append((sym, ctx.position(sym), ctx.open_qty(sym), quote, ctx.features(sym)))
        self.log.append(tuple(seen))

    def _trade(self, sym: str) -> None:
        # decisions from what was read: a look-ahead changes the orders too
        self.n += 1
        feats = self.ctx.features(sym)
        q = self.ctx.last_quote(sym)
        if q is None or math.isnan(feats["ema_fast"]):
            return
        side = "buy" if feats["ema_fast"] >= feats["ema_slow"] else "sell"
        if self.n % 97 == 0:
            self.ctx.submit_market(sym, side, 0.01)
        elif self.n % 41 == 0:
            price = q.bid if side == "buy" else q.ask
            self.ctx.submit_limit(sym, side, 0.01, price)
        elif self.n % 53 == 0 and self.working:
            self.ctx.cancel(self.working.pop(0))

    def on_start(self) -> None:
        self._read("start")
        self.ctx.set_timer("probe", self.ctx.now_ns() + 700_000_000, interval_ns=700_000_000)

    def on_quote(self, quote: Quote) -> None:
        self._read(f"quote {quote.instrument} {quote.ts_event}")
        self._trade(quote.instrument)

    def on_trade(self, trade: Trade) -> None:
        self._read(f"trade {trade.instrument} {trade.ts_event}")
        self._trade(trade.instrument)

    def on_signal(self, signal: Signal) -> None:
        self._read(f"signal {signal.instrument} {signal.ts_event}")

    def on_fill(self, fill: Fill) -> None:
        self._read(f"fill {fill.client_order_id} {fill.qty}")

    def on_order(self, event: OrderAccepted | OrderCancelled | Any) -> None:
        self._read(f"order {type(event).__name__} {event.client_order_id}")
        if isinstance(event, OrderAccepted):
            self.working.append(event.client_order_id)

    def on_timer(self, timer: TimerFired) -> None:
        self._read(f"timer {timer.ts_event}")


@cache
def _ticks() -> TickBatch:
    folder = Path(tempfile.mkdtemp(prefix="tl-lookahead-"))
    generate(folder, symbols=2, hours=0.05, quote_interval_ms=50.0, seed=5)
    cfg = make_config()
    engine, _, _ = build_engine(cfg, strategy=Probe())
    batches, _ = tick_batches(cfg, folder, engine.instruments, BadRowCounts(), 4096)
    ticks = TickBatch.concat(list(batches))
    assert set(np.unique(ticks.kind).tolist()) == {0, 1}  # quotes and trades both
    return ticks.slice(0, min(TICKS, len(ticks)))


def _run(cuts: list[int]) -> list[tuple[Any, ...]]:
    ticks = _ticks()
    probe = Probe()
    engine, _, _ = build_engine(make_config(), strategy=probe)
    edges = [0, *sorted(set(cuts)), len(ticks)]
    pieces = [ticks.slice(a, b) for a, b in itertools.pairwise(edges) if b > a]
    run_loop(engine.run(iter(pieces)))
    return probe.log


@cache
def _one_tick_per_batch() -> list[tuple[Any, ...]]:
    return _run(list(range(1, len(_ticks()))))


def _first_difference(a: list[Any], b: list[Any]) -> str | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if not _same(x, y):
            return f"read {i}: {x!r} != {y!r}"
    return None if len(a) == len(b) else f"{len(a)} reads != {len(b)}"


def test_probe_reads_and_trades_in_every_hook() -> None:
    log = _one_tick_per_batch()
    hooks = {entry[0].split()[0] for entry in log}
    assert {"start", "quote", "trade", "fill", "order", "timer"} <= hooks
    assert any(entry[3][1] != 0.0 or entry[4][1] != 0.0 for entry in log)  # positions moved


def test_default_batches_read_what_one_tick_per_batch_reads() -> None:
    assert _first_difference(_run([]), _one_tick_per_batch()) is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=TICKS - 1), max_size=40))
def test_any_batch_split_reads_what_one_tick_per_batch_reads(cuts: list[int]) -> None:
    assert _first_difference(_run(cuts), _one_tick_per_batch()) is None
