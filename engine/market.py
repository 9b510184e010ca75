"""The engine's view of the market: last quote and trade per instrument, and equity sampling.

``update_market`` is the numba scan the loop runs over each segment of a micro-batch. It
also samples the account's equity on a fixed event-time grid, so the equity curve costs
no Python per sample and does not depend on how ticks were split into batches.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.ticks import TickBatch

# columns of MarketState.book
BID = 0
ASK = 1
BID_SIZE = 2
ASK_SIZE = 3
MID = 4
LAST_PRICE = 5
N_BOOK = 6


# loss monitor slots (float64 array)
L_ARMED = 0
L_DAILY_LIMIT = 1
L_DRAWDOWN_LIMIT = 2
L_DAY_START = 3
L_DAY_PEAK = 4
L_DAY = 5
L_BREACH = 6  # 0 none, 1 daily loss, 2 drawdown from the day's peak
L_EQUITY = 7
N_LOSS = 8
DAY_NS = 86_400_000_000_000


@njit(cache=True, nogil=True)
def _update_market(  # type: ignore[no-untyped-def]
    ts, inst, kind, bid, ask, bid_size, ask_size, price, start, stop,
    book, quote_ts, positions, cash, sampler, out_ts, out_equity, out_n, loss,
):  # fmt: skip
    """Apply ticks [start, stop); returns ``stop``, or the index after the first tick at
    which the account breached a loss limit (then ``loss[L_BREACH]`` says which)."""
    n_inst = book.shape[0]
    interval = sampler[1]
    monitor = loss[L_ARMED] != 0.0
    for t in range(start, stop):
        now = ts[t]
        if interval > 0 and sampler[0] == 0:
            sampler[0] = now - now % interval  # first grid point at or before the first tick
        if interval > 0 and now >= sampler[0]:
            # sample at the grid point, with the state just before this tick
            eq = cash[0]
            for i in range(n_inst):
                if positions[i] != 0.0:
                    eq += positions[i] * book[i, MID]
            out_ts[out_n[0]] = sampler[0]
            out_equity[out_n[0]] = eq
            out_n[0] += 1
            sampler[0] = (now // interval + 1) * interval
        i = inst[t]
        if kind[t] == 0:
            book[i, BID] = bid[t]
            book[i, ASK] = ask[t]
            book[i, BID_SIZE] = bid_size[t]
            book[i, ASK_SIZE] = ask_size[t]
            book[i, MID] = 0.5 * (bid[t] + ask[t])
            quote_ts[i] = now
        else:
            book[i, LAST_PRICE] = price[t]
        if monitor and kind[t] == 0:
            # realized + unrealized, marked at mids, after this quote
            eq = cash[0]
            for k in range(n_inst):
                if positions[k] != 0.0:
                    eq += positions[k] * book[k, MID]
            day = now // DAY_NS
            if day != loss[L_DAY]:
                loss[L_DAY] = day
                loss[L_DAY_START] = eq
                loss[L_DAY_PEAK] = eq
            if eq > loss[L_DAY_PEAK]:
                loss[L_DAY_PEAK] = eq
            if loss[L_DAY_START] - eq >= loss[L_DAILY_LIMIT]:
                loss[L_BREACH] = 1.0
            elif loss[L_DAY_PEAK] - eq >= loss[L_DRAWDOWN_LIMIT]:
                loss[L_BREACH] = 2.0
            if loss[L_BREACH] != 0.0:
                loss[L_EQUITY] = eq
                loss[L_ARMED] = 0.0
                return t + 1
    return stop


class MarketState:
    """Last known market per instrument (dense index), plus the equity sampler.

    Attributes:
        book: float64[n, 6]: bid, ask, bid_size, ask_size, mid, last trade price (NaN
            until seen).
        quote_ts: int64[n]: ``ts_event`` of the last quote, 0 if none.
    """

    def __init__(self, n_instruments: int, equity_interval_ns: int = 0) -> None:
        self.book = np.full((n_instruments, N_BOOK), np.nan)
        self.quote_ts = np.zeros(n_instruments, np.int64)
        self._sampler = np.array([0, equity_interval_ns], np.int64)
        self._buf_ts = np.empty(0, np.int64)
        self._buf_eq = np.empty(0)
        self._n = np.zeros(1, np.int64)
        self.loss = np.zeros(N_LOSS)
        self.loss[L_DAY] = -1.0
        self.sample_ts: list[npt.NDArray[np.int64]] = []
        self.sample_equity: list[npt.NDArray[np.float64]] = []

    def arm_loss_monitor(self, daily_loss_limit: float | None, max_drawdown: float | None) -> None:
        """Watch realized + unrealized PnL per UTC day; a breach stops the scan at that tick.

        The monitor only reports a breach (``take_breach``); what to do about it is the
        trading state's business. The day's start and peak are set by the first quote of
        each UTC day.
        """
        self.loss[L_DAILY_LIMIT] = np.inf if daily_loss_limit is None else daily_loss_limit
        self.loss[L_DRAWDOWN_LIMIT] = np.inf if max_drawdown is None else max_drawdown
        self.loss[L_BREACH] = 0.0
        self.loss[L_ARMED] = (
            1.0 if (daily_loss_limit is not None or max_drawdown is not None) else 0.0
        )

    def rearm_loss_monitor(self, equity: float, now_ns: int) -> None:
        """Watch again after a breach, measuring from ``equity`` now: the day's start and
        peak are reset to it, so a loss already taken does not trip the monitor again at
        the next quote (an operator's ``resume`` accepted it)."""
        if self.loss[L_DAILY_LIMIT] == np.inf and self.loss[L_DRAWDOWN_LIMIT] == np.inf:
            return
        self.loss[L_DAY] = float(now_ns // DAY_NS)
        self.loss[L_DAY_START] = equity
        self.loss[L_DAY_PEAK] = equity
        self.loss[L_BREACH] = 0.0
        self.loss[L_ARMED] = 1.0

    def is_loss_monitor_armed(self) -> bool:
        return bool(self.loss[L_ARMED] != 0.0)

    def take_breach(self) -> tuple[int, float] | None:
        """The breach the last ``update`` stopped at (code, equity), once."""
        code = int(self.loss[L_BREACH])
        if code == 0:
            return None
        self.loss[L_BREACH] = 0.0
        return code, float(self.loss[L_EQUITY])

    def day_figures(self) -> tuple[float, float]:
        """Equity at the start of the current UTC day and its peak so far."""
        return float(self.loss[L_DAY_START]), float(self.loss[L_DAY_PEAK])

    def begin_batch(self, n: int) -> None:
        if self._buf_ts.shape[0] < n:
            self._buf_ts = np.empty(n, np.int64)
            self._buf_eq = np.empty(n)
        self._n[0] = 0

    def update(
        self,
        batch: TickBatch,
        start: int,
        stop: int,
        positions: npt.NDArray[np.float64],
        cash: npt.NDArray[np.float64],
    ) -> int:
        """Apply ticks [start, stop); returns where it stopped (early on a loss breach)."""
        if stop <= start:
            return stop
        return int(_update_market(
                batch.ts_event, batch.instrument, batch.kind, batch.bid, batch.ask,
                batch.bid_size, batch.ask_size, batch.price, start, stop, self.book,
                self.quote_ts, positions, cash, self._sampler, self._buf_ts, self._buf_eq,
                self._n, self.loss,
            ))  # fmt: skip

    def end_batch(self) -> None:
        n = int(self._n[0])
        if n:
            self.sample_ts.append(self._buf_ts[:n].copy())
            self.sample_equity.append(self._buf_eq[:n].copy())
            self._n[0] = 0

    def sample_before(
        self, ts_ns: int, positions: npt.NDArray[np.float64], cash: npt.NDArray[np.float64]
    ) -> None:
        """Sample the pending grid point if it is at or before ``ts_ns``, with the state
        now: called before something between two ticks (an order reaching the venue, a
        timer) changes the account, so the change is dated at its own time, not at the
        first grid point of the quiet stretch it falls in. Same rule as the tick scan."""
        interval = int(self._sampler[1])
        due = int(self._sampler[0])
        if interval <= 0 or due == 0 or ts_ns < due:
            return
        self.end_batch()  # keep samples in time order
        equity = float(cash[0])
        for i, position in enumerate(positions.tolist()):
            if position != 0.0:
                equity += position * float(self.book[i, MID])
        self.sample_ts.append(np.array([due], np.int64))
        self.sample_equity.append(np.array([equity]))
        self._sampler[0] = (ts_ns // interval + 1) * interval

    def mids(self) -> npt.NDArray[np.float64]:
        return self.book[:, MID]
