"""Confidence intervals and p-values of out-of-sample figures whose labels overlap.

A 2 s label sampled every 250 ms shares its price move with the next seven rows (more
with several instruments): the rows are far from independent, and a textbook standard
error or an i.i.d. permutation test overstates what the rows know about eight-fold or
more. Every figure here is resampled in blocks that cover that overlap.

The rows. The out-of-sample rows are each fold's test rows in time order, the folds one
after the other. Every resampling stays inside a fold: a fold's rows belong to its own
model.

Block length ``L`` (``block_rows``): the larger of

- the label overlap: the most rows whose times lie within one row's label span
  ``[t, label end]`` (counted over every instrument's rows, since they are interleaved),
  so rows whose labels share a price move fall into one block; and
- ``n ** (1/3)`` for ``n`` rows in all, the usual order of a block length for a variance
  (Hall, Horowitz & Jing 1995), which also covers some of the scores' own persistence;

at most a fold's rows.

Confidence intervals (95 %, percentile): circular block bootstrap (Politis & Romano
1992) within each fold. A replicate draws ``ceil(m / L)`` blocks of ``L`` consecutive
rows of a fold of ``m`` rows, each from a uniform random start, wrapping at the fold's
end, the last block cut so the replicate has ``m`` rows; 999 replicates. Accuracy,
precision, recall and the edge per trade are ratios of row sums and are recomputed
exactly on every replicate. AUC and IC are rank statistics; re-ranking each replicate
costs a sort, so their replicates are those of their first-order (influence-function)
expansion: ``theta* = theta + sum(w psi) / sum(w c)`` with DeLong's placements for the
AUC and the Spearman correlation's influence function for the IC (the linear bootstrap:
equal to the full bootstrap to first order; a test checks the two spreads agree).
Assumes the rows of a fold are stationary and their dependence dies out within a block;
where the scores remember longer than a block the intervals come out a little narrow
(measured: 91-94 % of 95 % intervals covered a true IC of 0 for scores with a memory of
about ten rows against 8-fold overlapping labels).

p-values against chance (one-sided: is the figure higher than a model without skill
would score on these rows?): circular shift. Within each fold the forward returns (and
the labels they make) are rotated against the scores by a lag drawn uniformly from
``[L, m - L]`` (a shorter lag would pair a score with part of its own label's move),
independently per fold, 999 times. A rotation keeps each series' own autocorrelation
and only breaks their alignment. ``p = (1 + #{T* >= T}) / (1 + 999)``; ``chance`` is
the mean of the ``T*``. Assumes that without skill a fold's scores and returns are
independent stationary series, so that every lag gives the figure the same
distribution (up to the one seam a rotation makes). A fold of fewer than ``2 L`` rows
has no admissible lag: its own p-value is undefined, and in the figure over all folds
it keeps its alignment (which can only raise the p-value). With several instruments
interleaved, a rotated return may be another instrument's: without skill it is just as
independent of the score. The shifted figures are exact: IC and every count by an FFT
cross-correlation over all lags at once, the AUC by one pass over the rows in score
order per replicate. On few independent labels the rotated figures' spread runs a few
per cent narrow (the rotations see sample autocorrelations, which persistence biases
low): measured 5.7-6.7 % false significance at 5 % on persistent noise, hence ``ALPHA``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt

from engine.signals.manifest import Estimate
from replay.research.training.metrics import (
    Ranking,
    classification_metrics,
    rank_correlation,
    ranking,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

REPLICATES = 999
# A p-value below ALPHA is "significant". 1 %, not 5 %: a model is one of many a
# researcher tries (features, horizons, parameters), and on a few hundred independent
# labels the shift test runs slightly above its level (measured on persistent scores and
# 8-fold overlapping noise: 5.7-6.7 % at 5 %, a small-sample bias of the rotated
# figures' spread). Harvey, Liu & Zhu (2016) ask t > 3 of new factors for the same reasons.
ALPHA = 0.01
CONFIDENCE = 0.95  # of the intervals
METRICS = ("accuracy", "precision", "recall", "auc", "ic")

METHOD = (
    "95 % intervals: circular block bootstrap within each fold (blocks of block_rows rows, "
    "at least the label overlap and n^(1/3)); accuracy, precision, recall and the edge "
    "per trade recomputed on every replicate, AUC and IC by their first-order "
    "(influence-function) expansion. p-values against chance: one-sided, the forward "
    "returns rotated against the scores within each fold by a random lag of at least "
    "block_rows rows (circular shift); chance is the mean of the rotated figures. "
    "Assumes stationary rows within a fold, dependence shorter than a block, and, "
    "without skill, scores independent of returns. Significantly better than chance: "
    "AUC and IC each with p < 0.01 and a 95 % interval above chance."
)


def label_overlap_rows(ts: I64, label_end: I64, bounds: I64) -> int:
    """The most rows of one fold whose times lie within one row's label span
    ``[t, label end]`` (the row itself included): rows in time order, ``bounds`` the
    folds' first rows and the end."""
    most = 1
    for a, e in itertools.pairwise(bounds):
        t = ts[a:e]
        if t.shape[0] == 0:
            continue
        last = np.searchsorted(t, label_end[a:e], side="right")
        most = max(most, int((last - np.arange(t.shape[0])).max()))
    return most


