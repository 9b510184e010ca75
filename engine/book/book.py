"""The numba L2 book: per instrument and side, a grid of sizes indexed by price tick,
updated row by row from ``DepthBatch``es under the continuity rules of
``engine.book.schema``.

Layout (``OrderBook`` holds the arrays; the kernels take them directly so the feature
program and the simulated venue can run them inside their own jitted loops):

- ``qtys[i, s, c]``: size at cell ``c`` of side ``s`` (0 bid, 1 ask), 0 where there is no
  level; cell ``c`` is the price ``(base[i] + c) * tick[i]``. An update is O(1) (no
  shifting of sorted levels); the best cell of each side is kept in ``best[i, s]`` (-1: the
  side is empty) and found again by a scan outwards when the best level goes.
- ``horizon[i, s]``: the first cell, going outwards from the touch, whose level may be
  missing. A REST snapshot lists a limited number of levels (Binance: up to 5,000), so
  past its last level the book is not known: the snapshot sets the horizon there; levels
  from diffs beyond it are kept but are not *known* (for a vendor's full-depth snapshot
  this is cautious: what lies past its last level is then known to be empty). ``known_levels``/``levels_of`` stop
  at the horizon and a top beyond it reads as unknown, never as a wrong price.
- The grid spans ``grid_cells`` ticks centred on the first price seen. A level that falls
  outside it towards the far side is not kept (counted; the grid edge is the horizon); a
  level outside it on the near side (the market moved past the grid) re-centres the grid
  on it: the levels that stay inside are kept, the cells that come in are beyond the
  horizon. With the default 2**18 cells of 0.01, BTC at 60,000 may move by 2 % before the
  first re-centring.
- ``state[i, S_*]``: status, ids and counters (int64).

A first version kept the best 80 levels in sorted arrays: inserts shifted the levels
behind them (1.5 M rows/s on the real captures), and a level dropped while far from the
touch left a hole when the price came to it: the book's top disagreed with Binance's
bookTicker on 1 of 564 matched updates. The grid keeps every level within reach.

The book's state after a row depends only on its state before and the row, so any split of
the rows into batches gives the same book (the batch-invariance property test holds it).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.book.batch import F_END, F_RESET, F_SNAPSHOT, DepthBatch

# status values
EMPTY: Final = 0  # nothing received yet
PARTIAL: Final = 1  # ids continuous, but no snapshot: only levels updated since are known
SYNCED: Final = 2  # a snapshot and every update since, without a gap
OUT_OF_SYNC: Final = 3  # a gap or a reset since the last snapshot: levels not to be trusted
STATUS_NAMES: Final = ("empty", "partial", "synced", "out_of_sync")

DEFAULT_GRID_CELLS: Final = 1 << 18

# columns of ``state``
S_STATUS: Final = 0
S_ID: Final = 1  # last update id applied
S_OPEN: Final = 2  # 1 while inside an update (its end row not seen yet)
S_ACCEPT: Final = 3  # the open update is being applied (1) or dropped (0)
S_GAPS: Final = 4
S_STALE: Final = 5  # updates dropped as older than the book
S_RESETS: Final = 6
S_DROPPED: Final = 7  # updates dropped while out of sync
S_SNAPSHOTS: Final = 8
S_BID_SINCE: Final = 9  # ts_event from which bid levels are known (0: not yet)
S_ASK_SINCE: Final = 10
S_OUTSIDE: Final = 11  # levels not kept: beyond the grid on the far side
S_LAST_TS: Final = 12  # ts_event of the last row applied
S_UPDATES: Final = 13  # updates applied
S_BASED: Final = 14  # 1 once the grid has a base
S_RECENTRES: Final = 15
S_OFF_TICK: Final = 16  # levels whose price is not on the tick grid (book put out of sync)
S_RESTARTS: Final = 17  # restart markers (a new capture: the book starts empty again)
N_STATE: Final = 18


@njit(cache=True, nogil=True, inline="always")
def _outward(s):  # type: ignore[no-untyped-def]
    # the direction away from the touch, in cells: bids go down, asks up
    return -1 if s == 0 else 1


@njit(cache=True, nogil=True)
def _scan_best(qtys, best, horizon, i, s, start):  # type: ignore[no-untyped-def]
    # the first level from ``start`` outwards, stopping at the grid edge
    g = qtys.shape[2]
    step = _outward(s)
    c = start
    q = qtys[i, s]
    while 0 <= c < g:
        if q[c] > 0.0:
            best[i, s] = c
            return
        c += step
    best[i, s] = -1


@njit(cache=True, nogil=True)
def _recentre(qtys, best, horizon, counts, state, i, shift):  # type: ignore[no-untyped-def]
    """Move the grid's base by ``shift`` cells (levels move by -shift cells)."""
    g = qtys.shape[2]
    state[i, S_RECENTRES] += 1
    for s in range(2):
        q = qtys[i, s]
        if shift > 0:
            for c in range(g - shift):
                q[c] = q[c + shift]
            for c in range(max(g - shift, 0), g):
                q[c] = 0.0
        else:
            for c in range(g - 1, -shift - 1, -1):
                q[c] = q[c + shift]
            for c in range(0, min(-shift, g)):
                q[c] = 0.0
        n = 0
        for c in range(g):
            if q[c] > 0.0:
                n += 1
        counts[i, s] = n
        # cells that came in on a side's far end were not tracked (levels there were let
        # go): they lie beyond the horizon; on its near end nothing was let go (a level
        # there would have re-centred the grid before)
        if s == 0:
            horizon[i, 0] = max(horizon[i, 0] - shift, -1 if shift >= 0 else -shift - 1)
        else:
            horizon[i, 1] = min(horizon[i, 1] - shift, g - shift if shift > 0 else g)
        b = best[i, s]
        if b >= 0:
            b -= shift
            if 0 <= b < g and q[b] > 0.0:
                best[i, s] = b
            else:
                _scan_best(qtys, best, horizon, i, s, g - 1 if s == 0 else 0)
    state[i, S_BASED] = 1


