"""The simulated venue: paper fills for replay and paper trading. Deterministic.

Rules (documented in the README):

- An order or cancel reaches the venue ``latency_ns`` after it was sent; it is handled
  after every tick stamped at or before its arrival time.
- A market order fills at the opposite touch of the last quote, up to the displayed
  size; the remainder fills on later quote updates, each offering its displayed size
  once. No quote yet: rejected.
- A limit order that is marketable on arrival takes liquidity like a market order at
  the touch (never worse than its limit); otherwise it rests and fills at its limit price
  when a quote touches or crosses it (up to the displayed size) or a trade prints at or
  through it (up to the trade's size). ``ioc`` orders cancel their remainder on arrival.
- Fees: ``fee_bps`` of notional for taking, ``maker_fee_bps`` (default the same) for
  resting fills. Liquidity at one tick is shared by orders in arrival order.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from numba import njit

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
from engine.market import ASK, ASK_SIZE, BID, BID_SIZE, MarketState
from engine.ports import ExecutionReport
from engine.ticks import TickBatch

# columns of the resting-order table
O_INST = 0
O_SIDE = 1  # +1 buy, -1 sell
O_LIMIT = 2  # NaN for market orders
O_REMAINING = 3
O_ACTIVE = 4
N_OCOLS = 5

# fills buffer columns
F_SLOT = 0
F_QTY = 1
F_PRICE = 2
F_MAKER = 3
F_TICK = 4


@njit(cache=True, nogil=True)
def _match(  # type: ignore[no-untyped-def]
    inst, kind, bid, ask, bid_size, ask_size, price, size, start, stop, orders, n_slots, fills
):  # fmt: skip
    """Scan ticks until one produces fills; return (index after that tick, fill count)."""
    for t in range(start, stop):
        i = inst[t]
        n_fills = 0
        if kind[t] == 0:
            avail_buy = ask_size[t]  # liquidity our buys can take
            avail_sell = bid_size[t]
        else:
            avail_buy = size[t]
            avail_sell = size[t]
        for o in range(n_slots):
            if orders[o, O_ACTIVE] == 0.0 or orders[o, O_INST] != i:
                continue
            side = orders[o, O_SIDE]
            limit = orders[o, O_LIMIT]
            rem = orders[o, O_REMAINING]
            q = 0.0
            px = 0.0
            maker = 1.0
            if kind[t] == 0:
                if side > 0:
                    if math.isnan(limit):
                        q = min(rem, avail_buy)
                        px = ask[t]
                        maker = 0.0
                    elif ask[t] <= limit:
                        q = min(rem, avail_buy)
                        px = limit
                    avail_buy -= q
                else:
                    if math.isnan(limit):
                        q = min(rem, avail_sell)
                        px = bid[t]
                        maker = 0.0
                    elif bid[t] >= limit:
                        q = min(rem, avail_sell)
                        px = limit
                    avail_sell -= q
            elif not math.isnan(limit):
                if side > 0 and price[t] <= limit:
                    q = min(rem, avail_buy)
                    px = limit
                    avail_buy -= q
                elif side < 0 and price[t] >= limit:
                    q = min(rem, avail_sell)
                    px = limit
                    avail_sell -= q
            if q > 0.0:
                fills[n_fills, F_SLOT] = o
                fills[n_fills, F_QTY] = q
                fills[n_fills, F_PRICE] = px
                fills[n_fills, F_MAKER] = maker
                fills[n_fills, F_TICK] = t
                n_fills += 1
        if n_fills > 0:
            return t + 1, n_fills
    return stop, 0


class SimulatedVenue:
    """An ``OrderRouter`` that fills orders against the replayed (or live) market.

    Args:
        latency_ns: one-way delay from send to the venue, for orders and cancels.
        fee_bps: taker fee in basis points of notional.
        maker_fee_bps: fee for resting fills; defaults to ``fee_bps``.
    """

    def __init__(
        self, latency_ns: int = 0, fee_bps: float = 0.0, maker_fee_bps: float | None = None
    ) -> None:
        if latency_ns < 0:
            raise ValueError("latency_ns must be >= 0")
        self.latency_ns = latency_ns
        self.fee_bps = fee_bps
        self.maker_fee_bps = fee_bps if maker_fee_bps is None else maker_fee_bps
        self._pending: list[tuple[int, int, OrderRequest | CancelRequest]] = []
        self._seq = 0
        self._reports: list[ExecutionReport] = []
        self._orders = np.zeros((16, N_OCOLS))
        self._slot_of: dict[str, int] = {}
        self._request_of: dict[int, OrderRequest] = {}
        self._next_slot = 0  # slots are handed out in arrival order; see _take_slot
        self._closed: set[str] = set()
        self._active = 0
        self._fills = np.zeros((16, 5))
        self._fill_seq = 0
        self._staged = 0
        self._staged_ts = np.empty(0, np.int64)
        self._market: MarketState | None = None
        self._instruments: InstrumentTable | None = None

    def bind(self, market: MarketState, instruments: InstrumentTable) -> None:
        self._market = market
        self._instruments = instruments

    # ---- router port -------------------------------------------------------------------

    def submit(self, order: OrderRequest) -> None:
        self._enqueue(order)

    def cancel(self, request: CancelRequest) -> None:
        self._enqueue(request)

    def next_event_ns(self) -> int | None:
        return self._pending[0][0] if self._pending else None

    def advance_to(self, ts_ns: int) -> None:
        while self._pending and self._pending[0][0] <= ts_ns:
            arrival, _, msg = heapq.heappop(self._pending)
            if isinstance(msg, OrderRequest):
                self._arrive(msg, arrival)
            else:
                self._arrive_cancel(msg, arrival)

    def match(self, batch: TickBatch, start: int, stop: int) -> int:
        """Scan for the first tick in [start, stop) at which resting orders fill; return the
        index after it (or ``stop``). Its fills are staged until ``commit``: the engine may
        stop earlier (a loss limit tripped before that tick) and scan again."""
        self._staged = 0
        if self._active == 0:
            return stop
        j, n = _match(batch.instrument, batch.kind, batch.bid, batch.ask, batch.bid_size,
                      batch.ask_size, batch.price, batch.size, start, stop, self._orders,
                      self._next_slot, self._fills)  # fmt: skip
        self._staged = int(n)
        self._staged_ts = batch.ts_event
        return int(j)

    def commit(self) -> None:
        """Book the fills staged by the last ``match``."""
        for k in range(self._staged):
            slot, qty, px, maker, tick = self._fills[k]
            self._book_fill(
                int(slot), float(qty), float(px), bool(maker), int(self._staged_ts[int(tick)])
            )
        self._staged = 0

    def drain_reports(self) -> list[ExecutionReport]:
        out = self._reports
        self._reports = []
        return out

    # ---- internals ---------------------------------------------------------------------

    def _enqueue(self, msg: OrderRequest | CancelRequest) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (msg.ts_event + self.latency_ns, self._seq, msg))

    def _arrive(self, req: OrderRequest, now: int) -> None:
        assert self._market is not None and self._instruments is not None
        index = self._instruments.index.get(req.instrument)
        reason = None
        if index is None:
            reason = f"unknown instrument {req.instrument!r}"
        elif not (req.qty > 0 and math.isfinite(req.qty)):
            reason = f"bad quantity {req.qty}"
        elif req.order_type == "limit" and (
            req.limit_price is None or not math.isfinite(req.limit_price)
        ):
            reason = "limit order without a finite limit price"
        elif req.client_order_id in self._slot_of or req.client_order_id in self._closed:
            reason = "duplicate client order id"
        if reason is not None or index is None:
            self._reports.append(OrderRejected(ts_event=now, ts_recv=now,
                                               client_order_id=req.client_order_id,
                                               reason=reason or "rejected"))  # fmt: skip
            return
        book = self._market.book[index]
        if req.order_type == "market" and math.isnan(book[BID]):
            self._reports.append(OrderRejected(ts_event=now, ts_recv=now,
                                               client_order_id=req.client_order_id,
                                               reason="no quote for the instrument yet"))  # fmt: skip
            return
        self._reports.append(OrderAccepted(ts_event=now, ts_recv=now,
                                           client_order_id=req.client_order_id,
                                           venue_order_id=f"SIM-{req.client_order_id}"))  # fmt: skip
        slot = self._take_slot()
        sign = side_sign(req.side)
        limit = math.nan if req.limit_price is None else req.limit_price
        self._orders[slot] = (index, sign, limit, req.qty, 1.0)
        self._slot_of[req.client_order_id] = slot
        self._request_of[slot] = req
        self._active += 1
        # take liquidity at the touch if marketable now
        if not math.isnan(book[BID]):
            touch = book[ASK] if sign > 0 else book[BID]
            shown = book[ASK_SIZE] if sign > 0 else book[BID_SIZE]
            marketable = req.order_type == "market" or (
                touch <= limit if sign > 0 else touch >= limit
            )
            if marketable and shown > 0:
                self._book_fill(slot, min(req.qty, float(shown)), float(touch), False, now)
        if req.time_in_force == "ioc" and self._orders[slot, O_ACTIVE] == 1.0:
            self._close(slot)
            self._reports.append(OrderCancelled(ts_event=now, ts_recv=now,
                                                client_order_id=req.client_order_id,
                                                reason="ioc remainder"))  # fmt: skip

    def _arrive_cancel(self, req: CancelRequest, now: int) -> None:
        slot = self._slot_of.get(req.client_order_id)
        if slot is None:
            self._reports.append(CancelRejected(ts_event=now, ts_recv=now,
                                                client_order_id=req.client_order_id,
                                                reason="order unknown or already closed"))  # fmt: skip
            return
        self._close(slot)
        self._reports.append(OrderCancelled(ts_event=now, ts_recv=now,
                                            client_order_id=req.client_order_id,
                                            reason=req.reason))  # fmt: skip

    def _book_fill(self, slot: int, qty: float, price: float, maker: bool, ts: int) -> None:
        req = self._request_of[slot]
        rem = round(self._orders[slot, O_REMAINING] - qty, 12)
        self._orders[slot, O_REMAINING] = rem
        fee = qty * price * (self.maker_fee_bps if maker else self.fee_bps) * 1e-4
        self._fill_seq += 1
        self._reports.append(Fill(ts_event=ts, ts_recv=ts, client_order_id=req.client_order_id,
                                  fill_id=f"F-{self._fill_seq:08d}", instrument=req.instrument,
                                  side=req.side, qty=qty, price=price, fee=fee,
                                  liquidity="maker" if maker else "taker"))  # fmt: skip
        if rem <= 1e-12:
            self._close(slot)

    def _take_slot(self) -> int:
        # Slot order is arrival order, which is the order orders share liquidity in: a
        # full table is compacted (active rows keep their relative order), then grown.
        if self._next_slot == self._orders.shape[0]:
            keep = sorted(self._slot_of.items(), key=lambda kv: kv[1])
            table = np.zeros((max(16, 2 * len(keep) + 1), N_OCOLS))
            requests: dict[int, OrderRequest] = {}
            for new_slot, (cid, old_slot) in enumerate(keep):
                table[new_slot] = self._orders[old_slot]
                self._slot_of[cid] = new_slot
                requests[new_slot] = self._request_of[old_slot]
            self._orders = table
            self._request_of = requests
            self._next_slot = len(keep)
            if self._fills.shape[0] < table.shape[0]:
                self._fills = np.zeros((table.shape[0], 5))
        slot = self._next_slot
        self._next_slot += 1
        return slot

    def _close(self, slot: int) -> None:
        self._orders[slot, O_ACTIVE] = 0.0
        self._active -= 1
        req = self._request_of.pop(slot)
        del self._slot_of[req.client_order_id]
        # the id stays known so a late cancel is answered, not mistaken for a new order
        self._closed.add(req.client_order_id)
