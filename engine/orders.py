"""Order lifecycle: the state machine every order follows, whatever the venue.

::

    NEW ──► ACCEPTED ──► PARTIALLY_FILLED ──► FILLED
     │         │   ▲            │  │
     │         │   └────────────┘  └──► CANCELLED
     │         └──────────────────────► CANCELLED
     ├──► REJECTED
     ├──► UNKNOWN   (no answer in time; any report from the venue settles it)
     └──► PARTIALLY_FILLED / FILLED   (a venue may report a fill before its ack)

Reports arrive the way a real OMS sends them over MQTT QoS 1: duplicated, reordered, an
ack after a fill, a fill after the cancel confirmation. The venue's fills are the truth:
every fill is applied exactly once (idempotent by ``fill_id``) whatever the order's status,
and a status report that is late or repeated changes nothing. ``OrderBook.fill`` and
``OrderBook.report`` say what happened as an outcome instead of raising, so the engine
can count, alarm and book each case.
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
    UNKNOWN = "unknown"


class FillOutcome(Enum):
    """What ``OrderBook.fill`` did with a fill (the portfolio books all but DUPLICATE)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this fill_id was applied before: nothing to do
    ON_CLOSED_ORDER = "on_closed_order"  # the order was cancelled or rejected already
    UNKNOWN_ORDER = "unknown_order"  # no such client order id in this session
    OVERFILL = "overfill"  # more than the order's quantity in total
    MISMATCH = "mismatch"  # side or instrument differ from the order's


class ReportOutcome(Enum):
    """What ``OrderBook.report`` did with a status report."""

    APPLIED = "applied"
    REDUNDANT = "redundant"  # a repeat, or late (an ack after a fill, a cancel after FILLED)
    UNKNOWN_ORDER = "unknown_order"
    ILLEGAL = "illegal"  # contradicts what the venue said before (a reject after a fill)


_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset(
        {
            OrderStatus.ACCEPTED,
            OrderStatus.REJECTED,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.UNKNOWN,
        }
    ),
    OrderStatus.ACCEPTED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.UNKNOWN,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.UNKNOWN,
        }
    ),
    # the venue answered: whatever it says is the truth
    OrderStatus.UNKNOWN: frozenset(
        {
            OrderStatus.ACCEPTED,
            OrderStatus.REJECTED,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
        }
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}

OPEN_STATUSES = frozenset(
    {OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNKNOWN}
)

# a status report that arrives after a state it cannot change any more is redundant, not
# an error: the order already went further (an ack after a fill, a cancel after FILLED)
_REDUNDANT: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.ACCEPTED: frozenset(
        {
            OrderStatus.ACCEPTED,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
        }
    ),
    OrderStatus.CANCELLED: frozenset({OrderStatus.CANCELLED, OrderStatus.FILLED}),
    OrderStatus.REJECTED: frozenset({OrderStatus.REJECTED}),
}


@dataclass(slots=True)
class Order:
    request: OrderRequest
    instrument_index: int
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    cancel_sent: bool = False

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

    def record_fill(self, qty: float, price: float) -> None:
        total = self.filled_qty + qty
        self.avg_fill_price = (self.avg_fill_price * self.filled_qty + price * qty) / total
        self.filled_qty = total


