"""The simulated venue: paper fills for replay and paper trading. Deterministic.

Rules (the README's "Simulated venue" section says the same in short):

- An order or cancel reaches the venue ``latency_ns`` after it was sent; it is handled
  after every tick stamped at or before its arrival time.
- Displayed size is a finite resource. Each side of a quote offers its displayed size
  once: every fill that draws on that quote, whether an arriving order taking at the touch
  or a resting order filled when the quote came in, takes from the same amount, in
  arrival order. Only a new quote of the instrument brings fresh size (its own displayed
  size); a trade neither adds to it nor draws on it.
- A market order takes at the opposite touch, up to the displayed size still left there;
  its remainder rests and takes at the touch of each later quote (taker). With no quote
  yet it is rejected.
- A limit order that is marketable on arrival (touch at or through its limit) takes like
  a market order, at the touch, taker. Its remainder, like any limit order that is not
  marketable, rests at its limit. ``ioc`` orders cancel their remainder on arrival.
- A new quote whose opposite touch is at or through a resting limit fills it, up to what
  earlier orders left of its displayed size. The quote before it decides how:
  - that quote was also at or through the limit (the order was already crossing, as the
    remainder of a marketable order is): the order takes the new size at the new touch,
    taker;
  - otherwise (it was away from the limit, or there was none) the market moved onto the
    resting order: it fills at its limit, maker, a price at or worse than the new touch.
  Either way no fill is better for us than the market allowed, and a fill that took
  liquidity is never maker.
- A trade fills resting limit orders only when its aggressor is on the other side: a
  resting buy by a sell-aggressor trade at or below its limit, a resting sell by a
  buy-aggressor trade at or above it (an unknown aggressor fills nothing). Fills are at
  the limit, maker, and share the trade's size in arrival order. Market orders do not fill
  on trades.
- Fees: ``fee_bps`` of notional for taker fills, ``maker_fee_bps`` (default the same) for
  maker fills.

Depth mode (``queue_model`` given and the first depth rows applied): the rules above give
way to ``adapters.queue_position``'s (docs/fills.md); until depth arrives they hold unchanged.
The venue keeps its own L2 book, fed by ``on_depth`` and applied in time order with the
ticks (a depth row before the ticks and order arrivals of its own stamp), so what it reads
at an arrival is the book at that time, however early the rows were handed over.

- An order on an instrument whose book cannot be read (no depth yet, or out of sync) is
  rejected: the venue does not invent fills on a book it does not know.
- A market order, and a limit order marketable on arrival, walks the opposite side's levels
  best-first at each level's price (taker), up to its limit; what our orders took from a level
  is not shown again until a depth row changes that level. A market order's remainder, once
  the known levels are walked, is cancelled (``book exhausted``).
- A resting limit order joins the back of its level's queue and fills, maker at its limit, only
  from trades: at its price once the size ahead is gone (trades, and cancels under the queue
  model), or through its price. Quotes fill nothing in depth mode.
- A snapshot (a resync) caps each resting order's size ahead by its level's new size.
"""

from __future__ import annotations

import collections
import heapq
import math

import numpy as np
import numpy.typing as npt
from numba import njit

from adapters.queue_position import (
    EV_LEVEL,
    N_QFCOLS,
    N_RCOLS,
    QF_EVENT,
    QF_PRICE,
    QF_QTY,
    QF_SLOT,
    QUEUE_MODELS,
    R_ACTIVE,
    R_AHEAD,
    R_LEVEL,
    R_PRICE,
    R_SIDE,
    advance_queue,
    enter_order,
    walk_levels,
)
from engine.book.batch import F_SNAPSHOT, DepthBatch
from engine.book.book import OrderBook
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
F_FROM_QUOTE = 5  # 1.0: drew on the quote's displayed size; 0.0: on a trade's size
N_FCOLS = 6

# levels per side the venue's own book exposes before a walk asks for every known one
DEPTH_LEVELS = 20

# columns of the displayed size our orders took from each instrument's current quote
TAKEN_ASK = 0  # by buys
TAKEN_BID = 1  # by sells


