"""Order lifecycle: the state machine every order follows, whatever the venue.

::

    NEW ──► ACCEPTED ──► PARTIALLY_FILLED ──► FILLED
     │         │   ▲            │  │
     │         │   └────────────┘  └──► CANCELLED
     │         └──────────────────────► CANCELLED
     ├──► REJECTED
     └──► PARTIALLY_FILLED / FILLED   (a venue may report a fill before its ack)

Anything else raises ``OrderStateError``: a report for an unknown id, a fill on a closed
order, a fill beyond the order quantity.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from engine.errors import OrderStateError
from engine.events import Fill, OrderRequest

# fills are summed in float; a residue below this counts as fully filled
_QTY_EPS = 1e-9


class OrderStatus(Enum):
    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset(
        {
            OrderStatus.ACCEPTED,
            OrderStatus.REJECTED,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
        }
    ),
    OrderStatus.ACCEPTED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED}
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}

OPEN_STATUSES = frozenset({OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})


@dataclass(slots=True)
class Order:
    request: OrderRequest
    instrument_index: int
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id

    @property
    def remaining_qty(self) -> float:
        return max(self.request.qty - self.filled_qty, 0.0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def transition(self, new: OrderStatus) -> None:
        """Move to ``new``.

        Raises:
            OrderStateError: the transition is not allowed from the current status.
        """
        if new not in _TRANSITIONS[self.status]:
            raise OrderStateError(
                f"order {self.client_order_id}: illegal transition "
                f"{self.status.value} -> {new.value}"
            )
        self.status = new

    def apply_fill(self, fill: Fill) -> None:
        """Account a fill and move to PARTIALLY_FILLED or FILLED.

        Raises:
            OrderStateError: closed order, wrong side or instrument, or overfill.
        """
        if fill.side != self.request.side or fill.instrument != self.request.instrument:
            raise OrderStateError(f"order {self.client_order_id}: fill {fill.fill_id} does not "
                                  "match the order's side or instrument")  # fmt: skip
        total = self.filled_qty + fill.qty
        if fill.qty <= 0 or total > self.request.qty + _QTY_EPS:
            raise OrderStateError(
                f"order {self.client_order_id}: fill {fill.qty} would fill {total} of "
                f"{self.request.qty}"
            )
        done = total >= self.request.qty - _QTY_EPS
        self.transition(OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED)
        self.avg_fill_price = (
            self.avg_fill_price * self.filled_qty + fill.price * fill.qty
        ) / total
        self.filled_qty = total


class OrderBook:
    """All orders of the session by client order id, with open quantity per instrument.

    Open counts and open quantity per side are kept up to date incrementally, because the
    risk checks read them for every order.
    """

    def __init__(self, n_instruments: int) -> None:
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}
        self.open_count = [0] * n_instruments
        self.open_buy_qty = [0.0] * n_instruments
        self.open_sell_qty = [0.0] * n_instruments

    def __len__(self) -> int:
        return len(self._orders)

    @property
    def open_total(self) -> int:
        return len(self._open)

    def _track(self, order: Order, qty: float) -> None:
        i = order.instrument_index
        if order.request.side == "buy":
            self.open_buy_qty[i] = round(self.open_buy_qty[i] + qty, 10)
        else:
            self.open_sell_qty[i] = round(self.open_sell_qty[i] + qty, 10)

    def add(self, request: OrderRequest, instrument_index: int) -> Order:
        if request.client_order_id in self._orders:
            raise OrderStateError(f"duplicate client order id {request.client_order_id}")
        order = Order(request, instrument_index)
        self._orders[request.client_order_id] = order
        self._open[request.client_order_id] = order
        self.open_count[instrument_index] += 1
        self._track(order, request.qty)
        return order

    def get(self, client_order_id: str) -> Order:
        """Raises: OrderStateError: unknown client order id."""
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise OrderStateError(f"unknown client order id {client_order_id!r}") from None

    def _closed(self, order: Order, remaining: float) -> None:
        self._open.pop(order.client_order_id, None)
        self.open_count[order.instrument_index] -= 1
        self._track(order, -remaining)

    def update(self, order: Order, status: OrderStatus) -> None:
        remaining = order.remaining_qty
        order.transition(status)
        if not order.is_open:
            self._closed(order, remaining)

    def fill(self, fill: Fill) -> Order:
        order = self.get(fill.client_order_id)
        order.apply_fill(fill)
        self._track(order, -fill.qty)
        if not order.is_open:
            self._closed(order, order.remaining_qty)
        return order

    def open_orders(self, instrument_index: int | None = None) -> list[Order]:
        return [o for o in self._open.values()
                if instrument_index is None or o.instrument_index == instrument_index]  # fmt: skip

    def open_qty(self, instrument_index: int) -> float:
        """Signed quantity still to fill on open orders of one instrument."""
        return round(self.open_buy_qty[instrument_index] - self.open_sell_qty[instrument_index], 10)
