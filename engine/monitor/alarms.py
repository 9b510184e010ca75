"""The low-IC, accuracy and losing-streak alarms calibrated to a stated false-alarm rate, from what
training measured out of sample; the same functions in training (written into the
manifest's monitor reference) and in the running monitor (for its own window and rate).

Low IC. The monitor's IC is a Spearman correlation over the last N scored predictions,
whose labels overlap: a prediction every ``sample_interval`` with a label over
``horizon`` shares its label's path with the next ``L = horizon / sample_interval``
predictions of its instrument. The estimator of its variance, stated:

    var(IC) = 1.06 (1 - IC^2)^2 / (N / L - 3)

``N / L`` is the window's effective number of independent labels (``L`` at least 1;
with several instruments each holds ``N / k`` predictions and ``N / (k L)`` labels, ``N /
L`` in all). The ``L`` comes from Bartlett's variance of a correlation of two
autocorrelated series with no relation between them, ``(1 / N) sum_k rho_score(k)
rho_label(k)``: labels that are sums of ``L`` consecutive independent increments have
``rho_label(k) = 1 - |k| / L``, which sums to ``L``, and ``|rho_score| <= 1``, so
``L / N`` bounds the variance however long the scores persist. ``1.06`` and ``- 3`` are
Fieller, Hartley and Pearson's (1957) variance of Spearman's coefficient, ``(1 -
IC^2)^2`` the large-sample factor of a correlation at ``IC`` (taken at training's: the
spread of the windows of a model as good as training measured). Assumed: the
increments of the mid are close to independent at the sampling interval and different
instruments' labels are independent (correlated instruments hold fewer independent
labels: the rate is then above the stated one); quotes sparser than the interval make
labels overlap less (the rate is then below it).

Training's out-of-sample IC ``E`` over ``n`` predictions (the same overlap) estimates the
model's IC, with its own variance ``1.06 (1 - E^2)^2 / (n / L - 3)``. The threshold is

    T = E - z(1 - alpha) * sqrt(var_window + var_training)

so that a window of unchanged data (a model whose IC is what training measured) falls
below it with probability ``alpha``: the window's IC and training's are independent
estimates of the same IC, their difference normal with both variances. This is the
rate per window of N predictions (checked every ``check_every``, neighbouring checks
share most of their window), as the drift alarm states its rate per window. A model
whose IC falls by well over ``z * sqrt(...)`` alarms at once; one whose edge is small
against that (IC 0.05 at N = 1,000 and L = 8: ``T`` about -0.2) cannot be told from
chance over one window, and the threshold says so instead of firing at 0 on 31 % of
the windows of unchanged data.

Losing streak. If each of the model's round trips is a loss with probability ``q = 1 -
h`` independently, ``h`` its hit ratio, the chance that a window of ``n`` round trips holds
a run of ``k`` or more losses is exact (a chain on the current run's length,
``streak_probability``). ``h`` is training's out-of-sample accuracy over ``m`` labelled
predictions, with standard error ``sqrt(h (1 - h) L / m)`` (the same overlap); the
stated rate is that chance averaged over the normal spread of ``h`` (Gauss-Hermite, 21
nodes), and the alarm's streak is the shortest ``k`` whose rate is at most ``alpha``.
Assumed: a round trip wins when the model's direction is right (costs not counted: a
strategy whose trips lose to costs has a larger ``q`` and alarms more often, rightly);
trips are independent.

Accuracy. The monitor's hit ratio is the share of the window's labelled predictions (those
outside the label's dead zone, as training's accuracy) whose direction was right. Over
``m`` labelled predictions whose labels overlap ``L``-fold (the same ``L`` and the same
Bartlett argument as low IC: the hit indicators of predictions sharing a label's path are
correlated at most as their labels, ``rho <= 1 - |k| / L``), its variance is

    var(hit ratio) = p (1 - p) / (m / L)

with ``m / L`` the effective labels. Training's out-of-sample accuracy ``A`` over
``m_t`` labelled predictions estimates ``p`` with variance ``A (1 - A) L / m_t``; the
threshold at a check whose window holds ``m`` labelled predictions is

    T(m) = A - z(1 - alpha) * sqrt(A (1 - A) L (1 / m + 1 / m_t))

so a window of unchanged data falls below it with probability ``alpha`` whatever its
count of labelled predictions (a quiet window with fewer labels has a wider spread and
a lower threshold); the figure stated is ``T`` at the window's expected count, ``N``
times training's labelled share. Assumed besides low IC's: the normal approximation
(effective labels above 4); for Gaussian increments and persistent scores the hit
indicators' correlation, ``(2 / pi) arcsin(1 - |k| / L)``, is below the labels' and sums
to about ``0.74 L`` at ``L = 8``: the rate is then somewhat below the stated one. A fixed
``accuracy_margin`` makes ``T = A - margin``; its rate, ``Phi(-margin / se)`` at the
expected count, is stated beside it.

A fixed threshold from the config (``ic_min``, ``accuracy_margin``, ``losing_streak``) is
used as given; its false-alarm rate on unchanged data under the same model is stated
beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numba
import numpy as np

from engine.config import MonitorConfig
from engine.monitor.stats import F64
from engine.signals.manifest import AccuracyReference, LosingStreakReference, LowIcReference

SPEARMAN_VARIANCE = 1.06
"""Fieller, Hartley & Pearson (1957): var(Spearman) ~ 1.06 / (n - 3)."""

_HERMITE_NODES = 21


def labels_per_horizon(horizon_ns: int, sample_interval_ns: int) -> float:
    """``L``: predictions of one instrument that one label's horizon spans (at least 1)."""
    return max(1.0, horizon_ns / sample_interval_ns)