@njit(cache=True, nogil=True)
def _match(  # type: ignore[no-untyped-def]
    inst, kind, bid, ask, bid_size, ask_size, price, size, aggressor, start, stop,
    orders, n_slots, book, first_quote, last_quote, fills,
):  # fmt: skip
    """Scan ticks until one produces fills; return (index after that tick, fill count).

    Reads state, writes only its outputs, so a scan the engine abandons leaves nothing to
    undo: ``fills``, and per instrument the first and last quote tick of the scan in
    ``first_quote`` / ``last_quote`` (-1: none). ``book`` is the market before ``start``.
    """
    first_quote[:] = -1
    last_quote[:] = -1
    for t in range(start, stop):
        i = inst[t]
        n_fills = 0
        is_quote = kind[t] == 0
        if is_quote:
            # the quote before this one decides whether a resting limit was crossing
            if last_quote[i] < 0:
                prev_bid = book[i, BID]
                prev_ask = book[i, ASK]
            else:
                prev_bid = bid[last_quote[i]]
                prev_ask = ask[last_quote[i]]
            if first_quote[i] < 0:
                first_quote[i] = t
            last_quote[i] = t
            avail_buy = ask_size[t] if ask[t] == ask[t] else 0.0  # NaN side: nothing shown
            avail_sell = bid_size[t] if bid[t] == bid[t] else 0.0
        else:
            prev_bid = prev_ask = math.nan
            # only the other side's orders were hit by this trade
            avail_buy = size[t] if aggressor[t] < 0 else 0.0
            avail_sell = size[t] if aggressor[t] > 0 else 0.0
        for o in range(n_slots):
            if orders[o, O_ACTIVE] == 0.0 or orders[o, O_INST] != i:
                continue
            side = orders[o, O_SIDE]
            limit = orders[o, O_LIMIT]
            rem = orders[o, O_REMAINING]
            q = 0.0
            px = 0.0
            maker = 1.0
            if side > 0:
                if avail_buy <= 0.0:
                    continue
                if is_quote:
                    if math.isnan(limit):
                        q = min(rem, avail_buy)
                        px = ask[t]
                        maker = 0.0
                    elif ask[t] <= limit:
                        q = min(rem, avail_buy)
                        if prev_ask <= limit:  # already crossing: takes the fresh size
                            px = ask[t]
                            maker = 0.0
                        else:  # the market moved onto it
                            px = limit
                elif not math.isnan(limit) and price[t] <= limit:
                    q = min(rem, avail_buy)
                    px = limit
                avail_buy -= q
            else:
                if avail_sell <= 0.0:
                    continue
                if is_quote:
                    if math.isnan(limit):
                        q = min(rem, avail_sell)
                        px = bid[t]
                        maker = 0.0
                    elif bid[t] >= limit:
                        q = min(rem, avail_sell)
                        if prev_bid >= limit:
                            px = bid[t]
                            maker = 0.0
                        else:
                            px = limit
                elif not math.isnan(limit) and price[t] >= limit:
                    q = min(rem, avail_sell)
                    px = limit
                avail_sell -= q
            if q > 0.0:
                fills[n_fills, F_SLOT] = o
                fills[n_fills, F_QTY] = q
                fills[n_fills, F_PRICE] = px
                fills[n_fills, F_MAKER] = maker
                fills[n_fills, F_TICK] = t
                fills[n_fills, F_FROM_QUOTE] = 1.0 if is_quote else 0.0
                n_fills += 1
        if n_fills > 0:
            return t + 1, n_fills
    return stop, 0


@njit(cache=True, nogil=True)
def _refresh(taken, first_quote, applied):  # type: ignore[no-untyped-def]
    """Zero what was taken from instruments quoted in ticks [scan start, applied); return
    whether anything taken is left (once per fill burst: a numpy mask costs ~10x more)."""
    left = False
    for i in range(taken.shape[0]):
        if 0 <= first_quote[i] < applied:
            taken[i, TAKEN_ASK] = 0.0
            taken[i, TAKEN_BID] = 0.0
        elif taken[i, TAKEN_ASK] != 0.0 or taken[i, TAKEN_BID] != 0.0:
            left = True
    return left


