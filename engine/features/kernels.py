"""Streaming feature kernels: numba updates on small per-instrument state rows.

Each kernel ``<name>_update`` advances its state by one observation and returns the new
value. ``run_program`` is the one fused loop that applies a whole feature set, in order,
to every tick of a micro-batch; the batch path for training is the same function over a
whole file, so streaming and batch values are identical bit for bit.

State lives in two rows per instrument: ``fs`` (float64) and ``ist`` (int64, for
timestamps and counters, because ns timestamps do not fit a float64 exactly). Each op
owns a slice of both rows starting at its offsets.

Rolling sums are kept on deviations from an anchor (a recent value) and recomputed from
the ring buffer every ``capacity`` pushes: with prices near 1e5 and moves near 1e-4 the
naive sum of squares loses every significant digit of the variance; the anchored sums
keep it, and the periodic recompute stops rounding drift from accumulating.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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
N_OPCOLS = 6

NAN = np.nan

# int state layout for ring kernels: [head, count, pushes_since_recompute, overflow, first_ts, ring_ts...]
R_HEAD = 0
R_COUNT = 1
R_SINCE = 2
R_OVERFLOW = 3
R_FIRST_TS = 4
R_TS0 = 5
# float state layout for ring kernels: [sum, sumsq, anchor, ring...]
RF_SUM = 0
RF_SUMSQ = 1
RF_ANCHOR = 2
RF_V0 = 3


@njit(cache=True, inline="always")
def _ring_recompute(fs, fo, ist, io, cap):  # type: ignore[no-untyped-def]
    count = ist[io + R_COUNT]
    head = ist[io + R_HEAD]
    # anchor on the newest value so the deviations stay small
    newest = fs[fo + RF_V0 + (head - 1) % cap]
    s = 0.0
    ss = 0.0
    for k in range(count):
        d = fs[fo + RF_V0 + (head - count + k) % cap] - newest
        s += d
        ss += d * d
    fs[fo + RF_ANCHOR] = newest
    fs[fo + RF_SUM] = s
    fs[fo + RF_SUMSQ] = ss
    ist[io + R_SINCE] = 0


@njit(cache=True, inline="always")
def _ring_pop_oldest(fs, fo, ist, io, cap):  # type: ignore[no-untyped-def]
    count = ist[io + R_COUNT]
    tail = (ist[io + R_HEAD] - count) % cap
    d = fs[fo + RF_V0 + tail] - fs[fo + RF_ANCHOR]
    fs[fo + RF_SUM] -= d
    fs[fo + RF_SUMSQ] -= d * d
    ist[io + R_COUNT] = count - 1


@njit(cache=True, inline="always")
def _ring_push(fs, fo, ist, io, cap, x, ts):  # type: ignore[no-untyped-def]
    if ist[io + R_COUNT] == 0 and ist[io + R_SINCE] == 0:
        fs[fo + RF_ANCHOR] = x
    if ist[io + R_COUNT] == cap:
        _ring_pop_oldest(fs, fo, ist, io, cap)
    head = ist[io + R_HEAD]
    fs[fo + RF_V0 + head] = x
    ist[io + R_TS0 + head] = ts
    ist[io + R_HEAD] = (head + 1) % cap
    ist[io + R_COUNT] += 1
    d = x - fs[fo + RF_ANCHOR]
    fs[fo + RF_SUM] += d
    fs[fo + RF_SUMSQ] += d * d
    ist[io + R_SINCE] += 1
    if ist[io + R_SINCE] >= cap:
        _ring_recompute(fs, fo, ist, io, cap)


@njit(cache=True, inline="always")
def _ring_evict_older(fs, fo, ist, io, cap, cutoff):  # type: ignore[no-untyped-def]
    """Drop values stamped at or before ``cutoff`` (the window is (t - W, t])."""
    while ist[io + R_COUNT] > 0:
        tail = (ist[io + R_HEAD] - ist[io + R_COUNT]) % cap
        if ist[io + R_TS0 + tail] > cutoff:
            break
        _ring_pop_oldest(fs, fo, ist, io, cap)


@njit(cache=True, inline="always")
def _ring_mean(fs, fo, ist, io):  # type: ignore[no-untyped-def]
    n = ist[io + R_COUNT]
    return fs[fo + RF_ANCHOR] + fs[fo + RF_SUM] / n


@njit(cache=True, inline="always")
def _ring_std(fs, fo, ist, io):  # type: ignore[no-untyped-def]
    n = ist[io + R_COUNT]
    if n < 2:
        return NAN
    s = fs[fo + RF_SUM]
    var = (fs[fo + RF_SUMSQ] - s * s / n) / (n - 1)
    return math.sqrt(var) if var > 0.0 else 0.0


@njit(cache=True, inline="always")
def ema_update(fs, fo, ist, io, span, x):  # type: ignore[no-untyped-def]
    """EMA by tick count, alpha = 2 / (span + 1), seeded with the first value; warm after span."""
    count = ist[io]
    if count == 0:
        fs[fo] = x
    else:
        fs[fo] += 2.0 / (span + 1.0) * (x - fs[fo])
    ist[io] = count + 1
    return fs[fo] if count + 1 >= span else NAN


@njit(cache=True, inline="always")
def ema_time_update(fs, fo, ist, io, half_life_ns, x, ts):  # type: ignore[no-untyped-def]
    """EMA with a time half-life: weight of the past decays by 2^(-dt/half_life) per gap.

    Irregular spacing is exact: a gap of 2h decays twice as much as a gap of h. Warm after
    one half-life of history.
    """
    if ist[io] == 0:
        fs[fo] = x
        ist[io] = 1
        ist[io + 1] = ts
        ist[io + 2] = ts
    else:
        dt = ts - ist[io + 1]
        decay = math.exp(-math.log(2.0) * dt / half_life_ns)
        fs[fo] = decay * fs[fo] + (1.0 - decay) * x
        ist[io + 1] = ts
    return fs[fo] if ts - ist[io + 2] >= half_life_ns else NAN


@njit(cache=True, inline="always")
def log_return_update(fs, fo, ist, io, lag, x):  # type: ignore[no-untyped-def]
    """log(x_t / x_{t-lag}) over the input's own updates; warm after lag + 1 values."""
    cap = lag + 1
    head = ist[io]
    count = ist[io + 1]
    fs[fo + head] = x
    ist[io] = (head + 1) % cap
    if count < cap:
        count += 1
        ist[io + 1] = count
    if count < cap:
        return NAN
    old = fs[fo + (head + 1) % cap]
    return math.log(x / old)


