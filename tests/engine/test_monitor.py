"""Model monitor: every statistic against an independent computation on a small case,
the rolling drift window against brute force, threshold calibration, labels and the
alarm edge rule on a hand-made stream, round trips, and old manifests still loading."""

from __future__ import annotations

import math
from collections import Counter

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from engine.config import MonitorConfig
from engine.events import Event, Fill, TradingStateName
from engine.monitor import DriftWindow, ModelMonitor, RoundTrips, calibrate_drift
from engine.monitor.drift import family_thresholds
from engine.monitor.stats import (
    PSI_FLOOR,
    average_ranks,
    brier,
    bucket_index,
    expected_calibration_error,
    hit_ratio,
    psi,
    reference_bins,
    spearman,
)
from engine.signals.manifest import (
    LabelSpec,
    Manifest,
    MonitorReference,
    ReferenceBins,
    TimeRange,
)
from engine.ticks import TickBatch

SHA = "0" * 64


def test_spearman_with_ties_equals_scipy() -> None:
    a = np.array([0.3, 0.1, 0.1, 0.7, 0.5, 0.5, 0.5, 0.9])
    b = np.array([1.0, -2.0, 0.5, 3.0, 0.5, -1.0, 2.0, 2.0])
    assert spearman(a, b) == pytest.approx(sps.spearmanr(a, b).statistic, abs=1e-12)
    np.testing.assert_array_equal(average_ranks(a), sps.rankdata(a) - 1)


def test_spearman_hand_case_and_undefined() -> None:
    # ranks (0,1,2,3) against (0,2,1,3): Pearson of ranks = 1 - 6*2/(4*15) = 0.8
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 30.0, 20.0, 40.0])) == (
        pytest.approx(0.8)
    )
    assert spearman(np.array([1.0, 2.0]), np.array([1.0, 2.0])) is None
    assert spearman(np.ones(5), np.arange(5.0)) is None


def test_psi_hand_computation() -> None:
    ref = np.array([0.25, 0.25, 0.5])
    win = np.array([0.5, 0.25, 0.25])
    # (0.5-0.25) ln 2 + 0 + (0.25-0.5) ln 0.5 = 0.5 ln 2
    assert float(psi(ref, win)) == pytest.approx(0.5 * math.log(2))
    empty = np.array([0.0, 0.5, 0.5])
    by_hand = (PSI_FLOOR - 0.25) * math.log(PSI_FLOOR / 0.25) + 0.25 * math.log(2) + 0.0
    assert float(psi(ref, empty)) == pytest.approx(by_hand)
    assert float(psi(ref, ref)) == 0.0


def test_brier_ece_and_hit_ratio_hand_computation() -> None:
    p = np.array([0.9, 0.2, 0.6])
    y = np.array([1.0, 0.0, 0.0])
    assert brier(p, y) == pytest.approx((0.01 + 0.04 + 0.36) / 3)
    # buckets split at 0.5: {0.2, 0.4} mean 0.3 vs frequency 0.5; {0.6, 0.8} mean 0.7 vs 1
    p = np.array([0.2, 0.4, 0.6, 0.8])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    assert expected_calibration_error(p, y, np.array([0.5])) == pytest.approx(0.5 * 0.2 + 0.5 * 0.3)
    # up when score >= 0.5; realized up when > 0
    assert (
        hit_ratio(np.array([0.5, 0.4, 0.7, 0.2]), np.array([1e-4, 2e-4, -1e-4, -3e-4]), 0.5) == 0.5
    )
    assert brier(np.empty(0), np.empty(0)) is None


def test_reference_bins_count_with_the_bucket_rule() -> None:
    values = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    edges, fractions = reference_bins(values, 4)
    np.testing.assert_array_equal(edges, np.unique(np.quantile(values, [0.25, 0.5, 0.75])))
    # v falls in searchsorted(edges, v, "right"): an edge value belongs to the bin above it
    b = bucket_index(edges, values)
    np.testing.assert_array_equal(fractions, np.bincount(b, minlength=edges.size + 1) / 10)
    assert fractions.sum() == pytest.approx(1.0)
    edges, fractions = reference_bins(np.full(7, 2.5), 10)  # a constant: one bin
    assert edges.size == 1 and fractions.tolist() == [0.0, 1.0]