class OrderBook:
    """All orders of the session by client order id, with open quantity per instrument.

    Open counts and open quantity per side are kept up to date incrementally, because the
    risk checks read them for every order.
    """

    def __init__(self, n_instruments: int) -> None:
        self._orders: dict[str, Order] = {}
        self._fill_ids: set[str] = set()
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

    def adopt(self, request: OrderRequest, instrument_index: int, filled_qty: float) -> Order:
        """Book an order the venue works that this engine never sent, ``filled_qty`` of it
        already filled by fills booked elsewhere (or never seen): it is open (ACCEPTED,
        or PARTIALLY_FILLED), counts in the open figures for what remains, and takes
        reports and fills from here on like any other order.

        Raises:
            OrderStateError: the client order id is taken, or ``filled_qty`` is not in
                ``[0, qty)``.
        """
        if not 0.0 <= filled_qty < request.qty - _QTY_EPS:
            raise OrderStateError(
                f"order {request.client_order_id}: cannot adopt with {filled_qty:g} of "
                f"{request.qty:g} filled"
            )
        order = self.add(request, instrument_index)
        order.transition(OrderStatus.ACCEPTED)
        if filled_qty > 0.0:
            order.transition(OrderStatus.PARTIALLY_FILLED)
            self._track(order, -filled_qty)
            # the prices of fills never seen here are unknown: the limit price is the
            # worst they can have been (0.0 for a market order)
            order.record_fill(filled_qty, request.limit_price or 0.0)
        return order

    def get(self, client_order_id: str) -> Order:
        """Raises: OrderStateError: unknown client order id."""
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise OrderStateError(f"unknown client order id {client_order_id!r}") from None

    def find(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def _closed(self, order: Order, remaining: float) -> None:
        self._open.pop(order.client_order_id, None)
        self.open_count[order.instrument_index] -= 1
        self._track(order, -remaining)

    def update(self, order: Order, status: OrderStatus) -> None:
        """Move ``order`` to ``status`` and keep the open figures right.

        Raises:
            OrderStateError: the transition is not allowed.
        """
        remaining = order.remaining_qty
        order.transition(status)
        if not order.is_open:
            self._closed(order, remaining)

    def report(
        self, client_order_id: str, status: OrderStatus
    ) -> tuple[ReportOutcome, Order | None]:
        """Apply a status report (accepted, cancelled, rejected) from the venue."""
        order = self._orders.get(client_order_id)
        if order is None:
            return ReportOutcome.UNKNOWN_ORDER, None
        if order.status in _REDUNDANT.get(status, frozenset()):
            return ReportOutcome.REDUNDANT, order
        if status not in _TRANSITIONS[order.status]:
            return ReportOutcome.ILLEGAL, order
        self.update(order, status)
        return ReportOutcome.APPLIED, order

    def fill(self, fill: Fill) -> tuple[FillOutcome, Order | None]:
        """Apply a fill to its order, once per ``fill_id``.

        Every outcome but DUPLICATE means the fill happened and must be booked: a fill on
        a closed order still adds to its filled quantity (the cancel raced the fill), an
        overfill closes the order as FILLED.
        """
        if fill.fill_id in self._fill_ids:
            return FillOutcome.DUPLICATE, self._orders.get(fill.client_order_id)
        self._fill_ids.add(fill.fill_id)
        order = self._orders.get(fill.client_order_id)
        if order is None:
            return FillOutcome.UNKNOWN_ORDER, None
        if fill.side != order.request.side or fill.instrument != order.request.instrument:
            return FillOutcome.MISMATCH, order
        if not order.is_open and order.status is not OrderStatus.FILLED:
            order.record_fill(fill.qty, fill.price)
            return FillOutcome.ON_CLOSED_ORDER, order
        total = order.filled_qty + fill.qty
        overfill = total > order.request.qty + _QTY_EPS
        if order.is_open:
            remaining = order.remaining_qty
            done = total >= order.request.qty - _QTY_EPS
            order.transition(OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED)
            self._track(order, -min(fill.qty, remaining))
            if done:
                self._closed(order, 0.0)
        order.record_fill(fill.qty, fill.price)
        return (FillOutcome.OVERFILL if overfill else FillOutcome.APPLIED), order

    def open_orders(self, instrument_index: int | None = None) -> list[Order]:
        return [
            o
            for o in self._open.values()
            if instrument_index is None or o.instrument_index == instrument_index
        ]

    def open_qty(self, instrument_index: int) -> float:
        """Signed quantity still to fill on open orders of one instrument."""
        return round(self.open_buy_qty[instrument_index] - self.open_sell_qty[instrument_index], 10)
