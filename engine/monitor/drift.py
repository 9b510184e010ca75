"""Drift: reference bins from training rows, PSI alarm thresholds calibrated on held-out
windows of them, and the running monitor's rolling window of the last M samples.

What is binned: each feature on its scale (``engine.monitor.scales``: a spread in ticks,
a price as its distance from the sample's mid in ticks, a log return as the move in
ticks), so the bins measure the market's behaviour and not the price level; a series
that takes at most ``bins`` values (the spread in ticks) gets one bin per value, the
others quantile bins (``engine.monitor.stats.drift_bins``). Decile bins of a spread in bps
on a tick grid had 5 of 9 edges inside the one-tick mass, sorting it by the price level:
unchanged data drifted, the threshold rose to PSI ~6 and a three-tick widening scored
1.3 times it.

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
``(j + 1) / (n + 1) <= rate``, and the stated bound is ``(j + 1) / (n + 1)``.

Two corrections to ``n`` and to that count, both measured to matter:

- Dependence. Disjoint windows of a slow process (a volatility regime lasting several
  windows) are not independent draws: with the regime's memory ten windows long, the
  bound above was exceeded 7 % of the time at a stated 4.9 %. ``n`` is replaced by
  ``n / tau``, ``tau`` the integrated autocorrelation of the held-out PSI between
  windows whole windows apart (``effective_windows``; 1 when no lag shows dependence).
- Maxima. With fewer than ``1 / rate - 1`` effective windows no j reaches the rate and
  the thresholds are the held-out maxima of each series. A new window alarms when it
  passes *any* series' maximum, and each maximum is an excursion of its own: J series
  give about ``J / (n + 1)``, not ``1 / (n + 1)`` (measured: 2-5 % of unchanged held-out
  windows against a stated 0.94 %, eight series, 105 windows). The bound is then ``(m +
  1) / (n + 1)``, ``m`` the disjoint windows holding a maximum (``maxima_windows``),
  above the configured rate: training warns, and more rows, a shorter window or fewer
  features bring it down.

The bound assumes the unchanged live data exchangeable with the training rows at the
window's scale; slow components that training never saw through (a volatility regime
longer than the training span) take live windows out of that range, which is drift in
the sense that matters and not covered by the bound.

The rate holds per window: checked at every sample over a long run of unchanged data,
about one alarm per ``M / rate`` samples is to be expected (20 minutes at 500 samples,
1 %, 8 samples a second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from engine.monitor.stats import (
    CONVENTIONAL_PSI,
    F64,
    I64,
    bucket_index,
    drift_bins,
    psi,
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
    the disjoint windows it rests on (counted, and after the dependence correction), and
    at each conventional threshold the share that alarm on any series."""

    thresholds: list[float]
    false_alarm_rate: float
    false_alarm_bound: float
    windows: int
    independent_windows: int
    effective_windows: int
    dependence: float
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


def effective_windows(
    psis: list[F64], start: I64, block: I64, window: int, independent: int
) -> tuple[int, float]:
    """Disjoint windows' worth of independent draws: ``independent / tau`` (at least 1).

    ``tau = 1 + 2 sum_k rho_k`` is the integrated autocorrelation of a series' held-out
    PSI between windows ``k`` whole windows apart in one block, each ``rho_k`` estimated on
    every such pair of held-out windows (pairs never span two blocks), summed up to the
    first lag whose ``rho`` is not above ``2 / sqrt(pairs)`` for the disjoint pairs at
    that lag (the noise of an estimate from that many independent pairs); the largest
    ``tau`` of the series is taken (the most persistent series sets how often the
    family's tail is visited). No evidence of dependence: ``tau = 1``, the disjoint
    windows counted as they are. Returns the count and ``tau``.
    """
    blocks = int(block.max()) + 1
    pairs_at: dict[int, tuple[I64, I64] | None] = {}

    def pairs(lag: int) -> tuple[I64, I64] | None:
        # the held-out windows ``lag`` whole windows apart in one block, found once
        if lag not in pairs_at:
            later = np.searchsorted(start, start + lag * window)
            ok = later < start.shape[0]
            ok[ok] = (start[later[ok]] == start[ok] + lag * window) & (
                block[later[ok]] == block[ok]
            )
            pairs_at[lag] = (np.flatnonzero(ok), later[ok]) if np.any(ok) else None
        return pairs_at[lag]

    tau = 1.0
    for p in psis:
        centred = p - p.mean()
        var = float(np.mean(centred * centred))
        if var == 0.0:
            continue
        own = 1.0
        for lag in range(1, independent):
            disjoint_pairs = independent - lag * blocks
            found = pairs(lag) if disjoint_pairs >= 4 else None
            if found is None:
                break
            rho = float(np.mean(centred[found[0]] * centred[found[1]])) / var
            if rho <= 2.0 / math.sqrt(disjoint_pairs):
                break
            own += 2.0 * rho
        tau = max(tau, own)
    return max(1, int(independent / tau)), tau


