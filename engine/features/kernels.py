"""Streaming feature kernels: numba updates on small per-instrument state rows.

``run_program`` is the one fused call that applies a whole feature set, op by op, to
every tick of a micro-batch; the batch path for training is the same function over a
whole file and the live path (``run_one``) the same function over one tick, so
streaming and batch values are identical bit for bit. Kernels come either as a per-tick
``<name>_update`` or, for the ones whose state is a ring buffer, as a ``_<name>_run``
loop over one instrument's ticks that keeps the ring's scalars in locals.

State lives in two rows per instrument: ``fs`` (float64) and ``ist`` (int64, for
timestamps and counters, because ns timestamps do not fit a float64 exactly). Each op
owns a slice of both rows starting at its offsets.

Rolling sums are kept on deviations from an anchor (a recent value) and recomputed from
the ring buffer every ``capacity`` pushes: with prices near 1e5 and moves near 1e-4 the
naive sum of squares loses every significant digit of the variance; the anchored sums
keep it, and the periodic recompute stops rounding drift from accumulating.

Time windows and time lags keep their values in a ring that grows: before each block of
ticks, ``_check_capacity`` bounds how many values every ring will hold (the values still in
its window plus the block's ticks that may be pushed, expired as they would be) and, if a
ring is too small, the call returns the tick it stopped at so the caller can reallocate the
state with bigger rings (``FeatureSet.grow``) and resume there. Nothing in the arithmetic
depends on a ring's current size (sums walk the ring in time order; a time window
re-anchors on its own count), so growing changes no value and any batching gives the same
result. A ring stops growing at its ``capacity``: there it drops its oldest value, counts
the overflow and reads NaN until the dropped value has left the window, so a value never
covers a shorter window than its name says. (The kernels do not assert that a ring below
its capacity never fills: numba's exception path costs ~0.1 us a tick on the live path;
the tests check the overflow count instead.)

Kernels compile with numpy's error model: a division by zero yields inf or NaN (and a
NaN feature yields no signal) instead of raising inside the loop; it also drops the
zero checks from the hot loops.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

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
# [head, count, pushes_since_recompute, overflow, first_ts, lost_ts, flag, ring_ts...]
R_HEAD = 0
R_COUNT = 1
R_SINCE = 2
R_OVERFLOW = 3
R_FIRST_TS = 4
R_LOST_TS = 5  # timestamp of the newest value dropped by an overflow
R_FLAG = 6
R_TS0 = 7
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

    Irregular spacing is exact: a gap of 2h decays twice as much as a gap of h. Equal
    timestamps: the input's value at a time is its last update at that time, so a later
    update at the same timestamp replaces the earlier one's contribution (the EMA is that
    of the series with one value per timestamp, the last). Warm after one half-life of
    history.

    fs: [ema, ema before the current timestamp, decay of the current timestamp's gap];
    ist: [started, current ts, first ts].
    """
    if ist[i, io] == 0:
        # decay 0 for the first timestamp: the EMA is its (last) value
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
    NaN until the history covers the lag again (never a return over a shorter lag).
    """
    cutoff = ts - lag_ns
    rv = fo + RF_V0
    rt = io + R_TS0
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
    dropped at its capacity would still be in the window.
    """
    if ist[i, io + R_FIRST_TS] == 0:
        ist[i, io + R_FIRST_TS] = ts
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
def _rolling_run(op, fs, ist, i, fo, io, cap, window, idx, ts, res, upd, src, values, j):  # type: ignore[no-untyped-def]
    """Rolling mean / std / z-score (tick or time window) over one instrument's ticks.

    The ring's scalars live in locals for the whole run and are written back at the end:
    kept in the state row, every push was a chain of dependent loads and stores (66 ns
    per tick measured; 14 ns in locals). Same arithmetic, in the same order.

    A tick window's ring is the window (``cap`` values). A time window's ring grows (see
    the module docstring); at its capacity the oldest value is dropped and the value reads
    NaN until that value would have left the window.
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
                if count == 0 and first == 0:
                    first = now
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
        res[j, t] = cur
    ist[i, io + R_HEAD] = head
    ist[i, io + R_COUNT] = count
    ist[i, io + R_SINCE] = since
    ist[i, io + R_OVERFLOW] = overflow
    ist[i, io + R_FIRST_TS] = first
    ist[i, io + R_LOST_TS] = lost
    fs[i, fo + RF_SUM] = s
    fs[i, fo + RF_SUMSQ] = ss
    fs[i, fo + RF_ANCHOR] = anchor
    values[i, j] = cur


@njit(cache=True, nogil=True, error_model="numpy")
def _trade_window_run(  # type: ignore[no-untyped-def]
    op, fs, ist, i, fo, io, cap, window, idx, ts, kind, price, size, side, res, upd, values, j,
):  # fmt: skip
    """Trade-flow imbalance or VWAP over one instrument's ticks, with the window's
    scalars in locals (the same arithmetic as ``window_sums_update``)."""
    flow = op == OP_TRADE_FLOW_IMBALANCE
    head = ist[i, io + R_HEAD]
    count = ist[i, io + R_COUNT]
    overflow = ist[i, io + R_OVERFLOW]
    first = ist[i, io + R_FIRST_TS]
    lost = ist[i, io + R_LOST_TS]
    sa = fs[i, fo + RF_SUM]
    sb = fs[i, fo + RF_SUMSQ]
    ra = fo + RF_V0
    rb = fo + RF_V0 + cap
    rt = io + R_TS0
    v = values[i, j]
    for t in idx:
        now = ts[t]
        upd[j, t] = True
        if first == 0:
            first = now
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
    fs[i, fo + RF_SUM] = sa
    fs[i, fo + RF_SUMSQ] = sb
    values[i, j] = v


@njit(cache=True, nogil=True, error_model="numpy")
def _log_return_run(fs, ist, i, fo, io, lag, idx, res, upd, src, values, j):  # type: ignore[no-untyped-def]
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


@njit(cache=True, nogil=True, error_model="numpy")
def _group_by_instrument(inst, n_inst):  # type: ignore[no-untyped-def]
    """Tick indices grouped by instrument, each group in time order (a counting sort)."""
    starts = np.zeros(n_inst + 1, np.int64)
    for t in range(inst.shape[0]):
        starts[inst[t] + 1] += 1
    for k in range(n_inst):
        starts[k + 1] += starts[k]
    fill = starts[:-1].copy()
    order = np.empty(inst.shape[0], np.int64)
    for t in range(inst.shape[0]):
        order[fill[inst[t]]] = t
        fill[inst[t]] += 1
    return order, starts


@njit(cache=True, nogil=True, error_model="numpy")
def _ring_need(ist, i, io, cap, window, idx, ts, kind, trades_only, extra):  # type: ignore[no-untyped-def]
    """The most values one instrument's time ring may hold over the ticks ``idx``.

    Every tick (or trade, for a trade window) is counted as a push, and values expire as
    the kernel expires them (at or before now - window), walking the ring's values and
    then the block's in time order; ``extra`` is 1 for a time lag, which also keeps the
    newest value at or before its cutoff. An upper bound of what the kernel will hold.
    """
    count = ist[i, io + R_COUNT]
    tail = ist[i, io + R_HEAD] - count
    if tail < 0:
        tail += cap
    gone_ring = 0
    gone_block = 0
    pushed = 0
    b = 0
    need = 0
    for k in range(idx.shape[0]):
        t = idx[k]
        if trades_only and kind[t] == 0:
            continue
        pushed += 1
        cutoff = ts[t] - window
        while gone_ring < count:
            q = tail + gone_ring
            if q >= cap:
                q -= cap
            if ist[i, io + R_TS0 + q] > cutoff:
                break
            gone_ring += 1
        if gone_ring == count:
            # the block's earlier pushes are newer than every ring value
            while b < k:
                tb = idx[b]
                if trades_only and kind[tb] == 0:
                    b += 1
                    continue
                if ts[tb] > cutoff:
                    break
                gone_block += 1
                b += 1
        held = count - gone_ring + pushed - gone_block + extra
        if held > need:
            need = held
    return need


@njit(cache=True, nogil=True, error_model="numpy")
def _check_capacity(ts, kind, ops, istate, order, starts):  # type: ignore[no-untyped-def]
    """True if a ring below its ``capacity`` could fill up over this block; ``ops[j, C_NEED]``
    then holds the size op ``j``'s ring should grow to. The state is left untouched.

    The common case costs one comparison per ring and instrument: the ring's count plus
    the instrument's ticks in the block fit.
    """
    short = False
    for j in range(ops.shape[0]):
        ring = ops[j, C_RING]
        cap = ops[j, C_CAP]
        if ring == RING_NONE or cap >= ops[j, C_CAPMAX]:
            continue
        io = ops[j, C_IOFS]
        extra = 1 if ops[j, C_OPCODE] == OP_LOG_RETURN_TIME else 0
        for i in range(starts.shape[0] - 1):
            n_i = starts[i + 1] - starts[i]
            if n_i == 0 or istate[i, io + R_COUNT] + n_i + extra <= cap:
                continue
            m = _ring_need(istate, i, io, cap, ops[j, C_IPARAM], order[starts[i] : starts[i + 1]], ts, kind,
                           ring == RING_TRADES, extra)  # fmt: skip
            if m > cap:
                short = True
                # room for the most it will hold and a whole block more: the exact bound
                # costs ~12 ns a tick, so the next blocks should pass the cheap test
                ops[j, C_NEED] = max(ops[j, C_NEED], m + n_i)
    return short


# below this many ticks a parallel region costs more than it saves
PARALLEL_MIN_TICKS = 65_536
# ticks per cache block (8 ops x ~25 bytes per tick per pass stay within L2)
BLOCK_TICKS = 8_192
# the parallel path enters a parallel region per block: bigger blocks amortise it
PARALLEL_BLOCK_TICKS = 131_072


@njit(cache=True, nogil=True, error_model="numpy")
def run_program(  # type: ignore[no-untyped-def]
    ts, inst, kind, bid, ask, bid_size, ask_size, price, size, side, ops, fstate, istate, values, res,
    start,
):  # fmt: skip
    """Apply every op of a feature set to the batch from tick ``start`` on; ``res[j, t]``
    is feature ``j`` of tick ``t``'s instrument after that tick. One compiled call per
    batch. Returns the number of ticks done: less than the batch if a ring must grow first
    (``ops[:, C_NEED]`` says how much; the state is as after the ticks done).

    The batch is walked in cache-sized blocks: every op makes a pass over its ticks, and
    passes over a block that stays in cache are several times cheaper than passes over a
    million ticks. State carries from block to block exactly as from batch to batch.
    """
    n = ts.shape[0]
    upd = np.zeros((ops.shape[0], max(0, min(n - start, BLOCK_TICKS))), np.bool_)
    for b0 in range(start, n, BLOCK_TICKS):
        b1 = min(n, b0 + BLOCK_TICKS)
        u = upd[:, : b1 - b0]
        u[:] = False
        order, starts = _group_by_instrument(inst[b0:b1], values.shape[0])
        if _check_capacity(ts[b0:b1], kind[b0:b1], ops, istate, order, starts):
            return b0
        _program(ts[b0:b1], kind[b0:b1], bid[b0:b1], ask[b0:b1], bid_size[b0:b1], ask_size[b0:b1], price[b0:b1],
                 size[b0:b1], side[b0:b1], ops, fstate, istate, values, res[:, b0:b1], u, order, starts)  # fmt: skip
    return n


@njit(cache=True, nogil=True, error_model="numpy")
def run_program_parallel(  # type: ignore[no-untyped-def]
    ts, inst, kind, bid, ask, bid_size, ask_size, price, size, side, ops, fstate, istate, values, res,
    start,
):  # fmt: skip
    """``run_program`` with instruments spread over all cores. Instruments are
    independent and each is computed by the same code, so the values are identical; for
    batch work only (the live loop's other core is busy reading the next batch)."""
    n = ts.shape[0]
    upd = np.zeros((ops.shape[0], max(0, min(n - start, PARALLEL_BLOCK_TICKS))), np.bool_)
    for b0 in range(start, n, PARALLEL_BLOCK_TICKS):
        b1 = min(n, b0 + PARALLEL_BLOCK_TICKS)
        u = upd[:, : b1 - b0]
        u[:] = False
        order, starts = _group_by_instrument(inst[b0:b1], values.shape[0])
        if _check_capacity(ts[b0:b1], kind[b0:b1], ops, istate, order, starts):
            return b0
        _program_parallel(ts[b0:b1], kind[b0:b1], bid[b0:b1], ask[b0:b1], bid_size[b0:b1], ask_size[b0:b1],
                          price[b0:b1], size[b0:b1], side[b0:b1], ops, fstate, istate, values, res[:, b0:b1], u,
                          order, starts)  # fmt: skip
    return n


@njit(cache=True, nogil=True, error_model="numpy")
def _program(  # type: ignore[no-untyped-def]
    ts, kind, bid, ask, bid_size, ask_size, price, size, side,
    ops, fstate, istate, values, res, upd, order, starts,
):  # fmt: skip
    for i in range(values.shape[0]):
        if starts[i + 1] > starts[i]:
            _instrument_ops(i, order[starts[i] : starts[i + 1]], ts, kind, bid, ask, bid_size, ask_size,
                            price, size, side, ops, fstate, istate, values, res, upd)  # fmt: skip


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _program_parallel(  # type: ignore[no-untyped-def]
    ts, kind, bid, ask, bid_size, ask_size, price, size, side,
    ops, fstate, istate, values, res, upd, order, starts,
):  # fmt: skip
    for i in prange(values.shape[0]):
        if starts[i + 1] > starts[i]:
            _instrument_ops(i, order[starts[i] : starts[i + 1]], ts, kind, bid, ask, bid_size, ask_size,
                            price, size, side, ops, fstate, istate, values, res, upd)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def _instrument_ops(  # type: ignore[no-untyped-def]
    i, idx, ts, kind, bid, ask, bid_size, ask_size, price, size, side,
    ops, fstate, istate, values, res, upd,
):  # fmt: skip
    """Every op, in program order, over one instrument's ticks ``idx`` (in time order).

    Each op runs a tight loop of its own, reading its input's column and update flags,
    with its current value carried in a local; ``values[i, j]`` carries it across batches.
    Only this instrument's entries of ``res`` and ``upd`` are written (``upd`` comes in
    cleared).
    """
    m = ops.shape[0]
    for j in range(m):
        op = ops[j, C_OPCODE]
        src = ops[j, C_INPUT]
        fo = ops[j, C_FOFS]
        io = ops[j, C_IOFS]
        cap = ops[j, C_CAP]
        ip = ops[j, C_IPARAM]
        cur = values[i, j]
        if src >= 0:
            if op == OP_EMA:
                alpha = 2.0 / (ip + 1.0)
                e = fstate[i, fo]
                count = istate[i, io]
                for t in idx:
                    x = res[src, t]
                    if upd[src, t] and not math.isnan(x):
                        upd[j, t] = True
                        e = x if count == 0 else e + alpha * (x - e)
                        count += 1
                        cur = e if count >= ip else NAN
                    res[j, t] = cur
                fstate[i, fo] = e
                istate[i, io] = count
                values[i, j] = cur
            elif (op == OP_ROLLING_MEAN or op == OP_ROLLING_STD or op == OP_ZSCORE or op == OP_ROLLING_MEAN_TIME
                  or op == OP_ROLLING_STD_TIME or op == OP_ZSCORE_TIME):  # fmt: skip
                _rolling_run(
                    op,
                    fstate,
                    istate,
                    i,
                    fo,
                    io,
                    cap,
                    ip,
                    idx,
                    ts,
                    res,
                    upd,
                    src,
                    values,
                    j,
                )
            elif op == OP_LOG_RETURN:
                _log_return_run(fstate, istate, i, fo, io, ip, idx, res, upd, src, values, j)
            elif op == OP_VWAP_DISTANCE_BPS:
                for t in idx:
                    if kind[t] != 0:
                        # trades feed its VWAP window; the distance moves with its input
                        window_sums_update(
                            fstate,
                            i,
                            fo,
                            istate,
                            io,
                            cap,
                            ip,
                            ts[t],
                            price[t] * size[t],
                            size[t],
                            True,
                        )
                    x = res[src, t]
                    if upd[src, t] and not math.isnan(x):
                        upd[j, t] = True
                        v = NAN
                        warm = window_sums_update(
                            fstate, i, fo, istate, io, cap, ip, ts[t], 0.0, 0.0, False
                        )
                        if warm and fstate[i, fo + RF_SUMSQ] > 0.0:
                            vwap = fstate[i, fo + RF_SUM] / fstate[i, fo + RF_SUMSQ]
                            v = (x - vwap) / vwap * 1e4
                        cur = v
                    res[j, t] = cur
                values[i, j] = cur
            else:
                for t in idx:
                    x = res[src, t]
                    if upd[src, t] and not math.isnan(x):
                        upd[j, t] = True
                        cur = _derived(op, fstate, i, fo, istate, io, cap, ip, x, ts[t])
                    res[j, t] = cur
                values[i, j] = cur
        elif op == OP_MID:
            for t in idx:
                if kind[t] == 0:
                    upd[j, t] = True
                    cur = 0.5 * (bid[t] + ask[t])
                res[j, t] = cur
            values[i, j] = cur
        elif op == OP_SPREAD_BPS:
            for t in idx:
                if kind[t] == 0:
                    upd[j, t] = True
                    cur = (ask[t] - bid[t]) / (0.5 * (bid[t] + ask[t])) * 1e4
                res[j, t] = cur
            values[i, j] = cur
        elif op == OP_MICROPRICE:
            for t in idx:
                if kind[t] == 0:
                    upd[j, t] = True
                    tot = bid_size[t] + ask_size[t]
                    if tot > 0.0:
                        cur = (bid[t] * ask_size[t] + ask[t] * bid_size[t]) / tot
                    else:
                        cur = 0.5 * (bid[t] + ask[t])
                res[j, t] = cur
            values[i, j] = cur
        elif op == OP_BOOK_IMBALANCE:
            for t in idx:
                if kind[t] == 0:
                    upd[j, t] = True
                    tot = bid_size[t] + ask_size[t]
                    cur = (bid_size[t] - ask_size[t]) / tot if tot > 0.0 else 0.0
                res[j, t] = cur
            values[i, j] = cur
        elif op == OP_LAST_PRICE:
            for t in idx:
                if kind[t] != 0:
                    upd[j, t] = True
                    cur = price[t]
                res[j, t] = cur
            values[i, j] = cur
        elif op == OP_TIME_SINCE_TRADE:
            for t in idx:
                upd[j, t] = True
                if kind[t] != 0:
                    istate[i, io] = ts[t]
                    istate[i, io + 1] = 1
                cur = (ts[t] - istate[i, io]) * 1e-9 if istate[i, io + 1] == 1 else NAN
                res[j, t] = cur
            values[i, j] = cur
        elif op == OP_TRADE_FLOW_IMBALANCE or op == OP_VWAP:
            _trade_window_run(op, fstate, istate, i, fo, io, cap, ip, idx, ts, kind, price, size, side,
                              res, upd, values, j)  # fmt: skip


@njit(cache=True, inline="always", error_model="numpy")
def _derived(op, fs, i, fo, ist, io, cap, ip, x, now):  # type: ignore[no-untyped-def]
    """One update of a derived kernel (input updated and not NaN); returns its value."""
    v = NAN
    if op == OP_EMA_TIME:
        v = ema_time_update(fs, i, fo, ist, io, ip, x, now)
    elif op == OP_LOG_RETURN_TIME:
        v = log_return_time_update(fs, i, fo, ist, io, cap, ip, x, now)
    elif op == OP_REALIZED_VOL_TIME:
        # the previous input sits in the anchor slot; squared log returns go into the window
        have = ist[i, io + R_FLAG] > 0
        r2 = 0.0
        if have:
            lr = math.log(x / fs[i, fo + RF_ANCHOR])
            r2 = lr * lr
        fs[i, fo + RF_ANCHOR] = x
        ist[i, io + R_FLAG] = 1
        if window_sums_update(fs, i, fo, ist, io, cap, ip, now, r2, 1.0, have):
            v = math.sqrt(fs[i, fo + RF_SUM])
    return v


@njit(cache=True, nogil=True, error_model="numpy")
def run_one(  # type: ignore[no-untyped-def]
    ts, inst, kind, bid, ask, bid_size, ask_size, price, size, side,
    scratch_i, scratch_f, ops, fstate, istate, values, res, upd, order, starts,
):  # fmt: skip
    """``run_program`` for one tick given as scalars (the live path): the scalars go into
    one-row scratch columns, so the arithmetic is exactly the batch path's. Returns 1, or
    0 with nothing done if a ring must grow first (as ``run_program``)."""
    scratch_i[0, 0] = ts
    scratch_i[1, 0] = inst
    scratch_i[2, 0] = kind
    scratch_i[3, 0] = side
    scratch_f[0, 0] = bid
    scratch_f[1, 0] = ask
    scratch_f[2, 0] = bid_size
    scratch_f[3, 0] = ask_size
    scratch_f[4, 0] = price
    scratch_f[5, 0] = size
    upd[:, 0] = False
    # one tick: order = [0]; starts[k] = 0 up to its instrument, 1 after it
    for k in range(starts.shape[0]):
        starts[k] = 1 if k > inst else 0
    # the common case first: every growable ring has room for one more value (and the
    # time lag's kept value) without any call
    for j in range(ops.shape[0]):
        if (ops[j, C_RING] != RING_NONE and ops[j, C_CAP] < ops[j, C_CAPMAX]
                and istate[inst, ops[j, C_IOFS] + R_COUNT] + 2 > ops[j, C_CAP]):  # fmt: skip
            if _check_capacity(scratch_i[0], scratch_i[2], ops, istate, order, starts):
                return 0
            break
    _program(scratch_i[0], scratch_i[2], scratch_f[0], scratch_f[1], scratch_f[2], scratch_f[3],
             scratch_f[4], scratch_f[5], scratch_i[3], ops, fstate, istate, values, res, upd, order, starts)  # fmt: skip
    return 1