@njit(cache=True, inline="always")
def log_return_time_update(fs, fo, ist, io, cap, lag_ns, x, ts):  # type: ignore[no-untyped-def]
    """log(x_t / x_s) with s the last update at or before t - lag; warm once such s exists.

    Keeps the values newer than t - lag plus the newest one at or before it; on ring
    overflow the oldest is dropped and counted (the return then spans a shorter time and
    reads NaN until the history covers the lag again).
    """
    # ist: [head, count, overflow, ring_ts...]; fs: [ring...]
    cutoff = ts - lag_ns
    # drop the oldest while the next-oldest is also at or before the cutoff
    while ist[io + 1] >= 2:
        tail = (ist[io] - ist[io + 1]) % cap
        nxt = (tail + 1) % cap
        if ist[io + 3 + nxt] <= cutoff:
            ist[io + 1] -= 1
        else:
            break
    if ist[io + 1] == cap:
        ist[io + 1] -= 1
        ist[io + 2] += 1
    head = ist[io]
    fs[fo + head] = x
    ist[io + 3 + head] = ts
    ist[io] = (head + 1) % cap
    ist[io + 1] += 1
    tail = (ist[io] - ist[io + 1]) % cap
    if ist[io + 3 + tail] <= cutoff:
        return math.log(x / fs[fo + tail])
    return NAN


@njit(cache=True, inline="always")
def rolling_update(fs, fo, ist, io, cap, x, ts):  # type: ignore[no-untyped-def]
    """Push one value into a ring of ``cap`` values (a window of N ticks)."""
    _ring_push(fs, fo, ist, io, cap, x, ts)
    return ist[io + R_COUNT] >= cap


