"""L2 book features: one fused numba pass applies a depth micro-batch to the book
(``engine.book.book``) and, at the end of each update, computes every L2 feature of the
set for that instrument.

The pass is ``book_features_run``; ``BookFeatureSet.update`` runs it over one batch and the
batch path (``BookFeatureSet.compute``) over a whole file, with state carried in arrays, so
streaming, any batching and the batch path give identical values (a property test holds
it). Each depth row's output is its instrument's latest feature vector: the one computed at
the end of the last complete update at or before that row (rows inside an update repeat
the previous update's values, so no value mixes half an update in).

Kinds (``levels``: levels per side from the touch; ``bps``: a band around the mid;
``half_life``: the decay of the flow sums, the time a past contribution takes to halve):

- ``l2_imbalance``: (B - A) / (B + A), B and A the sizes of ``levels`` levels per side.
- ``l2_weighted_imbalance``: the same with level k weighted 1 / (k + 1).
- ``ofi``: order-flow imbalance of Cont, Kukanov and Stoikov (2014) at the touch:
  e = [pb >= pb'] qb - [pb <= pb'] qb' - [pa <= pa'] qa + [pa >= pa'] qa' between
  consecutive updates (primes: before), summed with exponential decay.
- ``ofi_multi``: the same per level k < ``levels`` (level k's price and size on each side,
  Xu, Gould and Howison's multi-level OFI), summed over levels, with decay.
- ``depth_bid_bps``/``depth_ask_bps``: size within ``bps`` of the mid on that side (NaN
  when the band reaches past what the book knows).
- ``book_slope_bid``/``book_slope_ask``: size of ``levels`` levels per bp of distance from
  the mid to the last of them.
- ``depth_microprice``: (pa B + pb A) / (B + A) with B, A over ``levels`` levels.
- ``add_rate_bid``/``add_rate_ask``/``cancel_rate_bid``/``cancel_rate_ask``: size added to
  (or taken from: cancels and trades, the diff stream does not tell them apart) levels
  within ``bps`` of the mid, per second, as an exponentially decayed rate.

Every feature is NaN while the book cannot be read (empty, out of sync, or its touch not
known) and for ``half_life`` after the book became readable again (the decayed sums start
afresh, as the tick features' time windows do after a gap). Compiled with numpy's error
model, as the tick kernels: an empty band or two levels at one distance give NaN or inf,
never an exception inside the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.book.batch import F_END, DepthBatch
from engine.book.book import (
    OUT_OF_SYNC,
    PARTIAL,
    S_STATUS,
    SYNCED,
    OrderBook,
    apply_row,
    cell_price,
    top_levels,
)
from engine.errors import ConfigError
from engine.features import jit_cache  # noqa: F401  (before the first @njit)

# bump when an L2 feature's arithmetic changes (models pin it through the fingerprint)
BOOK_KERNEL_VERSION: Final = 1
DEFAULT_L2_LEVELS: Final = 5

OP_L2_IMBALANCE: Final = 1
OP_L2_WEIGHTED_IMBALANCE: Final = 2
OP_OFI: Final = 3
OP_OFI_MULTI: Final = 4
OP_DEPTH_BID_BPS: Final = 5
OP_DEPTH_ASK_BPS: Final = 6
OP_SLOPE_BID: Final = 7
OP_SLOPE_ASK: Final = 8
OP_DEPTH_MICROPRICE: Final = 9
OP_ADD_RATE_BID: Final = 10
OP_ADD_RATE_ASK: Final = 11
OP_CANCEL_RATE_BID: Final = 12
OP_CANCEL_RATE_ASK: Final = 13

L2_KINDS: Final[dict[str, int]] = {
    "l2_imbalance": OP_L2_IMBALANCE,
    "l2_weighted_imbalance": OP_L2_WEIGHTED_IMBALANCE,
    "ofi": OP_OFI,
    "ofi_multi": OP_OFI_MULTI,
    "depth_bid_bps": OP_DEPTH_BID_BPS,
    "depth_ask_bps": OP_DEPTH_ASK_BPS,
    "book_slope_bid": OP_SLOPE_BID,
    "book_slope_ask": OP_SLOPE_ASK,
    "depth_microprice": OP_DEPTH_MICROPRICE,
    "add_rate_bid": OP_ADD_RATE_BID,
    "add_rate_ask": OP_ADD_RATE_ASK,
    "cancel_rate_bid": OP_CANCEL_RATE_BID,
    "cancel_rate_ask": OP_CANCEL_RATE_ASK,
}
L2_USES: Final[dict[int, tuple[str, ...]]] = {  # the parameters each kind reads
    OP_L2_IMBALANCE: ("levels",),
    OP_L2_WEIGHTED_IMBALANCE: ("levels",),
    OP_OFI: ("half_life",),
    OP_OFI_MULTI: ("levels", "half_life"),
    OP_DEPTH_BID_BPS: ("bps",),
    OP_DEPTH_ASK_BPS: ("bps",),
    OP_SLOPE_BID: ("levels",),
    OP_SLOPE_ASK: ("levels",),
    OP_DEPTH_MICROPRICE: ("levels",),
    OP_ADD_RATE_BID: ("bps", "half_life"),
    OP_ADD_RATE_ASK: ("bps", "half_life"),
    OP_CANCEL_RATE_BID: ("bps", "half_life"),
    OP_CANCEL_RATE_ASK: ("bps", "half_life"),
}

# ops table columns
C_OP = 0
C_LEVELS = 1
C_HALF_LIFE = 2  # ns
C_FOFS = 3  # offset into an instrument's float state row
N_COLS = 4
# float state of an op: [decayed sum, pending (this update), then OFI's previous levels]
F_SUM = 0
F_PENDING = 1
F_PREV = 2
# int state per instrument: [time the book became readable (0: not), last update end ts]
I_SINCE = 0
I_LAST = 1
N_ISTATE = 2


@dataclass(frozen=True, slots=True)
class BookFeatureSpec:
    """One L2 feature: ``kind`` from ``L2_KINDS``; ``levels`` levels per side, ``bps`` a
    band around the mid in bps, ``half_life_ns`` the decay of the flow kinds."""

    name: str
    kind: str
    levels: int = DEFAULT_L2_LEVELS
    bps: float = 10.0
    half_life_ns: int = 1_000_000_000


def _fsize(op: int, levels: int) -> int:
    if op == OP_OFI:
        return F_PREV + 4
    if op == OP_OFI_MULTI:
        return F_PREV + 4 * levels
    return F_PREV


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _decay(x, dt, hl):  # type: ignore[no-untyped-def]
    return x * math.exp2(-dt / hl)


@njit(cache=True, nogil=True, error_model="numpy")
def _sides(qtys, best, horizon, i, n, bc, bq, ac, aq):  # type: ignore[no-untyped-def]
    nb = top_levels(qtys, best, horizon, i, 0, n, bc, bq)
    na = top_levels(qtys, best, horizon, i, 1, n, ac, aq)
    return nb, na


# ``reassoc`` lets LLVM vectorise the sum over the band's cells (thousands of them at a
# 0.01 tick): the order of the additions is fixed by the compiled code, not by the data's
# batching, so streaming and batch still agree bit for bit
@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _band(qtys, tick, base, horizon, i, s, mid, bps):  # type: ignore[no-untyped-def]
    """Size within ``bps`` of ``mid`` on side ``s``; NaN when the band reaches past the
    horizon or the grid (part of it is not known)."""
    g = qtys.shape[2]
    tk = tick[i]
    if s == 0:
        lo = np.int64(math.ceil(mid * (1.0 - bps * 1e-4) / tk - 1e-9)) - base[i]
        hi = np.int64(math.floor(mid / tk + 1e-9)) - base[i]
        if lo <= horizon[i, 0] or lo < 0:
            return np.nan
    else:
        lo = np.int64(math.ceil(mid / tk - 1e-9)) - base[i]
        hi = np.int64(math.floor(mid * (1.0 + bps * 1e-4) / tk + 1e-9)) - base[i]
        if hi >= horizon[i, 1] or hi >= g:
            return np.nan
    lo = max(lo, 0)
    hi = min(hi, g - 1)
    total = 0.0
    q = qtys[i, s]
    for c in range(lo, hi + 1):
        total += q[c]
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def _evaluate(qtys, tick, base, best, horizon, state, ops, fparams, fst, ist, values, i, ts, scratch_c, scratch_q):  # type: ignore[no-untyped-def]  # fmt: skip
    """Every op at the end of an update of instrument ``i``."""
    status = state[i, S_STATUS]
    nmax = scratch_c.shape[1]
    bc = scratch_c[0]
    ac = scratch_c[1]
    bq = scratch_q[0]
    aq = scratch_q[1]
    readable = status in (PARTIAL, SYNCED)
    nb = 0
    na = 0
    if readable:
        nb, na = _sides(qtys, best, horizon, i, nmax, bc, bq, ac, aq)
        readable = nb > 0 and na > 0
    if not readable:
        ist[i, I_SINCE] = 0
        values[i, :] = np.nan
        for j in range(ops.shape[0]):
            fo = ops[j, C_FOFS]
            fst[i, fo + F_SUM] = 0.0
            fst[i, fo + F_PENDING] = 0.0
        return
    fresh = ist[i, I_SINCE] == 0
    if fresh:
        ist[i, I_SINCE] = ts
        ist[i, I_LAST] = ts
    dt = float(ts - ist[i, I_LAST])
    age = ts - ist[i, I_SINCE]
    ist[i, I_LAST] = ts
    pb = cell_price(tick, base, i, bc[0])
    pa = cell_price(tick, base, i, ac[0])
    mid = 0.5 * (pb + pa)
    for j in range(ops.shape[0]):
        op = ops[j, C_OP]
        n = ops[j, C_LEVELS]
        hl = float(ops[j, C_HALF_LIFE])
        fo = ops[j, C_FOFS]
        kb = min(n, nb)
        ka = min(n, na)
        v = np.nan
        if op in (OP_L2_IMBALANCE, OP_L2_WEIGHTED_IMBALANCE, OP_DEPTH_MICROPRICE):
            sb = 0.0
            sa = 0.0
            for k in range(kb):
                sb += bq[k] / (k + 1.0) if op == OP_L2_WEIGHTED_IMBALANCE else bq[k]
            for k in range(ka):
                sa += aq[k] / (k + 1.0) if op == OP_L2_WEIGHTED_IMBALANCE else aq[k]
            if op == OP_DEPTH_MICROPRICE:
                v = (pa * sb + pb * sa) / (sb + sa)
            else:
                v = (sb - sa) / (sb + sa)
        elif op in (OP_SLOPE_BID, OP_SLOPE_ASK):
            k_n = kb if op == OP_SLOPE_BID else ka
            if k_n >= 2:
                cells = bc if op == OP_SLOPE_BID else ac
                sizes = bq if op == OP_SLOPE_BID else aq
                total = 0.0
                for k in range(k_n):
                    total += sizes[k]
                far = cell_price(tick, base, i, cells[k_n - 1])
                v = total / (abs(far - mid) / mid * 1e4)
        elif op in (OP_DEPTH_BID_BPS, OP_DEPTH_ASK_BPS):
            v = _band(qtys, tick, base, horizon, i, 0 if op == OP_DEPTH_BID_BPS else 1, mid,
                      fparams[j])  # fmt: skip
        elif op in (OP_OFI, OP_OFI_MULTI):
            depth = 1 if op == OP_OFI else n
            e = 0.0
            p0 = fo + F_PREV
            for k in range(depth):
                # a level the book does not have (fewer known levels) counts as size 0
                b_p = cell_price(tick, base, i, bc[k]) if k < nb else np.nan
                b_q = bq[k] if k < nb else 0.0
                a_p = cell_price(tick, base, i, ac[k]) if k < na else np.nan
                a_q = aq[k] if k < na else 0.0
                ob_p = fst[i, p0 + 4 * k]
                ob_q = fst[i, p0 + 4 * k + 1]
                oa_p = fst[i, p0 + 4 * k + 2]
                oa_q = fst[i, p0 + 4 * k + 3]
                if not fresh:
                    if b_p >= ob_p:
                        e += b_q
                    if b_p <= ob_p:
                        e -= ob_q
                    if a_p <= oa_p:
                        e -= a_q
                    if a_p >= oa_p:
                        e += oa_q
                fst[i, p0 + 4 * k] = b_p
                fst[i, p0 + 4 * k + 1] = b_q
                fst[i, p0 + 4 * k + 2] = a_p
                fst[i, p0 + 4 * k + 3] = a_q
            fst[i, fo + F_SUM] = _decay(fst[i, fo + F_SUM], dt, hl) + e
            v = fst[i, fo + F_SUM] if age >= hl else np.nan
        else:  # add and cancel rates: the sizes pending from this update's rows
            fst[i, fo + F_SUM] = _decay(fst[i, fo + F_SUM], dt, hl) + fst[i, fo + F_PENDING]
            # a decayed sum of volume over the mean life hl / ln 2 is a rate per ns
            rate = fst[i, fo + F_SUM] * math.log(2.0) / hl * 1e9
            v = rate if age >= hl else np.nan
        fst[i, fo + F_PENDING] = 0.0
        values[i, j] = v


@njit(cache=True, nogil=True, error_model="numpy")
def book_features_run(qtys, tick, base, best, horizon, counts, state, ts, inst, side, price, qty, flags, first, last, prev, ops, fparams, fst, ist, values, out, scratch_c, scratch_q):  # type: ignore[no-untyped-def]  # fmt: skip
    """Apply the rows to the book and write each row's feature vector to ``out[t]``."""
    n_ops = ops.shape[0]
    n_rates = 0
    rates = np.empty(n_ops, np.int64)
    for j in range(n_ops):
        if ops[j, C_OP] >= OP_ADD_RATE_BID:
            rates[n_rates] = j
            n_rates += 1
    for t in range(ts.shape[0]):
        i = inst[t]
        applied, delta, c = apply_row(qtys, tick, base, best, horizon, counts, state, t, ts,
                                      inst, side, price, qty, flags, first, last, prev)  # fmt: skip
        if n_rates and applied and delta != 0.0 and c >= 0:
            s = 0 if side[t] > 0 else 1
            b0 = best[i, 0]
            a0 = best[i, 1]
            if b0 >= 0 and a0 >= 0:
                # the distance in ticks over the mid in ticks: no division by the tick
                mid_ticks = base[i] + 0.5 * (b0 + a0)
                dist = abs(base[i] + c - mid_ticks) / mid_ticks * 1e4
                for r in range(n_rates):
                    j = rates[r]
                    op = ops[j, C_OP]
                    if (
                        (op == OP_ADD_RATE_BID and s == 0 and delta > 0.0)
                        or (op == OP_ADD_RATE_ASK and s == 1 and delta > 0.0)
                        or (op == OP_CANCEL_RATE_BID and s == 0 and delta < 0.0)
                        or (op == OP_CANCEL_RATE_ASK and s == 1 and delta < 0.0)
                    ) and dist <= fparams[j]:
                        fst[i, ops[j, C_FOFS] + F_PENDING] += abs(delta)
        if flags[t] & F_END:
            if state[i, S_STATUS] == OUT_OF_SYNC:
                ist[i, I_SINCE] = 0
            _evaluate(qtys, tick, base, best, horizon, state, ops, fparams, fst, ist, values,
                      i, ts[t], scratch_c, scratch_q)  # fmt: skip
        for j in range(n_ops):
            out[t, j] = values[i, j]


