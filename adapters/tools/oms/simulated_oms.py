"""The simulated OMS's state and rules, without I/O: orders, fills and positions, with
matching by the simulated venue (``adapters.sim_venue``, README "Simulated venue").

``adapters.tools.oms.oms_sim`` puts it on the broker (``tradeloop oms-sim``). Fills follow the
venue's rules, run on the OMS's own time axis: every call takes the time the OMS read the
message, ticks and orders alike, so an order reaches the venue ``latency`` after the OMS
received it and fills against the quotes the OMS had seen by then.

Idempotent on resend: an ``OrderRequest`` whose ``client_order_id`` the OMS already holds
is not a new order; the OMS gives the order's latest report again (nothing while the order
is still on its way to the venue).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from adapters.mqtt.reconcile import (
    FillsResponse,
    FillsSinceRequest,
    OpenOrder,
    OpenOrdersRequest,
    OpenOrdersResponse,
    PositionsRequest,
    PositionsResponse,
    ReconcileRequest,
    ReconcileResponse,
)
from adapters.sim_venue import SimulatedVenue
from engine.events import (
    CancelRejected,
    CancelRequest,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    side_sign,
)
from engine.instruments import InstrumentTable
from engine.market import MarketState
from engine.ports import ExecutionReport
from engine.ticks import QUOTE, TRADE, TickBatch

OrderState = Literal["pending", "accepted", "partially_filled", "filled", "cancelled", "rejected"]

# Quantities are sums of floats on a lot grid; 1e-12 is far below any lot and far above
# the rounding noise of summing a few thousand fills.
_QTY_EPS = 1e-12
_CLOSED: frozenset[str] = frozenset({"filled", "cancelled", "rejected"})


@dataclass(slots=True)
class _Order:
    request: OrderRequest  # as received, with the sender's timestamps
    status: OrderState = "pending"
    filled_qty: float = 0.0
    venue_order_id: str = ""
    last_report: ExecutionReport | None = None


class SimulatedOms:
    """The OMS's state and rules, without I/O: orders, fills and positions, with matching
    delegated to a ``SimulatedVenue`` driven the way the engine drives it.

    Every method takes the OMS's time (``now_ns``, or the ticks' ``ts_event``), which must
    not go backwards, and returns the execution reports it produced, already applied to
    the state.

    Args:
        instruments: what can be traded; anything else is rejected by the venue.
        venue: the matching rules, latency and fees.
    """

    def __init__(self, instruments: InstrumentTable, venue: SimulatedVenue) -> None:
        self.instruments = instruments
        self.venue = venue
        self.market = MarketState(len(instruments))
        venue.bind(self.market, instruments)
        # the market scan marks equity to these; the OMS has no cash account
        self._flat = np.zeros(len(instruments))
        self._cash = np.zeros(1)
        self.orders: dict[str, _Order] = {}
        self.fills: list[Fill] = []
        self.positions: dict[str, float] = dict.fromkeys(instruments.symbols, 0.0)
        self.counters: Counter[str] = Counter()

    def next_event_ns(self) -> int | None:
        """When the next order or cancel reaches the venue, if any is on its way."""
        return self.venue.next_event_ns()

    def on_order(self, order: OrderRequest, now_ns: int) -> list[ExecutionReport]:
        """Take an order received at ``now_ns``; a known client order id is a resend."""
        known = self.orders.get(order.client_order_id)
        if known is not None:
            self.counters["resends"] += 1
            return [] if known.last_report is None else [known.last_report]
        self.counters["orders"] += 1
        self.orders[order.client_order_id] = _Order(order)
        self.venue.submit(msgspec.structs.replace(order, ts_event=now_ns, ts_recv=now_ns))
        return self.advance_to(now_ns)

    def on_cancel(self, cancel: CancelRequest, now_ns: int) -> list[ExecutionReport]:
        """Take a cancel received at ``now_ns``; the venue answers it after latency."""
        self.counters["cancels"] += 1
        self.venue.cancel(msgspec.structs.replace(cancel, ts_event=now_ns, ts_recv=now_ns))
        return self.advance_to(now_ns)

    def cancel_orders_of(self, node: str, now_ns: int, reason: str) -> list[ExecutionReport]:
        """Cancel every working order of daemon ``node`` (client order ids
        ``{node}-...``), as if it had asked (cancel-on-disconnect: its last will fired or
        its heartbeat lapsed); each is counted in ``cancels_on_disconnect``."""
        prefix = f"{node}-"
        for cid, order in self.orders.items():
            if order.status in _CLOSED or not cid.startswith(prefix):
                continue
            self.counters["cancels_on_disconnect"] += 1
            self.venue.cancel(CancelRequest(ts_event=now_ns, ts_recv=now_ns, client_order_id=cid,
                                            instrument=order.request.instrument, reason=reason))  # fmt: skip
        return self.advance_to(now_ns)

    def advance_to(self, now_ns: int) -> list[ExecutionReport]:
        """Handle the orders and cancels that reached the venue by ``now_ns``."""
        self.venue.advance_to(now_ns)
        return self._apply(self.venue.drain_reports())

    def on_ticks(self, batch: TickBatch) -> list[ExecutionReport]:
        """Apply ticks (stamped with the OMS's receive time), filling resting orders.

        An order or cancel arriving at ``T`` is handled after every tick stamped at or
        before ``T`` and before the first one after it, as in the engine's loop.
        """
        n = len(batch)
        if n == 0:
            return []
        ts = batch.ts_event
        self.counters["ticks"] += n
        self.market.begin_batch(n)
        pos = 0
        while pos < n:
            self.venue.advance_to(int(ts[pos]) - 1)
            nxt = self.venue.next_event_ns()
            end = n if nxt is None else int(np.searchsorted(ts, nxt, side="right"))
            stop = self.venue.match(batch, pos, end)
            self.market.update(batch, pos, stop, self._flat, self._cash)
            self.venue.commit()
            pos = stop
        self.market.end_batch()
        return self._apply(self.venue.drain_reports())

    def answer(self, request: ReconcileRequest, now_ns: int) -> ReconcileResponse:
        """The answer to a reconciliation request, as of ``now_ns``."""
        self.counters["requests"] += 1
        match request:
            case OpenOrdersRequest():
                return OpenOrdersResponse(as_of_ns=now_ns, orders=self.open_orders())
            case FillsSinceRequest(since_ns=since):
                fills = [f for f in self.fills if f.ts_event >= since]
                return FillsResponse(as_of_ns=now_ns, fills=fills)
            case PositionsRequest():
                return PositionsResponse(as_of_ns=now_ns, positions=dict(self.positions))

    def open_orders(self) -> list[OpenOrder]:
        """Working orders in the order they were received."""
        return [
            OpenOrder(
                order=o.request,
                status=o.status,
                filled_qty=o.filled_qty,
                venue_order_id=o.venue_order_id,
            )
            for o in self.orders.values()
            if o.status in ("pending", "accepted", "partially_filled")
        ]

    def _apply(self, reports: list[ExecutionReport]) -> list[ExecutionReport]:
        for report in reports:
            self.counters["reports"] += 1
            if isinstance(report, CancelRejected):
                self.counters["cancels_rejected"] += 1
                continue  # the order's state is what it was
            order = self.orders[report.client_order_id]
            order.last_report = report
            match report:
                case OrderAccepted():
                    order.venue_order_id = report.venue_order_id
                    if order.status == "pending":
                        order.status = "accepted"
                case OrderRejected():
                    order.status = "rejected"
                    self.counters["orders_rejected"] += 1
                case Fill():
                    self._book(order, report)
                case OrderCancelled():
                    order.status = "cancelled"
        return reports

    def _book(self, order: _Order, fill: Fill) -> None:
        self.counters["fills"] += 1
        self.fills.append(fill)
        order.filled_qty = round(order.filled_qty + fill.qty, 12)
        done = order.filled_qty >= order.request.qty - _QTY_EPS
        order.status = "filled" if done else "partially_filled"
        held = self.positions.get(fill.instrument, 0.0)
        self.positions[fill.instrument] = round(held + side_sign(fill.side) * fill.qty, 12)


def warm_up(instruments: InstrumentTable) -> None:
    """Run a throwaway ``SimulatedOms`` through quotes, a market order and a resting limit
    order that the market then fills, so the venue's numba kernels are compiled (or
    loaded from numba's cache: 1.4 s here, longer with a cold cache) before the first
    real order: otherwise the first orders are answered seconds late."""
    if not instruments.instruments:
        return
    oms = SimulatedOms(instruments, SimulatedVenue(0, 0.0))
    symbol = instruments.instruments[0].symbol
    nan = math.nan
    market = OrderRequest(
        ts_event=0, ts_recv=0, client_order_id="warm-1", instrument=symbol, side="buy", qty=1.0
    )
    limit = msgspec.structs.replace(
        market, client_order_id="warm-2", order_type="limit", limit_price=99.5
    )
    oms.on_ticks(tick_batch([(1, 0, QUOTE, 100.0, 101.0, 1.0, 1.0, nan, nan, 0)]))
    oms.on_order(market, 2)
    oms.on_order(limit, 3)  # rests below the ask
    oms.on_ticks(tick_batch([(4, 0, QUOTE, 98.0, 99.0, 1.0, 1.0, nan, nan, 0)]))  # fills it
    oms.on_ticks(tick_batch([(5, 0, TRADE, nan, nan, nan, nan, 99.0, 1.0, -1)]))


# One row per tick (``ts, instrument, kind, bid, ask, bid_size, ask_size, price, size,
# side``): the simulator appends one per message and turns them into columns once per
# read of the socket.
TickRow = tuple[int, int, int, float, float, float, float, float, float, int]


def tick_batch(rows: list[TickRow]) -> TickBatch:
    """The rows as one ``TickBatch`` (``ts_event`` and ``ts_recv`` both the row's ``ts``)."""
    ts, instrument, kind, bid, ask, bid_size, ask_size, price, size, side = zip(*rows, strict=True)
    stamps = np.array(ts, np.int64)
    return TickBatch(
        stamps,
        stamps,
        np.array(instrument, np.int32),
        np.array(kind, np.int8),
        np.array(bid, np.float64),
        np.array(ask, np.float64),
        np.array(bid_size, np.float64),
        np.array(ask_size, np.float64),
        np.array(price, np.float64),
        np.array(size, np.float64),
        np.array(side, np.int8),
    )
