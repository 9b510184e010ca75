"""Order entry and execution reports: the engine's side of the conversation with a venue.

Orders from the strategy (and the operator's ``flatten``) pass the risk gates here before
they reach the router. Execution reports come back here and are applied the way the
venue means them: fills are the truth and are booked once by ``fill_id``, whatever the
order's status; late and repeated status reports change nothing. Whenever the trading
state is restricted, open orders that could add risk are cancelled here.
"""

from __future__ import annotations

import logging
import math

from engine.engine_view import DeskHost
from engine.events import (
    Alarm,
    CancelRejected,
    CancelRequest,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Severity,
    Side,
    TimeInForce,
    side_sign,
)
from engine.orders import FillOutcome, Order, OrderStatus, ReportOutcome
from engine.ports import ExecutionReport

log = logging.getLogger("tradeloop.orders")

# the ``strategy`` field of orders the engine sends for an operator's flatten
FLATTEN = "operator:flatten"

# quantities are lot multiples; below this a position or a quantity is zero
_EPS = 1e-9


class OrderDesk:
    """Sends orders and cancels, applies execution reports, enforces the trading state.

    Cancels: one per working order in flight. With ``cancel_retry_ns`` (live) a cancel
    sent for an order is not sent again until that long has passed, whatever asks for it
    (a state that flaps in and out of HALTED, a venue that rejects the cancel while the
    order stays open); then it is resent, at the latest at the next clock reading, with
    the wait doubling up to ``cancel_retry_max_ns``, for as long as the order stays open.
    The rule runs on the engine's clock, so a replay sends the same cancels. Without it
    (replay against the simulated venue, which answers every cancel) a cancel is sent
    once per order, and again after the venue rejected it.

    Args:
        engine: the engine it works for (events, counters, state, strategy hooks).
        order_id_prefix: prefix of client order ids (unique per session in live).
        order_timeout_ns: an order without an answer this long becomes UNKNOWN (None:
            never).
        cancel_retry_ns: the wait before a cancel of the same order is sent again (None:
            as described above).
        cancel_retry_max_ns: the longest wait the doubling reaches (None: no cap).
    """

    def __init__(
        self,
        engine: DeskHost,
        order_id_prefix: str,
        order_timeout_ns: int | None = None,
        cancel_retry_ns: int | None = None,
        cancel_retry_max_ns: int | None = None,
    ) -> None:
        self._e = engine
        self._prefix = order_id_prefix
        self._seq = 0
        self._timeout_ns = order_timeout_ns
        self._waiting: dict[str, int] = {}  # sent, no answer yet: client id -> sent at
        self._unknown: set[str] = set()  # timed out, still no answer
        self.flattening = False
        if cancel_retry_ns is not None and cancel_retry_ns <= 0:
            raise ValueError(f"cancel_retry_ns must be > 0, got {cancel_retry_ns}")
        self._cancel_retry_ns = cancel_retry_ns
        self._cancel_retry_max_ns = max(cancel_retry_max_ns or 0, cancel_retry_ns or 0) or None
        # open orders a cancel was sent for: client id -> (sent at, wait before a resend,
        # reason); dropped when the order closes
        self._cancels: dict[str, tuple[int, int, str]] = {}

    def begin_session(self, order_id_prefix: str) -> None:
        """Client order ids from here on are ``{order_id_prefix}-{n}`` counted from 1: the
        daemon rebuilding its state replays each earlier session under that session's
        prefix, so the orders it makes again carry the ids the venue knows."""
        self._prefix = order_id_prefix
        self._seq = 0

    # order entry

    def submit(
        self,
        symbol: str,
        side: Side,
        qty: float,
        order_type: OrderType,
        limit_price: float | None,
        time_in_force: TimeInForce,
        reduce_only: bool,
        *,
        flatten: bool = False,
    ) -> str:
        """Pass one order through the risk gates and, if they agree, to the router.

        Returns the client order id (also of a refused order: the refusal is a
        ``RiskRejected`` event the strategy hears in ``on_reject``).

        Raises:
            KeyError: ``symbol`` is not an instrument of the engine.
        """
        e = self._e
        index = e.instruments.index.get(symbol)
        if index is None:
            raise KeyError(f"unknown instrument {symbol!r}")
        inst = e.instruments.instruments[index]
        if e.risk.config.round_to_grid:
            qty = inst.round_qty(qty)
            if limit_price is not None:
                limit_price = inst.round_price(limit_price)
        self._seq += 1
        now = e.clock.now_ns()
        req = OrderRequest(
            ts_event=now,
            ts_recv=now,
            client_order_id=f"{self._prefix}-{self._seq:08d}",
            instrument=symbol,
            side=side,
            qty=float(qty),
            order_type=order_type,
            limit_price=limit_price,
            time_in_force=time_in_force,
            reduce_only=reduce_only or flatten,
            strategy=FLATTEN if flatten else e.strategy.name,
        )
        e.emit(req)
        e.counters["orders_requested"] += 1
        rejected = e.risk.check(req, index, now, flatten=flatten)
        if rejected is not None:
            e.counters["risk_rejected"] += 1
            e.emit(rejected)
            if not flatten:
                e.notify(rejected)
            return req.client_order_id
        e.orders.add(req, index)
        if self._timeout_ns is not None:
            self._waiting[req.client_order_id] = now
        e.counters["orders_sent"] += 1
        e.router.submit(req)
        return req.client_order_id

    def cancel(self, client_order_id: str) -> None:
        """The strategy's cancel: sent once per open order, ignored for closed ones."""
        order = self._e.orders.get(client_order_id)
        if order.is_open:
            self._send_cancel(order, "strategy")

    def _send_cancel(self, order: Order, reason: str) -> None:
        now = self._e.clock.now_ns()
        retry = self._cancel_retry_ns
        if retry is None:
            if order.cancel_sent:
                return
        else:
            cid = order.client_order_id
            held = self._cancels.get(cid)
            if held is None:
                self._cancels[cid] = (now, retry, reason)
            else:
                sent, wait, first = held
                if now - sent < wait:
                    return  # one in flight: not again before its back-off
                doubled = 2 * wait
                cap = self._cancel_retry_max_ns
                self._cancels[cid] = (now, doubled if cap is None else min(doubled, cap), first)
                self._e.counters["cancels_resent"] += 1
        order.cancel_sent = True
        req = CancelRequest(
            ts_event=now,
            ts_recv=now,
            client_order_id=order.client_order_id,
            instrument=order.request.instrument,
            reason=reason,
        )
        self._e.emit(req)
        self._e.router.cancel(req)

    # orders the venue works that this engine never sent

    def adopt(
        self,
        request: OrderRequest,
        filled_qty: float,
        *,
        venue_order_id: str = "",
        fills_follow_qty: float = 0.0,
    ) -> bool:
        """Book an order the OMS works that this engine never sent as its own (the
        reconciliation's ``adopt``): open, counted by the open-order and REDUCE_ONLY
        checks, cancelled by a halt or a flatten, its later reports and fills applied as
        for any order. ``filled_qty`` is what the OMS says is filled; the
        ``fills_follow_qty`` part of it is booked by the fills that follow (they carry
        the prices), the rest only counts toward the order's filled quantity: its
        position is the OMS's alone, which the position check names.

        An order that makes no sense (unknown instrument, quantity not positive or not
        finite, a price not finite or not positive, filled beyond its quantity, a client
        id already used) is not adopted: it is flagged with a critical Alarm and the
        engine reduces only, since the OMS works something the engine cannot account for.

        Returns:
            True if the order was adopted.
        """
        e = self._e
        cid = request.client_order_id
        before = filled_qty - fills_follow_qty
        why = _adopt_refusal(e, request, filled_qty, fills_follow_qty)
        if why is not None:
            e.counters["orders_adopt_refused"] += 1
            self._alarm(
                "critical",
                f"external order {cid!r} not adopted ({why}); reducing only",
            )
            e.raise_automatic("REDUCE_ONLY", f"external order {cid!r} not adopted", sticky=True)
            return False
        index = e.instruments.index[request.instrument]
        e.orders.adopt(request, index, max(before, 0.0))
        e.counters["orders_adopted"] += 1
        price = "market" if request.limit_price is None else f"@ {request.limit_price:g}"
        self._alarm(
            "warning",
            f"adopted external order {cid} ({venue_order_id or 'no venue id'}): "
            f"{request.side} {request.qty:g} {request.instrument} {price}, "
            f"{filled_qty:g} filled at the OMS",
        )
        if e.risk.state != "ACTIVE":
            self.enforce_state()
        return True

    # execution reports

    def handle_reports(self) -> None:
        for report in self._e.router.drain_reports():
            self.on_report(report)

    def on_report(self, report: ExecutionReport) -> None:
        """Apply one execution report (from the simulated venue or the OMS).

        Nothing here raises on what a venue may send: duplicates, late acks and fills on
        closed or unknown orders are counted, alarmed where they matter, and (fills)
        booked once.
        """
        self._e.emit(report)
        self._answered(report.client_order_id)
        match report:
            case Fill():
                self._on_fill(report)
            case OrderAccepted():
                self._on_status(report, OrderStatus.ACCEPTED)
            case OrderRejected():
                self._on_status(report, OrderStatus.REJECTED)
            case OrderCancelled():
                self._on_status(report, OrderStatus.CANCELLED)
            case CancelRejected():
                self._e.counters["cancels_rejected"] += 1
                order = self._e.orders.find(report.client_order_id)
                if order is not None and order.is_open and self._cancel_retry_ns is None:
                    order.cancel_sent = False  # still open: a later sweep may cancel again
                self._e.call_strategy(self._e.strategy.on_order, report)
        if self._cancels:
            self._forget_cancel(report.client_order_id)
        if self._e.risk.state != "ACTIVE":
            self.enforce_state()
        if self.flattening:
            self.flatten_step()

    def _on_status(
        self, report: OrderAccepted | OrderRejected | OrderCancelled, status: OrderStatus
    ) -> None:
        e = self._e
        outcome, _order = e.orders.report(report.client_order_id, status)
        match outcome:
            case ReportOutcome.APPLIED:
                if status is OrderStatus.REJECTED:
                    e.counters["orders_rejected"] += 1
                elif status is OrderStatus.CANCELLED:
                    e.counters["orders_cancelled"] += 1
                e.call_strategy(e.strategy.on_order, report)
            case ReportOutcome.REDUNDANT:
                e.counters["reports_redundant"] += 1
            case ReportOutcome.UNKNOWN_ORDER:
                e.counters["reports_unknown_order"] += 1
                self._alarm(
                    "warning", f"{status.value} report for unknown order {report.client_order_id!r}"
                )
            case ReportOutcome.ILLEGAL:
                e.counters["reports_illegal"] += 1
                self._alarm(
                    "critical",
                    f"{status.value} report for order "
                    f"{report.client_order_id!r} contradicts its history; reducing only",
                )
                e.raise_automatic("REDUCE_ONLY", "contradictory execution report", sticky=True)

    def _on_fill(self, fill: Fill) -> None:
        e = self._e
        outcome, order = e.orders.fill(fill)
        if outcome is FillOutcome.DUPLICATE:
            e.counters["fills_duplicate"] += 1
            return
        if order is not None and outcome is not FillOutcome.MISMATCH:
            index: int | None = order.instrument_index
        else:
            index = e.instruments.index.get(fill.instrument)
        if index is None:
            e.counters["fills_unknown_instrument"] += 1
            self._alarm(
                "critical",
                f"fill {fill.fill_id} on unknown instrument "
                f"{fill.instrument!r} cannot be booked; halting",
            )
            e.raise_automatic(
                "HALTED", f"fill on unknown instrument {fill.instrument!r}", sticky=True
            )
            return
        e.portfolio.apply_fill(index, side_sign(fill.side) * fill.qty, fill.price, fill.fee)
        e.counters["fills"] += 1
        if outcome is not FillOutcome.APPLIED:
            e.counters[f"fills_{outcome.value}"] += 1
            what = {
                FillOutcome.ON_CLOSED_ORDER: "on a closed order",
                FillOutcome.UNKNOWN_ORDER: "on an unknown order",
                FillOutcome.OVERFILL: "beyond the order's quantity",
                FillOutcome.MISMATCH: "whose side or instrument differ from its order's",
            }[outcome]
            message = (
                f"fill {fill.fill_id} {what} {fill.client_order_id!r}: booked "
                f"{fill.side} {fill.qty:g} {fill.instrument} @ {fill.price:g}"
            )
            if outcome is FillOutcome.ON_CLOSED_ORDER:
                self._alarm("warning", message)
            else:
                self._alarm("critical", message + "; reducing only")
                e.raise_automatic("REDUCE_ONLY", f"fill {what}", sticky=True)
        e.call_strategy(e.strategy.on_fill, fill)

    def _alarm(self, severity: Severity, message: str) -> None:
        now = self._e.clock.now_ns()
        log.log(logging.ERROR if severity == "critical" else logging.WARNING, message)
        self._e.emit(
            Alarm(ts_event=now, ts_recv=now, source="orders", severity=severity, message=message)
        )

    # orders without an answer

    def check_timeouts(self, now: int) -> None:
        """Orders sent ``order_timeout`` ago without any answer become UNKNOWN: never a
        reject (the venue may have them), and the engine reduces only until it answers.
        Cancels whose back-off has passed are sent again."""
        if self._cancels:
            self._resend_cancels(now)
        if self._timeout_ns is None or not self._waiting:
            return
        late = [cid for cid, sent in self._waiting.items() if now - sent >= self._timeout_ns]
        for cid in late:
            del self._waiting[cid]
            order = self._e.orders.get(cid)
            if order.status is not OrderStatus.NEW:
                continue
            self._e.orders.update(order, OrderStatus.UNKNOWN)
            self._unknown.add(cid)
            self._e.counters["orders_unknown"] += 1
            self._alarm(
                "critical",
                f"order {cid} has no answer from the venue after "
                f"{self._timeout_ns / 1e9:g} s: UNKNOWN, reducing only until it answers",
            )
        if self._unknown:
            self._e.raise_automatic("REDUCE_ONLY", "orders without an answer", sticky=False)

    def _resend_cancels(self, now: int) -> None:
        for cid, (sent, wait, reason) in list(self._cancels.items()):
            order = self._e.orders.find(cid)
            if order is None or not order.is_open:
                del self._cancels[cid]
            elif now - sent >= wait:
                self._send_cancel(order, reason)

    def _forget_cancel(self, client_order_id: str) -> None:
        order = self._e.orders.find(client_order_id)
        if order is None or not order.is_open:
            self._cancels.pop(client_order_id, None)

    def _answered(self, client_order_id: str) -> None:
        self._waiting.pop(client_order_id, None)
        if client_order_id in self._unknown:
            self._unknown.discard(client_order_id)
            if not self._unknown:
                self._e.lower_automatic("the venue answered every UNKNOWN order")

    # the trading state applied to open orders

    def enforce_state(self) -> None:
        """Cancel every open order the current state does not allow.

        HALTED: all of them, except a flatten's orders that still reduce. REDUCE_ONLY:
        every order that adds risk if it and the older orders on its side fill: the
        whole side that grows |position| (both sides when flat), and on the reducing
        side the younger orders beyond what would take the position to zero.
        """
        e = self._e
        state = e.risk.state
        if state == "ACTIVE":
            return
        positions = e.portfolio.positions
        for i in range(len(e.instruments)):
            orders = e.orders.open_orders(i)
            if not orders:
                continue
            position = float(positions[i])
            room = abs(position)  # what the reducing side may still take
            for order in orders:
                reducing = position != 0.0 and (order.request.side == "sell") == (position > 0)
                flattening = self.flattening and order.request.strategy == FLATTEN
                allowed = reducing and (state == "REDUCE_ONLY" or flattening)
                if allowed and order.remaining_qty <= room + _EPS:
                    room -= order.remaining_qty
                    continue
                self._send_cancel(order, state.lower())

    def enforce_position_limits(self) -> None:
        """Cancel the open orders that would take a position beyond its ``max_position``
        if they and the older orders on their side filled: what a limit lowered while
        orders work (a model switched to a lower stage) leaves behind. Orders that reduce
        the position are never cancelled; the strategy may resubmit within the limit."""
        e = self._e
        positions = e.portfolio.positions
        for i in range(len(e.instruments)):
            limit = e.risk.limits[i].max_position
            orders = e.orders.open_orders(i)
            if limit is None or not orders:
                continue
            position = float(positions[i])
            bought = sold = 0.0  # what the kept orders of each side add
            for order in orders:
                qty = order.remaining_qty
                if order.request.side == "buy":
                    if position + bought + qty > limit + _EPS:
                        self._send_cancel(order, "max_position")
                        continue
                    bought += qty
                else:
                    if position - sold - qty < -(limit + _EPS):
                        self._send_cancel(order, "max_position")
                        continue
                    sold += qty

    def start_flatten(self) -> None:
        """The operator's ``flatten``: cancel every open order, then close every position
        with reducing market orders until flat (retried after reports and batches)."""
        self.flattening = True
        for order in self._e.orders.open_orders():
            if order.request.strategy != FLATTEN:
                self._send_cancel(order, "flatten")
        self.flatten_step()

    def stop_flatten(self) -> None:
        self.flattening = False

    def flatten_step(self) -> None:
        e = self._e
        flat = True
        for i, position in enumerate(e.portfolio.positions.tolist()):
            if abs(position) < _EPS:
                continue
            flat = False
            sell = position > 0
            closing_open = e.orders.open_sell_qty[i] if sell else e.orders.open_buy_qty[i]
            qty = abs(position) - closing_open
            cap = e.risk.limits[i].max_order_qty
            if cap is not None:
                qty = min(qty, cap)
            inst = e.instruments.instruments[i]
            qty = inst.floor_qty(qty)
            if qty <= _EPS:
                continue
            e.counters["flatten_orders"] += 1
            self.submit(
                inst.symbol,
                "sell" if sell else "buy",
                qty,
                "market",
                None,
                "gtc",
                True,
                flatten=True,
            )
        if flat:
            self.flattening = False