def test_drift_window_equals_brute_force_for_any_chunking() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(400, 2))
    refs = [reference_bins(train[:, j], 5) for j in range(2)]
    live = np.column_stack((rng.normal(0.5, 1.0, 300), rng.normal(size=300)))
    w = 50
    expected = np.full((300, 2), np.nan)
    for r in range(w - 1, 300):
        for j, (edges, fr) in enumerate(refs):
            counts = np.bincount(bucket_index(edges, live[r - w + 1 : r + 1, j]), minlength=fr.size)
            expected[r, j] = psi(fr, counts / w)
    for cuts in ([300], [1] * 300, [7] * 42 + [6], [49, 1, 2, 100, 148]):
        window = DriftWindow(refs, w)
        got, start = [], 0
        for size in cuts:
            got.append(window.update(live[start : start + size]))
            start += size
        np.testing.assert_allclose(np.vstack(got), expected, rtol=1e-12, atol=1e-15)


def test_family_thresholds_bound_the_share_of_windows_that_alarm() -> None:
    rng = np.random.default_rng(5)
    psis = [rng.gamma(2.0, 0.02, 1000), rng.gamma(2.0, 0.05, 1000), rng.gamma(1.0, 0.01, 1000)]
    thresholds, rate = family_thresholds(psis, 0.05)
    alarms = np.any(np.vstack([p > t for p, t in zip(psis, thresholds, strict=True)]), axis=0)
    assert rate == alarms.mean() <= 0.05
    # the next lower common level would exceed the rate: the thresholds are the tightest
    lower = [
        float(np.sort(p)[np.searchsorted(np.sort(p), t) - 1])
        for p, t in zip(psis, thresholds, strict=True)
    ]
    looser = np.any(np.vstack([p > t for p, t in zip(psis, lower, strict=True)]), axis=0)
    assert looser.mean() > 0.05


def test_calibrate_drift_on_held_out_consecutive_windows() -> None:
    rng = np.random.default_rng(9)
    values = rng.normal(size=(2000, 2))
    refs, cal = calibrate_drift(values, 10, 100, 0.01)
    # 5 blocks of 400 rows, 301 windows each; 20 disjoint windows cannot state 1 %
    assert cal is not None and cal.windows == 5 * 301 and cal.independent_windows == 20
    assert cal.effective_windows == 20 and cal.dependence == 1.0  # independent rows
    assert cal.false_alarm_rate == 0.0
    # every window's PSI by brute force, against bins of the other blocks' rows: the
    # thresholds are the held-out maxima, the conventional shares what they give
    psis = np.zeros((1505, 2))
    for b in range(5):
        other = np.r_[0 : 400 * b, 400 * (b + 1) : 2000]
        for j in range(2):
            edges, fr = reference_bins(values[other, j], 10)
            for s in range(301):
                rows = values[400 * b + s : 400 * b + s + 100, j]
                counts = np.bincount(bucket_index(edges, rows), minlength=fr.size)
                psis[301 * b + s, j] = psi(fr, counts / 100)
    np.testing.assert_allclose(cal.thresholds, psis.max(axis=0), rtol=1e-12)
    # thresholds at the two series' maxima: a new window passes either one, so the bound
    # counts both excursions, (2 + 1) / 21 (1 / 21 was stated before the maxima were
    # counted: a family of J series at their maxima alarms on about J / (n + 1))
    tops = sorted(divmod(int(np.argmax(psis[:, j])), 301) for j in range(2))
    apart = tops[0][0] != tops[1][0] or abs(tops[0][1] - tops[1][1]) >= 100
    assert apart and cal.false_alarm_bound == pytest.approx(3 / 21)
    assert cal.conventional_rates["0.1"] == np.mean(np.any(psis > 0.1, axis=1))
    # independent rows, 100-row windows: PSI ~ 9/100 on average, so 0.1 fires very often
    assert cal.conventional_rates["0.1"] > 0.3
    # the deployed bins are counted on every row
    for j, (edges, _) in enumerate(refs):
        np.testing.assert_array_equal(edges, reference_bins(values[:, j], 10)[0])
    assert calibrate_drift(values[:150], 10, 100, 0.01)[1] is None


class Host:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.events: list[Event] = []
        self.claims: list[tuple[TradingStateName, str]] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def raise_automatic(self, state: TradingStateName, reason: str, *, sticky: bool) -> None:
        assert sticky
        self.claims.append((state, reason))


def manifest(reference: MonitorReference | None = None, **metrics: float) -> Manifest:
    return Manifest(name="m", kind="lightgbm", model_file="model.txt", model_sha256=SHA,
                    output="probability", feature_names=["x"], feature_fingerprint="f",
                    feature_specs=[], label=LabelSpec(horizon_ns=1000),
                    train_range=TimeRange(start_ns=0, end_ns=1), metrics=dict(metrics),
                    reference=reference)  # fmt: skip