class BookFeatureSet:
    """An ordered set of L2 features over its own ``OrderBook``.

    Raises:
        ConfigError: unknown kind, a parameter out of range, duplicate names.
    """

    def __init__(
        self,
        specs: list[BookFeatureSpec],
        n_instruments: int,
        *,
        ticks: npt.ArrayLike | None = None,
        levels: int = 20,
        grid_cells: int | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError("features", f"duplicate L2 feature names in {names}")
        rows = []
        fparams = []
        fofs = 0
        for s in specs:
            op = L2_KINDS.get(s.kind)
            if op is None:
                raise ConfigError(f"features.{s.name}", f"unknown L2 kind {s.kind!r}")
            if not 1 <= s.levels <= 1000:
                raise ConfigError(f"features.{s.name}", f"levels must be 1..1000, got {s.levels}")
            if not (s.bps > 0.0 and math.isfinite(s.bps)):
                raise ConfigError(f"features.{s.name}", f"bps must be > 0, got {s.bps}")
            if s.half_life_ns <= 0:
                raise ConfigError(f"features.{s.name}", "half_life must be > 0")
            rows.append((op, s.levels, s.half_life_ns, fofs))
            fparams.append(s.bps)
            fofs += _fsize(op, s.levels)
        self.specs = tuple(specs)
        self.names = tuple(names)
        self.ops = np.array(rows, np.int64).reshape(len(specs), N_COLS)
        self.fparams = np.array(fparams, np.float64)
        deepest = max([s.levels for s in specs] + [1])
        kwargs = {} if grid_cells is None else {"grid_cells": grid_cells}
        self.book = OrderBook(n_instruments, max(levels, deepest), ticks=ticks, **kwargs)
        self.fstate = np.zeros((n_instruments, max(fofs, 1)))
        self.istate = np.zeros((n_instruments, N_ISTATE), np.int64)
        self.values = np.full((n_instruments, len(specs)), np.nan)
        self._scratch_c = np.zeros((2, deepest), np.int64)
        self._scratch_q = np.zeros((2, deepest))

    def update(self, batch: DepthBatch) -> npt.NDArray[np.float64]:
        """Apply ``batch`` to the book; return each row's feature vector, [n, k]."""
        out = np.empty((len(batch), len(self.specs)))
        if len(batch) == 0:
            return out
        b = self.book
        book_features_run(
            b.qtys, b.tick, b.base, b.best, b.horizon, b.counts, b.state,
            batch.ts_event, batch.instrument, batch.side, batch.price, batch.qty, batch.flags,
            batch.first_update_id, batch.last_update_id, batch.prev_update_id,
            self.ops, self.fparams, self.fstate, self.istate, self.values, out,
            self._scratch_c, self._scratch_q,
        )  # fmt: skip
        return out

    def current(self, instrument: int) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.values[instrument], strict=True)}


__all__ = ["L2_KINDS", "L2_USES", "BookFeatureSet", "BookFeatureSpec", "book_features_run"]
