"""Feature kernels: numba updates on small per-instrument state rows, and the layout of
the op table and of the state rows they share with ``engine.features.program``.

Kernels come either as a per-tick ``<name>_update`` or, for the ones whose state is a ring
buffer, as a ``<name>_run`` loop over one instrument's ticks that keeps the ring's scalars
in locals. ``engine.features.program`` runs them, op by op, over every tick of a batch.

State lives in two rows per instrument: ``fs`` (float64) and ``ist`` (int64, for
timestamps and counters, because ns timestamps do not fit a float64 exactly). Each op
owns a slice of both rows starting at its offsets.

Rolling sums are kept on deviations from an anchor (a recent value) and recomputed from
the ring buffer every ``capacity`` pushes: with prices near 1e5 and moves near 1e-4 the
naive sum of squares loses every significant digit of the variance; the anchored sums
keep it, and the periodic recompute stops rounding drift from accumulating.

Time windows and time lags keep their values in a ring that grows: before each block of
ticks, the program (``engine.features.program``) bounds how many values every ring will
hold (the values still in its window plus the block's ticks that may be pushed, expired as
they would be) and, if a ring is too small, the call returns the tick it stopped at so the
caller can reallocate the state with bigger rings (``FeatureSet.grow``) and resume there.
Nothing in the arithmetic depends on a ring's current size (sums walk the ring in time
order; a time window re-anchors on its own count), so growing changes no value and any
batching gives the same result. A ring stops growing at its ``capacity``: there it drops
its oldest value, counts the overflow and reads NaN until the dropped value has left the
window, so a value never covers a shorter window than its name says. (The kernels do not
assert that a ring below its capacity never fills: numba's exception path costs ~0.1 us a
tick on the live path; the tests check the overflow count instead.)

Time windows, time lags and half-life EMAs restart across a gap. A gap is a stretch
longer than the feature's span (window, lag or half-life) without an update of its input
(for trade windows, the VWAP distance included: without a tick of the instrument); the
feature then forgets the past, reads NaN and warms up again over its span, as at the
start. So a 1 s return right after a 9-minute gap is NaN for a second, never the 9-minute
move called a 1 s one, and a 10 s realized vol does not sum the move across the gap. The
reset is decided per tick from the state alone (the time of the previous update), so
streaming, any batching and the batch path agree. Tick-count windows and lags (``window
= 20``) count updates, not time, and do not reset.

Kernels compile with numpy's error model: a division by zero yields inf or NaN (and a
NaN feature yields no signal) instead of raising inside the loop; it also drops the
zero checks from the hot loops.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.features import jit_cache  # noqa: F401  (before the first @njit)

# opcodes (stable: fingerprints and cached programs refer to them)
OP_MID = 1
OP_SPREAD_BPS = 2
OP_MICROPRICE = 3
OP_BOOK_IMBALANCE = 4
OP_LAST_PRICE = 5
OP_TIME_SINCE_TRADE = 6
OP_TRADE_FLOW_IMBALANCE = 7
OP_VWAP = 8
OP_VWAP_DISTANCE_BPS = 9
OP_EMA = 20
OP_EMA_TIME = 21
OP_LOG_RETURN = 22
OP_LOG_RETURN_TIME = 23
OP_ROLLING_MEAN = 24
OP_ROLLING_STD = 25
OP_ZSCORE = 26
OP_ROLLING_MEAN_TIME = 27
OP_ROLLING_STD_TIME = 28
OP_ZSCORE_TIME = 29
OP_REALIZED_VOL_TIME = 30

# columns of the ``ops`` table
C_OPCODE = 0
C_INPUT = 1  # index of the input feature, -1 for a raw tick source
C_FOFS = 2  # offset into the float state row
C_IOFS = 3  # offset into the int state row
C_CAP = 4  # ring capacity (ticks), 0 if none
C_IPARAM = 5  # integer parameter (window or lag in ticks, or in ns)
C_CAPMAX = 6  # the most the ring may grow to (the feature's ``capacity``)
C_RING = 7  # RING_NONE, or what may push into a growable ring: any input update or trades
C_NEED = 8  # written by a call that stopped early: the size this op's ring must grow to
N_OPCOLS = 9

RING_NONE = 0
RING_UPDATES = 1
RING_TRADES = 2

NAN = np.nan

# int state layout of every ring kernel (the ts ring only for time windows):
# [head, count, pushes_since_recompute, overflow, first_ts, lost_ts, flag, last_ts, ring_ts...]
R_HEAD = 0
R_COUNT = 1
R_SINCE = 2
R_OVERFLOW = 3
R_FIRST_TS = 4  # start of the current warm-up: the first update, or the first after a gap
R_LOST_TS = 5  # timestamp of the newest value dropped by an overflow
R_FLAG = 6
R_LAST_TS = 7  # time of the previous update (trade windows: the previous tick), for gaps
R_TS0 = 8
# float state layout: [sum (a), sumsq (b), anchor (or previous input), ring a..., ring b...]
RF_SUM = 0
RF_SUMSQ = 1
RF_ANCHOR = 2
RF_V0 = 3
# a time window re-anchors and resums after max(count, RESUM_MIN_PUSHES) pushes: the cost
# is amortised to O(1) a push, and the schedule depends on the data only, not on the ring
RESUM_MIN_PUSHES = 64


@njit(cache=True, inline="always", error_model="numpy")
def _wrap(x, cap):  # type: ignore[no-untyped-def]
    # ring indices stay within one lap of [0, cap); a branch is far cheaper than an int %
    if x >= cap:
        return x - cap
    if x < 0:
        return x + cap
    return x


@njit(cache=True, inline="always", error_model="numpy")
def ema_time_update(fs, i, fo, ist, io, half_life_ns, x, ts):  # type: ignore[no-untyped-def]
    """EMA with a time half-life: weight of the past decays by 2^(-dt/half_life) per gap.

    Irregular spacing is exact: a gap of h decays twice as much as a gap of h/2. Equal
    timestamps: the input's value at a time is its last update at that time, so a later
    update at the same timestamp replaces the earlier one's contribution (the EMA is that
    of the series with one value per timestamp, the last). Warm after one half-life of
    history; an input silent for longer than the half-life restarts it (a gap: the EMA
    starts again from the value after it and is NaN for a half-life).

    fs: [ema, ema before the current timestamp, decay of the current timestamp's gap];
    ist: [started, current ts, first ts].
    """
    if ist[i, io] == 0 or ts - ist[i, io + 1] > half_life_ns:
        # decay 0 for the first timestamp (or the first after a gap): the EMA is its value
        fs[i, fo + 1] = 0.0
        fs[i, fo + 2] = 0.0
        ist[i, io] = 1
        ist[i, io + 1] = ts
        ist[i, io + 2] = ts
    elif ts != ist[i, io + 1]:
        fs[i, fo + 1] = fs[i, fo]
        fs[i, fo + 2] = math.exp(-math.log(2.0) * (ts - ist[i, io + 1]) / half_life_ns)
        ist[i, io + 1] = ts
    decay = fs[i, fo + 2]
    fs[i, fo] = decay * fs[i, fo + 1] + (1.0 - decay) * x
    return fs[i, fo] if ts - ist[i, io + 2] >= half_life_ns else NAN


@njit(cache=True, inline="always", error_model="numpy")
def log_return_time_update(fs, i, fo, ist, io, cap, lag_ns, x, ts):  # type: ignore[no-untyped-def]
    """log(x_t / x_s) with s the last update at or before t - lag; warm once such s exists.

    Keeps the values newer than t - lag plus the newest one at or before it (the ring grows
    to hold them). At its capacity the oldest is dropped and counted; the return then reads
    NaN until the history covers the lag again (never a return over a shorter lag). After
    a gap (no update for longer than the lag) the history is dropped: NaN for one lag.
    """
    cutoff = ts - lag_ns
    rv = fo + RF_V0
    rt = io + R_TS0
    if ts - ist[i, io + R_LAST_TS] > lag_ns:
        ist[i, io + R_COUNT] = 0
    ist[i, io + R_LAST_TS] = ts
    # drop the oldest while the next-oldest is also at or before the cutoff
    while ist[i, io + R_COUNT] >= 2:
        tail = _wrap(ist[i, io + R_HEAD] - ist[i, io + R_COUNT], cap)
        nxt = _wrap(tail + 1, cap)
        if ist[i, rt + nxt] <= cutoff:
            ist[i, io + R_COUNT] -= 1
        else:
            break
    if ist[i, io + R_COUNT] == cap:
        tail = _wrap(ist[i, io + R_HEAD] - cap, cap)
        ist[i, io + R_LOST_TS] = ist[i, rt + tail]
        ist[i, io + R_COUNT] -= 1
        ist[i, io + R_OVERFLOW] += 1
    head = ist[i, io + R_HEAD]
    fs[i, rv + head] = x
    ist[i, rt + head] = ts
    ist[i, io + R_HEAD] = _wrap(head + 1, cap)
    ist[i, io + R_COUNT] += 1
    tail = _wrap(ist[i, io + R_HEAD] - ist[i, io + R_COUNT], cap)
    if ist[i, rt + tail] <= cutoff:
        return math.log(x / fs[i, rv + tail])
    return NAN


@njit(cache=True, inline="always", error_model="numpy")
def window_sums_update(fs, i, fo, ist, io, cap, window_ns, ts, a, b, add):  # type: ignore[no-untyped-def]
    """Two running sums over a time window of events (trade flow, VWAP); True when warm.

    fs: [sum_a, sum_b, -, ring_a..., ring_b...]; ist: the ring layout (``R_*``). Sums of
    trade quantities are well conditioned, so no anchor is needed; they are recomputed
    whenever the window empties, which resets rounding drift. Not warm while a value
    dropped at its capacity would still be in the window, nor for a window after a gap
    (no call for longer than the window: the warm-up starts again).
    """
    if ist[i, io + R_FIRST_TS] == 0 or ts - ist[i, io + R_LAST_TS] > window_ns:
        ist[i, io + R_FIRST_TS] = ts
    ist[i, io + R_LAST_TS] = ts
    ra = fo + RF_V0
    rb = fo + RF_V0 + cap
    rt = io + R_TS0
    cutoff = ts - window_ns
    while ist[i, io + R_COUNT] > 0:
        tail = _wrap(ist[i, io + R_HEAD] - ist[i, io + R_COUNT], cap)
        if ist[i, rt + tail] > cutoff:
            break
        fs[i, fo + RF_SUM] -= fs[i, ra + tail]
        fs[i, fo + RF_SUMSQ] -= fs[i, rb + tail]
        ist[i, io + R_COUNT] -= 1
    if ist[i, io + R_COUNT] == 0:
        fs[i, fo + RF_SUM] = 0.0
        fs[i, fo + RF_SUMSQ] = 0.0
    if add:
        if ist[i, io + R_COUNT] == cap:
            tail = _wrap(ist[i, io + R_HEAD] - cap, cap)
            fs[i, fo + RF_SUM] -= fs[i, ra + tail]
            fs[i, fo + RF_SUMSQ] -= fs[i, rb + tail]
            ist[i, io + R_LOST_TS] = ist[i, rt + tail]
            ist[i, io + R_COUNT] -= 1
            ist[i, io + R_OVERFLOW] += 1
        head = ist[i, io + R_HEAD]
        fs[i, ra + head] = a
        fs[i, rb + head] = b
        ist[i, rt + head] = ts
        ist[i, io + R_HEAD] = _wrap(head + 1, cap)
        ist[i, io + R_COUNT] += 1
        fs[i, fo + RF_SUM] += a
        fs[i, fo + RF_SUMSQ] += b
    whole = ist[i, io + R_OVERFLOW] == 0 or ist[i, io + R_LOST_TS] <= cutoff
    return ts - ist[i, io + R_FIRST_TS] >= window_ns and whole


@njit(cache=True, nogil=True, error_model="numpy")
def rolling_run(op, fs, ist, i, fo, io, cap, window, idx, ts, res, upd, src, values, j):  # type: ignore[no-untyped-def]
    """Rolling mean / std / z-score (tick or time window) over one instrument's ticks.

    The ring's scalars live in locals for the whole run and are written back at the end:
    kept in the state row, every push was a chain of dependent loads and stores (66 ns
    per tick measured; 14 ns in locals). Same arithmetic, in the same order.

    A tick window's ring is the window (``cap`` values). A time window's ring grows (see
    the module docstring); at its capacity the oldest value is dropped and the value reads
    NaN until that value would have left the window. After a gap in the input longer than
    the window, the window warms up again (its old values have all left it), and on the
    ticks of the gap itself it reads NaN.
    """
    is_time = op == OP_ROLLING_MEAN_TIME or op == OP_ROLLING_STD_TIME or op == OP_ZSCORE_TIME
    want_mean = op == OP_ROLLING_MEAN or op == OP_ROLLING_MEAN_TIME
    want_std = op == OP_ROLLING_STD or op == OP_ROLLING_STD_TIME
    head = ist[i, io + R_HEAD]
    count = ist[i, io + R_COUNT]
    since = ist[i, io + R_SINCE]
    overflow = ist[i, io + R_OVERFLOW]
    first = ist[i, io + R_FIRST_TS]
    lost = ist[i, io + R_LOST_TS]
    last = ist[i, io + R_LAST_TS]
    s = fs[i, fo + RF_SUM]
    ss = fs[i, fo + RF_SUMSQ]
    anchor = fs[i, fo + RF_ANCHOR]
    rv = fo + RF_V0
    rt = io + R_TS0
    cur = values[i, j]
    for t in idx:
        x = res[src, t]
        if upd[src, t] and not math.isnan(x):
            upd[j, t] = True
            now = ts[t]
            if is_time:
                gap = first != 0 and now - last > window
                if first == 0 or gap:
                    first = now
                last = now
                cutoff = now - window
                while count > 0:
                    tail = head - count
                    if tail < 0:
                        tail += cap
                    if ist[i, rt + tail] > cutoff:
                        break
                    d = fs[i, rv + tail] - anchor
                    s -= d
                    ss -= d * d
                    count -= 1
                if gap:
                    # every value has left the window: start over exactly as a fresh state
                    # (sums, anchor and resum schedule), so a gap is a fresh start bit for bit
                    s = 0.0
                    ss = 0.0
                    since = 0
                if count == cap:
                    tail = head - count
                    if tail < 0:
                        tail += cap
                    lost = ist[i, rt + tail]
                    overflow += 1
            if count == 0 and since == 0:
                anchor = x
            if count == cap:
                tail = head - count
                if tail < 0:
                    tail += cap
                d = fs[i, rv + tail] - anchor
                s -= d
                ss -= d * d
                count -= 1
            fs[i, rv + head] = x
            if is_time:
                ist[i, rt + head] = now
            head += 1
            if head == cap:
                head = 0
            count += 1
            d = x - anchor
            s += d
            ss += d * d
            since += 1
            # a tick window resums every ``cap`` pushes; a time window after as many pushes
            # as it holds values, so the schedule does not depend on the ring's size
            if since >= (max(count, RESUM_MIN_PUSHES) if is_time else cap):
                # re-anchor on the newest value and resum, so rounding drift cannot build up
                s = 0.0
                ss = 0.0
                for k in range(count):
                    q = head - count + k
                    if q < 0:
                        q += cap
                    dd = fs[i, rv + q] - x
                    s += dd
                    ss += dd * dd
                anchor = x
                since = 0
            if is_time:
                warm = now - first >= window and (overflow == 0 or lost <= now - window)
            else:
                warm = count >= cap
            v = NAN
            if warm:
                mean = anchor + s / count
                if want_mean:
                    v = mean
                else:
                    sd = NAN
                    if count >= 2:
                        var = (ss - s * s / count) / (count - 1)
                        sd = math.sqrt(var) if var > 0.0 else 0.0
                    if want_std:
                        v = sd
                    else:
                        v = (x - mean) / sd if sd > 0.0 else 0.0
            cur = v
        elif is_time and first != 0 and ts[t] - last > window:
            cur = NAN  # the input silent for longer than the window: no value until it speaks
        res[j, t] = cur
    ist[i, io + R_HEAD] = head
    ist[i, io + R_COUNT] = count
    ist[i, io + R_SINCE] = since
    ist[i, io + R_OVERFLOW] = overflow
    ist[i, io + R_FIRST_TS] = first
    ist[i, io + R_LOST_TS] = lost
    ist[i, io + R_LAST_TS] = last
    fs[i, fo + RF_SUM] = s
    fs[i, fo + RF_SUMSQ] = ss
    fs[i, fo + RF_ANCHOR] = anchor
    values[i, j] = cur


@njit(cache=True, nogil=True, error_model="numpy")
def trade_window_run(  # type: ignore[no-untyped-def]
    op, fs, ist, i, fo, io, cap, window, idx, ts, kind, price, size, side, res, upd, values, j,
):  # fmt: skip
    """Trade-flow imbalance or VWAP over one instrument's ticks, with the window's
    scalars in locals (the same arithmetic as ``window_sums_update``). A stretch longer
    than the window without a tick of the instrument is a gap: the warm-up starts again
    (a quiet market that still quotes is not a gap: its flow is 0, its VWAP NaN)."""
    flow = op == OP_TRADE_FLOW_IMBALANCE
    head = ist[i, io + R_HEAD]
    count = ist[i, io + R_COUNT]
    overflow = ist[i, io + R_OVERFLOW]
    first = ist[i, io + R_FIRST_TS]
    lost = ist[i, io + R_LOST_TS]
    last = ist[i, io + R_LAST_TS]
    sa = fs[i, fo + RF_SUM]
    sb = fs[i, fo + RF_SUMSQ]
    ra = fo + RF_V0
    rb = fo + RF_V0 + cap
    rt = io + R_TS0
    v = values[i, j]
    for t in idx:
        now = ts[t]
        upd[j, t] = True
        if first == 0 or now - last > window:
            first = now
        last = now
        cutoff = now - window
        while count > 0:
            tail = head - count
            if tail < 0:
                tail += cap
            if ist[i, rt + tail] > cutoff:
                break
            sa -= fs[i, ra + tail]
            sb -= fs[i, rb + tail]
            count -= 1
        if count == 0:
            sa = 0.0
            sb = 0.0
        if kind[t] != 0:
            b = size[t]
            a = side[t] * b if flow else price[t] * b
            if count == cap:
                tail = head - count
                if tail < 0:
                    tail += cap
                sa -= fs[i, ra + tail]
                sb -= fs[i, rb + tail]
                lost = ist[i, rt + tail]
                count -= 1
                overflow += 1
            fs[i, ra + head] = a
            fs[i, rb + head] = b
            ist[i, rt + head] = now
            head += 1
            if head == cap:
                head = 0
            count += 1
            sa += a
            sb += b
        v = NAN
        if now - first >= window and (overflow == 0 or lost <= cutoff):
            if flow:
                v = sa / sb if sb > 0.0 else 0.0
            elif sb > 0.0:
                v = sa / sb
        res[j, t] = v
    ist[i, io + R_HEAD] = head
    ist[i, io + R_COUNT] = count
    ist[i, io + R_OVERFLOW] = overflow
    ist[i, io + R_FIRST_TS] = first
    ist[i, io + R_LOST_TS] = lost
    ist[i, io + R_LAST_TS] = last
    fs[i, fo + RF_SUM] = sa
    fs[i, fo + RF_SUMSQ] = sb
    values[i, j] = v


@njit(cache=True, nogil=True, error_model="numpy")
def log_return_run(fs, ist, i, fo, io, lag, idx, res, upd, src, values, j):  # type: ignore[no-untyped-def]
    """log(x_t / x_{t-lag}) over the input's own updates, for one instrument's ticks;
    warm after lag + 1 values. State: ring of lag + 1 values; head and count in locals."""
    cap = lag + 1
    head = ist[i, io]
    count = ist[i, io + 1]
    cur = values[i, j]
    for t in idx:
        x = res[src, t]
        if upd[src, t] and not math.isnan(x):
            upd[j, t] = True
            fs[i, fo + head] = x
            head += 1
            if head == cap:
                head = 0
            if count < cap:
                count += 1
            # after the push, ``head`` points at the value ``lag`` updates back
            cur = math.log(x / fs[i, fo + head]) if count == cap else NAN
        res[j, t] = cur
    ist[i, io] = head
    ist[i, io + 1] = count
    values[i, j] = cur