def ic_variance(predictions: int, overlap: float, ic: float = 0.0) -> float | None:
    """``1.06 (1 - ic^2)^2 / (predictions / overlap - 3)``; None with 4 or fewer
    effective labels."""
    effective = predictions / overlap
    if effective <= 4.0:
        return None
    return SPEARMAN_VARIANCE * (1.0 - min(ic * ic, 1.0)) ** 2 / (effective - 3.0)


@dataclass(frozen=True)
class IcCalibration:
    """The low-IC alarm's threshold (module docstring) and its rate per window."""

    expected_ic: float
    training_predictions: int
    labels_per_horizon: float
    window: int
    effective_labels: float
    standard_error: float
    threshold: float
    false_alarm_rate: float
    calibrated: bool


def calibrate_low_ic(
    expected_ic: float,
    training_predictions: int,
    overlap: float,
    window: int,
    false_alarm_rate: float,
    fixed: float | None = None,
) -> IcCalibration | None:
    """The threshold for windows of ``window`` predictions at ``false_alarm_rate``, or with
    ``fixed`` that threshold and the rate it has. None: too few effective labels in the
    window or in training to state anything.

    Raises:
        ValueError: a rate outside (0, 1).
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    var_window = ic_variance(window, overlap, expected_ic)
    var_training = ic_variance(training_predictions, overlap, expected_ic)
    if var_window is None or var_training is None:
        return None
    se = math.sqrt(var_window + var_training)
    normal = NormalDist()
    if fixed is None:
        threshold = expected_ic - normal.inv_cdf(1.0 - false_alarm_rate) * se
        rate = false_alarm_rate
    else:
        threshold = fixed
        rate = normal.cdf((fixed - expected_ic) / se)
    return IcCalibration(
        expected_ic=expected_ic,
        training_predictions=training_predictions,
        labels_per_horizon=overlap,
        window=window,
        effective_labels=window / overlap,
        standard_error=se,
        threshold=threshold,
        false_alarm_rate=rate,
        calibrated=fixed is None,
    )


def hit_ratio_variance(labelled: float, overlap: float, accuracy: float) -> float | None:
    """``accuracy (1 - accuracy) / (labelled / overlap)``; None with 4 or fewer effective
    labels."""
    effective = labelled / overlap
    if effective <= 4.0:
        return None
    return accuracy * (1.0 - accuracy) / effective


@dataclass(frozen=True)
class AccuracyCalibration:
    """The accuracy alarm's threshold (module docstring) and its rate per window.
    ``window_labelled``: the labelled predictions a window of ``window`` is expected to
    hold (training's labelled share), at which ``threshold`` and ``false_alarm_rate`` are
    stated; ``margin``: the config's fixed margin (None: calibrated)."""

    expected_accuracy: float
    training_labelled: int
    labels_per_horizon: float
    window: int
    window_labelled: float
    effective_labels: float
    standard_error: float
    threshold: float
    false_alarm_rate: float
    margin: float | None

    @property
    def calibrated(self) -> bool:
        return self.margin is None

    def threshold_at(self, labelled: int) -> float | None:
        """The threshold for a window holding ``labelled`` labelled predictions (a fixed
        margin's is the same for any); None (no check) with 4 or fewer effective labels."""
        if self.margin is not None:
            return self.expected_accuracy - self.margin
        var_window = hit_ratio_variance(labelled, self.labels_per_horizon,
                                        self.expected_accuracy)  # fmt: skip
        if var_window is None:
            return None
        var_training = hit_ratio_variance(self.training_labelled, self.labels_per_horizon,
                                          self.expected_accuracy)  # fmt: skip
        assert var_training is not None  # checked when calibrated
        z = NormalDist().inv_cdf(1.0 - self.false_alarm_rate)
        return self.expected_accuracy - z * math.sqrt(var_window + var_training)


def calibrate_accuracy(
    expected_accuracy: float,
    training_labelled: int,
    overlap: float,
    window: int,
    labelled_share: float,
    false_alarm_rate: float,
    margin: float | None = None,
) -> AccuracyCalibration | None:
    """The hit-ratio threshold for windows of ``window`` predictions (``labelled_share``
    of them labelled) at ``false_alarm_rate``, or with ``margin`` the threshold
    ``expected_accuracy - margin`` and the rate it has. None: too few effective labels in
    the window or in training, or an accuracy of 0 or 1 (no spread to state).

    Raises:
        ValueError: a rate outside (0, 1), an accuracy or a share outside [0, 1].
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    if not 0.0 <= expected_accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {expected_accuracy}")
    if not 0.0 <= labelled_share <= 1.0:
        raise ValueError(f"labelled share must be in [0, 1], got {labelled_share}")
    labelled = window * labelled_share
    var_window = hit_ratio_variance(labelled, overlap, expected_accuracy)
    var_training = hit_ratio_variance(training_labelled, overlap, expected_accuracy)
    if var_window is None or var_training is None or var_window + var_training <= 0.0:
        return None
    se = math.sqrt(var_window + var_training)
    normal = NormalDist()
    if margin is None:
        threshold = expected_accuracy - normal.inv_cdf(1.0 - false_alarm_rate) * se
        rate = false_alarm_rate
    else:
        threshold = expected_accuracy - margin
        rate = normal.cdf(-margin / se)
    return AccuracyCalibration(
        expected_accuracy=expected_accuracy,
        training_labelled=training_labelled,
        labels_per_horizon=overlap,
        window=window,
        window_labelled=labelled,
        effective_labels=labelled / overlap,
        standard_error=se,
        threshold=threshold,
        false_alarm_rate=rate,
        margin=margin,
    )


def streak_probability(loss: F64, trips: int, length: int) -> F64:
    """For each loss probability in ``loss``: the chance that ``trips`` independent round
    trips hold a run of ``length`` or more losses."""
    q = np.clip(np.asarray(loss, np.float64), 0.0, 1.0)
    return np.asarray(1.0 - _no_run(q, trips, length), np.float64)


@numba.njit(cache=True)
def _no_run(q: F64, trips: int, length: int) -> F64:
    # the chance of each current run length 0..length-1 with no run of ``length`` yet,
    # advanced one round trip at a time
    out = np.empty(q.shape[0])
    state = np.empty(length)
    for i in range(q.shape[0]):
        state[:] = 0.0
        state[0] = 1.0
        for _ in range(trips):
            alive = state.sum()
            for r in range(length - 1, 0, -1):
                state[r] = state[r - 1] * q[i]
            state[0] = alive * (1.0 - q[i])
        out[i] = state.sum()
    return out


@dataclass(frozen=True)
class StreakCalibration:
    """The losing-streak alarm's length and its rate per window of round trips."""

    hit_ratio: float
    hit_ratio_standard_error: float
    window: int
    length: int
    false_alarm_rate: float
    calibrated: bool


def calibrate_losing_streak(
    hit_ratio: float,
    labelled_predictions: int,
    overlap: float,
    window: int,
    false_alarm_rate: float,
    fixed: int | None = None,
) -> StreakCalibration | None:
    """The shortest streak whose chance in ``window`` round trips, at the out-of-sample
    hit ratio averaged over its sampling spread, is at most ``false_alarm_rate``; with
    ``fixed``, that length and its chance. None: no labelled prediction, or no streak of
    at most ``window`` trips is that rare (a model that loses nearly every trip).

    Raises:
        ValueError: a rate outside (0, 1) or a hit ratio outside [0, 1].
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    if not 0.0 <= hit_ratio <= 1.0:
        raise ValueError(f"hit ratio must be in [0, 1], got {hit_ratio}")
    if labelled_predictions <= 0 or window <= 0:
        return None
    se = math.sqrt(hit_ratio * (1.0 - hit_ratio) * overlap / labelled_predictions)
    nodes, weights = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    weights = weights / weights.sum()
    loss = 1.0 - (hit_ratio + se * nodes)

    def chance(k: int) -> float:
        return float(weights @ streak_probability(loss, window, k)) if k <= window else 0.0

    if fixed is not None:
        return StreakCalibration(hit_ratio, se, window, fixed, chance(fixed), calibrated=False)
    # the chance falls as the streak grows: the first k at or under the rate
    for k in range(1, window + 1):
        rate = chance(k)
        if rate <= false_alarm_rate:
            return StreakCalibration(hit_ratio, se, window, k, rate, calibrated=True)
    return None


@dataclass(frozen=True)
class OutOfSample:
    """What training measured out of sample that the alarms are calibrated from (the
    manifest's ``oos_*`` metrics): IC over ``predictions``, hit ratio over ``labelled``
    predictions (outside the dead zone), and ``overlap``, the ``L`` of their labels."""

    ic: float | None
    predictions: int
    hit_ratio: float | None
    labelled: int
    overlap: float


def out_of_sample(
    metrics: Mapping[str, float | int | None], horizon_ns: int, sample_interval_ns: int
) -> OutOfSample:
    """The alarms' inputs from a manifest's metrics (``oos_ic``, ``oos_rows``,
    ``oos_accuracy``, ``oos_labeled_rows``); missing figures are None / 0."""

    def number(key: str) -> float | None:
        value = metrics.get(key)
        return None if value is None or not math.isfinite(value) else float(value)

    return OutOfSample(
        ic=number("oos_ic"),
        predictions=int(number("oos_rows") or 0),
        hit_ratio=number("oos_accuracy"),
        labelled=int(number("oos_labeled_rows") or 0),
        overlap=labels_per_horizon(horizon_ns, sample_interval_ns),
    )


@dataclass(frozen=True)
class LowIcAlarm:
    """The low-IC alarm a monitor runs: ``threshold`` (None: off), how it was set and the
    rate it carries (``calibration``; None when nothing states one), and why in words."""

    threshold: float | None
    calibration: IcCalibration | None
    note: str


@dataclass(frozen=True)
class StreakAlarm:
    """The losing-streak alarm a monitor runs: ``length`` (None: off), as ``LowIcAlarm``."""

    length: int | None
    calibration: StreakCalibration | None
    note: str


@dataclass(frozen=True)
class AccuracyAlarm:
    """The accuracy alarm a monitor runs: ``expected`` (training's out-of-sample
    accuracy; None: off), a fixed ``margin`` or none (calibrated), ``calibration`` (the
    stated threshold and rate; None when nothing states one) and why in words."""

    expected: float | None
    margin: float | None
    calibration: AccuracyCalibration | None
    note: str

    def threshold_at(self, labelled: int) -> float | None:
        """The hit ratio below which a window of ``labelled`` labelled predictions alarms
        (None: off, or too few effective labels for a calibrated threshold)."""
        if self.expected is None:
            return None
        if self.margin is not None:
            return self.expected - self.margin
        assert self.calibration is not None
        return self.calibration.threshold_at(labelled)


def accuracy_alarm(
    oos: OutOfSample, setting: float | str | None, window: int, false_alarm_rate: float
) -> AccuracyAlarm:
    """The accuracy alarm for a ``[monitor] accuracy_margin`` setting: ``"calibrated"``, a
    fixed margin below training's accuracy (its rate stated when the labelled count is
    known) or None (off)."""
    if setting is None:
        return AccuracyAlarm(None, None, None, "off ([monitor] accuracy_margin)")
    margin = None if setting == "calibrated" else float(setting)
    hit = oos.hit_ratio
    cal = None
    if hit is not None and oos.labelled > 0:
        share = min(1.0, oos.labelled / oos.predictions) if oos.predictions > 0 else 1.0
        cal = calibrate_accuracy(hit, oos.labelled, oos.overlap, window, share,
                                 false_alarm_rate, margin)  # fmt: skip
    if margin is not None:
        if hit is None:
            return AccuracyAlarm(None, margin, None, f"fixed margin {margin:g} by [monitor] "
                                 "accuracy_margin; off: the manifest has no out-of-sample "
                                 "accuracy")  # fmt: skip
        if cal is None:
            return AccuracyAlarm(hit, margin, None, f"fixed at {hit - margin:.4f} (training's "
                                 f"out-of-sample accuracy {hit:.4f} minus {margin:g} by "
                                 "[monitor] accuracy_margin); no labelled-row count to state "
                                 "its false-alarm rate")  # fmt: skip
        return AccuracyAlarm(hit, margin, cal, f"fixed at {cal.threshold:.4f} (training's "
                             f"out-of-sample accuracy {hit:.4f} minus {margin:g} by [monitor] "
                             f"accuracy_margin): false-alarm rate {cal.false_alarm_rate:.3g} "
                             "per window for this model")  # fmt: skip
    if cal is None:
        why = ("the manifest has no out-of-sample accuracy" if hit is None or
               oos.labelled <= 0 else f"too few effective labels or no spread (accuracy "
               f"{hit:.3f} over {oos.labelled} labelled predictions at {oos.overlap:g} per "
               f"horizon, window {window})")  # fmt: skip
        return AccuracyAlarm(None, None, None, f"off: not calibrated, {why}")
    return AccuracyAlarm(
        hit,
        None,
        cal,
        f"calibrated: training's out-of-sample accuracy {cal.expected_accuracy:.4f} minus "
        f"{NormalDist().inv_cdf(1.0 - false_alarm_rate):.3g} x {cal.standard_error:.4f} = "
        f"{cal.threshold:.4f} at {cal.window_labelled:.0f} labelled predictions per window of "
        f"{window} ({cal.effective_labels:.0f} effective labels at "
        f"{cal.labels_per_horizon:g} predictions per horizon; recomputed at each window's own "
        f"count): false-alarm rate {cal.false_alarm_rate:g} per window"
        + (
            "; below chance (0.5): one window cannot tell a drop to chance from noise, a "
            "larger [monitor] window can"
            if cal.threshold < 0.5
            else ""
        ),
    )


def low_ic_alarm(
    oos: OutOfSample, setting: float | str | None, window: int, false_alarm_rate: float
) -> LowIcAlarm:
    """The low-IC alarm for a ``[monitor] ic_min`` setting: ``"calibrated"``, a fixed
    threshold (its rate stated when training's IC is known) or None (off)."""
    if setting is None:
        return LowIcAlarm(None, None, "off ([monitor] ic_min)")
    fixed = None if setting == "calibrated" else float(setting)
    cal = None
    if oos.ic is not None:
        cal = calibrate_low_ic(
            oos.ic, oos.predictions, oos.overlap, window, false_alarm_rate, fixed
        )
    if fixed is not None:
        if cal is None:
            return LowIcAlarm(fixed, None, f"fixed at {fixed:g} by [monitor] ic_min; no "
                              "out-of-sample IC to state its false-alarm rate")  # fmt: skip
        return LowIcAlarm(fixed, cal, f"fixed at {fixed:g} by [monitor] ic_min: false-alarm "
                          f"rate {cal.false_alarm_rate:.3g} per window for this model")  # fmt: skip
    if cal is None:
        why = ("the manifest has no out-of-sample IC" if oos.ic is None else
               f"too few effective labels ({window} / {oos.overlap:g} in the window, "
               f"{oos.predictions} / {oos.overlap:g} in training)")  # fmt: skip
        return LowIcAlarm(None, None, f"off: not calibrated, {why}")
    return LowIcAlarm(
        cal.threshold,
        cal,
        f"calibrated: training's out-of-sample IC {cal.expected_ic:.4f} minus "
        f"{NormalDist().inv_cdf(1.0 - false_alarm_rate):.3g} x {cal.standard_error:.4f} "
        f"(window {window} predictions, {cal.effective_labels:.0f} effective labels at "
        f"{cal.labels_per_horizon:g} predictions per horizon): false-alarm rate "
        f"{cal.false_alarm_rate:g} per window",
    )


def losing_streak_alarm(
    oos: OutOfSample, setting: int | str | None, window: int, false_alarm_rate: float
) -> StreakAlarm:
    """The losing-streak alarm for a ``[monitor] losing_streak`` setting: ``"calibrated"``,
    a fixed length (its rate stated when training's hit ratio is known) or None (off)."""
    if setting is None:
        return StreakAlarm(None, None, "off ([monitor] losing_streak)")
    fixed = None if setting == "calibrated" else int(setting)
    cal = None
    if oos.hit_ratio is not None:
        cal = calibrate_losing_streak(
            oos.hit_ratio, oos.labelled, oos.overlap, window, false_alarm_rate, fixed
        )
    if fixed is not None:
        if cal is None:
            return StreakAlarm(fixed, None, f"fixed at {fixed} by [monitor] losing_streak; no "
                               "out-of-sample hit ratio to state its false-alarm rate")  # fmt: skip
        return StreakAlarm(fixed, cal, f"fixed at {fixed} by [monitor] losing_streak: "
                           f"false-alarm rate {cal.false_alarm_rate:.3g} per {window} round "
                           "trips for this model")  # fmt: skip
    if cal is None:
        why = ("the manifest has no out-of-sample hit ratio" if oos.hit_ratio is None or
               oos.labelled <= 0 else f"no streak of at most {window} round trips is that "
               f"rare at a hit ratio of {oos.hit_ratio:.3f}")  # fmt: skip
        return StreakAlarm(None, None, f"off: not calibrated, {why}")
    return StreakAlarm(
        cal.length,
        cal,
        f"calibrated: {cal.length} losses in a row, at training's out-of-sample hit ratio "
        f"{cal.hit_ratio:.4f} (standard error {cal.hit_ratio_standard_error:.4f}): "
        f"false-alarm rate {cal.false_alarm_rate:.3g} per {window} round trips",
    )


def alarm_figures(
    low_ic: LowIcAlarm,
    streak: StreakAlarm,
    ic_checks: int,
    ic_below: int,
    accuracy: AccuracyAlarm | None = None,
    accuracy_checks: int = 0,
    accuracy_below: int = 0,
) -> dict[str, Any]:
    """The alarms' settings and stated rates as plain values (the monitor's snapshot),
    with the share of this run's full-window checks below the IC and accuracy thresholds."""
    ic = low_ic.calibration
    st = streak.calibration
    acc = None if accuracy is None else accuracy.calibration
    figures: dict[str, Any] = {}
    if accuracy is not None:
        figures["accuracy"] = {
            "threshold": None if acc is None else acc.threshold,
            "calibrated": acc is not None and acc.calibrated,
            "margin": accuracy.margin,
            "false_alarm_rate": None if acc is None else acc.false_alarm_rate,
            "expected_accuracy": accuracy.expected,
            "standard_error": None if acc is None else acc.standard_error,
            "window_labelled": None if acc is None else acc.window_labelled,
            "effective_labels": None if acc is None else acc.effective_labels,
            "labels_per_horizon": None if acc is None else acc.labels_per_horizon,
            "window": None if acc is None else acc.window,
            "checks": accuracy_checks,
            "share_of_checks_below": accuracy_below / accuracy_checks if accuracy_checks else None,
            "note": accuracy.note,
        }
    return figures | {
        "low_ic": {
            "threshold": low_ic.threshold,
            "calibrated": ic is not None and ic.calibrated,
            "false_alarm_rate": None if ic is None else ic.false_alarm_rate,
            "expected_ic": None if ic is None else ic.expected_ic,
            "standard_error": None if ic is None else ic.standard_error,
            "effective_labels": None if ic is None else ic.effective_labels,
            "labels_per_horizon": None if ic is None else ic.labels_per_horizon,
            "window": None if ic is None else ic.window,
            "checks": ic_checks,
            "share_of_checks_below": ic_below / ic_checks if ic_checks else None,
            "note": low_ic.note,
        },
        "losing_streak": {
            "length": streak.length,
            "calibrated": st is not None and st.calibrated,
            "false_alarm_rate": None if st is None else st.false_alarm_rate,
            "hit_ratio": None if st is None else st.hit_ratio,
            "hit_ratio_standard_error": None if st is None else st.hit_ratio_standard_error,
            "window": None if st is None else st.window,
            "note": streak.note,
        },
    }


def accuracy_reference(oos: OutOfSample, config: MonitorConfig) -> AccuracyReference | None:
    """The accuracy alarm as a monitor with ``config`` runs it, for the manifest's monitor
    reference (None where nothing states a rate: off, or no figure to go on)."""
    acc = accuracy_alarm(oos, config.accuracy_margin, config.window,
                         config.false_alarm_rate).calibration  # fmt: skip
    if acc is None:
        return None
    return AccuracyReference(
        expected_accuracy=acc.expected_accuracy,
        training_labelled=acc.training_labelled,
        labels_per_horizon=acc.labels_per_horizon,
        window=acc.window,
        window_labelled=acc.window_labelled,
        effective_labels=acc.effective_labels,
        standard_error=acc.standard_error,
        threshold=acc.threshold,
        false_alarm_rate=acc.false_alarm_rate,
        margin=acc.margin,
    )


def alarm_references(
    oos: OutOfSample, config: MonitorConfig
) -> tuple[LowIcReference | None, LosingStreakReference | None]:
    """The low-IC and losing-streak alarms as a monitor with ``config`` runs them, for the
    manifest's monitor reference (None where nothing states a rate: an alarm off, or no
    figure to go on); the accuracy alarm's is ``accuracy_reference``."""
    ic = low_ic_alarm(oos, config.ic_min, config.window, config.false_alarm_rate).calibration
    st = losing_streak_alarm(
        oos, config.losing_streak, config.losing_streak_window, config.false_alarm_rate
    ).calibration
    low_ic = None
    if ic is not None:
        low_ic = LowIcReference(
            expected_ic=ic.expected_ic,
            training_predictions=ic.training_predictions,
            labels_per_horizon=ic.labels_per_horizon,
            window=ic.window,
            effective_labels=ic.effective_labels,
            standard_error=ic.standard_error,
            threshold=ic.threshold,
            false_alarm_rate=ic.false_alarm_rate,
            calibrated=ic.calibrated,
        )
    streak = None
    if st is not None:
        streak = LosingStreakReference(
            hit_ratio=st.hit_ratio,
            hit_ratio_standard_error=st.hit_ratio_standard_error,
            labelled_predictions=oos.labelled,
            window=st.window,
            length=st.length,
            false_alarm_rate=st.false_alarm_rate,
            calibrated=st.calibrated,
        )
    return low_ic, streak
