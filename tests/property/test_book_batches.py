"""The L2 book (``engine.book.book``): any split of a depth stream into batches gives the
same book, and the book equals a plain-Python model of the continuity rules of
``engine.book.schema`` (dicts of levels; snapshot, stale, gap, reset, out of sync).

Mutations tried once (each made a property fail):
- ``apply_rows`` clearing ``S_OPEN`` at the start of every call (an update cut by a batch
  boundary restarts: its remaining rows are judged as a new, stale update):
  ``test_book_any_batch_split_same_book`` failed.
- ``begin_update`` accepting ``first_update_id <= book id + 2`` (a gap of one id bridged):
  ``test_book_matches_model`` failed.
- ``set_level`` not rescanning when the best level goes (``best`` left on an empty cell):
  ``test_book_matches_model`` failed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.book.batch import DepthBatch
from engine.book.book import OrderBook
from engine.events import DepthUpdate

TICK = 0.5
GRID = 64  # small, so that levels fall outside it and the grid re-centres


@st.composite
def streams(draw: st.DrawFn) -> list[DepthUpdate]:
    n = draw(st.integers(1, 30))
    prices = st.integers(180, 220)
    sizes = st.sampled_from([0.0, 0.0, 1.0, 2.5, 3.0])
    out: list[DepthUpdate] = []
    uid = draw(st.integers(0, 5))
    ts = 1_000
    for _ in range(n):
        kind = draw(st.sampled_from(["diff"] * 6 + ["snapshot", "gap", "stale", "reset", "empty"]))
        ts += draw(st.integers(0, 3))

        def levels() -> tuple[tuple[float, float], ...]:
            k = draw(st.integers(0, 4))
            return tuple((draw(prices) * TICK, draw(sizes)) for _ in range(k))

        bids, asks = levels(), levels()
        if kind == "snapshot":
            uid += draw(st.integers(0, 3))
            bids = tuple((p, q if q > 0 else 1.0) for p, q in bids)
            asks = tuple((p, q if q > 0 else 1.0) for p, q in asks)
            out.append(DepthUpdate(ts_event=ts, ts_recv=ts, instrument="X", first_update_id=uid,
                                   last_update_id=uid, prev_update_id=uid, snapshot=True,
                                   bids=bids, asks=asks))  # fmt: skip
            continue
        if kind == "reset":
            out.append(DepthUpdate(ts_event=ts, ts_recv=ts, instrument="X", first_update_id=uid,
                                   last_update_id=uid, reset=True))  # fmt: skip
            continue
        if kind == "stale":
            first, last = max(uid - 2, 0), uid
        else:
            first = uid + 1 + (draw(st.integers(1, 3)) if kind == "gap" else 0)
            last = first + draw(st.integers(0, 2))
            uid = last
        if kind == "empty":
            bids, asks = (), ()
        out.append(DepthUpdate(ts_event=ts, ts_recv=ts, instrument="X", first_update_id=first,
                               last_update_id=last, bids=bids, asks=asks))  # fmt: skip
    return out


class Model:
    """The continuity rules and the levels, in plain Python (no grid, no capacity)."""

    def __init__(self) -> None:
        self.status = "empty"
        self.book_id = 0
        self.sides: tuple[dict[float, float], dict[float, float]] = ({}, {})
        self.gaps = self.stale = self.resets = 0
        # a snapshot's last level per side: past it nothing is known (None: no limit)
        self.edges: list[float | None] = [None, None]

    def apply(self, u: DepthUpdate) -> None:
        if u.reset:
            self.status = "out_of_sync"
            self.resets += 1
            return
        if u.snapshot:
            self.sides = ({}, {})
            self.status, self.book_id = "synced", u.last_update_id
            self.edges = [
                min((p for p, _ in u.bids), default=None),
                max((p for p, _ in u.asks), default=None),
            ]
        elif self.status == "out_of_sync":
            return
        elif self.status == "empty":
            self.status, self.book_id = "partial", u.last_update_id
        elif u.last_update_id <= self.book_id:
            self.stale += 1
            return
        elif u.first_update_id <= self.book_id + 1:
            self.book_id = u.last_update_id
        else:
            self.status = "out_of_sync"
            self.gaps += 1
            return
        for side, levels in ((0, u.bids), (1, u.asks)):
            for p, q in levels:
                if q > 0:
                    self.sides[side][p] = q
                else:
                    self.sides[side].pop(p, None)

    def known(self, side: int) -> list[tuple[float, float]]:
        """Levels from the touch up to the snapshot's edge, best first ([] when the touch
        itself lies past the edge)."""
        levels = sorted(self.sides[side].items(), reverse=side == 0)
        edge = self.edges[side]
        if edge is None:
            return levels
        return [(p, q) for p, q in levels if (p >= edge if side == 0 else p <= edge)]

    def top(self, side: int) -> tuple[float, float]:
        levels = sorted(self.sides[side].items(), reverse=side == 0)
        known = self.known(side)
        if not levels or not known or known[0] != levels[0]:
            return math.nan, 0.0
        return known[0]


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return (math.isnan(a[0]) and math.isnan(b[0])) or a == b


def _snapshot(book: OrderBook) -> tuple[object, ...]:
    return (book.qtys.tobytes(), book.base.tobytes(), book.best.tobytes(),
            book.horizon.tobytes(), book.counts.tobytes(), book.state.tobytes())  # fmt: skip


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ups=streams(), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_book_any_batch_split_same_book(ups: list[DepthUpdate], cuts: list[int]) -> None:
    rows = DepthBatch.from_updates(ups, {"X": 0})
    whole = OrderBook(1, 5, ticks=[TICK], grid_cells=GRID)
    whole.apply(rows)
    split = OrderBook(1, 5, ticks=[TICK], grid_cells=GRID)
    bounds = sorted({min(c, len(rows)) for c in cuts} | {0, len(rows)})
    for a, b in itertools.pairwise(bounds):
        split.apply(rows.slice(a, b))
    assert _snapshot(whole) == _snapshot(split)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ups=streams())
def test_book_matches_model(ups: list[DepthUpdate]) -> None:
    # a grid wide enough for every price: the model has no grid
    book = OrderBook(1, 50, ticks=[TICK], grid_cells=1024)
    model = Model()
    for u in ups:
        book.apply(DepthBatch.from_updates([u], {"X": 0}))
        model.apply(u)
        assert book.status(0) == model.status
        c = book.counters(0)
        assert (c["gaps"], c["stale"], c["resets"]) == (model.gaps, model.stale, model.resets)
        if model.status == "out_of_sync":
            continue
        for side, sign in ((0, 1), (1, -1)):
            want = model.known(side) if not math.isnan(model.top(side)[0]) else []
            got_p, got_q = book.levels_of(0, sign, 50)
            assert list(zip(got_p.tolist(), got_q.tolist(), strict=True)) == want
        assert _same(book.best_bid(0), model.top(0))
        assert _same(book.best_ask(0), model.top(1))
        for p, q in model.sides[0].items():
            assert book.size_at(0, 1, p) == q


def test_book_recentre_keeps_levels_and_marks_untracked_cells_unknown() -> None:
    book = OrderBook(1, 10, ticks=[1.0], grid_cells=16)
    snap = DepthUpdate(ts_event=1, ts_recv=1, instrument="X", first_update_id=1,
                       last_update_id=1, snapshot=True, bids=((100.0, 1.0), (99.0, 2.0)),
                       asks=((101.0, 1.0), (102.0, 3.0)))  # fmt: skip
    # the market moves 11 ticks up, past the grid's top (107): the grid re-centres
    up = DepthUpdate(ts_event=2, ts_recv=2, instrument="X", first_update_id=2,
                     last_update_id=2, bids=((100.0, 0.0), (99.0, 0.0), (111.0, 4.0), (110.0, 1.0)),
                     asks=((101.0, 0.0), (102.0, 0.0), (112.0, 1.0)))  # fmt: skip
    book.apply(DepthBatch.from_updates([snap, up], {"X": 0}))
    assert book.counters(0)["recentres"] == 1
    # nothing lies between the old touch and 111 on the bid side (the snapshot said so)
    assert book.best_bid(0) == (111.0, 4.0)
    assert book.levels_of(0, 1)[0].tolist() == [111.0, 110.0]
    # asks past the snapshot's last one (102) were never listed: 112 is kept, not known
    assert math.isnan(book.best_ask(0)[0])
    assert book.size_at(0, -1, 112.0) == 1.0


def test_book_snapshot_edge_is_the_horizon() -> None:
    book = OrderBook(1, 10, ticks=[1.0], grid_cells=64)
    snap = DepthUpdate(ts_event=1, ts_recv=1, instrument="X", first_update_id=5,
                       last_update_id=5, snapshot=True, bids=((100.0, 1.0), (98.0, 2.0)),
                       asks=((101.0, 1.0),))  # fmt: skip
    # a diff adds a bid below the snapshot's last one: kept, but what lies between 98 and
    # 90 was never listed, so it is not known; then the top two bids go
    diff = DepthUpdate(ts_event=2, ts_recv=2, instrument="X", first_update_id=6,
                       last_update_id=6, bids=((90.0, 5.0), (100.0, 0.0), (98.0, 0.0)))  # fmt: skip
    book.apply(DepthBatch.from_updates([snap, diff], {"X": 0}))
    assert book.status(0) == "synced"
    assert math.isnan(book.best_bid(0)[0])
    assert book.levels_of(0, 1)[0].tolist() == []
    assert book.size_at(0, 1, 90.0) == 5.0


def test_book_exact_prices_from_cells() -> None:
    book = OrderBook(1, 5)
    u = DepthUpdate(ts_event=1, ts_recv=1, instrument="X", first_update_id=1, last_update_id=1,
                    snapshot=True, bids=((61828.01, 1.0),), asks=((61828.02, 2.0),))  # fmt: skip
    book.apply(DepthBatch.from_updates([u], {"X": 0}))
    assert book.best_bid(0) == (61828.01, 1.0)
    assert book.best_ask(0) == (61828.02, 2.0)
    assert np.array_equal(book.levels_of(0, -1)[0], [61828.02])


def test_book_price_off_the_tick_grid_puts_it_out_of_sync() -> None:
    book = OrderBook(1, 5, ticks=[1.0], grid_cells=64)
    ups = [
        DepthUpdate(ts_event=1, ts_recv=1, instrument="X", first_update_id=1, last_update_id=1,
                    snapshot=True, bids=((100.0, 1.0),), asks=((101.0, 1.0),)),
        DepthUpdate(ts_event=2, ts_recv=2, instrument="X", first_update_id=2, last_update_id=2,
                    bids=((100.5, 1.0),)),
    ]  # fmt: skip
    book.apply(DepthBatch.from_updates(ups, {"X": 0}))
    assert book.status(0) == "out_of_sync"
    assert book.counters(0)["off_tick"] == 1
    assert book.size_at(0, 1, 100.0) == 1.0  # never rounded onto a neighbour
