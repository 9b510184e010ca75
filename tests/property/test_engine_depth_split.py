"""Through the engine: a replay engine with L2 features and a simulated venue filling on the
book gives the same decisions and fills for any cut of the tick stream and of the depth
stream into batches (the engine hands a batch's depth rows to the venue before anything of
the batch runs; the venue applies them in time order with the ticks).

The market quotes after every third update only and orders take 105 ms to reach the venue,
so an order often arrives just after a depth update that no tick follows yet: the book it
meets depends on the rows being handed before what is due ahead of the batch.

Mutations tried once, each fails the property: handing the rows to the venue after the
batch's walk instead of before it (fills on a book that lags the ticks); handing them after
the orders due before the batch's first tick have reached the venue (an arrival meets a
book without the update stamped just before it: a maker fill becomes a taker fill).
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.book.batch import DepthBatch
from engine.book.source import DepthAsOf
from engine.config import config_from_dict
from engine.engine import Engine
from engine.features.book_features import BookFeatureSet
from engine.strategy import NoParams
from engine.ticks import TickBatch
from replay.backtest.runner import build_engine, run_loop
from tests.integration.test_depth_parity import L2Quoter, _market

MS = 1_000_000
TICKS, DEPTH = _market(seed=21, steps=300, t0=1_700_000_000_000 * MS, quote_every=3)
ALL_TICKS = TickBatch.concat(TICKS)
ALL_DEPTH = DepthBatch.concat(DEPTH)
CONFIG = config_from_dict(
    {
        "instruments": [{"symbol": "BTC", "venue": "SIM", "tick_size": 1.0, "lot_size": 0.001}],
        "features": [
            {"name": "mid", "kind": "mid"},
            {"name": "l2_imb", "kind": "l2_imbalance", "levels": 3},
        ],
        "strategy": {"name": "ema_cross", "params": {"qty": 1.0}},
        "book": {"queue_model": "power", "queue_power": 2.0},
        "venue": {"sim": {"latency": "105ms"}},
    }
)


def _pieces(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    at = sorted({c % n for c in cuts} | {0, n})
    return list(itertools.pairwise(at))


def _run(tick_cuts: list[int], depth_cuts: list[int]) -> tuple[list[object], Engine]:
    engine, _, _ = build_engine(CONFIG, strategy=L2Quoter(NoParams()), depth=True)
    seen: list[object] = []
    engine.sinks.append(seen.append)
    book = BookFeatureSet(list(engine.features.book_specs), 1, ticks=[1.0], levels=20)
    depth = (ALL_DEPTH.slice(a, b) for a, b in _pieces(len(ALL_DEPTH), depth_cuts))
    engine.book_source = DepthAsOf(book, depth)
    ticks = [ALL_TICKS.slice(a, b) for a, b in _pieces(len(ALL_TICKS), tick_cuts)]
    run_loop(engine.run(ticks))
    return seen, engine


WHOLE, WHOLE_ENGINE = _run([], [])


def test_the_stream_trades_on_the_book() -> None:
    c = WHOLE_ENGINE.counters
    assert c["orders_sent"] >= 4 and c["fills"] >= 2
    assert any(getattr(f, "liquidity", "") == "maker" for f in WHOLE)


def test_one_tick_per_batch_gives_the_same_decisions() -> None:
    seen, _ = _run(list(range(len(ALL_TICKS))), [])
    assert seen == WHOLE


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 10_000), max_size=30),
    st.lists(st.integers(0, 100_000), max_size=30),
)
def test_any_cut_of_ticks_and_depth_gives_the_same_decisions(
    tick_cuts: list[int], depth_cuts: list[int]
) -> None:
    seen, engine = _run(tick_cuts, depth_cuts)
    assert seen == WHOLE
    assert np.array_equal(engine.portfolio.positions, WHOLE_ENGINE.portfolio.positions)
