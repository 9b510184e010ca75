"""The monitor's statistics as plain numpy functions, shared by training (reference bins,
threshold calibration) and the running monitor, so both count exactly alike.

Undefined figures are ``None`` (too few rows, a constant input), never NaN.
"""

from __future__ import annotations

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
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))
    return float(np.dot(ra, rb) / den) if den > 0 else None


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