def block_rows(overlap: int, rows: int) -> int:
    """The block length: the label overlap, and at least ``rows ** (1/3)``."""
    return max(1, overlap, math.ceil(rows ** (1 / 3)))


def _sums_above(r: Ranking, v: F64) -> F64:
    """Per row i: the sum of ``v`` over rows ranked above it, plus half of it over the
    rows tied with it (the row itself included)."""
    n = r.ranks.shape[0]
    if n == 0:
        return np.zeros(0)
    group = np.add.reduceat(v[r.order], r.first)
    above = np.cumsum(group[::-1])[::-1] - group
    out = np.empty(n)
    out[r.order] = np.repeat(above + 0.5 * group, r.size)
    return out


def spearman_influence(x: Ranking, y: Ranking) -> F64:
    """The Spearman correlation's influence value of each row: with ``U``, ``V`` the rows'
    mid-ranks over n in (0, 1), ``psi_i = 12 (U_i V_i + a_i + b_i - 3 mean(U V))`` where
    ``a_i = mean_j H(x_j - x_i) V_j`` and ``b_i = mean_j H(y_j - y_i) U_j`` (``H``: 1 above,
    1/2 at a tie). Its mean is 0; the IC moves by about ``mean(psi)`` when rows are
    re-weighted."""
    n = x.ranks.shape[0]
    if n == 0:
        return np.zeros(0)
    u = (x.ranks + 0.5) / n
    v = (y.ranks + 0.5) / n
    a = _sums_above(x, v) / n
    b = _sums_above(y, u) / n
    psi = 12.0 * (u * v + a + b - 3.0 * float(np.mean(u * v)))
    return psi - float(psi.mean())  # exactly centred (it is, to rounding)


def auc_influence(
    score: Ranking, positive: npt.NDArray[np.bool_], labeled: npt.NDArray[np.bool_]
) -> F64:
    """DeLong's placements as influence values: for a positive ``(n_lab / P) (V10 - AUC)``,
    for a negative ``(n_lab / N) (V01 - AUC)``, 0 for an unlabelled row. ``V10``: the share
    of negatives scored below the row (ties half); ``V01``: of positives above it."""
    psi = np.zeros(score.ranks.shape[0])
    pos = labeled & positive
    neg = labeled & ~positive
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return psi
    # the share of negatives below (ties half) is 1 - the share above (ties half)
    v10 = 1.0 - _sums_above(score, neg.astype(np.float64)) / n_neg
    v01 = _sums_above(score, pos.astype(np.float64)) / n_pos
    theta = float(v10[pos].mean())
    n_lab = n_pos + n_neg
    psi[pos] = n_lab / n_pos * (v10[pos] - theta)
    psi[neg] = n_lab / n_neg * (v01[neg] - theta)
    return psi


