"""Drift: reference bins from training rows, PSI alarm thresholds calibrated on them, and
the running monitor's rolling window of the last M samples.

Why calibrate: PSI of M samples of *unchanged* data against deciles is not near 0. With
M = 500 its mean is about (bins - 1) / M = 0.018 for independent rows, and market
features are autocorrelated (consecutive samples share most of a rolling window), so
their windows wander much further; the conventional 0.1 / 0.25 lines then fire on
unchanged data. The threshold is instead the PSI that windows of the training rows
themselves exceed only rarely.

Calibration windows are runs of M *consecutive* training rows (every start, or an even
stride over at most ``max_windows`` starts), not rows drawn independently: the live
window is the last M consecutive samples, and only consecutive rows carry the
autocorrelation that drives PSI up. One rate covers the whole family of series (each
feature and the score): every series' threshold is its PSI distribution's quantile at a
common level, the level chosen so that at most a share ``false_alarm_rate`` of the
windows exceeds its threshold on *any* series. The rate holds per window: checked at
every sample over a long run of unchanged data, about one alarm per ``M / rate``
samples is to be expected (20 minutes at 500 samples, 1 %, 8 samples a second).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.monitor.stats import (
    CONVENTIONAL_PSI,
    F64,
    I64,
    bucket_index,
    psi,
    reference_bins,
    window_counts,
)


@dataclass(frozen=True)
class DriftCalibration:
    """Per series: the calibrated PSI threshold and the share of windows above each
    conventional threshold; for the family: the share of windows that alarm at the
    calibrated thresholds, and at each conventional one on any series."""

    thresholds: list[float]
    false_alarm_rate: float
    windows: int
    conventional_rates: dict[str, float]
    series_conventional_rates: list[dict[str, float]]


def conventional_key(threshold: float) -> str:
    return f"{threshold:g}"


def calibrate_drift(
    values: F64, bins: int, window: int, false_alarm_rate: float, max_windows: int = 20_000
) -> tuple[list[tuple[F64, F64]], DriftCalibration | None]:
    """Reference bins of every column of ``values`` (rows in time order) and PSI
    thresholds for windows of ``window`` consecutive rows (None: fewer rows than that).

    Raises:
        ValueError: no rows.
    """
    refs = [reference_bins(values[:, j], bins) for j in range(values.shape[1])]
    n = values.shape[0]
    if n < window:
        return refs, None
    total = n - window + 1
    step = -(-total // max_windows)
    starts = np.arange(0, total, step, dtype=np.int64)
    psis = [
        psi(
            fr,
            window_counts(bucket_index(edges, values[:, j]), fr.shape[0], window, starts) / window,
        )
        for j, (edges, fr) in enumerate(refs)
    ]
    thresholds, rate = family_thresholds(psis, false_alarm_rate)
    stacked = np.vstack(psis)
    conventional = {
        conventional_key(c): float(np.mean(np.any(stacked > c, axis=0))) for c in CONVENTIONAL_PSI
    }
    per_series = [
        {conventional_key(c): float(np.mean(p > c)) for c in CONVENTIONAL_PSI} for p in psis
    ]
    return refs, DriftCalibration(thresholds, rate, int(starts.shape[0]), conventional, per_series)


def family_thresholds(psis: list[F64], false_alarm_rate: float) -> tuple[list[float], float]:
    """Thresholds ``T_j`` = the k-th smallest window PSI of series j, for the smallest
    common k at which at most ``false_alarm_rate`` of the windows have ``PSI_j > T_j`` on
    any series; returns them and that share."""
    ordered = [np.sort(p) for p in psis]
    # below[j][w]: windows whose PSI on series j is strictly below window w's; window w
    # alarms at level k on series j exactly when below[j][w] > k
    below = np.max(
        np.vstack([np.searchsorted(o, p, side="left") for o, p in zip(ordered, psis, strict=True)]),
        axis=0,
    )
    w = below.shape[0]
    allowed = int(np.floor(false_alarm_rate * w))
    k = int(np.sort(below)[w - 1 - allowed])
    thresholds = [float(o[k]) for o in ordered]
    return thresholds, float(np.mean(below > k))


class DriftWindow:
    """Bin counts of the last ``window`` samples of several series, and their PSI
    against reference shares after every sample.

    Series are held side by side, padded to the most bins: a padded bin has no reference
    share and no count, so it adds nothing to PSI.
    """

    def __init__(self, references: list[tuple[F64, F64]], window: int) -> None:
        s = len(references)
        k = max(f.shape[0] for _, f in references)
        self.window = window
        self._edges = np.full((s, k - 1), np.inf)
        self._reference = np.zeros((s, k))
        for j, (edges, fractions) in enumerate(references):
            self._edges[j, : edges.shape[0]] = edges
            self._reference[j, : fractions.shape[0]] = fractions
        self._ring = np.zeros((window, s), np.int64)  # bins of the last samples, oldest first
        self._counts = np.zeros((s, k))
        self._seen = 0

    @property
    def seen(self) -> int:
        return self._seen

    def bins(self, values: F64) -> I64:
        """Each value's bin, ``searchsorted(edges, v, side="right")`` per series."""
        return np.asarray(np.sum(values[:, :, None] >= self._edges[None, :, :], axis=2), np.int64)

    def update(self, values: F64) -> F64:
        """Add samples (rows, in order, one column per series); returns the PSI of each
        series after each sample, NaN while fewer than ``window`` samples were seen."""
        m, s = values.shape
        w, k = self.window, self._reference.shape[1]
        out = np.full((m, s), np.nan)
        if m == 0:
            return out
        b = self.bins(values)
        kept = min(self._seen, w)
        history = np.concatenate((self._ring[w - kept :], b))
        # row r adds b[r] and drops history[kept - w + r], once the window is full
        delta = np.zeros((m, s, k))
        rows, cols = np.arange(m)[:, None], np.arange(s)[None, :]
        delta[rows, cols, b] += 1.0
        leaving = np.arange(m) + kept - w
        valid = np.flatnonzero(leaving >= 0)
        delta[valid[:, None], cols, history[leaving[valid]]] -= 1.0
        counts = self._counts + np.cumsum(delta, axis=0)
        full = self._seen + np.arange(1, m + 1) >= w
        if np.any(full):
            out[full] = psi(self._reference, counts[full] / w)
        self._counts = counts[-1]
        tail = history[-w:]
        self._ring[w - tail.shape[0] :] = tail
        self._seen += m
        return out
