"""Regression tests for the core defects a review confirmed (issue 9, section 2).

Each test reproduces the review's script; each failed on the code before the fix.
"""

from __future__ import annotations

from engine.events import Alarm, Command, Fill, OrderAccepted, OrderCancelled, TradingState
from engine.order_desk import FLATTEN
from engine.orders import OrderStatus
from tests.engine.test_risk import Desk, S


def _cmd(d: Desk, action: str) -> None:
    d.engine.on_command(Command(ts_event=d.now, ts_recv=d.now, action=action, reason="test"))  # type: ignore[arg-type]


def _fill(cid: str, fill_id: str, qty: float, side: str = "buy", price: float = 100.0) -> Fill:
    return Fill(
        ts_event=0,
        ts_recv=0,
        client_order_id=cid,
        fill_id=fill_id,
        instrument="X",
        side=side,
        qty=qty,
        price=price,
        fee=0.0,
        liquidity="taker",
    )  # type: ignore[arg-type]


def test_kill_is_not_lowered_by_a_loss_breach_with_on_loss_reduce_only() -> None:
    d = Desk({"daily_loss_limit": 5.0, "on_loss": "reduce_only"}, symbols=("X",))
    assert d.order("buy", 10.0) is None
    d.fill_pending()
    _cmd(d, "kill")
    d.tick(S, 90.0, 92.0)  # a loss of ~100: the monitor trips while killed
    assert d.engine.counters["loss_limit_breaches"] == 1
    assert d.engine.risk.state == "HALTED"
    assert d.engine.risk.trading.source == "operator"


def test_kill_is_not_lowered_by_data_loss_with_on_data_loss_reduce_only() -> None:
    d = Desk({"on_data_loss": "reduce_only"}, symbols=("X",))
    _cmd(d, "kill")
    d.engine.market_data_lost("broker dropped")
    d.engine.market_data_restored("quotes back")
    assert d.engine.risk.state == "HALTED"


def test_operator_reduce_only_does_not_leave_a_kill() -> None:
    d = Desk({}, symbols=("X",))
    _cmd(d, "kill")
    _cmd(d, "reduce_only")
    assert d.engine.risk.state == "HALTED"
    assert d.engine.counters["commands_refused"] == 1
    _cmd(d, "resume")
    assert d.engine.risk.state == "ACTIVE"


def test_data_loss_recovery_keeps_a_loss_limit_claim() -> None:
    d = Desk({"daily_loss_limit": 5.0, "on_data_loss": "halted"}, symbols=("X",))
    assert d.order("buy", 1.0) is None
    d.fill_pending()
    d.engine.market_data_lost("feed gap")
    d.tick(S, 90.0, 92.0)  # loss limit trips while data-loss HALTED
    d.engine.market_data_restored("quotes back")
    assert d.engine.risk.state == "REDUCE_ONLY"
    assert d.engine.risk.trading.source == "loss_limit"


def test_reduce_only_cannot_flip_through_two_market_sells() -> None:
    """Long 1 with a resting buy 1 @ 90: the old check netted the buy against the sells."""
    d = Desk({}, symbols=("X",))
    assert d.order("buy", 1.0) is None
    d.fill_pending()
    assert d.order("buy", 1.0, 90.0) is None
    d.tick(1)
    _cmd(d, "reduce_only")
    assert d.order("sell", 1.0) is None
    assert d.order("sell", 1.0) == "trading_state"
    for _ in range(3):
        d.tick(1)
    assert d.position() == 0.0


def test_entering_reduce_only_cancels_orders_that_add_risk() -> None:
    d = Desk({}, symbols=("X",))
    assert d.order("buy", 1.0) is None
    d.fill_pending()  # long 1
    buy = d.engine._context.submit_limit("X", "buy", 1.0, 90.0)
    keep = d.engine._context.submit_limit("X", "sell", 0.5, 110.0)
    extra = d.engine._context.submit_limit("X", "sell", 1.0, 111.0)  # 0.5 + 1.0 > 1: flips
    d.tick(1)
    _cmd(d, "reduce_only")
    d.tick(1)
    cancelled = {e.client_order_id for e in d.strategy.seen if isinstance(e, OrderCancelled)}
    assert cancelled == {buy, extra}
    assert d.engine.orders.get(keep).is_open


def test_resume_after_a_loss_trip_does_not_trip_again_at_the_next_quote() -> None:
    d = Desk({"daily_loss_limit": 5.0, "on_loss": "reduce_only"}, symbols=("X",))
    assert d.order("buy", 1.0) is None
    d.fill_pending()
    d.tick(S, 93.0, 95.0)
    assert d.engine.risk.state == "REDUCE_ONLY"
    _cmd(d, "resume")
    d.tick(S, 93.0, 95.0)
    assert d.engine.risk.state == "ACTIVE"
    assert d.engine.counters["loss_limit_breaches"] == 1
    d.tick(S, 87.0, 89.0)  # a fresh 6 below the equity at resume: trips again
    assert d.engine.risk.state == "REDUCE_ONLY"
    assert d.engine.counters["loss_limit_breaches"] == 2