def quotes(ts: list[int], mids: list[float]) -> TickBatch:
    t = np.array(ts, np.int64)
    m = np.array(mids)
    return TickBatch.quotes(t, t, np.zeros(t.size, np.int32), m - 0.5, m + 0.5, np.ones(t.size),
                            np.ones(t.size))  # fmt: skip


def test_monitor_scores_predictions_with_the_training_label_rule() -> None:
    cfg = MonitorConfig(window=10, check_every=1, ic_min=None, accuracy_margin=None, gap=None)
    mon = ModelMonitor(config=cfg, manifest=manifest(), symbols=("X",), sample_interval_ns=100)
    # quotes at 0, 50 (same bucket: not sampled), 100, 100 (a tie: the row's mid is the
    # later one), 1100 (label of the rows at 0 and 100: t + 1000 reached), 1150, 2500
    ts = [0, 50, 100, 100, 1100, 1150, 2500]
    mids = [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0]
    b = quotes(ts, mids)
    score = np.array([0.6, 0.0, 0.4, 0.0, 0.7, 0.3, 0.5])
    features = score[:, None].copy()
    for cut in (2, 3, 5):  # any cut: the tie at 100 spans batches
        mon = ModelMonitor(config=cfg, manifest=manifest(), symbols=("X",), sample_interval_ns=100)
        for lo, hi in ((0, cut), (cut, 7)):
            idx = np.arange(lo, hi)
            mon.observe(b.take(idx), features[lo:hi], score[lo:hi])
        s, r = mon.window_values()
        # rows: 0 (-> 1100), 100 (-> 1100), 1100 (-> 2500: 400 ns late > tolerance 100,
        # dropped), 2500 (pending)
        np.testing.assert_array_equal(s, [0.6, 0.4])
        np.testing.assert_allclose(r, [math.log(104 / 100), math.log(104 / 103)])
        snap = mon.snapshot()["predictions"]
        assert snap == {"samples": 4, "samples_incomplete": 0, "made": 4, "pending": 1,
                        "scored": 2, "late_labels": 1}  # fmt: skip


def test_alarm_fires_on_the_edge_with_its_action_at_its_tick() -> None:
    cfg = MonitorConfig(window=10, check_every=1, ic_min=0.0, accuracy_margin=None, gap=None,
                        on_low_ic="halted")  # fmt: skip
    host = Host()
    mon = ModelMonitor(config=cfg, manifest=manifest(), symbols=("X",), sample_interval_ns=100,
                       host=host)  # fmt: skip
    n = 60
    ts = (np.arange(n) * 1000).tolist()
    rng = np.random.default_rng(1)
    mids = (100 + np.cumsum(rng.normal(size=n))).tolist()
    fwd = np.log(np.roll(mids, -1) / np.array(mids))
    score = 0.5 - fwd  # inverted: the IC is -1 once scored
    b = quotes(ts, mids)
    marks = mon.observe(b, score[:, None], score)
    assert marks.size == 1 and not host.events  # due, not fired before its tick
    mon.act(int(marks[0]) - 1)
    assert not host.events
    mon.act(int(marks[0]))
    assert [e.source for e in host.events] == ["monitor"]  # type: ignore[attr-defined]
    assert host.claims[0][0] == "HALTED" and host.counters["monitor_alarms_low_ic"] == 1
    # the 10th scored prediction (row 9) fills the window; its label is read at quote 10
    assert int(marks[0]) == 10
    assert mon.snapshot()["alarms"]["holding"]["low_ic"] is True
    # still holding in the next batch: no second alarm until clear for a whole window
    later = quotes([t + n * 1000 for t in ts], mids)
    assert mon.observe(later, score[:, None], score).size == 0


def test_round_trips_split_a_flip_and_count_losing_streaks() -> None:
    def fill(side: str, qty: float, price: float, fee: float = 0.0) -> Fill:
        return Fill(ts_event=0, ts_recv=0, client_order_id="c", fill_id="f", instrument="X",
                    side=side, qty=qty, price=price, fee=fee, liquidity="taker")  # type: ignore[arg-type]  # fmt: skip

    trips = RoundTrips()
    assert trips.on_fill(fill("buy", 2, 100, 0.2)) == []
    # sell 3 @ 99: 2 close the long (PnL -2 - 0.2 - 0.2 * 2/3), 1 opens a short
    (pnl,) = trips.on_fill(fill("sell", 3, 99, 0.3))
    assert pnl == pytest.approx(-2.0 - 0.2 - 0.2)
    (pnl,) = trips.on_fill(fill("buy", 1, 100, 0.0))
    assert pnl == pytest.approx(-1.0 - 0.1)
    assert trips.losing_streak == 2 and trips.closed == 2 and trips.wins == 0
    trips.on_fill(fill("buy", 1, 100))
    trips.on_fill(fill("sell", 1, 101))
    assert trips.losing_streak == 0 and trips.longest_losing_streak == 2 and trips.wins == 1


