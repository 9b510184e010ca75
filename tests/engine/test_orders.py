import pytest

from engine.errors import OrderStateError
from engine.events import Fill, OrderRequest
from engine.orders import FillOutcome, OrderBook, OrderStatus, ReportOutcome


def _req(cid: str = "O-1", qty: float = 1.0, side: str = "buy") -> OrderRequest:
    return OrderRequest(
        ts_event=1, ts_recv=1, client_order_id=cid, instrument="X", side=side, qty=qty
    )  # type: ignore[arg-type]


def _fill(qty: float, cid: str = "O-1", side: str = "buy", n: int = 1) -> Fill:
    return Fill(
        ts_event=2,
        ts_recv=2,
        client_order_id=cid,
        fill_id=f"F-{n}",
        instrument="X",
        side=side,  # type: ignore[arg-type]
        qty=qty,
        price=10.0,
        fee=0.0,
        liquidity="taker",
    )


def test_order_partial_then_full_fill_walks_the_states() -> None:
    book = OrderBook(1)
    order = book.add(_req(qty=1.0), 0)
    book.update(order, OrderStatus.ACCEPTED)
    book.fill(_fill(0.4))
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert book.open_qty(0) == pytest.approx(0.6)
    book.fill(_fill(0.6, n=2))
    assert order.status is OrderStatus.FILLED
    assert book.open_orders() == []


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([OrderStatus.ACCEPTED, OrderStatus.CANCELLED], OrderStatus.ACCEPTED),
        ([OrderStatus.REJECTED], OrderStatus.ACCEPTED),
        ([OrderStatus.ACCEPTED], OrderStatus.REJECTED),
        ([OrderStatus.ACCEPTED, OrderStatus.CANCELLED], OrderStatus.FILLED),
        ([], OrderStatus.NEW),
    ],
)
def test_order_illegal_transition_raises(path: list[OrderStatus], bad: OrderStatus) -> None:
    book = OrderBook(1)
    order = book.add(_req(), 0)
    for status in path:
        book.update(order, status)
    with pytest.raises(OrderStateError, match="illegal transition"):
        book.update(order, bad)


def test_order_overfill_is_booked_and_reported() -> None:
    book = OrderBook(1)
    order = book.add(_req(qty=1.0), 0)
    assert book.fill(_fill(0.7))[0] is FillOutcome.APPLIED
    assert book.fill(_fill(0.5, n=2))[0] is FillOutcome.OVERFILL
    assert order.status is OrderStatus.FILLED and order.filled_qty == pytest.approx(1.2)
    assert book.open_orders() == [] and book.open_qty(0) == 0.0


def test_order_fill_after_cancel_is_applied_to_the_closed_order() -> None:
    """A cancel confirmation may overtake a fill the venue made before it."""
    book = OrderBook(1)
    order = book.add(_req(), 0)
    book.update(order, OrderStatus.CANCELLED)
    assert book.fill(_fill(0.5))[0] is FillOutcome.ON_CLOSED_ORDER
    assert order.status is OrderStatus.CANCELLED and order.filled_qty == 0.5
    assert book.open_qty(0) == 0.0


def test_order_same_fill_twice_is_applied_once() -> None:
    book = OrderBook(1)
    order = book.add(_req(qty=1.0), 0)
    assert book.fill(_fill(0.4))[0] is FillOutcome.APPLIED
    assert book.fill(_fill(0.4))[0] is FillOutcome.DUPLICATE
    assert order.filled_qty == 0.4 and book.open_qty(0) == pytest.approx(0.6)


def test_order_late_ack_after_a_fill_is_redundant() -> None:
    book = OrderBook(1)
    order = book.add(_req(qty=1.0), 0)
    book.fill(_fill(0.4))
    assert book.report("O-1", OrderStatus.ACCEPTED)[0] is ReportOutcome.REDUNDANT
    assert order.status is OrderStatus.PARTIALLY_FILLED
    book.fill(_fill(0.6, n=2))
    assert book.report("O-1", OrderStatus.CANCELLED)[0] is ReportOutcome.REDUNDANT
    assert order.status is OrderStatus.FILLED


def test_order_reject_after_a_fill_is_illegal() -> None:
    book = OrderBook(1)
    book.add(_req(qty=1.0), 0)
    book.fill(_fill(0.4))
    assert book.report("O-1", OrderStatus.REJECTED)[0] is ReportOutcome.ILLEGAL


def test_order_unknown_id_is_an_outcome_and_duplicate_id_raises() -> None:
    book = OrderBook(1)
    book.add(_req(), 0)
    assert book.fill(_fill(0.1, cid="O-404")) == (FillOutcome.UNKNOWN_ORDER, None)
    assert book.report("O-404", OrderStatus.ACCEPTED) == (ReportOutcome.UNKNOWN_ORDER, None)
    with pytest.raises(OrderStateError, match="duplicate"):
        book.add(_req(), 0)


def test_order_fill_on_wrong_side_is_a_mismatch_left_off_the_order() -> None:
    book = OrderBook(1)
    order = book.add(_req(side="buy"), 0)
    assert book.fill(_fill(0.1, side="sell"))[0] is FillOutcome.MISMATCH
    assert order.filled_qty == 0.0


def test_order_open_qty_is_signed() -> None:
    book = OrderBook(1)
    book.add(_req("A", 1.0, "buy"), 0)
    book.add(_req("B", 0.25, "sell"), 0)
    assert book.open_qty(0) == pytest.approx(0.75)
