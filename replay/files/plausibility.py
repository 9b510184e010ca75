"""What a tick must look like to be replayed: the plausibility policy of tick files.

Checks that need only the row itself (missing values, NaN, crossed quotes, ...) live in
``replay.files.row_checks``; this module holds the policy's numbers and the two checks that look
at neighbouring rows, as numba kernels that walk a file's rows once, in order.

Policy:

- Timestamps (``ts_event``, ``ts_recv``) are int64 ns since the epoch, from
  2000-01-01 (incl.) to 2100-01-01 (excl.). A value in the same range counted in
  seconds, milliseconds or microseconds is refused with a reason naming that unit.
- Prices lie in [1e-12, 1e12] and sizes are at most 1e18: wide enough for any quote
  currency and lot (a memecoin at 1e-9, BTC in IDR at 1e9) and far below where
  ``price x size`` loses meaning.
- Price band: a price more than ``BAND`` (50 %) away from the reference of its symbol
  is an outlier. The reference is the lower median of the symbol's last ``WINDOW`` (64)
  prices in the file that passed the row checks (the mid for quotes; bid and ask are
  each checked). Outliers enter the window too, so one bad print cannot move the median,
  while a real move that persists is followed after ``WINDOW / 2 + 1`` (33) rows. The first
  ``WINDOW`` prices of a symbol are checked against the lower median of those first
  prices (found within ``SEED_HORIZON_ROWS`` rows of its first row), so a file that
  starts with a bad print is caught too.
- Time order: ``ts_event`` never decreases within a file. A row earlier than the last
  kept row goes backwards. A row that jumps forward (the next two in-order rows within
  ``ORDER_LOOKAHEAD_ROWS`` are both earlier than it and not earlier than the last kept
  row) is the outlier, not the rows after it.

Both checks depend only on the file's rows, never on how the file was chunked.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

TS_MIN_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z
TS_MAX_NS = 4_102_444_800 * 10**9  # 2100-01-01T00:00:00Z (excluded)
PRICE_MIN = 1e-12
PRICE_MAX = 1e12
SIZE_MAX = 1e18
BAND = 0.5
WINDOW = 64
# rows after a symbol's first price in which its first WINDOW prices are looked for; also
# bounds what a reader holds back (a symbol rarer than that is seeded with fewer prices)
SEED_HORIZON_ROWS = 65_536
ORDER_LOOKAHEAD_ROWS = 64

UNIT_GUESSES = (("seconds", 10**9), ("milliseconds", 10**6), ("microseconds", 10**3))


class PriceBand:
    """Per-symbol state of the price band across the chunks of one file."""

    def __init__(self, n_symbols: int) -> None:
        self.ring = np.zeros((n_symbols, WINDOW))
        self.count = np.zeros(n_symbols, np.int64)
        self.seed = np.full(n_symbols, np.nan)
        # min and max of the previous and the current block of WINDOW prices: the last
        # WINDOW prices lie in those two blocks, so their median lies between the bounds
        self.bounds = np.empty((n_symbols, 4))
        self.bounds[:, 0::2] = np.inf
        self.bounds[:, 1::2] = -np.inf

    def run(
        self,
        inst: npt.NDArray[np.int32],
        low: npt.NDArray[np.float64],
        high: npt.NDArray[np.float64],
        code: npt.NDArray[np.int8],
        start: int,
        eof: bool,
        low_code: int,
        high_code: int,
    ) -> int:
        """Mark band outliers in ``code`` from row ``start`` on (rows with a code already
        are not prices); returns the first row it could not decide yet (needs more rows)."""
        return int(
            _band_pass(
                inst,
                low,
                high,
                code,
                start,
                eof,
                BAND,
                SEED_HORIZON_ROWS,
                self.ring,
                self.count,
                self.seed,
                self.bounds,
                low_code,
                high_code,
            )
        )


class TimeOrder:
    """The last kept ``ts_event`` of one file, across its chunks."""

    def __init__(self) -> None:
        self.last = np.full(1, np.iinfo(np.int64).min, np.int64)

    def run(
        self,
        ts: npt.NDArray[np.int64],
        code: npt.NDArray[np.int8],
        start: int,
        stop: int,
        eof: bool,
        back_code: int,
        jump_code: int,
    ) -> int:
        """Mark rows that go backwards or jump forward in ``code`` from ``start`` up to
        ``stop`` (rows from ``stop`` on are not decided by the band yet; ``eof``: the file
        ends at ``stop``); returns the first row it could not decide yet."""
        return int(
            _order_pass(
                ts, code, start, stop, eof, ORDER_LOOKAHEAD_ROWS, self.last, back_code, jump_code
            )
        )


@njit(cache=True, nogil=True)
def _lower_median(values):
    s = np.sort(values)
    return s[(s.shape[0] - 1) // 2]


@njit(cache=True, nogil=True)
def _band_pass(
    inst,
    low,
    high,
    code,
    start,
    eof,
    band,
    horizon,
    ring,
    count,
    seed,
    bounds,
    low_code,
    high_code,
):
    n = inst.shape[0]
    w = ring.shape[1]
    i = start
    while i < n:
        if code[i] != 0:
            i += 1
            continue
        s = inst[i]
        if np.isnan(seed[s]):
            first = np.empty(w)
            found = 0
            j = i
            end = min(n, i + horizon)
            while j < end and found < w:
                if code[j] == 0 and inst[j] == s:
                    first[found] = 0.5 * (low[j] + high[j])
                    found += 1
                j += 1
            if found < w and not eof and i + horizon > n:
                return i  # the symbol's first prices are not all read yet
            seed[s] = _lower_median(first[:found])
        a = low[i]
        b = high[i]
        c = count[s]
        if c < w:
            lo = seed[s] * (1.0 - band)
            hi = seed[s] * (1.0 + band)
        else:
            # fast path: inside the band of every reference the window's bounds allow
            lo = max(bounds[s, 1], bounds[s, 3]) * (1.0 - band)
            hi = min(bounds[s, 0], bounds[s, 2]) * (1.0 + band)
            if not (a >= lo and a <= hi and b >= lo and b <= hi):
                ref = _lower_median(ring[s])
                lo = ref * (1.0 - band)
                hi = ref * (1.0 + band)
        if not (a >= lo and a <= hi):
            code[i] = low_code
        elif not (b >= lo and b <= hi):
            code[i] = high_code
        v = 0.5 * (a + b)  # the mid of a quote; a trade's price (a == b)
        ring[s, c % w] = v
        bounds[s, 2] = min(bounds[s, 2], v)
        bounds[s, 3] = max(bounds[s, 3], v)
        count[s] = c + 1
        if (c + 1) % w == 0:
            bounds[s, 0] = bounds[s, 2]
            bounds[s, 1] = bounds[s, 3]
            bounds[s, 2] = np.inf
            bounds[s, 3] = -np.inf
        i += 1
    return i


@njit(cache=True, nogil=True)
def _order_pass(ts, code, start, stop, eof, lookahead, last_box, back_code, jump_code):
    last = last_box[0]
    i = start
    while i < stop:
        if code[i] != 0:
            i += 1
            continue
        t = ts[i]
        if t < last:
            code[i] = back_code
            i += 1
            continue
        end = i + 1 + lookahead
        if end > stop and not eof:
            break
        j1 = -1
        j2 = -1
        for j in range(i + 1, min(end, stop)):
            # rows earlier than the last kept one go backwards whatever row i is
            if code[j] == 0 and ts[j] >= last:
                if j1 < 0:
                    j1 = j
                else:
                    j2 = j
                    break
        if j1 >= 0 and ts[j1] < t and (j2 < 0 or ts[j2] < t):
            code[i] = jump_code
        else:
            last = t
        i += 1
    last_box[0] = last
    return i