@njit(cache=True, nogil=True, inline="always")
def cell_price(tick, base, i, c):  # type: ignore[no-untyped-def]
    """The price of cell ``c``: ticks / (1 / tick) when 1 / tick is a whole number, so that
    61828.02 comes back as the float "61828.02" parses to (6182802 * 0.01 does not)."""
    t = base[i] + c
    tk = tick[i]
    if tk < 1.0:
        per = np.round(1.0 / tk)
        if abs(per * tk - 1.0) < 1e-9:
            return t / per
    return t * tk


@njit(cache=True, nogil=True, inline="always")
def set_level(qtys, tick, base, best, horizon, counts, state, i, s, price, qty):  # type: ignore[no-untyped-def]  # fmt: skip
    """Set side ``s`` of instrument ``i`` at ``price`` to ``qty`` (0 removes it). Returns
    the size change at that level and its cell (-1 when the level is not kept)."""
    return set_level_ticks(qtys, base, best, horizon, counts, state, i, s,
                           np.int64(np.round(price / tick[i])), qty)  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def set_level_ticks(qtys, base, best, horizon, counts, state, i, s, t, qty):  # type: ignore[no-untyped-def]  # fmt: skip
    """``set_level`` with the price given in ticks."""
    g = qtys.shape[2]
    if state[i, S_BASED] == 0:
        base[i] = t - g // 2
        state[i, S_BASED] = 1
    c = t - base[i]
    if c < 0 or c >= g:
        near = (s == 0 and c >= g) or (s == 1 and c < 0)
        if not near or qty <= 0.0:
            state[i, S_OUTSIDE] += 1
            return 0.0, -1
        shift = c - g // 2
        base[i] += shift
        _recentre(qtys, best, horizon, counts, state, i, shift)
        c = t - base[i]
    q = qtys[i, s]
    old = q[c]
    q[c] = qty
    b = best[i, s]
    if qty > 0.0:
        if old == 0.0:
            counts[i, s] += 1
        if b < 0 or (s == 0 and c > b) or (s == 1 and c < b):
            best[i, s] = c
    elif old > 0.0:
        counts[i, s] -= 1
        if c == b:
            if counts[i, s] == 0:
                best[i, s] = -1
            else:
                _scan_best(qtys, best, horizon, i, s, c + _outward(s))
    return qty - old, c