@dataclass(frozen=True)
class Resampling:
    """The draws every figure of one training run shares (so that a difference of two
    figures is resampled pairwise): each fold's bootstrap blocks and the shift lags.

    ``bounds``: the folds' first rows and the end; ``block``: ``L``; ``starts[f]``
    ``(replicates, blocks)``: fold f's block starts (a block that runs past the fold's
    end wraps to its start), ``lengths[f]`` their rows (the last one cut so a replicate
    has the fold's rows); ``lags`` ``(replicates, folds)``: 0 for a fold with no
    admissible lag (``shiftable`` false).
    """

    bounds: I64
    block: int
    starts: tuple[I64, ...]
    lengths: tuple[I64, ...]
    lags: I64
    shiftable: npt.NDArray[np.bool_]

    @property
    def replicates(self) -> int:
        return int(self.lags.shape[0])

    @property
    def folds(self) -> int:
        return int(self.bounds.shape[0] - 1)

    def fold_slice(self, fold: int) -> slice:
        return slice(int(self.bounds[fold]), int(self.bounds[fold + 1]))

    def sums(self, *series: F64) -> list[F64]:
        """For each series, ``(replicates, folds)``: each bootstrap replicate's sum of it
        per fold."""
        stacked = np.column_stack(series)
        out = np.zeros((len(series), self.replicates, self.folds))
        for f in range(self.folds):
            rows = stacked[self.fold_slice(f)]
            if rows.shape[0] == 0:
                continue
            prefix = np.zeros((rows.shape[0] + 1, rows.shape[1]))
            np.cumsum(rows, axis=0, out=prefix[1:])
            out[:, :, f] = _block_sums(prefix, self.starts[f], self.lengths[f]).T
        return list(out)

    def cross(self, x: F64, y: F64) -> F64:
        """``(replicates, folds)``: per fold, ``sum_i x_i y_((i + lag) mod m)`` over its rows
        at each replicate's lag (an FFT cross-correlation over every lag at once)."""
        out = np.zeros((self.replicates, self.folds))
        for f in range(self.folds):
            sl = self.fold_slice(f)
            m = sl.stop - sl.start
            if m == 0:
                continue
            every_lag = np.fft.irfft(np.conj(np.fft.rfft(x[sl])) * np.fft.rfft(y[sl]), m)
            out[:, f] = every_lag[self.lags[:, f]]
        return out


@nb.njit(cache=True)
def _block_sums(prefix, starts, lengths):  # type: ignore[no-untyped-def]
    # prefix: (m + 1, series) running sums of one fold's rows; a block past the end wraps
    m = prefix.shape[0] - 1
    replicates, blocks = starts.shape
    series = prefix.shape[1]
    out = np.zeros((replicates, series))
    for b in range(replicates):
        for q in range(blocks):
            s = starts[b, q]
            e = s + lengths[q]
            if e <= m:
                for c in range(series):
                    out[b, c] += prefix[e, c] - prefix[s, c]
            else:
                for c in range(series):
                    out[b, c] += prefix[m, c] - prefix[s, c] + prefix[e - m, c]
    return out


