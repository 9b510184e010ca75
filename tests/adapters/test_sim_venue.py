"""The simulated venue, driven through the real engine by a scripted strategy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.sim_venue import SimulatedVenue
from engine.engine import Engine
from engine.events import Fill, OrderAccepted, OrderCancelled, OrderRejected, OrderRequest, Side
from engine.instruments import Instrument, InstrumentTable
from engine.market import MarketState
from engine.ticks import TickBatch
from tests.support import Scripted, make_engine, quotes, trades


def run(batch: TickBatch, at: dict[int, Callable[[Scripted], object]], *, latency: int = 0,
        fee_bps: float = 0.0, maker_fee_bps: float | None = None) -> tuple[Scripted, Engine]:  # fmt: skip
    strat = Scripted(at)
    engine = make_engine(strat, latency=latency, fee_bps=fee_bps, maker_fee_bps=maker_fee_bps)
    engine.start()
    engine.process_batch(batch)
    engine.finish()
    return strat, engine


def fills(s: Scripted) -> list[tuple[int, str, float, float, str]]:
    return [
        (f.ts_event, f.side, f.qty, f.price, f.liquidity) for f in s.seen if isinstance(f, Fill)
    ]


BOOK = [(100, 99.0, 101.0, 5.0, 5.0), (200, 99.5, 100.5, 5.0, 5.0), (300, 98.0, 100.0, 5.0, 5.0)]


def test_market_order_fills_at_opposite_touch_after_latency() -> None:
    # sent at 150, arrives at 250: the quote in force is the one stamped 200
    s, _ = run(
        quotes(BOOK),
        {150: lambda s: s.ids.append(s.ctx.submit_market("X", "buy", 1.0))},
        latency=100,
    )
    assert fills(s) == [(250, "buy", 1.0, 100.5, "taker")]
    # the fill waits for latency: with none, the quote stamped 100 is used
    s, _ = run(quotes(BOOK), {150: lambda s: s.ctx.submit_market("X", "sell", 1.0)}, latency=0)
    assert fills(s) == [(150, "sell", 1.0, 99.0, "taker")]


def test_order_arriving_at_a_tick_stamp_sees_that_tick() -> None:
    s, _ = run(quotes(BOOK), {150: lambda s: s.ctx.submit_market("X", "buy", 1.0)}, latency=50)
    assert fills(s) == [(200, "buy", 1.0, 100.5, "taker")]


def test_market_order_partial_fills_by_displayed_size() -> None:
    book = [
        (100, 99.0, 101.0, 5.0, 2.0),
        (200, 99.0, 101.5, 5.0, 3.0),
        (300, 99.0, 102.0, 5.0, 10.0),
    ]
    s, e = run(quotes(book), {150: lambda s: s.ctx.submit_market("X", "buy", 6.0)})
    assert fills(s) == [
        (150, "buy", 2.0, 101.0, "taker"),
        (200, "buy", 3.0, 101.5, "taker"),
        (300, "buy", 1.0, 102.0, "taker"),
    ]
    assert e.portfolio.positions[0] == pytest.approx(6.0)


def test_limit_order_rests_then_fills_at_limit_when_quote_touches() -> None:
    s, _ = run(quotes(BOOK), {150: lambda s: s.ctx.submit_limit("X", "buy", 1.0, 100.0)})
    # ask 100.5 at 200 does not reach 100.0; ask 100.0 at 300 touches it
    assert fills(s) == [(300, "buy", 1.0, 100.0, "maker")]
    assert isinstance(s.seen[0], OrderAccepted)


def test_limit_order_fills_on_trade_at_or_through_limit_up_to_trade_size() -> None:
    q = quotes([(100, 99.0, 101.0, 5.0, 5.0)])
    t = trades([(200, 100.5, 0.3, -1), (300, 99.5, 0.4, -1), (400, 98.0, 10.0, -1)])
    s, _ = run(TickBatch.merge(q, t), {150: lambda s: s.ctx.submit_limit("X", "buy", 1.0, 99.5)})
    # 100.5 is above the limit: no fill; 99.5 touches (0.4 of it); 98 trades through
    assert fills(s) == [(300, "buy", 0.4, 99.5, "maker"), (400, "buy", 0.6, 99.5, "maker")]


def test_marketable_limit_takes_at_touch_never_worse_than_limit() -> None:
    s, _ = run(quotes(BOOK), {150: lambda s: s.ctx.submit_limit("X", "buy", 1.0, 102.0)})
    assert fills(s) == [(150, "buy", 1.0, 101.0, "taker")]


def test_ioc_limit_cancels_unfilled_remainder() -> None:
    book = [(100, 99.0, 101.0, 5.0, 0.5), (200, 99.0, 100.0, 5.0, 5.0)]
    s, _ = run(
        quotes(book),
        {150: lambda s: s.ctx.submit_limit("X", "buy", 2.0, 101.0, time_in_force="ioc")},
    )
    assert fills(s) == [(150, "buy", 0.5, 101.0, "taker")]
    assert any(isinstance(e, OrderCancelled) and e.reason == "ioc remainder" for e in s.seen)


def test_cancel_removes_resting_order_and_late_cancel_is_answered() -> None:
    def place(s: Scripted) -> None:
        s.ids.append(s.ctx.submit_limit("X", "buy", 1.0, 90.0))

    s, e = run(quotes(BOOK), {110: place, 120: lambda s: s.ctx.cancel(s.ids[0])}, latency=5)
    assert [type(x).__name__ for x in s.seen] == ["OrderAccepted", "OrderCancelled"]
    assert e.orders.open_orders() == []
    # a cancel that reaches the venue after the order filled is refused, not lost
    s, e = run(
        quotes(BOOK),
        {
            110: lambda s: s.ids.append(s.ctx.submit_market("X", "buy", 1.0)),
            120: lambda s: s.ctx.cancel(s.ids[0]),
        },
        latency=50,
    )
    assert [type(x).__name__ for x in s.seen] == ["OrderAccepted", "Fill", "CancelRejected"]
    assert e.counters["cancels_rejected"] == 1


def test_market_order_without_quote_is_rejected_by_the_venue() -> None:
    venue = SimulatedVenue(latency_ns=10)
    venue.bind(MarketState(1), InstrumentTable([Instrument(symbol="X")]))
    venue.submit(
        OrderRequest(
            ts_event=100, ts_recv=100, client_order_id="A", instrument="X", side="buy", qty=1.0
        )
    )
    assert venue.next_event_ns() == 110
    venue.advance_to(110)
    (report,) = venue.drain_reports()
    assert isinstance(report, OrderRejected) and "no quote" in report.reason


def test_market_order_without_quote_is_refused_by_risk_before_the_venue() -> None:
    s, e = run(
        quotes([(300, 99.0, 101.0, 5.0, 5.0)]),
        {100: lambda s: s.ctx.submit_market("X", "buy", 1.0)},
    )
    assert [(type(x).__name__, getattr(x, "check", "")) for x in s.seen] == [
        ("RiskRejected", "no_quote")
    ]
    assert e.risk.rejections["no_quote"] == 1


def test_fees_taker_and_maker_in_bps_of_notional() -> None:
    s, e = run(
        quotes(BOOK),
        {
            150: lambda s: s.ctx.submit_market("X", "buy", 2.0),
            160: lambda s: s.ctx.submit_limit("X", "sell", 2.0, 99.5),
        },
        fee_bps=10.0,
        maker_fee_bps=2.0,
    )
    fs = [f for f in s.seen if isinstance(f, Fill)]
    assert fs[0].fee == pytest.approx(2.0 * 101.0 * 10e-4)
    # the sell limit at 99.5 rests (bid 99.0) and fills when the bid touches it at 200
    assert (fs[1].ts_event, fs[1].price, fs[1].liquidity) == (200, 99.5, "maker")
    assert fs[1].fee == pytest.approx(2.0 * 99.5 * 2e-4)
    assert e.portfolio.fees[0] == pytest.approx(sum(f.fee for f in fs))


def test_liquidity_at_one_tick_is_shared_in_arrival_order() -> None:
    book = [(100, 99.0, 101.0, 5.0, 5.0), (200, 99.0, 100.0, 5.0, 1.5)]

    def both(s: Scripted) -> None:
        s.ctx.submit_limit("X", "buy", 1.0, 100.0)
        s.ctx.submit_limit("X", "buy", 1.0, 100.0)

    s, _ = run(quotes(book), {150: both})
    assert [(f.client_order_id, f.qty) for f in s.seen if isinstance(f, Fill)] == [
        ("O-00000001", 1.0),
        ("O-00000002", 0.5),
    ]


def test_two_market_orders_at_one_quote_share_its_displayed_size() -> None:
    book = [(100, 99.0, 101.0, 5.0, 1.0), (200, 99.0, 101.5, 5.0, 5.0)]

    def two(s: Scripted) -> None:
        s.ctx.submit_market("X", "buy", 1.0)
        s.ctx.submit_market("X", "buy", 1.0)

    s, _ = run(quotes(book), {150: two})
    # the ask shows 1: the first order takes it, the second waits for the next quote
    assert fills(s) == [(150, "buy", 1.0, 101.0, "taker"), (200, "buy", 1.0, 101.5, "taker")]


def test_resting_fill_and_later_arrival_share_one_quotes_displayed_size() -> None:
    book = [
        (100, 99.0, 101.0, 5.0, 5.0),
        (200, 99.0, 100.0, 5.0, 1.5),
        (300, 99.0, 100.5, 5.0, 5.0),
    ]
    s, _ = run(
        quotes(book),
        {
            150: lambda s: s.ctx.submit_limit("X", "buy", 1.0, 100.0),
            250: lambda s: s.ctx.submit_market("X", "buy", 1.0),
        },
    )
    # the resting buy took 1 of the 1.5 shown at 200; the market order gets the other 0.5
    assert fills(s) == [
        (200, "buy", 1.0, 100.0, "maker"),
        (250, "buy", 0.5, 100.0, "taker"),
        (300, "buy", 0.5, 100.5, "taker"),
    ]


def test_marketable_limit_remainder_takes_next_quote_at_its_touch_as_taker() -> None:
    book = [(100, 99.0, 101.0, 5.0, 1.0), (200, 99.0, 101.5, 5.0, 5.0)]
    s, _ = run(quotes(book), {150: lambda s: s.ctx.submit_limit("X", "buy", 3.0, 102.0)})
    # still crossing when the ask moves to 101.5: it takes there, it does not rest at 102
    assert fills(s) == [(150, "buy", 1.0, 101.0, "taker"), (200, "buy", 2.0, 101.5, "taker")]


def test_crossing_remainder_fills_at_limit_as_maker_once_market_left_and_came_back() -> None:
    book = [
        (100, 100.0, 101.0, 1.0, 5.0),
        (200, 99.0, 101.0, 5.0, 5.0),
        (300, 101.0, 102.0, 5.0, 5.0),
    ]
    s, _ = run(quotes(book), {150: lambda s: s.ctx.submit_limit("X", "sell", 2.0, 100.0)})
    # the bid moves away from 100 at 200 (the order now rests), then onto it at 300
    assert fills(s) == [(150, "sell", 1.0, 100.0, "taker"), (300, "sell", 1.0, 100.0, "maker")]


def test_trade_fills_resting_order_only_when_aggressor_is_on_other_side() -> None:
    q = quotes([(100, 99.0, 101.0, 5.0, 5.0)])
    t = trades(
        [
            (200, 100.5, 0.4, -1),  # a sell at our sell's price: not our counterparty
            (300, 101.0, 0.3, 1),  # a buy through it: fills it
            (400, 99.0, 0.5, 1),  # a buy below our buy's price: not our counterparty
            (500, 99.5, 0.2, -1),  # a sell at it: fills it
        ]
    )

    def place(s: Scripted) -> None:
        s.ctx.submit_limit("X", "sell", 1.0, 100.5)
        s.ctx.submit_limit("X", "buy", 1.0, 99.5)

    s, _ = run(TickBatch.merge(q, t), {150: place})
    assert fills(s) == [(300, "sell", 0.3, 100.5, "maker"), (500, "buy", 0.2, 99.5, "maker")]


def _request(cid: str, ts: int, side: Side, qty: float, limit: float | None = None) -> OrderRequest:
    return OrderRequest(
        ts_event=ts,
        ts_recv=ts,
        client_order_id=cid,
        instrument="X",
        side=side,
        qty=qty,
        order_type="market" if limit is None else "limit",
        limit_price=limit,
    )


def test_arrival_after_an_abandoned_scan_sees_the_quotes_the_market_applied() -> None:
    market = MarketState(1)
    market.book[0, :4] = (99.0, 101.0, 5.0, 1.0)  # bid, ask, bid size, ask size
    venue = SimulatedVenue()
    venue.bind(market, InstrumentTable([Instrument(symbol="X")]))
    venue.submit(_request("A", 100, "buy", 1.0))
    venue.submit(_request("S", 100, "sell", 1.0, 103.0))
    venue.advance_to(100)  # A takes the 1 shown at 101; S rests
    batch = TickBatch.merge(
        quotes([(200, 99.0, 102.0, 5.0, 2.0), (300, 99.0, 102.5, 5.0, 3.0)]),
        trades([(400, 103.0, 1.0, 1)]),
    )
    assert venue.match(batch, 0, 3) == 3  # S would fill on the trade at 400
    # the engine's market stopped after the quote at 200 (a loss limit) and did not commit
    market.book[0, :4] = (99.0, 102.0, 5.0, 2.0)
    venue.submit(_request("B", 250, "buy", 3.0))
    venue.advance_to(250)
    got = [
        (f.client_order_id, f.qty, f.price) for f in venue.drain_reports() if isinstance(f, Fill)
    ]
    # the quote at 200 shows 2 fresh; the one at 300 is not the market's yet
    assert got == [("A", 1.0, 101.0), ("B", 2.0, 102.0)]
