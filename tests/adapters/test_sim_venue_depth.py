"""The simulated venue in depth mode: walks, queue positions, resyncs, abandoned scans.

The venue is driven the way the engine drives it (bind, on_depth with the rows, advance_to for
arrivals, match/commit for ticks); the harness keeps a book of its own fed the same rows, to
state what the venue's book must be (in sync or not).
"""

from __future__ import annotations

import numpy as np
import pytest

from adapters.sim_venue import SimulatedVenue
from engine.book.batch import DepthBatch
from engine.book.book import OrderBook
from engine.events import (
    CancelRequest,
    DepthUpdate,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
)
from engine.instruments import Instrument, InstrumentTable
from engine.market import MarketState
from engine.ticks import TickBatch

SYM = "BTCUSDT"
INDEX = {SYM: 0}


class Harness:
    def __init__(self, queue_model: str = "trades_only") -> None:
        self.instruments = InstrumentTable([Instrument(symbol=SYM)])
        self.market = MarketState(1)
        self.book = OrderBook(1, levels=5)
        self.venue = SimulatedVenue(0, 0.0, queue_model=queue_model, queue_power=2.0)
        self.venue.bind(self.market, self.instruments)
        self.update_id = 0

    def depth(
        self,
        ts: int,
        bids: tuple[tuple[float, float], ...] = (),
        asks: tuple[tuple[float, float], ...] = (),
        *,
        snapshot: bool = False,
        gap: int = 0,
    ) -> None:
        first = self.update_id + 1 + gap
        self.update_id = first
        update = DepthUpdate(
            ts_event=ts, ts_recv=ts, instrument=SYM, first_update_id=first,
            last_update_id=first, snapshot=snapshot, bids=bids, asks=asks,
        )  # fmt: skip
        batch = DepthBatch.from_updates([update], INDEX)
        self.book.apply(batch)
        self.venue.on_depth(batch)

    def order(self, ts: int, cid: str, side: str, qty: float, limit: float | None) -> None:
        self.venue.submit(
            OrderRequest(
                ts_event=ts, ts_recv=ts, client_order_id=cid, instrument=SYM, side=side,  # type: ignore[arg-type]
                qty=qty, order_type="market" if limit is None else "limit", limit_price=limit,
            )
        )  # fmt: skip
        self.venue.advance_to(ts)

    def trades(self, rows: list[tuple[int, float, float, int]]) -> list[Fill]:
        batch = TickBatch.trades(
            np.array([r[0] for r in rows], np.int64), np.array([r[0] for r in rows], np.int64),
            np.zeros(len(rows), np.int32), np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]), np.array([r[3] for r in rows], np.int8),
        )  # fmt: skip
        pos = 0
        while pos < len(batch):
            pos = self.venue.match(batch, pos, len(batch))
            self.venue.commit()
        return [r for r in self.venue.drain_reports() if isinstance(r, Fill)]


def test_depth_market_order_walks_levels_then_cancels_rest():
    h = Harness()
    h.depth(1, bids=((99.0, 1.0),), asks=((100.0, 0.5), (100.5, 1.0)))
    h.order(2, "m1", "buy", 2.0, None)
    reports = h.venue.drain_reports()
    fills = [(r.price, r.qty, r.liquidity) for r in reports if isinstance(r, Fill)]
    assert fills == [(100.0, 0.5, "taker"), (100.5, 1.0, "taker")]
    assert any(isinstance(r, OrderCancelled) and r.reason == "book exhausted" for r in reports)
    # what we took is not shown again until the level changes
    h.order(3, "m2", "buy", 0.2, None)
    assert not any(isinstance(r, Fill) for r in h.venue.drain_reports())
    h.depth(4, asks=((100.5, 1.0),))
    h.order(5, "m3", "buy", 0.2, None)
    assert [(r.price, r.qty) for r in h.venue.drain_reports() if isinstance(r, Fill)] == [
        (100.5, 0.2)
    ]


def test_depth_resting_order_waits_for_queue_ahead():
    h = Harness()
    h.depth(1, bids=((99.0, 2.0),), asks=((100.0, 1.0),))
    h.order(2, "b1", "buy", 1.0, 99.0)
    assert [type(r) for r in h.venue.drain_reports()] == [OrderAccepted]
    # 1.5 of the 2.0 ahead trades: nothing reaches us; the next 1.0 trade leaves 0.5 for us
    fills = h.trades([(3, 99.0, 1.5, -1), (4, 99.0, 1.0, -1)])
    assert [(f.qty, f.price, f.liquidity, f.ts_event) for f in fills] == [(0.5, 99.0, "maker", 4)]
    # a buy-aggressor trade never hits our bid
    assert h.trades([(5, 99.0, 3.0, 1)]) == []
    # a trade through our price fills the rest
    assert [(f.qty, f.ts_event) for f in h.trades([(6, 98.5, 2.0, -1)])] == [(0.5, 6)]


def test_depth_cancels_advance_queue_only_under_power_model():
    # 2.0 ahead, 3.0 behind, then 1.0 cancelled: in front of us with probability
    # 2**2 / (2**2 + 3**2) = 4/13 under the power rule, never under trades_only
    for model, expected in (("trades_only", []), ("power", [pytest.approx(4 / 13)])):
        h = Harness(model)
        h.depth(1, bids=((99.0, 2.0),), asks=((100.0, 1.0),))
        h.order(2, "b1", "buy", 1.0, 99.0)
        h.depth(3, bids=((99.0, 5.0),))
        h.depth(4, bids=((99.0, 4.0),))
        got = [f.qty for f in h.trades([(5, 99.0, 2.0, -1)])]
        assert got == expected, model


