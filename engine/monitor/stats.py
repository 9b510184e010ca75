"""The monitor's statistics as plain numpy functions, shared by training (reference bins,
threshold calibration) and the running monitor, so both count exactly alike.

Undefined figures are ``None`` (too few rows, a constant input), never NaN.
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PSI_FLOOR = 1e-4
"""Bin shares below this count as this in PSI: an empty bin would make PSI infinite, and
1e-4 (one row in 10,000) keeps one empty bin of a decile reference at about 0.69, a
clear drift, without letting it dominate every other bin."""

CONVENTIONAL_PSI = (0.1, 0.25)
"""The rule-of-thumb PSI thresholds ("moderate", "significant" shift), reported beside
the calibrated ones; they ignore the window size, so small windows of unchanged data
exceed them often."""


def average_ranks(x: F64) -> F64:
    """0-based ranks, ties sharing the average of their positions."""
    n = x.shape[0]
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.empty(n, np.bool_)
    if n:
        new_group[0] = True
        new_group[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)
    group = np.cumsum(new_group) - 1
    ranks = np.empty(n)
    ranks[order] = ((starts + ends - 1) / 2.0)[group]
    return ranks


def spearman(a: F64, b: F64) -> float | None:
    """Spearman rank correlation (Pearson correlation of average ranks); None for fewer
    than 3 rows or a constant input."""
    if a.shape[0] < 3:
        return None
    rho = _spearman(np.ascontiguousarray(a, np.float64), np.ascontiguousarray(b, np.float64))
    return None if np.isnan(rho) else float(rho)


@numba.njit(cache=True)
def _average_ranks_into(x: F64, ranks: F64) -> None:
    order = np.argsort(x, kind="mergesort")
    n = x.shape[0]
    i = 0
    while i < n:
        j = i
        while j + 1 < n and x[order[j + 1]] == x[order[i]]:
            j += 1
        r = (i + j) / 2.0
        for k in range(i, j + 1):
            ranks[order[k]] = r
        i = j + 1


@numba.njit(cache=True)
def _spearman(a: F64, b: F64) -> float:
    # the monitor's per-check cost was the two argsorts, the rank arrays and numpy's
    # temporaries (~0.4 ms of 0.9 ms at N = 1000); one compiled pass over the window.
    # Centered average ranks are multiples of 0.5, so every product and sum below is
    # exact in float64 below ~1e5 rows: the figure is bit for bit numpy's (and to 1e-12
    # scipy's) whatever the summation order
    n = a.shape[0]
    ra = np.empty(n)
    rb = np.empty(n)
    _average_ranks_into(a, ra)
    _average_ranks_into(b, rb)
    mean = (n - 1) / 2.0  # the mean of average ranks, ties or not
    sab = 0.0
    saa = 0.0
    sbb = 0.0
    for k in range(n):
        da = ra[k] - mean
        db = rb[k] - mean
        sab += da * db
        saa += da * da
        sbb += db * db
    den = np.sqrt(saa * sbb)
    return sab / den if den > 0 else np.nan


def hit_ratio(score: F64, realized: F64, threshold: float) -> float | None:
    """Share of rows where the predicted direction (``score >= threshold`` is up) matches
    the realized one (``realized > 0`` is up); the caller passes rows outside the dead
    zone, as training's out-of-sample accuracy does. None without rows."""
    if score.shape[0] == 0:
        return None
    return float(np.mean((score >= threshold) == (realized > 0)))


def brier(probability: F64, outcome: F64) -> float | None:
    """Mean squared difference of predicted probability and 0/1 outcome."""
    if probability.shape[0] == 0:
        return None
    return float(np.mean((probability - outcome) ** 2))


def bucket_index(edges: F64, values: F64) -> I64:
    """Bin of each value: ``searchsorted(edges, v, side="right")`` (bin k holds
    ``edges[k-1] <= v < edges[k]``)."""
    return np.searchsorted(edges, values, side="right").astype(np.int64)


def calibration_table(score: F64, realized: F64, edges: F64) -> tuple[I64, F64, F64]:
    """Per score bucket: rows, mean score, mean realized value (a frequency for 0/1
    outcomes); empty buckets have NaN means."""
    k = edges.shape[0] + 1
    b = bucket_index(edges, score)
    count = np.bincount(b, minlength=k).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(b, weights=score, minlength=k) / count
        mean_real = np.bincount(b, weights=realized, minlength=k) / count
    return count, mean_score, mean_real


def expected_calibration_error(probability: F64, outcome: F64, edges: F64) -> float | None:
    """ECE: sum over score buckets of (rows in bucket / rows) x |mean predicted
    probability - realized frequency|."""
    n = probability.shape[0]
    if n == 0:
        return None
    count, mean_p, freq = calibration_table(probability, outcome, edges)
    used = count > 0
    return float(np.sum(count[used] / n * np.abs(mean_p[used] - freq[used])))


def reference_bins(values: F64, bins: int) -> tuple[F64, F64]:
    """Interior quantile edges (distinct) and each bin's share of ``values``.

    Raises:
        ValueError: no values.
    """
    if values.shape[0] == 0:
        raise ValueError("reference bins of no values")
    qs = np.quantile(values, np.arange(1, bins) / bins)
    edges = np.unique(qs)
    counts = np.bincount(bucket_index(edges, values), minlength=edges.shape[0] + 1)
    return edges, counts / values.shape[0]


Binning = Literal["quantiles", "values"]


def binning_of(values: F64, bins: int) -> Binning:
    """How ``drift_bins`` bins these values: by value when they take at most ``bins``."""
    return "values" if np.unique(values).shape[0] <= bins else "quantiles"


def drift_bins(values: F64, bins: int) -> tuple[F64, F64, Binning]:
    """The drift reference of one series: where it takes at most ``bins`` distinct values
    (a spread in ticks, a count), one bin per value, edges half way between neighbouring
    values (``"values"``): every value keeps its own share, and a value never seen falls
    in the bin of the nearer one. Otherwise ``reference_bins``' quantile edges
    (``"quantiles"``); values repeated there (a mass at one value) are never split,
    since a value on an edge belongs to the bin above it.

    Raises:
        ValueError: no values.
    """
    if values.shape[0] == 0:
        raise ValueError("reference bins of no values")
    distinct = np.unique(values)
    if binning_of(distinct, bins) == "quantiles":
        edges, fractions = reference_bins(values, bins)
        return edges, fractions, "quantiles"
    # unique: the midpoint of two values one ulp apart is one of them
    edges = np.unique(0.5 * (distinct[1:] + distinct[:-1]))
    counts = np.bincount(bucket_index(edges, values), minlength=edges.shape[0] + 1)
    return edges, counts / values.shape[0], "values"


def psi(reference: F64, window: F64) -> F64:
    """Population stability index of window bin shares against reference shares:
    ``sum((w - r) * ln(w / r))`` with both floored at ``PSI_FLOOR``; the last axis is
    the bins, so a matrix of windows gives one PSI per row."""
    r = np.maximum(reference, PSI_FLOOR)
    w = np.maximum(window, PSI_FLOOR)
    return np.asarray(np.sum((w - r) * np.log(w / r), axis=-1), np.float64)


def window_counts(bins: I64, n_bins: int, window: int, starts: I64) -> F64:
    """Bin counts of ``bins[s:s + window]`` for every ``s`` in ``starts`` (prefix sums)."""
    out = np.empty((starts.shape[0], n_bins))
    for k in range(n_bins):
        cum = np.concatenate(([0], np.cumsum(bins == k)))
        out[:, k] = cum[starts + window] - cum[starts]
    return out
