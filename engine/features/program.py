"""The feature program: ``run_program`` is the one fused call that applies a whole feature
set, op by op, to every tick of a micro-batch; the batch path for training is the same
function over a whole file and the live path (``run_one``) the same function over one tick,
so streaming and batch values are identical bit for bit.

A feature set is an op table (``ops``, columns ``C_*``) over per-instrument state rows; the
table's layout, the state's and the kernels each op runs are ``engine.features.kernels``'s.
Before each block of ticks ``_check_capacity`` bounds how many values every growable ring
will hold; if a ring is too small, the call stops there and says how big it must grow.

The kernels and constants of ``engine.features.kernels`` are compiled into the cached
functions here: ``engine.features.jit_cache`` stamps both files' cached code with one hash
of both, so an edit of either recompiles both.

Compiled with numpy's error model, as the kernels (inf or NaN, never an exception inside
the loop).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from engine.features import jit_cache  # noqa: F401  (before the first @njit)
from engine.features.kernels import (
    C_CAP,
    C_CAPMAX,
    C_FOFS,
    C_INPUT,
    C_IOFS,
    C_IPARAM,
    C_NEED,
    C_OPCODE,
    C_RING,
    NAN,
    OP_BOOK_IMBALANCE,
    OP_EMA,
    OP_EMA_TIME,
    OP_LAST_PRICE,
    OP_LOG_RETURN,
    OP_LOG_RETURN_TIME,
    OP_MICROPRICE,
    OP_MID,
    OP_REALIZED_VOL_TIME,
    OP_ROLLING_MEAN,
    OP_ROLLING_MEAN_TIME,
    OP_ROLLING_STD,
    OP_ROLLING_STD_TIME,
    OP_SPREAD_BPS,
    OP_TIME_SINCE_TRADE,
    OP_TRADE_FLOW_IMBALANCE,
    OP_VWAP,
    OP_VWAP_DISTANCE_BPS,
    OP_ZSCORE,
    OP_ZSCORE_TIME,
    R_COUNT,
    R_FIRST_TS,
    R_FLAG,
    R_HEAD,
    R_LAST_TS,
    R_TS0,
    RF_ANCHOR,
    RF_SUM,
    RF_SUMSQ,
    RING_NONE,
    RING_TRADES,
    ema_time_update,
    log_return_run,
    log_return_time_update,
    rolling_run,
    trade_window_run,
    window_sums_update,
)


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
                rolling_run(
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
                log_return_run(fstate, istate, i, fo, io, ip, idx, res, upd, src, values, j)
            elif op == OP_VWAP_DISTANCE_BPS:
                first = io + R_FIRST_TS
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
                    elif ts[t] - istate[i, first] < ip:
                        cur = NAN  # the window restarted at this trade (after a gap)
                    res[j, t] = cur
                values[i, j] = cur
            else:
                for t in idx:
                    x = res[src, t]
                    if upd[src, t] and not math.isnan(x):
                        upd[j, t] = True
                        cur = _derived(op, fstate, i, fo, istate, io, cap, ip, x, ts[t])
                    elif _silent(op, istate, i, io, ip, ts[t]):
                        cur = NAN
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
            trade_window_run(op, fstate, istate, i, fo, io, cap, ip, idx, ts, kind, price, size, side,
                             res, upd, values, j)  # fmt: skip


@njit(cache=True, inline="always", error_model="numpy")
def _silent(op, ist, i, io, ip, now):  # type: ignore[no-untyped-def]
    """A time feature whose input has been silent for longer than its span (a gap): it
    reads NaN from then on, until its input updates and it warms up again."""
    if op == OP_EMA_TIME:
        return ist[i, io] != 0 and now - ist[i, io + 1] > ip
    if op == OP_LOG_RETURN_TIME or op == OP_REALIZED_VOL_TIME:
        return ist[i, io + R_LAST_TS] != 0 and now - ist[i, io + R_LAST_TS] > ip
    return False


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
        # (none across a gap longer than the window: that move is not the window's)
        have = ist[i, io + R_FLAG] > 0 and now - ist[i, io + R_LAST_TS] <= ip
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