@njit(cache=True, inline="always")
def rolling_time_update(fs, fo, ist, io, cap, window_ns, x, ts):  # type: ignore[no-untyped-def]
    """Push one value into a time window (t - W, t]; warm once the history spans W."""
    if ist[io + R_COUNT] == 0 and ist[io + R_FIRST_TS] == 0:
        ist[io + R_FIRST_TS] = ts
    _ring_evict_older(fs, fo, ist, io, cap, ts - window_ns)
    if ist[io + R_COUNT] == cap:
        ist[io + R_OVERFLOW] += 1
    _ring_push(fs, fo, ist, io, cap, x, ts)
    return ts - ist[io + R_FIRST_TS] >= window_ns


@njit(cache=True, inline="always")
def window_sums_update(fs, fo, ist, io, cap, window_ns, ts, a, b, add):  # type: ignore[no-untyped-def]
    """Two running sums over a time window of events (trade flow, VWAP).

    fs: [sum_a, sum_b, ring_a..., ring_b...]; ist: [head, count, overflow, first_ts, ring_ts...].
    Sums of trade quantities are well conditioned, so no anchor is needed; they are
    recomputed whenever the window empties, which resets rounding drift.
    """
    if ist[io + 3] == 0:
        ist[io + 3] = ts
    cutoff = ts - window_ns
    while ist[io + 1] > 0:
        tail = (ist[io] - ist[io + 1]) % cap
        if ist[io + 4 + tail] > cutoff:
            break
        fs[fo] -= fs[fo + 2 + tail]
        fs[fo + 1] -= fs[fo + 2 + cap + tail]
        ist[io + 1] -= 1
    if ist[io + 1] == 0:
        fs[fo] = 0.0
        fs[fo + 1] = 0.0
    if add:
        if ist[io + 1] == cap:
            tail = (ist[io] - ist[io + 1]) % cap
            fs[fo] -= fs[fo + 2 + tail]
            fs[fo + 1] -= fs[fo + 2 + cap + tail]
            ist[io + 1] -= 1
            ist[io + 2] += 1
        head = ist[io]
        fs[fo + 2 + head] = a
        fs[fo + 2 + cap + head] = b
        ist[io + 4 + head] = ts
        ist[io] = (head + 1) % cap
        ist[io + 1] += 1
        fs[fo] += a
        fs[fo + 1] += b
    return ts - ist[io + 3] >= window_ns