def test_depth_deleted_level_puts_order_at_the_front():
    h = Harness()
    h.depth(1, bids=((99.0, 2.0),), asks=((100.0, 1.0),))
    h.order(2, "b1", "buy", 1.0, 99.0)
    h.depth(3, bids=((99.0, 0.0),))
    assert [f.qty for f in h.trades([(4, 99.0, 0.4, -1)])] == [0.4]


def test_depth_out_of_sync_book_rejects_orders_and_freezes_queues():
    h = Harness()
    h.depth(1, bids=((99.0, 2.0),), asks=((100.0, 1.0),))
    h.order(2, "b1", "buy", 1.0, 99.0)
    h.depth(3, bids=((99.0, 0.0),), gap=5)  # a gap: the book is out of sync, row dropped
    assert h.book.status(0) == "out_of_sync"
    assert h.trades([(4, 99.0, 1.0, -1)]) == []  # still 1.0 ahead of the 2.0
    h.order(5, "b2", "buy", 1.0, 98.0)
    rejected = [r for r in h.venue.drain_reports() if isinstance(r, OrderRejected)]
    assert rejected and "out_of_sync" in rejected[0].reason
    # a snapshot resyncs; our level now holds 0.3: no more than that is ahead of us
    h.depth(6, bids=((99.0, 0.3),), asks=((100.0, 1.0),), snapshot=True)
    assert [f.qty for f in h.trades([(7, 99.0, 0.5, -1)])] == [0.2]


def test_depth_before_first_rows_keeps_top_of_book_rules_then_joins_queue():
    h = Harness()
    h.order(1, "b1", "buy", 1.0, 99.0)  # no depth yet: accepted and resting, as at L1
    h.order(1, "m1", "sell", 1.0, None)  # no quote either: refused as at L1
    reports = h.venue.drain_reports()
    assert isinstance(reports[0], OrderAccepted)
    assert isinstance(reports[1], OrderRejected) and "no quote" in reports[1].reason
    # the first depth rows switch to depth mode: b1 joins the back of its level (2.0 ahead)
    h.depth(2, bids=((99.0, 2.0),), asks=((100.0, 1.0),))
    assert [f.qty for f in h.trades([(3, 99.0, 2.5, -1)])] == [0.5]


def test_depth_abandoned_scan_redoes_only_applied_ticks():
    h = Harness()
    h.depth(1, bids=((99.0, 1.0),), asks=((100.0, 1.0),))
    h.order(2, "b1", "buy", 1.0, 99.0)
    h.venue.drain_reports()
    batch = TickBatch.trades(
        np.array([3, 4], np.int64), np.array([3, 4], np.int64), np.zeros(2, np.int32),
        np.array([99.0, 99.0]), np.array([0.6, 0.6]), np.array([-1, -1], np.int8),
    )  # fmt: skip
    assert h.venue.match(batch, 0, 2) == 2  # fills at tick 1
    # the engine stopped after tick 0 (a loss limit) and scans again from tick 1
    assert h.venue.match(batch, 1, 2) == 2
    h.venue.commit()
    fills = [r for r in h.venue.drain_reports() if isinstance(r, Fill)]
    assert [(f.qty, f.ts_event) for f in fills] == [(pytest.approx(0.2), 4)]


def test_depth_cancel_leaves_queue():
    h = Harness()
    h.depth(1, bids=((99.0, 0.0),), asks=((100.0, 1.0),))
    h.order(2, "b1", "buy", 1.0, 99.0)
    h.venue.cancel(CancelRequest(ts_event=3, ts_recv=3, client_order_id="b1", instrument=SYM))
    h.venue.advance_to(3)
    assert h.trades([(4, 99.0, 1.0, -1)]) == []


def test_depth_without_queue_model_ignores_depth():
    venue = SimulatedVenue(0, 0.0)
    venue.bind(MarketState(1), InstrumentTable([Instrument(symbol=SYM)]))
    venue.on_depth(DepthBatch.from_updates(
        [DepthUpdate(ts_event=1, ts_recv=1, instrument=SYM, first_update_id=1, last_update_id=1,
                     asks=((100.0, 1.0),))], INDEX))  # fmt: skip
    venue.submit(OrderRequest(ts_event=1, ts_recv=1, client_order_id="m", instrument=SYM,
                              side="buy", qty=1.0))  # fmt: skip
    venue.advance_to(1)
    (report,) = venue.drain_reports()
    assert isinstance(report, OrderRejected) and report.reason == "no quote for the instrument yet"


def test_depth_bad_queue_model_refused():
    with pytest.raises(ValueError, match="unknown queue model"):
        SimulatedVenue(queue_model="fifo")
    with pytest.raises(ValueError, match="queue_power"):
        SimulatedVenue(queue_model="power", queue_power=0.0)


def test_depth_walk_goes_past_the_exposed_levels_when_it_must():
    h = Harness()  # the book exposes 5 levels a side
    asks = tuple((100.0 + 0.5 * k, 1.0) for k in range(7))
    h.depth(1, bids=((99.0, 1.0),), asks=asks)
    h.order(2, "m1", "buy", 6.5, None)
    fills = [(f.price, f.qty) for f in h.venue.drain_reports() if isinstance(f, Fill)]
    assert fills == [(p, 1.0) for p, _ in asks[:6]] + [(103.0, 0.5)]