class SimulatedVenue:
    """An ``OrderRouter`` that fills orders against the replayed (or live) market.

    Args:
        latency_ns: one-way delay from send to the venue, for orders and cancels.
        fee_bps: taker fee in basis points of notional.
        maker_fee_bps: fee for maker fills; defaults to ``fee_bps``.
        queue_model: ``"trades_only"`` or ``"power"`` (``[book] queue_model``) to fill on
            depth once depth rows arrive (``on_depth``); None keeps the top-of-book rules.
        queue_power: the power rule's exponent (``[book] queue_power``).

    Raises:
        ValueError: ``latency_ns`` is negative, or an unknown queue model or a power <= 0.
    """

    def __init__(
        self,
        latency_ns: int = 0,
        fee_bps: float = 0.0,
        maker_fee_bps: float | None = None,
        *,
        queue_model: str | None = None,
        queue_power: float = 2.0,
    ) -> None:
        if latency_ns < 0:
            raise ValueError("latency_ns must be >= 0")
        if queue_model is not None and queue_model not in QUEUE_MODELS:
            raise ValueError(f"unknown queue model {queue_model!r}; one of {list(QUEUE_MODELS)}")
        if not queue_power > 0.0:
            raise ValueError("queue_power must be > 0")
        self._queue_model = -1 if queue_model is None else QUEUE_MODELS[queue_model]
        self._queue_power = float(queue_power)
        # depth mode: the venue's own L2 book, fed the depth rows in time order with the
        # ticks (``_own_book``; ``_book`` once the first rows are applied), the rows handed
        # over but not yet due, and each slot's place in its queue
        self._own_book: OrderBook | None = None
        self._book: OrderBook | None = None
        self._depth_due: collections.deque[DepthBatch] = collections.deque()
        self._queue = np.zeros((16, N_RCOLS))
        self._qfills = np.zeros((16, N_QFCOLS))
        # size our orders took from a level since it last changed: (instrument, side, price)
        self._level_taken: dict[tuple[int, int, float], float] = {}
        # the queue table before the last depth-mode scan, to redo an abandoned scan's prefix
        self._queue_before: npt.NDArray[np.float64] | None = None
        self._depth_batch: TickBatch | None = None
        self.depth_counters = {"rejected_no_book": 0, "exhausted": 0, "rows_out_of_sync": 0}
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
        self._fills = np.zeros((16, N_FCOLS))
        self._fill_seq = 0
        self._staged = 0
        self._staged_ts = np.empty(0, np.int64)
        self._market: MarketState | None = None
        self._instruments: InstrumentTable | None = None
        # Displayed size our orders took from each instrument's current quote; a new quote
        # zeroes its row. Kept here, not in the kernel, because a quote only counts as
        # current once the engine has applied it (see _settle).
        self._taken = np.zeros((0, 2))
        self._taken_any = False  # nothing taken: the common case skips the bookkeeping
        # written by the kernel: first (read by _settle) and last quote tick of its scan
        self._first_quote = np.empty(0, np.int64)
        self._last_quote = np.empty(0, np.int64)
        # (ts, start, end) of the last scan until it is committed or abandoned
        self._scan: tuple[npt.NDArray[np.int64], int, int] | None = None

    def bind(self, market: MarketState, instruments: InstrumentTable) -> None:
        self._market = market
        self._instruments = instruments
        n = market.book.shape[0]
        self._taken = np.zeros((n, 2))
        self._first_quote = np.full(n, -1, np.int64)
        self._last_quote = np.full(n, -1, np.int64)
        if self._queue_model >= 0:
            ticks = [i.tick_size for i in instruments.instruments]
            self._own_book = OrderBook(n, levels=DEPTH_LEVELS, ticks=ticks)

    def on_depth(self, batch: DepthBatch) -> None:
        """Depth rows (time-ordered, whole updates), handed over no later than the first tick
        or venue event stamped after them, and possibly earlier (a batch's rows before its
        ticks): the venue applies each row to its own book in time order with the ticks, a
        row before the ticks and order arrivals of its own stamp. Rows move resting orders'
        queue positions and refresh what our orders took from a level; they never fill.

        The first rows applied switch the venue to depth mode (without depth it keeps the
        top-of-book rules); limit orders resting then join the back of their level's queue,
        and a market order's remainder is cancelled (``book exhausted``): it has no place in
        a queue."""
        if self._own_book is not None and len(batch):
            self._depth_due.append(batch)

    def _apply_depth_until(self, ts_ns: int) -> None:
        due = self._depth_due
        while due:
            head = due[0]
            cut = int(np.searchsorted(head.ts_event, ts_ns, side="right"))
            if cut == 0:
                return
            if cut == len(head):
                due.popleft()
                rows = head
            else:
                due[0] = head.slice(cut, len(head))
                rows = head.slice(0, cut)
            self._apply_depth(rows)

    def _next_depth_ns(self) -> int | None:
        return int(self._depth_due[0].ts_event[0]) if self._depth_due else None

    def _apply_depth(self, batch: DepthBatch) -> None:
        book = self._own_book
        assert book is not None
        book.apply(batch)
        if self._book is None:
            self._book = book
            self._enter_resting(int(batch.ts_event[0]))
            return
        if self._level_taken:
            # keyed by the price to 1e-9: the book's cell price and the row's may differ in
            # the last bits
            for i, side, price in zip(
                batch.instrument.tolist(), batch.side.tolist(), batch.price.tolist(), strict=True
            ):
                self._level_taken.pop((i, side, round(price, 9)), None)
        if self._active == 0:
            return
        # rows of a book that is out of sync are not to be trusted: queue positions wait
        # for the resync (a snapshot), trades still fill at and through a price meanwhile
        inst = batch.instrument
        readable = np.array([book.in_sync(int(i)) for i in range(book.counts.shape[0])], bool)
        keep = readable[inst]
        if not bool(keep.all()):
            self.depth_counters["rows_out_of_sync"] += int((~keep).sum())
            batch = DepthBatch(*(getattr(batch, c)[keep] for c in DepthBatch.__slots__))
        kind = np.full(len(batch), EV_LEVEL, np.int8)
        advance_queue(self._queue, self._next_slot, batch.instrument, kind, batch.side,
                      batch.price, batch.qty, 0, len(batch), self._queue_model,
                      self._queue_power, self._qfills)  # fmt: skip
        if bool((batch.flags & F_SNAPSHOT).any()):
            for i in np.unique(batch.instrument[(batch.flags & F_SNAPSHOT) != 0]).tolist():
                self._reanchor(int(i))

    def submit(self, order: OrderRequest) -> None:
        self._enqueue(order)

    def cancel(self, request: CancelRequest) -> None:
        self._enqueue(request)

    def next_event_ns(self) -> int | None:
        return self._pending[0][0] if self._pending else None

    def advance_to(self, ts_ns: int) -> None:
        if self._scan is not None:
            # The last scan was abandoned (a loss limit stopped the market before its end):
            # the engine handles an arrival at ``ts_ns`` once every tick stamped at or
            # before it, and none after, has been applied.
            ts, start, end = self._scan
            self._settle(start + int(np.searchsorted(ts[start:end], ts_ns, side="right")))
            self._staged = 0  # its fills were never booked
        while self._pending and self._pending[0][0] <= ts_ns:
            arrival, _, msg = heapq.heappop(self._pending)
            if self._depth_due:
                self._apply_depth_until(arrival)  # the book as it is at the arrival
            if isinstance(msg, OrderRequest):
                self._arrive(msg, arrival)
            else:
                self._arrive_cancel(msg, arrival)

    def match(self, batch: TickBatch, start: int, stop: int) -> int:
        """Scan for the first tick in [start, stop) at which resting orders fill; return the
        index after it (or ``stop``). Its fills are staged until ``commit``: the engine may
        stop earlier (a loss limit tripped before that tick) and scan again."""
        if self._scan is not None:
            ts, scan_start, end = self._scan
            # an abandoned scan of this batch is taken up again where the market stopped
            self._settle(start if ts is batch.ts_event and scan_start <= start else end)
        self._staged = 0
        if self._depth_due:
            # depth rows at or before the first tick go first; the scan ends before the next
            # row (the engine takes a scan that ends early, without fills, as done so far)
            self._apply_depth_until(int(batch.ts_event[start]))
            nxt = self._next_depth_ns()
            if nxt is not None:
                stop = start + int(np.searchsorted(batch.ts_event[start:stop], nxt, side="left"))
        if self._book is not None:
            return self._match_depth(batch, start, stop)
        if self._active == 0 and not self._taken_any:
            return stop  # nothing rests and no quote has size to give back
        j, n = _match(batch.instrument, batch.kind, batch.bid, batch.ask, batch.bid_size,
                      batch.ask_size, batch.price, batch.size, batch.side, start, stop,
                      self._orders, self._next_slot, self._market_book(), self._first_quote,
                      self._last_quote, self._fills)  # fmt: skip
        self._staged = int(n)
        self._staged_ts = batch.ts_event
        self._scan = (batch.ts_event, start, int(j))
        return int(j)

    def commit(self) -> None:
        """Book the fills staged by the last ``match``."""
        if self._scan is not None:
            self._settle(self._scan[2])
        for k in range(self._staged):
            slot, qty, px, maker, tick, from_quote = self._fills[k]
            if from_quote:
                self._take_displayed(int(slot), float(qty))
            self._book_fill(
                int(slot), float(qty), float(px), bool(maker), int(self._staged_ts[int(tick)])
            )
        self._staged = 0

    def drain_reports(self) -> list[ExecutionReport]:
        out = self._reports
        self._reports = []
        return out

    def _market_book(self) -> npt.NDArray[np.float64]:
        assert self._market is not None
        return self._market.book

    def _match_depth(self, batch: TickBatch, start: int, stop: int) -> int:
        if self._active == 0:
            return stop
        # the queue kernel moves positions as it scans: keep the table before it, so a scan
        # the engine abandons is redone only up to where the market stopped (see _settle)
        self._queue_before = self._queue[: self._next_slot].copy()
        self._depth_batch = batch
        j, n = advance_queue(self._queue, self._next_slot, batch.instrument, batch.kind,
                             batch.side, batch.price, batch.size, start, stop,
                             self._queue_model, self._queue_power, self._qfills)  # fmt: skip
        for k in range(int(n)):
            f = self._qfills[k]
            self._fills[k] = (f[QF_SLOT], f[QF_QTY], f[QF_PRICE], 1.0, f[QF_EVENT], 0.0)
        self._staged = int(n)
        self._staged_ts = batch.ts_event
        self._scan = (batch.ts_event, start, int(j))
        return int(j)

    def _settle(self, applied: int) -> None:
        # ticks [start, applied) of the last scan reached the market: their quotes are
        # current now and bring fresh displayed size
        if self._book is not None and self._scan is not None:
            self._settle_depth(applied)
        self._scan = None
        if self._taken_any:
            self._taken_any = bool(_refresh(self._taken, self._first_quote, applied))

    def _enter_resting(self, now: int) -> None:
        for slot in sorted(self._request_of):
            req = self._request_of[slot]
            index = int(self._orders[slot, O_INST])
            sign = int(self._orders[slot, O_SIDE])
            limit = float(self._orders[slot, O_LIMIT])
            if math.isnan(limit):
                self.depth_counters["exhausted"] += 1
                self._close(slot)
                self._reports.append(
                    OrderCancelled(ts_event=now, ts_recv=now, client_order_id=req.client_order_id,
                                   reason="book exhausted")
                )  # fmt: skip
                continue
            enter_order(self._queue, slot, index, sign, limit, self._orders[slot, O_REMAINING],
                        self._level_size(index, sign, limit))  # fmt: skip

    def _settle_depth(self, applied: int) -> None:
        assert self._scan is not None
        if self._queue_before is None:
            return  # the scan was a top-of-book one, from before the switch to depth
        _, start, end = self._scan
        if applied < end and self._depth_batch is not None:
            # abandoned before its fill tick: back to the table before the scan, then the
            # ticks the market did apply (they fill nothing: the fill tick was not among them)
            batch = self._depth_batch
            self._queue[: self._queue_before.shape[0]] = self._queue_before
            advance_queue(self._queue, self._next_slot, batch.instrument, batch.kind,
                          batch.side, batch.price, batch.size, start, applied,
                          self._queue_model, self._queue_power, self._qfills)  # fmt: skip
        self._queue_before = None
        self._depth_batch = None

    def _reanchor(self, index: int) -> None:
        # a snapshot replaced the book: no order can have more ahead than its level holds now
        assert self._book is not None
        for slot in range(self._next_slot):
            row = self._queue[slot]
            if row[R_ACTIVE] == 0.0 or int(self._orders[slot, O_INST]) != index:
                continue
            size = self._level_size(index, int(row[R_SIDE]), float(row[R_PRICE]))
            row[R_AHEAD] = min(row[R_AHEAD], size)
            row[R_LEVEL] = size

    def _level_size(self, index: int, side: int, price: float) -> float:
        assert self._book is not None
        return self._book.size_at(index, side, price)

    def _take_displayed(self, slot: int, qty: float) -> None:
        index = int(self._orders[slot, O_INST])
        col = TAKEN_ASK if self._orders[slot, O_SIDE] > 0 else TAKEN_BID
        self._taken[index, col] += qty
        self._taken_any = True

    def _enqueue(self, msg: OrderRequest | CancelRequest) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (msg.ts_event + self.latency_ns, self._seq, msg))

    def _reject(self, req: OrderRequest, now: int, reason: str) -> None:
        self._reports.append(
            OrderRejected(
                ts_event=now, ts_recv=now, client_order_id=req.client_order_id, reason=reason
            )
        )

    def _arrive(self, req: OrderRequest, now: int) -> None:
        assert self._market is not None and self._instruments is not None
        index = self._instruments.index.get(req.instrument)
        if index is None:
            self._reject(req, now, f"unknown instrument {req.instrument!r}")
            return
        if not (req.qty > 0 and math.isfinite(req.qty)):
            self._reject(req, now, f"bad quantity {req.qty}")
            return
        if req.order_type == "limit" and (
            req.limit_price is None or not math.isfinite(req.limit_price)
        ):
            self._reject(req, now, "limit order without a finite limit price")
            return
        if req.client_order_id in self._slot_of or req.client_order_id in self._closed:
            self._reject(req, now, "duplicate client order id")
            return
        if self._book is not None:
            self._arrive_depth(req, index, now)
            return
        book = self._market.book[index]
        if req.order_type == "market" and math.isnan(book[BID]):
            self._reject(req, now, "no quote for the instrument yet")
            return
        self._reports.append(
            OrderAccepted(
                ts_event=now,
                ts_recv=now,
                client_order_id=req.client_order_id,
                venue_order_id=f"SIM-{req.client_order_id}",
            )
        )
        slot = self._take_slot()
        sign = side_sign(req.side)
        limit = math.nan if req.limit_price is None else req.limit_price
        self._orders[slot] = (index, sign, limit, req.qty, 1.0)
        self._slot_of[req.client_order_id] = slot
        self._request_of[slot] = req
        self._active += 1
        # take what the current quote still shows at the touch, if marketable now
        touch = book[ASK] if sign > 0 else book[BID]
        if not math.isnan(touch):
            shown = book[ASK_SIZE] if sign > 0 else book[BID_SIZE]
            taken = self._taken[index, TAKEN_ASK if sign > 0 else TAKEN_BID]
            left = round(float(shown - taken), 12)  # a Python float: it goes into the Fill
            marketable = req.order_type == "market" or (
                touch <= limit if sign > 0 else touch >= limit
            )
            if marketable and left > 0:
                qty = min(req.qty, left)
                self._take_displayed(slot, qty)
                self._book_fill(slot, qty, float(touch), False, now)
        if req.time_in_force == "ioc" and self._orders[slot, O_ACTIVE] == 1.0:
            self._close(slot)
            self._reports.append(
                OrderCancelled(
                    ts_event=now,
                    ts_recv=now,
                    client_order_id=req.client_order_id,
                    reason="ioc remainder",
                )
            )

    def _accept(self, req: OrderRequest, index: int, now: int) -> int:
        self._reports.append(
            OrderAccepted(
                ts_event=now,
                ts_recv=now,
                client_order_id=req.client_order_id,
                venue_order_id=f"SIM-{req.client_order_id}",
            )
        )
        slot = self._take_slot()
        limit = math.nan if req.limit_price is None else req.limit_price
        self._orders[slot] = (index, side_sign(req.side), limit, req.qty, 1.0)
        self._queue[slot, R_ACTIVE] = 0.0  # rests in the queue only once it has walked
        self._slot_of[req.client_order_id] = slot
        self._request_of[slot] = req
        self._active += 1
        return slot

    def _arrive_depth(self, req: OrderRequest, index: int, now: int) -> None:
        book = self._book
        assert book is not None
        if not book.in_sync(index):
            self.depth_counters["rejected_no_book"] += 1
            self._reject(req, now, f"no readable depth for the instrument ({book.status(index)})")
            return
        slot = self._accept(req, index, now)
        sign = side_sign(req.side)
        limit = math.nan if req.limit_price is None else req.limit_price
        # the exposed levels first (reading a level costs a price conversion); all the known
        # ones only for an order they cannot fill
        prices, sizes = book.levels_of(index, -sign)
        taken = self._taken_at(index, -sign, prices)
        if float((sizes - taken).sum()) < req.qty:
            prices, sizes = book.levels_of(index, -sign, book.known_levels(index, -sign))
            taken = self._taken_at(index, -sign, prices)
        n_levels = prices.shape[0]
        out_level = np.zeros(n_levels, np.int64)
        out_qty = np.zeros(n_levels)
        n = walk_levels(prices, sizes, taken, n_levels, sign, req.qty, limit, out_level,
                        out_qty)  # fmt: skip
        for k in range(int(n)):
            price = float(prices[out_level[k]])
            qty = round(float(out_qty[k]), 12)
            key = (index, -sign, round(price, 9))
            self._level_taken[key] = self._level_taken.get(key, 0.0) + qty
            self._book_fill(slot, qty, price, False, now)
        if self._orders[slot, O_ACTIVE] == 0.0:
            return  # filled in full by the walk
        if req.time_in_force == "ioc" or req.order_type == "market":
            if req.order_type == "market" and req.time_in_force != "ioc":
                self.depth_counters["exhausted"] += 1
            self._close(slot)
            reason = "ioc remainder" if req.time_in_force == "ioc" else "book exhausted"
            self._reports.append(
                OrderCancelled(
                    ts_event=now, ts_recv=now, client_order_id=req.client_order_id, reason=reason
                )
            )
            return
        enter_order(self._queue, slot, index, sign, limit, self._orders[slot, O_REMAINING],
                    self._level_size(index, sign, limit))  # fmt: skip

    def _taken_at(
        self, index: int, side: int, prices: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        if not self._level_taken:
            return np.zeros(prices.shape[0])
        get = self._level_taken.get
        return np.array([get((index, side, round(p, 9)), 0.0) for p in prices.tolist()])

    def _arrive_cancel(self, req: CancelRequest, now: int) -> None:
        slot = self._slot_of.get(req.client_order_id)
        if slot is None:
            self._reports.append(
                CancelRejected(
                    ts_event=now,
                    ts_recv=now,
                    client_order_id=req.client_order_id,
                    reason="order unknown or already closed",
                )
            )
            return
        self._close(slot)
        self._reports.append(
            OrderCancelled(
                ts_event=now, ts_recv=now, client_order_id=req.client_order_id, reason=req.reason
            )
        )

    def _book_fill(self, slot: int, qty: float, price: float, maker: bool, ts: int) -> None:
        req = self._request_of[slot]
        rem = round(self._orders[slot, O_REMAINING] - qty, 12)
        self._orders[slot, O_REMAINING] = rem
        fee = qty * price * (self.maker_fee_bps if maker else self.fee_bps) * 1e-4
        self._fill_seq += 1
        self._reports.append(
            Fill(
                ts_event=ts,
                ts_recv=ts,
                client_order_id=req.client_order_id,
                fill_id=f"F-{self._fill_seq:08d}",
                instrument=req.instrument,
                side=req.side,
                qty=qty,
                price=price,
                fee=fee,
                liquidity="maker" if maker else "taker",
            )
        )
        if rem <= 1e-12:
            self._close(slot)

    def _take_slot(self) -> int:
        # Slot order is arrival order, which is the order orders share liquidity in: a
        # full table is compacted (active rows keep their relative order), then grown.
        if self._next_slot == self._orders.shape[0]:
            keep = sorted(self._slot_of.items(), key=lambda kv: kv[1])
            table = np.zeros((max(16, 2 * len(keep) + 1), N_OCOLS))
            queue = np.zeros((table.shape[0], N_RCOLS))
            requests: dict[int, OrderRequest] = {}
            for new_slot, (cid, old_slot) in enumerate(keep):
                table[new_slot] = self._orders[old_slot]
                queue[new_slot] = self._queue[old_slot]
                self._slot_of[cid] = new_slot
                requests[new_slot] = self._request_of[old_slot]
            self._orders = table
            self._queue = queue
            self._request_of = requests
            self._next_slot = len(keep)
            if self._fills.shape[0] < table.shape[0]:
                self._fills = np.zeros((table.shape[0], N_FCOLS))
                self._qfills = np.zeros((table.shape[0], N_QFCOLS))
        slot = self._next_slot
        self._next_slot += 1
        return slot

    def _close(self, slot: int) -> None:
        self._orders[slot, O_ACTIVE] = 0.0
        self._queue[slot, R_ACTIVE] = 0.0
        self._active -= 1
        req = self._request_of.pop(slot)
        del self._slot_of[req.client_order_id]
        # the id stays known so a late cancel is answered, not mistaken for a new order
        self._closed.add(req.client_order_id)