@njit(cache=True)
def run_program(  # type: ignore[no-untyped-def]
    ts, inst, kind, bid, ask, bid_size, ask_size, price, size, side,
    ops, fstate, istate, values, out,
):  # fmt: skip
    """Apply every op to every tick, in order; write the feature row of each tick to ``out``.

    ``values[i]`` holds the current feature values of instrument ``i`` (carried across
    batches); the row written for a tick is that instrument's row after the tick.
    """
    m = ops.shape[0]
    updated = np.zeros(m, np.bool_)
    for t in range(ts.shape[0]):
        i = inst[t]
        fs = fstate[i]
        ist = istate[i]
        vals = values[i]
        is_quote = kind[t] == 0
        now = ts[t]
        for j in range(m):
            op = ops[j, C_OPCODE]
            fo = ops[j, C_FOFS]
            io = ops[j, C_IOFS]
            cap = ops[j, C_CAP]
            ip = ops[j, C_IPARAM]
            src = ops[j, C_INPUT]
            upd = False
            v = NAN
            if op == OP_VWAP_DISTANCE_BPS and not is_quote:
                # the distance is evaluated on its input's updates; trades only feed its VWAP
                window_sums_update(fs, fo, ist, io, cap, ip, now, price[t] * size[t], size[t], True)
            if src >= 0:
                x = vals[src]
                if updated[src] and not math.isnan(x):
                    upd = True
                    if op == OP_EMA:
                        v = ema_update(fs, fo, ist, io, ip, x)
                    elif op == OP_EMA_TIME:
                        v = ema_time_update(fs, fo, ist, io, ip, x, now)
                    elif op == OP_LOG_RETURN:
                        v = log_return_update(fs, fo, ist, io, ip, x)
                    elif op == OP_LOG_RETURN_TIME:
                        v = log_return_time_update(fs, fo, ist, io, cap, ip, x, now)
                    elif op == OP_ROLLING_MEAN or op == OP_ROLLING_STD or op == OP_ZSCORE:
                        if rolling_update(fs, fo, ist, io, cap, x, now):
                            if op == OP_ROLLING_MEAN:
                                v = _ring_mean(fs, fo, ist, io)
                            else:
                                sd = _ring_std(fs, fo, ist, io)
                                if op == OP_ROLLING_STD:
                                    v = sd
                                else:
                                    v = (x - _ring_mean(fs, fo, ist, io)) / sd if sd > 0.0 else 0.0
                    elif (
                        op == OP_ROLLING_MEAN_TIME
                        or op == OP_ROLLING_STD_TIME
                        or op == OP_ZSCORE_TIME
                    ):
                        if rolling_time_update(fs, fo, ist, io, cap, ip, x, now):
                            if op == OP_ROLLING_MEAN_TIME:
                                v = _ring_mean(fs, fo, ist, io)
                            else:
                                sd = _ring_std(fs, fo, ist, io)
                                if op == OP_ROLLING_STD_TIME:
                                    v = sd
                                else:
                                    v = (x - _ring_mean(fs, fo, ist, io)) / sd if sd > 0.0 else 0.0
                    elif op == OP_REALIZED_VOL_TIME:
                        # fs[fo] holds the previous input value; the squared log returns
                        # go into a two-sum window (sum r^2, count)
                        prev = fs[fo]
                        r2 = 0.0
                        have = ist[io] > 0
                        if have:
                            r = math.log(x / prev)
                            r2 = r * r
                        fs[fo] = x
                        ist[io] = 1
                        warm = window_sums_update(
                            fs, fo + 1, ist, io + 1, cap, ip, now, r2, 1.0, have
                        )
                        if warm:
                            v = math.sqrt(fs[fo + 1])
                    elif op == OP_VWAP_DISTANCE_BPS:
                        warm = window_sums_update(fs, fo, ist, io, cap, ip, now, 0.0, 0.0, False)
                        if warm and fs[fo + 1] > 0.0:
                            vwap = fs[fo] / fs[fo + 1]
                            v = (x - vwap) / vwap * 1e4
                else:
                    v = vals[j]
            elif op == OP_MID:
                if is_quote:
                    upd = True
                    v = 0.5 * (bid[t] + ask[t])
            elif op == OP_SPREAD_BPS:
                if is_quote:
                    upd = True
                    v = (ask[t] - bid[t]) / (0.5 * (bid[t] + ask[t])) * 1e4
            elif op == OP_MICROPRICE:
                if is_quote:
                    upd = True
                    tot = bid_size[t] + ask_size[t]
                    if tot > 0.0:
                        v = (bid[t] * ask_size[t] + ask[t] * bid_size[t]) / tot
                    else:
                        v = 0.5 * (bid[t] + ask[t])
            elif op == OP_BOOK_IMBALANCE:
                if is_quote:
                    upd = True
                    tot = bid_size[t] + ask_size[t]
                    v = (bid_size[t] - ask_size[t]) / tot if tot > 0.0 else 0.0
            elif op == OP_LAST_PRICE:
                if not is_quote:
                    upd = True
                    v = price[t]
            elif op == OP_TIME_SINCE_TRADE:
                upd = True
                if not is_quote:
                    ist[io] = now
                    ist[io + 1] = 1
                v = (now - ist[io]) * 1e-9 if ist[io + 1] == 1 else NAN
            elif op == OP_TRADE_FLOW_IMBALANCE:
                upd = True
                add = not is_quote
                signed = side[t] * size[t] if add else 0.0
                sz = size[t] if add else 0.0
                warm = window_sums_update(fs, fo, ist, io, cap, ip, now, signed, sz, add)
                if warm:
                    v = fs[fo] / fs[fo + 1] if fs[fo + 1] > 0.0 else 0.0
            elif op == OP_VWAP:
                upd = True
                add = not is_quote
                pv = price[t] * size[t] if add else 0.0
                sz = size[t] if add else 0.0
                warm = window_sums_update(fs, fo, ist, io, cap, ip, now, pv, sz, add)
                if warm and fs[fo + 1] > 0.0:
                    v = fs[fo] / fs[fo + 1]
            if upd:
                vals[j] = v
            updated[j] = upd
        for j in range(m):
            out[t, j] = vals[j]