@njit(cache=True, nogil=True)
def _clear(qtys, best, horizon, counts, i):  # type: ignore[no-untyped-def]
    g = qtys.shape[2]
    for s in range(2):
        if counts[i, s] > 0:
            qtys[i, s, :] = 0.0
        counts[i, s] = 0
        best[i, s] = -1
    horizon[i, 0] = -1
    horizon[i, 1] = g


@njit(cache=True, nogil=True)
def _close_snapshot(qtys, best, horizon, counts, i):  # type: ignore[no-untyped-def]
    # a snapshot lists a limited number of levels: past its last one nothing is known
    g = qtys.shape[2]
    for s in range(2):
        if counts[i, s] == 0:
            continue  # a snapshot without levels on a side says the side is empty
        c = best[i, s]
        last = c
        step = _outward(s)
        while 0 <= c < g:
            if qtys[i, s, c] > 0.0:
                last = c
            c += step
        horizon[i, s] = last + step


@njit(cache=True, nogil=True)
def begin_update(qtys, best, horizon, counts, state, i, flags, first_id, last_id, prev_id, ts):  # type: ignore[no-untyped-def]  # fmt: skip
    """Decide, at the first row of an update, whether it applies (the continuity rules of
    ``engine.book.schema``); returns 1 to apply its rows, 0 to drop them."""
    status = state[i, S_STATUS]
    ok = 0
    if flags & F_RESET and flags & F_SNAPSHOT:
        # a restart: a new capture begins; nothing of the old book carries over
        _clear(qtys, best, horizon, counts, i)
        state[i, S_BASED] = 0
        state[i, S_STATUS] = EMPTY
        state[i, S_BID_SINCE] = 0
        state[i, S_ASK_SINCE] = 0
        state[i, S_RESTARTS] += 1
    elif flags & F_RESET:
        state[i, S_STATUS] = OUT_OF_SYNC
        state[i, S_RESETS] += 1
    elif flags & F_SNAPSHOT:
        _clear(qtys, best, horizon, counts, i)
        state[i, S_BASED] = 0  # the snapshot's first level centres the grid again
        state[i, S_STATUS] = SYNCED
        state[i, S_ID] = last_id
        state[i, S_SNAPSHOTS] += 1
        state[i, S_BID_SINCE] = ts
        state[i, S_ASK_SINCE] = ts
        ok = 2
    elif status == OUT_OF_SYNC:
        state[i, S_DROPPED] += 1
    elif status == EMPTY:
        state[i, S_STATUS] = PARTIAL
        state[i, S_ID] = last_id
        ok = 1
    else:
        book_id = state[i, S_ID]
        if last_id <= book_id:
            state[i, S_STALE] += 1
        elif (prev_id >= 0 and prev_id == book_id) or (prev_id < 0 and first_id <= book_id + 1):
            state[i, S_ID] = last_id
            ok = 1
        else:
            state[i, S_STATUS] = OUT_OF_SYNC
            state[i, S_GAPS] += 1
    if ok:
        state[i, S_UPDATES] += 1
    state[i, S_OPEN] = 1
    state[i, S_ACCEPT] = ok
    return ok


@njit(cache=True, nogil=True, inline="always")
def apply_row(qtys, tick, base, best, horizon, counts, state, t, ts, inst, side, price, qty, flags, first, last, prev):  # type: ignore[no-untyped-def]  # fmt: skip
    """Apply row ``t``; returns (applied, size change, cell) like ``set_level``."""
    i = inst[t]
    f = flags[t]
    if state[i, S_OPEN] == 0:
        begin_update(qtys, best, horizon, counts, state, i, f, first[t], last[t], prev[t], ts[t])
    elif f & F_RESET and not f & F_SNAPSHOT and state[i, S_STATUS] != OUT_OF_SYNC:
        # a reset inside an update (a row the reader could not use): the rest of the
        # update is dropped and the book waits for a snapshot
        state[i, S_STATUS] = OUT_OF_SYNC
        state[i, S_RESETS] += 1
        state[i, S_ACCEPT] = 0
    applied = state[i, S_ACCEPT]
    delta = 0.0
    c = -1
    if applied and side[t] != 0:
        steps = price[t] / tick[i]
        on_grid = np.round(steps)
        if abs(steps - on_grid) > max(1e-6, abs(steps) * 1e-12):
            # a price off the grid cannot be placed: rounding it would make a wrong book
            state[i, S_OFF_TICK] += 1
            state[i, S_STATUS] = OUT_OF_SYNC
            state[i, S_ACCEPT] = 0
            if f & F_END:
                state[i, S_OPEN] = 0
            return 0, 0.0, -1
        s = 0 if side[t] > 0 else 1
        delta, c = set_level_ticks(qtys, base, best, horizon, counts, state, i, s,
                                   np.int64(on_grid), qty[t])  # fmt: skip
        since = S_BID_SINCE if s == 0 else S_ASK_SINCE
        if state[i, since] == 0:
            state[i, since] = ts[t]
        state[i, S_LAST_TS] = ts[t]
    if f & F_END:
        state[i, S_OPEN] = 0
        if applied == 2:
            _close_snapshot(qtys, best, horizon, counts, i)
    return applied, delta, c


