"""Drift: reference bins from training rows, PSI alarm thresholds calibrated on held-out
windows of them, and the running monitor's rolling window of the last M samples.

Why calibrate: PSI of M samples of *unchanged* data against deciles is not near 0. With
M = 500 its mean is about (bins - 1) / M = 0.018 for independent rows, and market
features are autocorrelated (consecutive samples share most of a rolling window), so
their windows wander much further; the conventional 0.1 / 0.25 lines then fire on
unchanged data. The threshold is instead the PSI that held-out windows of the training
rows exceed only rarely.

Held out, in time blocks: a live window was not part of the rows its reference bins were
counted on, so a calibration window must not be either (bins that contain a window fit
it, biasing its PSI low). The rows (in time order) are cut into ``blocks`` contiguous
blocks; each block's windows are scored against bins counted on the *other* blocks' rows
(cross-fitting: every row serves as held-out data once and the bins use 4/5 of the rows,
close to the deployed bins on all of them). A window never spans two blocks.

Windows are runs of M *consecutive* rows (every start within a block, or an even stride
over at most ``max_windows``), not rows drawn independently: the live window is the last
M consecutive samples, and only consecutive rows carry the autocorrelation that drives
PSI up (a moving-block scheme with blocks of the window's length, not an i.i.d.
bootstrap, which would understate the spread). One rate covers the whole family of
series (each feature and the score): every series' threshold is its held-out PSI
distribution's quantile at a common level, chosen so that a share of the windows at most
``allowed`` exceeds its threshold on *any* series.

Small-sample correction, the larger effect: overlapping windows are not independent
trials. Training rows hold only ``n = rows // M`` disjoint windows (about 130 in two hours
at 5 rows/s), and the 1 % tail of their PSI is set by one or two excursions; taking the
empirical 99th percentile of the windows' PSI fired on 1.5-3 % of unchanged held-out
windows at a stated 1 %. A threshold exceeded by j of n independent draws is exceeded by
a new draw with probability ``(j + 1) / (n + 1)`` (the split-conformal rank argument),
not ``j / n``. So the share of windows allowed over is ``j / n`` for the largest j with
``(j + 1) / (n + 1) <= rate``, and the stated bound is ``(j + 1) / (n + 1)``; with fewer
than ``1 / rate - 1`` disjoint windows no j reaches the rate, the thresholds are the
held-out maxima and the bound ``1 / (n + 1)`` exceeds the configured rate (training
warns). The bound assumes disjoint windows are close to independent (the rows'
correlation time well inside a window) and the unchanged live data exchangeable with the
training rows at the window's scale; slow components that training never saw through (a
price level, a volatility regime) take live windows out of that range, which is drift in
the sense that matters and not covered by the bound.

The rate holds per window: checked at every sample over a long run of unchanged data,
about one alarm per ``M / rate`` samples is to be expected (20 minutes at 500 samples,
1 %, 8 samples a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

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

CALIBRATION_METHOD: Final = "time_blocks"
"""The manifest's name for this calibration (held-out time blocks, conformal bound)."""

CALIBRATION_BLOCKS = 5
"""Contiguous time blocks of the training rows: each block's windows are held out from
the bins they are scored against. 5 keeps the bins on 80 % of the rows (their sampling
noise is then close to that of the deployed bins on all rows) at five bin fits."""


@dataclass(frozen=True)
class DriftCalibration:
    """Per series: the calibrated PSI threshold and the share of held-out windows above
    each conventional threshold; for the family: the share of held-out windows that alarm
    at the calibrated thresholds, the stated bound on the rate for new unchanged windows,
    and at each conventional threshold the share that alarm on any series."""

    thresholds: list[float]
    false_alarm_rate: float
    false_alarm_bound: float
    windows: int
    independent_windows: int
    blocks: int
    block_rows: list[int]
    conventional_rates: dict[str, float]
    series_conventional_rates: list[dict[str, float]]


def conventional_key(threshold: float) -> str:
    return f"{threshold:g}"


def conformal_allowance(independent: int, rate: float) -> tuple[int, float]:
    """The largest j >= 0 with ``(j + 1) / (n + 1) <= rate`` (0 when none reaches it) for
    ``n = independent`` disjoint windows, and the bound ``(j + 1) / (n + 1)``."""
    j = max(int(np.floor(rate * (independent + 1) + 1e-9)) - 1, 0)
    return j, (j + 1) / (independent + 1)


def calibrate_drift(
    values: F64,
    bins: int,
    window: int,
    false_alarm_rate: float,
    max_windows: int = 20_000,
    blocks: int = CALIBRATION_BLOCKS,
) -> tuple[list[tuple[F64, F64]], DriftCalibration | None]:
    """Reference bins of every column of ``values`` (rows in time order, bins on every
    row) and PSI thresholds for windows of ``window`` consecutive rows, calibrated on
    held-out time blocks (module docstring). None: fewer rows than two blocks of a
    window each; with fewer than ``blocks`` windows' worth, fewer blocks.

    Raises:
        ValueError: no rows.
    """
    refs = [reference_bins(values[:, j], bins) for j in range(values.shape[1])]
    n = values.shape[0]
    k = min(blocks, n // window)
    if k < 2:
        return refs, None
    cuts = np.linspace(0, n, k + 1).astype(np.int64)
    total = int(np.sum(cuts[1:] - cuts[:-1] - window + 1))
    step = -(-total // max_windows)
    parts: list[list[F64]] = [[] for _ in refs]
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        other = np.r_[0:lo, hi:n]
        starts = np.arange(lo, hi - window + 1, step, dtype=np.int64)
        for j in range(values.shape[1]):
            edges, fr = reference_bins(values[other, j], bins)
            counts = window_counts(bucket_index(edges, values[:, j]), fr.shape[0], window, starts)
            parts[j].append(psi(fr, counts / window))
    psis = [np.concatenate(p) for p in parts]
    block_rows = (cuts[1:] - cuts[:-1]).tolist()
    independent = int(sum(r // window for r in block_rows))
    j, bound = conformal_allowance(independent, false_alarm_rate)
    thresholds, rate = family_thresholds(psis, j / independent)
    stacked = np.vstack(psis)
    conventional = {
        conventional_key(c): float(np.mean(np.any(stacked > c, axis=0))) for c in CONVENTIONAL_PSI
    }
    per_series = [
        {conventional_key(c): float(np.mean(p > c)) for c in CONVENTIONAL_PSI} for p in psis
    ]
    return refs, DriftCalibration(
        thresholds=thresholds,
        false_alarm_rate=rate,
        false_alarm_bound=bound,
        windows=int(psis[0].shape[0]),
        independent_windows=independent,
        blocks=k,
        block_rows=[int(r) for r in block_rows],
        conventional_rates=conventional,
        series_conventional_rates=per_series,
    )


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