def _finite(x: float) -> bool:
    return x == x and abs(x) != math.inf


def _adopt_refusal(
    engine: DeskHost, request: OrderRequest, filled_qty: float, fills_follow_qty: float
) -> str | None:
    """Why an external order cannot be adopted, or None."""
    if request.instrument not in engine.instruments.index:
        return f"unknown instrument {request.instrument!r}"
    if request.side not in ("buy", "sell"):
        return f"side {request.side!r}"
    if not _finite(request.qty) or request.qty <= 0.0:
        return f"quantity {request.qty!r}"
    price = request.limit_price
    if request.order_type == "limit" and price is None:
        return "a limit order without a price"
    if price is not None and (not _finite(price) or price <= 0.0):
        return f"price {price!r}"
    if not _finite(filled_qty) or not _finite(fills_follow_qty):
        return f"filled quantity {filled_qty!r} / {fills_follow_qty!r}"
    if not 0.0 <= fills_follow_qty <= filled_qty + _EPS:
        return f"{fills_follow_qty:g} to follow of {filled_qty:g} filled"
    if filled_qty >= request.qty - _EPS:
        return f"{filled_qty:g} of {request.qty:g} filled: not open"
    if engine.orders.find(request.client_order_id) is not None:
        return "its client order id is one of ours"
    return None