def test_flatten_closes_a_losing_position_while_halted_by_the_loss_limit() -> None:
    d = Desk({"daily_loss_limit": 5.0, "on_loss": "halted"}, symbols=("X",))
    assert d.order("buy", 1.0) is None
    d.fill_pending()
    d.tick(S, 93.0, 95.0)
    assert d.engine.risk.state == "HALTED"
    assert d.order("sell", 1.0) == "trading_state"
    _cmd(d, "flatten")
    d.tick(1)
    d.tick(1)
    assert d.position() == 0.0
    assert d.engine.risk.state == "HALTED"
    flatten_fills = [
        e
        for e in d.strategy.seen
        if isinstance(e, Fill)
        and d.engine.orders.get(e.client_order_id).request.strategy == FLATTEN
    ]
    assert [(f.side, f.qty) for f in flatten_fills] == [("sell", 1.0)]
    assert not d.engine.desk.flattening


def test_flatten_cancels_open_orders_and_never_flips() -> None:
    d = Desk({"max_order_qty": 0.4}, symbols=("X",))
    for _ in range(3):
        assert d.order("buy", 0.3) is None
    d.fill_pending()  # long 0.9
    d.engine._context.submit_limit("X", "sell", 0.2, 120.0)
    d.engine._context.submit_limit("X", "buy", 0.2, 80.0)
    d.tick(1)
    _cmd(d, "flatten")
    for _ in range(6):
        d.tick(1)
        assert d.position() >= -1e-12
    assert d.position() == 0.0
    assert d.engine.orders.open_orders() == []
    assert d.engine.risk.state == "REDUCE_ONLY"


def test_max_position_refuses_a_flip_beyond_the_limit() -> None:
    d = Desk({"max_position": 1.0}, symbols=("X",))
    d.engine.portfolio.apply_fill(0, -3.0, 100.0, 0.0)  # short 3, above the limit already
    assert d.order("buy", 5.0) == "max_position"  # would end at +2
    assert d.order("buy", 4.0) is None  # ends at +1: within the limit
    assert d.order("sell", 0.1) == "max_position"


def test_late_ack_after_partial_fill_is_not_an_error() -> None:
    d = Desk({}, symbols=("X",), latency=10)
    cid = d.engine._context.submit_limit("X", "buy", 1.0, 90.0)
    d.engine.on_report(_fill(cid, "F1", 0.4, price=90.0))
    d.engine.on_report(
        OrderAccepted(ts_event=0, ts_recv=0, client_order_id=cid, venue_order_id="V")
    )
    order = d.engine.orders.get(cid)
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert d.engine.counters["reports_redundant"] == 1
    assert d.position() == 0.4


def test_same_fill_twice_is_booked_once() -> None:
    d = Desk({}, symbols=("X",), latency=10)
    cid = d.engine._context.submit_limit("X", "buy", 1.0, 90.0)
    d.engine.on_report(_fill(cid, "F1", 0.4, price=90.0))
    d.engine.on_report(_fill(cid, "F1", 0.4, price=90.0))
    assert d.position() == 0.4
    assert d.engine.portfolio.cash[0] == -36.0
    assert d.engine.counters["fills_duplicate"] == 1


def test_fill_on_a_cancelled_order_reaches_the_portfolio_with_an_alarm() -> None:
    d = Desk({}, symbols=("X",), latency=10)
    cid = d.engine._context.submit_limit("X", "buy", 1.0, 90.0)
    d.engine.on_report(OrderCancelled(ts_event=0, ts_recv=0, client_order_id=cid))
    d.engine.on_report(_fill(cid, "F1", 0.4, price=90.0))
    assert d.position() == 0.4
    assert d.engine.counters["fills_on_closed_order"] == 1
    assert any(isinstance(e, Alarm) and "F1" in e.message for e in d.events)
    assert d.engine.risk.state == "ACTIVE"


def test_fill_on_an_unknown_order_is_booked_and_reduces_only() -> None:
    d = Desk({}, symbols=("X",))
    d.engine.on_report(_fill("ELSEWHERE-1", "F9", 2.0))
    assert d.position() == 2.0
    states = [e for e in d.events if isinstance(e, TradingState)]
    assert states[-1].state == "REDUCE_ONLY" and states[-1].source == "automatic"
    assert d.order("buy", 0.1) == "trading_state"