@njit(cache=True, nogil=True)
def apply_rows(qtys, tick, base, best, horizon, counts, state, ts, inst, side, price, qty, flags, first, last, prev):  # type: ignore[no-untyped-def]  # fmt: skip
    """Apply every row in order; returns how many rows were applied."""
    n = 0
    for t in range(ts.shape[0]):
        a, _, _ = apply_row(qtys, tick, base, best, horizon, counts, state, t, ts, inst, side,
                            price, qty, flags, first, last, prev)  # fmt: skip
        n += a > 0
    return n


@njit(cache=True, nogil=True)
def top_levels(qtys, best, horizon, i, s, n, out_cells, out_qtys):  # type: ignore[no-untyped-def]
    """Fill up to ``n`` known levels of side ``s`` from the touch (cells and sizes);
    returns how many. A level at or beyond the horizon is not known: the walk stops."""
    g = qtys.shape[2]
    c = best[i, s]
    k = 0
    if c < 0:
        return 0
    h = horizon[i, s]
    step = _outward(s)
    q = qtys[i, s]
    while k < n and 0 <= c < g and ((s == 0 and c > h) or (s == 1 and c < h)):
        if q[c] > 0.0:
            out_cells[k] = c
            out_qtys[k] = q[c]
            k += 1
        c += step
    return k


