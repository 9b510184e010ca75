"""Properties of the queue-position model (adapters/queue_position.py).

Each property names the wrong change that breaks it (tried once, by hand, on the kernel):

- no early fill: letting an at-price trade reach the order without eating ``ahead`` first
  (``reach = avail`` in the at-price branch) fails ``test_queue_never_fills_before_ahead_gone``.
- conservation: not taking a fill off the trade's size (dropping ``avail -= q``) lets two orders
  at one price take one trade twice: ``test_queue_conserves_quantities`` fails (per-trade sum).
- batch split: resetting ``R_TRADED`` at the start of each ``advance_queue`` call (state that
  must carry across calls kept per call) changes the power model's cancel split:
  ``test_queue_any_batch_split_same_fills`` fails.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.queue_position import (
    EV_LEVEL,
    EV_TRADE,
    N_QFCOLS,
    POWER,
    QF_EVENT,
    QF_PRICE,
    QF_QTY,
    QF_SLOT,
    R_ACTIVE,
    R_AHEAD,
    R_REMAINING,
    TRADES_ONLY,
    advance_queue,
    cancel_share_ahead,
    enter_order,
    new_order_table,
    queue_after_level_change,
    walk_levels,
)

PRICES = (99.0, 99.5, 100.0, 100.5, 101.0)
SIZES = st.sampled_from((0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.5))

event = st.one_of(
    st.tuples(st.just(EV_LEVEL), st.sampled_from((-1, 1)), st.sampled_from(PRICES), SIZES),
    st.tuples(st.just(EV_TRADE), st.sampled_from((-1, 0, 1)), st.sampled_from(PRICES), SIZES),
)
order = st.tuples(st.sampled_from((-1, 1)), st.sampled_from(PRICES), SIZES.filter(bool), SIZES)


def _columns(events: list[tuple[int, int, float, float]]) -> tuple[np.ndarray, ...]:
    n = len(events)
    inst = np.zeros(n, np.int64)
    kind = np.array([e[0] for e in events], np.int64)
    side = np.array([e[1] for e in events], np.int64)
    price = np.array([e[2] for e in events], np.float64)
    size = np.array([e[3] for e in events], np.float64)
    return inst, kind, side, price, size


def _run(
    orders_in: list[tuple[int, float, float, float]],
    events: list[tuple[int, int, float, float]],
    cuts: list[int],
    model: int,
    power: float = 2.0,
) -> tuple[list[tuple[int, float, float, int]], np.ndarray]:
    table = new_order_table(max(1, len(orders_in)))
    for slot, (s, p, qty, level) in enumerate(orders_in):
        enter_order(table, slot, 0, s, p, qty, level)
    cols = _columns(events)
    fills = np.zeros((table.shape[0], N_QFCOLS))
    out: list[tuple[int, float, float, int]] = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(events)), len(events)]
    for start, stop in itertools.pairwise(bounds):
        pos = start
        while pos < stop:
            pos, n = advance_queue(table, len(orders_in), *cols, pos, stop, model, power, fills)
            for k in range(n):
                row = fills[k]
                out.append(
                    (int(row[QF_SLOT]), float(row[QF_QTY]), float(row[QF_PRICE]),
                     int(row[QF_EVENT]))
                )  # fmt: skip
    return out, table


@settings(max_examples=300, deadline=None)
@given(
    st.lists(order, min_size=1, max_size=4),
    st.lists(event, max_size=40),
    st.sampled_from((TRADES_ONLY, POWER)),
)
def test_queue_never_fills_before_ahead_gone(orders_in, events, model):
    # Bound from outside the model: what was in front at entry can only have left by trades
    # at the price or by decreases of the level, so until a trade goes through the price an
    # order's fills never exceed what traded at its price beyond that.
    fills, _ = _run(orders_in, events, [], model)
    for slot, (s, p, _qty, ahead0) in enumerate(orders_in):
        at = through = decreases = filled = 0.0
        level = ahead0
        by_event: dict[int, float] = {}
        for f in fills:
            if f[0] == slot:
                by_event[f[3]] = by_event.get(f[3], 0.0) + f[1]
        for t, (k, side, price, size) in enumerate(events):
            if k == EV_LEVEL and side == s and price == p:
                decreases += max(level - size, 0.0)
                level = size
            elif k == EV_TRADE and side == -s and size > 0:
                if price == p:
                    at += size
                elif (price < p) if s > 0 else (price > p):
                    through += size
            filled += by_event.get(t, 0.0)
            # a trade through the price means the level traded away, front to back
            bound = at + through if through > 0 else max(0.0, at + decreases - ahead0)
            assert filled <= bound + 1e-9, (slot, t)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(order, min_size=1, max_size=4),
    st.lists(event, max_size=40),
    st.sampled_from((TRADES_ONLY, POWER)),
)
def test_queue_conserves_quantities(orders_in, events, model):
    fills, table = _run(orders_in, events, [], model)
    per_event: dict[int, float] = {}
    for slot, (s, p, qty, _ahead0) in enumerate(orders_in):
        mine = [f for f in fills if f[0] == slot]
        assert all(f[1] > 0 and f[2] == p for f in mine)
        filled = sum(f[1] for f in mine)
        remaining = table[slot, R_REMAINING]
        assert remaining >= 0.0 and table[slot, R_AHEAD] >= 0.0
        assert math.isclose(filled + remaining, qty, abs_tol=1e-9)
        assert (table[slot, R_ACTIVE] == 0.0) == (remaining == 0.0)
        hit = sum(
            e[3] for e in events
            if e[0] == EV_TRADE and e[1] == -s and ((e[2] <= p) if s > 0 else (e[2] >= p))
        )  # fmt: skip
        assert filled <= hit + 1e-9
    for f in fills:
        per_event[f[3]] = per_event.get(f[3], 0.0) + f[1]
    for t, total in per_event.items():
        assert events[t][0] == EV_TRADE and total <= events[t][3] + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    st.lists(order, min_size=1, max_size=4),
    st.lists(event, max_size=40),
    st.lists(st.integers(0, 40), max_size=8),
    st.sampled_from((TRADES_ONLY, POWER)),
    st.sampled_from((0.5, 1.0, 2.0, 3.0)),
)
def test_queue_any_batch_split_same_fills(orders_in, events, cuts, model, power):
    whole, table_whole = _run(orders_in, events, [], model, power)
    split, table_split = _run(orders_in, events, cuts, model, power)
    ones, table_ones = _run(orders_in, events, list(range(len(events))), model, power)
    assert whole == split == ones
    assert np.array_equal(table_whole, table_split) and np.array_equal(table_whole, table_ones)


def test_queue_trades_only_ignores_cancels_power_splits_them():
    # level 3.0 with 1.0 ahead of us (2.0 joined behind); 1.5 cancelled, no trade
    assert queue_after_level_change(1.0, 3.0, 1.5, 0.0, TRADES_ONLY, 2.0) == 1.0
    share = cancel_share_ahead(1.0, 2.0, 2.0)
    assert math.isclose(share, 1.0 / 5.0)
    assert math.isclose(queue_after_level_change(1.0, 3.0, 1.5, 0.0, POWER, 2.0), 1.0 - 0.3)
    # a decrease fully explained by trades moves nothing more
    assert queue_after_level_change(0.5, 3.0, 2.5, 0.5, POWER, 2.0) == 0.5
    # a level deleted leaves nobody in front
    assert queue_after_level_change(2.0, 3.0, 0.0, 0.0, TRADES_ONLY, 2.0) == 0.0


def test_queue_trade_at_price_fills_only_the_excess():
    fills, table = _run([(1, 100.0, 1.0, 2.0)], [(EV_TRADE, -1, 100.0, 1.5),
                                                 (EV_TRADE, -1, 100.0, 1.0)], [], TRADES_ONLY)  # fmt: skip
    assert fills == [(0, 0.5, 100.0, 1)]
    assert math.isclose(table[0, R_REMAINING], 0.5) and table[0, R_AHEAD] == 0.0


def test_walk_levels_stops_at_limit_and_skips_taken():
    prices = np.array([100.0, 100.5, 101.0])
    sizes = np.array([1.0, 2.0, 5.0])
    taken = np.array([0.25, 0.0, 0.0])
    lv = np.zeros(3, np.int64)
    qty = np.zeros(3)
    n = walk_levels(prices, sizes, taken, 3, 1, 4.0, 100.5, lv, qty)
    assert n == 2 and list(lv[:n]) == [0, 1] and list(qty[:n]) == [0.75, 2.0]
    n = walk_levels(prices, sizes, taken, 3, 1, 4.0, math.nan, lv, qty)
    assert list(qty[:n]) == [0.75, 2.0, 1.25]