def test_manifest_without_reference_still_loads_and_reference_is_validated() -> None:
    data = msgspec.json.encode(manifest())
    assert b"reference" in data  # written as null by this version
    old = msgspec.json.decode(data)
    del old["reference"]
    assert msgspec.convert(old, Manifest).reference is None
    with pytest.raises(msgspec.ValidationError, match="fractions"):
        msgspec.convert({"edges": [1.0, 2.0], "fractions": [0.5, 0.5]}, ReferenceBins)
    with pytest.raises(msgspec.ValidationError, match="sum"):
        msgspec.convert({"edges": [1.0], "fractions": [0.5, 0.6]}, ReferenceBins)


def test_a_monitor_refuses_thresholds_calibrated_for_another_window() -> None:
    from engine.errors import ModelError

    bins = ReferenceBins(edges=[0.0], fractions=[0.5, 0.5], drift_threshold=0.2)
    ref = MonitorReference(rows=100, sample_interval_ns=100, label_tolerance_ns=100, window=50,
                           configured_false_alarm_rate=0.01, features={"x": bins}, score=bins)  # fmt: skip
    with pytest.raises(ModelError, match="drift_window"):
        ModelMonitor(config=MonitorConfig(drift_window=60), manifest=manifest(ref), symbols=("X",),
                     sample_interval_ns=100)  # fmt: skip
    mon = ModelMonitor(config=MonitorConfig(drift_window=50), manifest=manifest(ref),
                       symbols=("X",), sample_interval_ns=1)  # fmt: skip
    assert mon.sample_interval_ns == 100  # the manifest's, as training sampled


def test_losing_streak_alarms_once_until_the_model_makes_back_its_losses() -> None:
    """A model that keeps losing to costs raises one alarm, not one per streak (the demo
    raised 178 in two hours); after its round trips make back what they had at the alarm,
    the next streak alarms again."""
    cfg = MonitorConfig(losing_streak=2)
    mon = ModelMonitor(config=cfg, manifest=manifest(), symbols=("X",), sample_interval_ns=100)
    seq = iter(range(10_000))

    def trip(pnl: float) -> None:
        for side, price in (("buy", 100.0), ("sell", 100.0 + pnl)):
            mon(Fill(ts_event=0, ts_recv=0, client_order_id="c", fill_id=f"f{next(seq)}",
                     instrument="X", side=side, qty=1.0, price=price, fee=0.0,
                     liquidity="taker"))  # type: ignore[arg-type]  # fmt: skip

    for _ in range(3):  # three streaks of two losses, a small win between them
        trip(-1.0)
        trip(-1.0)
        trip(0.5)
    assert mon.alarm_counts["losing_streak"] == 1
    trip(10.0)  # back above where it stood at the alarm
    trip(-1.0)
    trip(-1.0)
    assert mon.alarm_counts["losing_streak"] == 2


def spearman_numpy(a: np.ndarray, b: np.ndarray) -> float | None:
    """The straightforward computation the compiled one replaced: numpy average ranks
    (scipy's rankdata - 1), centered, Pearson by dot products."""
    if a.shape[0] < 3:
        return None
    ra, rb = sps.rankdata(a) - 1.0, sps.rankdata(b) - 1.0
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))
    return float(np.dot(ra, rb) / den) if den > 0 else None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 1500).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(-5, 5) | st.floats(-1e3, 1e3), min_size=n, max_size=n),
            st.lists(st.integers(-3, 3) | st.floats(-1e3, 1e3), min_size=n, max_size=n),
        )
    )
)
def test_spearman_equals_numpy_bit_for_bit_and_scipy_with_ties(
    pair: tuple[list[float], list[float]],
) -> None:
    a, b = (np.array(v, np.float64) for v in pair)
    got, expected = spearman(a, b), spearman_numpy(a, b)
    assert got == expected  # exact: centered average ranks sum exactly in float64
    if got is not None:
        assert got == pytest.approx(sps.spearmanr(a, b).statistic, abs=1e-12)