def maxima_windows(psis: list[F64], start: I64, block: I64, window: int) -> int:
    """Disjoint windows holding a series' highest held-out PSI: each series' maximum, the
    maxima of a block less than a window apart counted once (one excursion)."""
    tops = sorted({(int(block[i]), int(start[i])) for i in (int(np.argmax(p)) for p in psis)})
    count, last = 0, (-1, 0)
    for b, at in tops:
        if b != last[0] or at - last[1] >= window:
            count += 1
            last = (b, at)
    return count


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
    refs = [drift_bins(values[:, j], bins)[:2] for j in range(values.shape[1])]
    n = values.shape[0]
    k = min(blocks, n // window)
    if k < 2:
        return refs, None
    cuts = np.linspace(0, n, k + 1).astype(np.int64)
    total = int(np.sum(cuts[1:] - cuts[:-1] - window + 1))
    step = -(-total // max_windows)
    parts: list[list[F64]] = [[] for _ in refs]
    start_parts: list[I64] = []
    block_parts: list[I64] = []
    for b, (lo, hi) in enumerate(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)):
        other = np.r_[0:lo, hi:n]
        starts = np.arange(lo, hi - window + 1, step, dtype=np.int64)
        start_parts.append(starts)
        block_parts.append(np.full(starts.shape[0], b, np.int64))
        for j in range(values.shape[1]):
            edges, fr, _ = drift_bins(values[other, j], bins)
            counts = window_counts(bucket_index(edges, values[:, j]), fr.shape[0], window, starts)
            parts[j].append(psi(fr, counts / window))
    psis = [np.concatenate(p) for p in parts]
    start, block = np.concatenate(start_parts), np.concatenate(block_parts)
    block_rows = (cuts[1:] - cuts[:-1]).tolist()
    independent = int(sum(r // window for r in block_rows))
    effective, dependence = effective_windows(psis, start, block, window, independent)
    j, bound = conformal_allowance(effective, false_alarm_rate)
    thresholds, rate = family_thresholds(psis, j / effective)
    if all(t >= float(p.max()) for t, p in zip(thresholds, psis, strict=True)):
        # the thresholds are the series' maxima: a new window passes any of them, and
        # each is an excursion of its own, not one window among many at a common level
        bound = (maxima_windows(psis, start, block, window) + 1) / (effective + 1)
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
        false_alarm_bound=min(bound, 1.0),
        windows=int(psis[0].shape[0]),
        independent_windows=independent,
        effective_windows=effective,
        dependence=dependence,
        blocks=k,
        block_rows=[int(r) for r in block_rows],
        conventional_rates=conventional,
        series_conventional_rates=per_series,
    )


def family_scores(psis: list[F64]) -> I64:
    """Each window's family score: the most windows whose PSI on one series is strictly
    below its own (window w alarms at level k on series j exactly when that count on j
    exceeds k, on some series when this maximum does)."""
    ranks = [np.searchsorted(np.sort(p), p, side="left") for p in psis]
    return np.asarray(np.max(np.vstack(ranks), axis=0), np.int64)


def family_thresholds(psis: list[F64], false_alarm_rate: float) -> tuple[list[float], float]:
    """Thresholds ``T_j`` = the k-th smallest window PSI of series j, for the smallest
    common k at which at most ``false_alarm_rate`` of the windows have ``PSI_j > T_j`` on
    any series; returns them and that share."""
    ordered = [np.sort(p) for p in psis]
    below = family_scores(psis)
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