class OrderBook:
    """L2 books of ``n_instruments`` instruments; ``levels`` is how many levels per side
    ``levels_of`` and the features read.

    Args:
        n_instruments: instruments, by dense index.
        levels: levels per side exposed (``[book] levels``).
        ticks: each instrument's tick size (default 0.01).
        grid_cells: cells per side of each instrument's price grid (memory:
            16 bytes a cell per instrument).

    Example::

        book = OrderBook(1, levels=20)
        book.apply(batch)
        bid, ask = book.best_bid(0), book.best_ask(0)
    """

    def __init__(
        self,
        n_instruments: int,
        levels: int = 20,
        *,
        ticks: npt.ArrayLike | None = None,
        grid_cells: int = DEFAULT_GRID_CELLS,
    ) -> None:
        if n_instruments < 0 or levels < 1 or grid_cells < 2:
            raise ValueError("OrderBook needs n_instruments >= 0, levels >= 1, grid_cells >= 2")
        self.levels = levels
        self.qtys = np.zeros((n_instruments, 2, grid_cells))
        self.tick = (
            np.full(n_instruments, 0.01)
            if ticks is None
            else np.ascontiguousarray(ticks, np.float64).reshape(n_instruments)
        )
        if not bool(np.all(self.tick > 0.0)):
            raise ValueError("tick sizes must be > 0")
        self.base = np.zeros(n_instruments, np.int64)
        self.best = np.full((n_instruments, 2), -1, np.int64)
        self.horizon = np.empty((n_instruments, 2), np.int64)
        self.horizon[:, 0] = -1
        self.horizon[:, 1] = grid_cells
        self.counts = np.zeros((n_instruments, 2), np.int64)
        self.state = np.zeros((n_instruments, N_STATE), np.int64)

    def apply(self, batch: DepthBatch) -> int:
        """Apply a batch of depth rows (any split of a stream gives the same book); returns
        the number of rows applied (the others were dropped by the continuity rules)."""
        if len(batch) == 0:
            return 0
        return int(
            apply_rows(
                self.qtys, self.tick, self.base, self.best, self.horizon, self.counts,
                self.state, batch.ts_event, batch.instrument, batch.side, batch.price,
                batch.qty, batch.flags, batch.first_update_id, batch.last_update_id,
                batch.prev_update_id,
            )
        )  # fmt: skip

    def price_of(self, i: int, cell: int) -> float:
        return float(cell_price(self.tick, self.base, i, cell))

    def best_bid(self, i: int) -> tuple[float, float]:
        """(price, size) of the best bid; (nan, 0.0) when the side is empty or its touch
        is not known (beyond the horizon)."""
        return self._top(i, 0)

    def best_ask(self, i: int) -> tuple[float, float]:
        """(price, size) of the best ask; (nan, 0.0) as ``best_bid``."""
        return self._top(i, 1)

    def levels_of(
        self, i: int, side: int, n: int | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(prices, sizes) of up to ``n`` (default ``levels``) known levels of ``side``
        (``BID`` 1 or ``ASK`` -1), best first."""
        s = 0 if side > 0 else 1
        n = self.levels if n is None else n
        cells = np.empty(n, np.int64)
        sizes = np.empty(n)
        k = int(top_levels(self.qtys, self.best, self.horizon, i, s, n, cells, sizes))
        return np.array([self.price_of(i, int(c)) for c in cells[:k]]), sizes[:k]

    def known_levels(self, i: int, side: int) -> int:
        """How many levels of ``side`` are known from the touch (up to the horizon)."""
        s = 0 if side > 0 else 1
        n = int(self.counts[i, s])
        cells = np.empty(max(n, 1), np.int64)
        sizes = np.empty(max(n, 1))
        return int(top_levels(self.qtys, self.best, self.horizon, i, s, n, cells, sizes))

    def size_at(self, i: int, side: int, price: float) -> float:
        """The size at ``price`` on ``side`` (0.0 if no level or outside the grid)."""
        s = 0 if side > 0 else 1
        c = int(np.rint(price / self.tick[i])) - int(self.base[i])
        if not (0 <= c < self.qtys.shape[2]) or not self.state[i, S_BASED]:
            return 0.0
        return float(self.qtys[i, s, c])

    def status(self, i: int) -> str:
        """``empty``, ``partial``, ``synced`` or ``out_of_sync``."""
        return STATUS_NAMES[int(self.state[i, S_STATUS])]

    def in_sync(self, i: int) -> bool:
        """The book can be read: ids continuous since a snapshot or since the first update
        of a capture without one (``partial``; ``known_since_ns`` says from when)."""
        return int(self.state[i, S_STATUS]) in (PARTIAL, SYNCED)

    def known_since_ns(self, i: int) -> tuple[int, int]:
        """ts_event from which the (bid, ask) levels are known: the snapshot's, or on a
        partial book the first update of that side (0: not yet)."""
        return int(self.state[i, S_BID_SINCE]), int(self.state[i, S_ASK_SINCE])

    def counters(self, i: int) -> dict[str, int]:
        """Gaps, stale and dropped updates, resets, snapshots, levels outside the grid,
        re-centrings, prices off the tick grid, updates applied."""
        st = self.state[i]
        return {
            "gaps": int(st[S_GAPS]),
            "stale": int(st[S_STALE]),
            "dropped_out_of_sync": int(st[S_DROPPED]),
            "resets": int(st[S_RESETS]),
            "snapshots": int(st[S_SNAPSHOTS]),
            "outside_grid": int(st[S_OUTSIDE]),
            "recentres": int(st[S_RECENTRES]),
            "off_tick": int(st[S_OFF_TICK]),
            "restarts": int(st[S_RESTARTS]),
            "updates": int(st[S_UPDATES]),
        }

    def _top(self, i: int, s: int) -> tuple[float, float]:
        cells = np.empty(1, np.int64)
        sizes = np.empty(1)
        if top_levels(self.qtys, self.best, self.horizon, i, s, 1, cells, sizes) == 0:
            return float("nan"), 0.0
        if cells[0] != self.best[i, s]:
            return float("nan"), 0.0
        return self.price_of(i, int(cells[0])), float(sizes[0])