def resampling(bounds: I64, block: int, seed: int, replicates: int = REPLICATES) -> Resampling:
    """Draw the bootstrap blocks and the shift lags of folds ``bounds``, seeded: the same
    training run gives the same figures."""
    rng = np.random.default_rng([seed, 21])
    starts, lengths = [], []
    folds = bounds.shape[0] - 1
    lags = np.zeros((replicates, folds), np.int64)
    shiftable = np.zeros(folds, np.bool_)
    for f in range(folds):
        m = int(bounds[f + 1] - bounds[f])
        size = max(1, min(block, m))
        count = max(1, -(-m // size))
        length = np.full(count, size, np.int64)
        length[-1] = max(0, m - size * (count - 1))
        starts.append(rng.integers(0, max(m, 1), (replicates, count)))
        lengths.append(length)
        if m >= 2 * block:
            shiftable[f] = True
            lags[:, f] = rng.integers(block, m - block + 1, replicates)
    return Resampling(bounds, block, tuple(starts), tuple(lengths), lags, shiftable)


# replicates walked together: the loop over them is short and branch-free, and the rows'
# order and folds are read once per chunk, not once per replicate (8x faster measured)
_CHUNK = 16


@nb.njit(cache=True)
def _shifted_auc(row, fold_of, group_end, start, size, code, lags):  # type: ignore[no-untyped-def]
    # the rows in score order (``row``: each one's place in time, ``fold_of`` its fold),
    # walked one tie group at a time; ``code`` in time order: 0 unlabelled, 1 negative,
    # 2 positive (so c >> 1 is "positive", c & 1 "negative"). Column f: fold f's AUC, the
    # last: all folds'. A positive gains the negatives below it; a positive and a
    # negative tied count half, added at their group's end.
    replicates, folds = lags.shape
    out = np.full((replicates, folds + 1), np.nan)
    end = start + size
    for b0 in range(0, replicates, _CHUNK):
        chunk = min(_CHUNK, replicates - b0)
        lag = np.zeros((folds, _CHUNK), np.int64)
        for f in range(folds):
            for r in range(chunk):
                lag[f, r] = lags[b0 + r, f]
        below = np.zeros((folds + 1, _CHUNK))
        u = np.zeros((folds + 1, _CHUNK))
        npos = np.zeros((folds + 1, _CHUNK))
        gp = np.zeros((folds + 1, _CHUNK))
        gn = np.zeros((folds + 1, _CHUNK))
        t = 0
        for g in range(group_end.shape[0]):
            if group_end[g] - t == 1:  # one row: no tie to hold back
                f = fold_of[t]
                for r in range(_CHUNK):
                    j = row[t] + lag[f, r]  # a lag is below the fold's size: one wrap
                    if j >= end[f]:
                        j -= size[f]
                    c = code[j]
                    isp = np.float64(c >> 1)
                    isn = np.float64(c & 1)
                    u[f, r] += isp * below[f, r]
                    u[folds, r] += isp * below[folds, r]
                    below[f, r] += isn
                    below[folds, r] += isn
                    npos[f, r] += isp
                    npos[folds, r] += isp
                t += 1
                continue
            gp[:, :] = 0.0
            gn[:, :] = 0.0
            while t < group_end[g]:
                f = fold_of[t]
                for r in range(_CHUNK):
                    j = row[t] + lag[f, r]
                    if j >= end[f]:
                        j -= size[f]
                    c = code[j]
                    gp[f, r] += np.float64(c >> 1)
                    gn[f, r] += np.float64(c & 1)
                t += 1
            for f in range(folds):
                for r in range(_CHUNK):
                    gp[folds, r] += gp[f, r]
                    gn[folds, r] += gn[f, r]
            for f in range(folds + 1):
                for r in range(_CHUNK):
                    u[f, r] += gp[f, r] * (below[f, r] + 0.5 * gn[f, r])
                    below[f, r] += gn[f, r]
                    npos[f, r] += gp[f, r]
        for r in range(chunk):
            for f in range(folds + 1):
                if npos[f, r] > 0 and below[f, r] > 0:
                    out[b0 + r, f] = u[f, r] / (npos[f, r] * below[f, r])
    return out


def shifted_auc(
    score: F64, code: npt.NDArray[np.int8], rs: Resampling, ranked: Ranking | None = None
) -> F64:
    """``(replicates, folds + 1)``: each fold's AUC (and, last, all folds') with the labels
    rotated by each replicate's lags; ``code`` per row: 0 unlabelled, 1 negative, 2
    positive; ``ranked``: the scores' ranking, if already made."""
    r = ranking(score) if ranked is None else ranked
    group_end = (r.first + r.size).astype(np.int64)
    fold_of = np.repeat(np.arange(rs.folds), np.diff(rs.bounds))[r.order].astype(np.int64)
    start = rs.bounds[:-1].astype(np.int64)
    size = np.maximum(np.diff(rs.bounds), 1).astype(np.int64)
    args = (r.order.astype(np.int64), fold_of, group_end, start, size, code, rs.lags)
    return np.asarray(_shifted_auc(*args))


def estimate(value: float | None, replicates: F64 | None, null: F64 | None) -> Estimate:
    """An ``Estimate`` of a figure from its bootstrap replicates (the interval:
    percentiles of the defined ones, none if fewer than half are defined) and its
    shifted figures (``chance``: their mean; ``p``: one-sided)."""
    if value is None or value != value:
        return Estimate()
    low = high = chance = p = None
    if replicates is not None:
        ok = replicates[np.isfinite(replicates)]
        if ok.shape[0] and ok.shape[0] * 2 >= replicates.shape[0]:
            tail = (1.0 - CONFIDENCE) / 2.0
            low, high = (float(q) for q in np.quantile(ok, [tail, 1.0 - tail]))
    if null is not None:
        ok = null[np.isfinite(null)]
        if ok.shape[0]:
            chance = float(ok.mean())
            # a tie counts against the model; the tolerance absorbs the FFT's rounding
            at_least = int((ok >= value - 1e-9 * max(1.0, abs(value))).sum())
            p = (1 + at_least) / (1 + ok.shape[0])
    return Estimate(value=float(value), low=low, high=high, chance=chance, p_value=p)


def _ratio(num: F64, den: F64 | float) -> F64:
    den_a = np.broadcast_to(np.asarray(den, np.float64), np.shape(num))
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den_a, out=out, where=den_a > 0)
    return out


class _Scope:
    """All folds (``fold`` None) or one: its rows, and how it reads a ``(replicates,
    folds)`` matrix of per-fold sums (all folds: their sum; one fold: its column)."""

    def __init__(self, rs: Resampling, fold: int | None) -> None:
        self.fold = fold
        self.rows = slice(0, int(rs.bounds[-1])) if fold is None else rs.fold_slice(fold)
        self.shiftable = bool(rs.shiftable.any() if fold is None else rs.shiftable[fold])

    def pick(self, per_fold: F64) -> F64:
        return per_fold.sum(axis=1) if self.fold is None else per_fold[:, self.fold]


@dataclass(frozen=True)
class Rankings:
    """A series ranked over all folds (``over_all``) and within each fold (``folds``,
    empty unless asked for): each sort made once, shared by every figure."""

    over_all: Ranking
    folds: list[Ranking]


def rankings(x: F64, rs: Resampling, per_fold: bool = True) -> Rankings:
    folds = [ranking(x[rs.fold_slice(f)]) for f in range(rs.folds)] if per_fold else []
    return Rankings(ranking(x), folds)


def _centred(r: F64) -> F64:
    return r - r.mean() if r.shape[0] else r


@dataclass(frozen=True)
class SeriesFigures:
    """One scored series' figures over all folds and per fold, by metric name, and its
    IC's influence values over all folds (for a paired difference with another series)."""

    overall: dict[str, Estimate]
    folds: list[dict[str, Estimate]]
    ic_influence: F64


class _Ic:
    """The IC of one series: its values, influence values, bootstrap sums and shifted
    cross sums, over all folds and (``per_fold``) per fold."""

    def __init__(self, rs: Resampling, score: Rankings, fwd: Rankings, per_fold: bool) -> None:
        n = score.over_all.ranks.shape[0]
        self.n = n
        self.value_all = rank_correlation(score.over_all.ranks, fwd.over_all.ranks)
        self.psi = spearman_influence(score.over_all, fwd.over_all)
        rx, ry = _centred(score.over_all.ranks), _centred(fwd.over_all.ranks)
        self.cross_all = rs.cross(rx, ry)
        self.den_all = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
        fold_psi = np.zeros(n)
        self.value_fold: list[float | None] = []
        self.den_fold: list[float] = []
        if per_fold:
            fx, fy = np.zeros(n), np.zeros(n)
            for f in range(rs.folds):
                sl = rs.fold_slice(f)
                sx, sy = score.folds[f], fwd.folds[f]
                self.value_fold.append(rank_correlation(sx.ranks, sy.ranks))
                fold_psi[sl] = spearman_influence(sx, sy)
                fx[sl], fy[sl] = _centred(sx.ranks), _centred(sy.ranks)
                self.den_fold.append(float(np.sqrt((fx[sl] ** 2).sum() * (fy[sl] ** 2).sum())))
            self.cross_fold = rs.cross(fx, fy)
        self.boot_all, self.boot_fold = rs.sums(self.psi, fold_psi)

    def estimate(self, scope: _Scope) -> Estimate:
        if scope.fold is None:
            value, boot, cross, den = self.value_all, self.boot_all, self.cross_all, self.den_all
            rows = self.n
        else:
            value, boot = self.value_fold[scope.fold], self.boot_fold
            cross, den = self.cross_fold, self.den_fold[scope.fold]
            rows = scope.rows.stop - scope.rows.start
        if value is None:
            return Estimate()
        replicates = value + scope.pick(boot) / rows
        null = scope.pick(cross) / den if scope.shiftable and den > 0 else None
        return estimate(value, replicates, null)


def ic_figures(
    score: F64, fwd: F64, rs: Resampling, returns: Rankings | None = None
) -> tuple[Estimate, F64]:
    """The IC over all folds as an ``Estimate``, and its influence values; ``returns``:
    the forward returns' rankings, if already made."""
    fr = rankings(fwd, rs, per_fold=False) if returns is None else returns
    ic = _Ic(rs, rankings(score, rs, per_fold=False), fr, per_fold=False)
    return ic.estimate(_Scope(rs, None)), ic.psi


def series_figures(
    score: F64,
    fwd: F64,
    dead_zone: float,
    threshold: float,
    rs: Resampling,
    per_fold: bool = True,
    returns: Rankings | None = None,
) -> SeriesFigures:
    """Every metric of ``classification_metrics`` with its interval, chance level and
    p-value, over all folds and (``per_fold``) per fold; ``returns``: the forward
    returns' rankings (per fold too, for ``per_fold``), if already made."""
    sr = rankings(score, rs, per_fold)
    fr = rankings(fwd, rs, per_fold) if returns is None else returns
    labeled = np.abs(fwd) > dead_zone
    positive = labeled & (fwd > 0)
    negative = labeled & ~positive
    pred = score >= threshold
    lab, pos, neg, up = (a.astype(np.float64) for a in (labeled, positive, negative, pred))
    tp = up * pos
    auc_psi = auc_influence(sr.over_all, positive, labeled)
    auc_psi_folds = np.zeros(score.shape[0])
    for f in range(rs.folds if per_fold else 0):
        sl = rs.fold_slice(f)
        auc_psi_folds[sl] = auc_influence(sr.folds[f], positive[sl], labeled[sl])
    names = ("labeled", "positive", "tp", "correct", "predicted")
    sums = rs.sums(lab, pos, tp, tp + (1.0 - up) * neg, up * lab, auc_psi, auc_psi_folds)
    boot = dict(zip(names, sums[:5], strict=True))
    tp_null = rs.cross(up, pos)
    tn_null = rs.cross(1.0 - up, neg)
    predicted_null = rs.cross(up, lab)
    code = np.where(positive, 2, np.where(negative, 1, 0)).astype(np.int8)
    auc_null = shifted_auc(score, code, rs, sr.over_all)
    ic = _Ic(rs, sr, fr, per_fold)

    def figures(scope: _Scope) -> dict[str, Estimate]:
        sl = scope.rows
        values = classification_metrics(score[sl], fwd[sl], dead_zone, threshold)
        b = {k: scope.pick(v) for k, v in boot.items()}
        n_lab, n_pos = float(lab[sl].sum()), float(pos[sl].sum())
        shift = scope.shiftable
        tp_s = scope.pick(tp_null)
        auc = _float(values["auc"])
        psi_sums = sums[5] if scope.fold is None else sums[6]
        auc_boot = (np.nan if auc is None else auc) + _ratio(scope.pick(psi_sums), b["labeled"])
        auc_col = -1 if scope.fold is None else scope.fold
        return {
            "accuracy": estimate(
                _float(values["accuracy"]),
                _ratio(b["correct"], b["labeled"]),
                _ratio(tp_s + scope.pick(tn_null), n_lab) if shift else None,
            ),
            "precision": estimate(
                _float(values["precision"]),
                _ratio(b["tp"], b["predicted"]),
                _ratio(tp_s, scope.pick(predicted_null)) if shift else None,
            ),
            "recall": estimate(
                _float(values["recall"]),
                _ratio(b["tp"], b["positive"]),
                _ratio(tp_s, n_pos) if shift else None,
            ),
            "auc": estimate(auc, auc_boot, auc_null[:, auc_col] if shift else None),
            "ic": ic.estimate(scope),
        }

    overall = figures(_Scope(rs, None))
    folds = [figures(_Scope(rs, f)) for f in range(rs.folds)] if per_fold else []
    return SeriesFigures(overall, folds, ic.psi)


def _float(v: float | None) -> float | None:
    return None if v is None else float(v)


def difference(value: float, psi_a: F64, psi_b: F64, rs: Resampling) -> Estimate:
    """A difference of two ICs over all folds (``value``: a minus b), resampled pairwise
    (the same blocks for both): its interval and the one-sided bootstrap p-value of a
    difference at or below 0, ``(1 + #{d* <= 0}) / (1 + replicates)``."""
    boot = value + rs.sums(psi_a - psi_b)[0].sum(axis=1) / max(psi_a.shape[0], 1)
    e = estimate(value, boot, None)
    p = (1 + int((boot <= 0.0).sum())) / (1 + boot.shape[0])
    return Estimate(value=e.value, low=e.low, high=e.high, p_value=p)
