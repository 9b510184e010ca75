"""Drift monitoring that keeps its word, over many seeds of generated quotes (a price on a
tick grid wandering in level, spreads of 1 to 4 ticks, a slow volatility regime) put
through the real feature kernels:

- each feature is binned on its scale (spreads in whole ticks, prices as their distance
  from the mid in ticks, returns as moves in ticks), one bin per value where it takes few;
- on unchanged held-out data, the share of windows over the calibrated thresholds is
  within a binomial bound of the stated rate (one window per seed: independent trials);
- the same data binned as it comes (price-level deciles, the method replaced) exceeds
  its stated bound many times over: the test has teeth;
- a three-tick spread widening and a volatility doubling alarm at once, the widening far
  over its threshold where price-level deciles barely crossed theirs;
- the running monitor bins its samples exactly as training did.

Mutation checks: ``apply_scales`` returning its input unchanged (no scales) fails the
binomial test and the widening ratio; ``drift_bins`` always taking quantiles fails the
by-value test; dropping the dependence correction (``tau = 1``) fails the slow-regime
test; counting one excursion at the series' maxima fails the maxima test.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pytest
from scipy import stats as sps
from scipy.signal import lfilter

from engine.config import MonitorConfig
from engine.errors import ModelError
from engine.features import FeatureSet
from engine.features.feature_set import FeatureSpec
from engine.monitor import ModelMonitor, calibrate_drift
from engine.monitor.drift import DriftCalibration, conformal_allowance, family_thresholds
from engine.monitor.scales import apply_scales, scale_of, scales_of
from engine.monitor.stats import (
    F64,
    bucket_index,
    drift_bins,
    psi,
    reference_bins,
    window_counts,
)
from engine.signals.manifest import (
    LabelSpec,
    Manifest,
    MonitorReference,
    ReferenceBins,
    TimeRange,
)
from engine.ticks import TickBatch

SPECS: list[dict[str, Any]] = [
    {"name": "mid", "kind": "mid"},
    {"name": "spread", "kind": "spread_bps"},
    {"name": "micro", "kind": "microprice"},
    {"name": "imb", "kind": "book_imbalance"},
    {"name": "ret", "kind": "log_return", "input": "mid", "lag": "1s"},
    {"name": "rv", "kind": "realized_vol", "input": "mid", "window": "10s"},
    {"name": "spread_ema", "kind": "ema", "input": "spread", "span": 20},
]
FEATURES = FeatureSet([msgspec.convert(s, FeatureSpec) for s in SPECS])
NAMES = list(FEATURES.names)
SCALES = scales_of(NAMES, SPECS)
TICK = 0.01
PRICE = 3000.0
STEP_NS = 250_000_000  # one quote, one sample, every 250 ms
WINDOW = 100
TRAIN = 5000  # 50 disjoint windows: at 10 %, j = 4 may exceed, bound 5 / 51
FRESH = 5000  # the held-out window checked is the last: 50 windows after training
ALPHA = 0.1
SEEDS = 150
CHANGED_SEEDS = 40  # of them, also replayed with a change
OLD_SEEDS = 30


def quotes(seed: int, n: int, widen_at: int | None = None, vol_at: int | None = None) -> TickBatch:
    """The same draws whatever the change: a change alters the ticks from its row on."""
    rng = np.random.default_rng(seed)
    # a slow volatility regime (memory 200 quotes, two windows), spreads widening with it
    regime = lfilter([1.0], [1.0, -0.995], rng.normal(0, 0.15 * np.sqrt(1 - 0.995**2), n))
    vol = 0.3e-4 * np.exp(regime)  # 9 ticks a quote at 3,000
    if vol_at is not None:
        vol[vol_at:] *= 2.0
    fair = PRICE * np.exp(np.cumsum(vol * rng.standard_normal(n)))  # the level wanders
    spread = 1 + np.minimum(3, rng.poisson(0.4 * np.exp(regime)))
    if widen_at is not None:
        spread[widen_at:] += 3
    bid_ticks = np.floor(fair / TICK - spread / 2.0)
    sizes = np.exp(rng.normal(0.0, 0.6, (2, n)))
    ts = np.arange(1, n + 1, dtype=np.int64) * STEP_NS
    return TickBatch.quotes(ts, ts, np.zeros(n, np.int32), np.round(bid_ticks * TICK, 2),
                            np.round((bid_ticks + spread) * TICK, 2), sizes[0], sizes[1])  # fmt: skip


def rows(ticks: TickBatch) -> tuple[F64, F64]:
    """Features of every quote with all of them defined, and each one's own mid."""
    x = FEATURES.update(ticks, FEATURES.new_state(1))
    ok = ~np.isnan(x).any(axis=1)
    return x[ok], (0.5 * (ticks.bid + ticks.ask))[ok]


def scaled(x: F64, mid: F64) -> F64:
    return apply_scales(x, SCALES, mid, np.full(x.shape[0], TICK))


def window_psi(refs: list[tuple[F64, F64]], values: F64, starts: Any) -> F64:
    """PSI of each series (columns) for the windows starting at ``starts`` (rows)."""
    out = np.empty((len(starts), len(refs)))
    for j, (edges, shares) in enumerate(refs):
        counts = window_counts(bucket_index(edges, values[:, j]), shares.shape[0], WINDOW, starts)
        out[:, j] = psi(shares, counts / WINDOW)
    return out


@dataclass
class Seed:
    cal: DriftCalibration
    refs: list[tuple[F64, F64]]
    fresh_over: Any  # every disjoint fresh window: over its threshold on some series
    # PSI / threshold per series of the ten disjoint windows after a 3-tick widening and
    # after a volatility doubling (the first CHANGED_SEEDS seeds only)
    widened: F64 | None = None
    doubled: F64 | None = None


def ratios(refs: list[tuple[F64, F64]], thresholds: F64, values: F64, first: int) -> F64:
    after = window_psi(refs, values, first + WINDOW * np.arange(10))
    # the mid's own series is constant on its scale (threshold 0): ratio 0
    return np.divide(after, thresholds, out=np.zeros_like(after), where=thresholds > 0)


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    out = []
    n = TRAIN + FRESH + 200  # the first 40 quotes warm the 10 s features up
    starts = np.arange(0, FRESH - WINDOW + 1, WINDOW)
    change = TRAIN + 200  # a quote index, some 160 rows after training ends
    for seed in range(SEEDS):
        x, mid = rows(quotes(seed, n))
        values = scaled(x, mid)
        refs, cal = calibrate_drift(values[:TRAIN], 10, WINDOW, ALPHA)
        assert cal is not None
        thresholds = np.array(cal.thresholds)
        over = np.any(window_psi(refs, values[TRAIN : TRAIN + FRESH], starts) > thresholds, axis=1)
        result = Seed(cal, refs, over)
        if seed < CHANGED_SEEDS:
            # rows start some 40 quotes in: these windows begin 40 quotes after the change
            wx, wmid = rows(quotes(seed, n, widen_at=change))
            result.widened = ratios(refs, thresholds, scaled(wx, wmid), TRAIN + 200)
            dx, dmid = rows(quotes(seed, n, vol_at=change))
            result.doubled = ratios(refs, thresholds, scaled(dx, dmid), TRAIN + 200)
        out.append(result)
    return out


def test_scales_follow_the_feature_kinds() -> None:
    by_name = {s["name"]: s for s in SPECS}
    extra = {
        "mid_ema": {"name": "mid_ema", "kind": "ema", "input": "mid", "span": 5},
        "mid_std": {"name": "mid_std", "kind": "rolling_std", "input": "mid", "window": 5},
        "ret_ema": {"name": "ret_ema", "kind": "ema", "input": "ret", "span": 5},
        "z": {"name": "z", "kind": "zscore", "input": "mid", "window": 5},
        "spread_std": {"name": "spread_std", "kind": "rolling_std", "input": "spread", "window": 5},
    }
    specs = by_name | extra
    got = {n: scale_of(n, specs) for n in specs}
    assert got == {
        "mid": "price_offset", "spread": "bps_ticks", "micro": "price_offset", "imb": "none",
        "ret": "return_ticks", "rv": "relative_ticks", "spread_ema": "bps_ticks",
        "mid_ema": "price_offset", "mid_std": "price_ticks", "ret_ema": "relative_ticks",
        "z": "none", "spread_std": "bps_ticks",
    }  # fmt: skip
    assert scale_of("research_column", specs) == "none"  # no spec: as it comes


def test_scaled_spreads_are_whole_ticks_at_any_price_level() -> None:
    # 1 to 4 tick spreads in bps: every price level the walk visits gives its own values;
    # on the scale, four values, one bin each
    x, mid = rows(quotes(7, 3000))
    ticks = scaled(x, mid)
    spread = ticks[:, NAMES.index("spread")]
    assert set(np.unique(spread).tolist()) <= {1.0, 2.0, 3.0, 4.0}
    assert np.unique(x[:, NAMES.index("spread")]).shape[0] > 100  # in bps: the level shows
    assert np.all(ticks[:, NAMES.index("mid")] == 0.0)  # the level itself: nothing left
    moves = ticks[:, NAMES.index("ret")] * 2.0  # mids sit on half ticks
    np.testing.assert_allclose(moves, np.round(moves), atol=1e-9)
    edges, shares, binning = drift_bins(spread, 10)
    assert binning == "values" and edges.tolist() == [1.5, 2.5, 3.5][: edges.shape[0]]
    assert shares.sum() == pytest.approx(1.0) and shares[0] > 0.5
    # more distinct values than bins: the quantile bins, as before
    rng = np.random.default_rng(1)
    values = rng.normal(size=1000)
    e, s, binning = drift_bins(values, 10)
    assert binning == "quantiles"
    np.testing.assert_array_equal(e, reference_bins(values, 10)[0])
    np.testing.assert_array_equal(s, reference_bins(values, 10)[1])


def test_drift_false_alarm_rate_on_unchanged_held_out_data_within_binomial_bound(
    seeds: list[Seed],
) -> None:
    bounds = np.array([s.cal.false_alarm_bound for s in seeds])
    # 100 disjoint training windows, j = 4 allowed over: (4 + 1) / 101 unless the
    # dependence correction counted fewer
    assert np.all(bounds <= ALPHA + 1e-9) or np.mean(bounds) < 1.5 * ALPHA
    # one window per seed, the last of the held-out span (its level furthest from
    # training's): independent trials of the stated rate (measured: 15 of 150 at a mean
    # stated 10.0 %, one-sided p 0.54; every held-out window: 10.5 % +- 0.5 %)
    last = np.array([s.fresh_over[-1] for s in seeds])
    stated = float(np.mean(bounds))
    p = sps.binomtest(int(last.sum()), len(seeds), stated, alternative="greater").pvalue
    assert p > 0.01, (int(last.sum()), len(seeds), stated)
    # every disjoint held-out window (correlated within a seed: the seeds' spread of
    # shares gives the standard error)
    shares = np.array([np.mean(s.fresh_over) for s in seeds])
    se = shares.std(ddof=1) / np.sqrt(len(seeds))
    assert shares.mean() <= stated + 3 * se, (shares.mean(), stated, se)


def replaced_calibration(values: F64) -> tuple[list[tuple[F64, F64]], F64, float]:
    """The calibration this issue replaced: quantile bins of the values as they come, the
    disjoint windows counted as independent, ``(j + 1) / (n + 1)`` stated."""
    refs = [reference_bins(values[:, j], 10) for j in range(values.shape[1])]
    cuts = np.linspace(0, values.shape[0], 6).astype(np.int64)
    psis: list[list[F64]] = [[] for _ in refs]
    for lo, hi in itertools.pairwise(cuts.tolist()):
        other = np.r_[0:lo, hi : values.shape[0]]
        starts = np.arange(lo, hi - WINDOW + 1)
        for j in range(values.shape[1]):
            edges, shares = reference_bins(values[other, j], 10)
            counts = window_counts(
                bucket_index(edges, values[:, j]), shares.shape[0], WINDOW, starts
            )
            psis[j].append(psi(shares, counts / WINDOW))
    independent = int(sum((hi - lo) // WINDOW for lo, hi in itertools.pairwise(cuts.tolist())))
    allowed, bound = conformal_allowance(independent, ALPHA)
    thresholds, _ = family_thresholds([np.concatenate(p) for p in psis], allowed / independent)
    return refs, np.array(thresholds), bound


def test_price_level_deciles_exceed_their_stated_bound_on_the_same_data(
    seeds: list[Seed],
) -> None:
    """The procedure replaced, on the same seeds: features binned as they come (the
    spread's one-tick mass is a band that moves with the price level, deciles inside it
    sort rows by the level; the mid is the level), their stated bound far exceeded; and
    a three-tick widening barely over the inflated spread threshold."""
    starts = np.arange(0, FRESH - WINDOW + 1, WINDOW)
    spread = NAMES.index("spread")
    last: list[float] = []
    bounds, ratios = [], []
    for seed in range(OLD_SEEDS):
        x, _ = rows(quotes(seed, TRAIN + FRESH + 200))
        refs, thresholds, bound = replaced_calibration(x[:TRAIN])
        over = np.any(window_psi(refs, x[TRAIN : TRAIN + FRESH], starts) > thresholds, axis=1)
        last.append(float(np.mean(over)))
        bounds.append(bound)
        wx, _ = rows(quotes(seed, TRAIN + FRESH + 200, widen_at=TRAIN + 200))
        widened = window_psi(refs, wx, np.array([TRAIN + 200]))[0]
        ratios.append(widened[spread] / thresholds[spread])
    stated = float(np.mean(bounds))
    # every disjoint held-out window (a share per seed: the seeds are the trials);
    # measured 19.6 % against a stated 9.8 %
    shares = np.array(last)
    assert shares.mean() > 1.5 * stated, (shares.mean(), stated)
    assert sps.ttest_1samp(shares, stated, alternative="greater").pvalue < 0.01
    ours = np.array([s.widened[0, spread] for s in seeds if s.widened is not None])
    assert np.median(ratios) < 5.0 < np.min(ours), (np.median(ratios), np.min(ours))


def test_three_tick_widening_and_volatility_doubling_alarm(seeds: list[Seed]) -> None:
    spread = NAMES.index("spread")
    widened = np.array([s.widened[0] for s in seeds if s.widened is not None])
    doubled = np.array([s.doubled for s in seeds if s.doubled is not None])
    # the first full window after the change, every seed: over the threshold on the
    # spread, by a wide margin (measured: 31 to 80 times; price-level deciles: ~1.3)
    assert np.all(widened[:, spread] > 5.0), widened[:, spread].min()
    # a volatility doubling, on the returns and realized volatility in ticks: PSI of a
    # slow series saturates (a window all in its top decile scores as one far beyond it,
    # and training's own regime swings reach that), so not every window tells; within
    # ten windows (25 s) nearly every seed alarms, and windows alarm ten times as often
    # as unchanged ones (measured: 82 % of first windows, 95 % of seeds within ten, 78 %
    # of windows against 10.5 %)
    alarmed = np.any(doubled > 1.0, axis=2)  # seeds x windows
    assert np.mean(alarmed.any(axis=1)) >= 0.9, np.mean(alarmed.any(axis=1))
    unchanged = np.mean([np.mean(s.fresh_over) for s in seeds])
    assert np.mean(alarmed) > 5 * unchanged, (np.mean(alarmed), unchanged)


def test_slow_regime_counts_fewer_effective_windows() -> None:
    """A volatility regime ten windows long: disjoint windows move together, the count is
    corrected down and the bound up (without it: 7 % of held-out windows over a stated
    4.9 %)."""
    rng = np.random.default_rng(3)
    n = 10_000
    regime = lfilter([1.0], [1.0, -0.999], rng.normal(0, 0.5 * np.sqrt(1 - 0.999**2), n))
    values = (rng.standard_normal(n) * np.exp(regime))[:, None]
    _, cal = calibrate_drift(values, 10, WINDOW, ALPHA)
    assert cal is not None and cal.independent_windows == 100
    assert cal.dependence > 1.5 and cal.effective_windows < 70
    # independent rows: nothing to correct
    _, plain = calibrate_drift(rng.standard_normal((n, 1)), 10, WINDOW, ALPHA)
    assert plain is not None and plain.dependence == 1.0 and plain.effective_windows == 100


def test_maxima_thresholds_count_every_series_excursion() -> None:
    """Too few windows for the rate: the thresholds are the series' maxima, and a new
    window alarms on passing any of them. Four independent series that persist within a
    window pass one of their maxima far more often than the ``1 / (n + 1)`` stated before
    the maxima were counted; the bound now counts each maximum's window."""
    shares, bounds = [], []

    def rows_of(rng: np.random.Generator, n: int) -> F64:
        noise = rng.standard_normal((n, 4)) * np.sqrt(1 - 0.98**2)
        return np.asarray(lfilter([1.0], [1.0, -0.98], noise, axis=0))

    for seed in range(10):
        rng = np.random.default_rng(seed)
        refs, cal = calibrate_drift(rows_of(rng, 2000), 10, WINDOW, 0.01)  # 20 disjoint
        assert cal is not None
        fresh = rows_of(rng, 50_000)
        starts = np.arange(0, fresh.shape[0] - WINDOW + 1, WINDOW)
        over = np.any(window_psi(refs, fresh, starts) > cal.thresholds, axis=1)
        shares.append(float(np.mean(over)))
        bounds.append(cal.false_alarm_bound)
        assert cal.false_alarm_bound >= 2 / (cal.effective_windows + 1)
    # measured 8.6 % over 30 seeds against 1 / 21 = 4.8 % stated before; bounds ~23 %
    assert np.mean(shares) > 1 / 21 + 0.015, np.mean(shares)
    assert np.mean(shares) <= np.mean(bounds), (np.mean(shares), np.mean(bounds))


def monitor_for(seed_refs: list[tuple[F64, F64]], cal: DriftCalibration) -> ModelMonitor:
    bins = [
        ReferenceBins(edges=e.tolist(), fractions=f.tolist(), drift_threshold=t, scale=s)
        for (e, f), t, s in zip(seed_refs, cal.thresholds, [*SCALES, "none"], strict=True)
    ]
    ref = MonitorReference(rows=TRAIN, sample_interval_ns=STEP_NS, label_tolerance_ns=STEP_NS,
                           window=WINDOW, configured_false_alarm_rate=ALPHA,
                           calibration_method="time_blocks", false_alarm_bound=cal.false_alarm_bound,
                           features=dict(zip(NAMES, bins[:-1], strict=True)), score=bins[-1],
                           tick_sizes={"X": TICK})  # fmt: skip
    manifest = Manifest(name="m", kind="lightgbm", model_file="m.txt", model_sha256="0" * 64,
                        output="probability", feature_names=NAMES, feature_fingerprint="f",
                        feature_specs=SPECS, label=LabelSpec(horizon_ns=STEP_NS),
                        train_range=TimeRange(start_ns=0, end_ns=1), reference=ref)  # fmt: skip
    cfg = MonitorConfig(window=50, drift_window=WINDOW, false_alarm_rate=ALPHA, gap=None,
                        check_every=1, ic_min=None, losing_streak=None, accuracy_margin=None)  # fmt: skip
    return ModelMonitor(config=cfg, manifest=manifest, symbols=("X",), sample_interval_ns=STEP_NS)


def test_monitor_bins_its_samples_as_training_did() -> None:
    """The monitor scales each sample by its own quote's mid and the instrument's tick
    from the manifest: its PSI after every sample is the offline PSI of the same rows
    scaled as training scaled them, whatever the batches; after a 3-tick widening it
    alarms on the spread."""
    n = 4000
    ticks = quotes(11, n, widen_at=3000)
    x_all = FEATURES.update(ticks, FEATURES.new_state(1))
    ok = ~np.isnan(x_all).any(axis=1)
    x, mid = x_all[ok], (0.5 * (ticks.bid + ticks.ask))[ok]
    score = np.full(n, 0.5)
    refs, cal = calibrate_drift(
        np.column_stack((scaled(x, mid), score[ok]))[:2500], 10, WINDOW, ALPHA
    )
    assert cal is not None
    mon = monitor_for(refs, cal)
    logging.disable(logging.WARNING)
    try:
        for lo in range(0, n, 777):
            part = np.arange(lo, min(lo + 777, n))
            for i in mon.observe(ticks.take(part), x_all[part], score[part]).tolist():
                mon.act(i)
        mon.act(2**62)
    finally:
        logging.disable(logging.NOTSET)
    values = np.column_stack((scaled(x, mid), score[ok]))
    history = mon.history()["drift"]
    assert len(history) > 1000
    for h in history[::97]:
        r = h["sample"] - WINDOW
        expected = window_psi(refs, values, np.array([r]))[0]
        got = np.array([h["psi"][name] for name in [*NAMES, "score"]])
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    alarms = [a for a in mon.alarms if a["kind"] == "drift"]
    widened_at = int(ticks.ts_event[3000])
    assert alarms and "spread PSI" in alarms[-1]["message"]
    assert any(a["ts"] >= widened_at for a in alarms)
    series = mon.snapshot()["drift"]["series"]
    assert series["spread"]["scale"] == "bps_ticks" and series["mid"]["scale"] == "price_offset"


def test_monitor_refuses_an_instrument_without_a_tick_size() -> None:
    """Bins in ticks need the instrument's tick: a model trained on other instruments is
    refused at start-up, not binned on a guess."""
    rng = np.random.default_rng(2)
    refs, cal = calibrate_drift(rng.normal(size=(1000, len(NAMES) + 1)), 10, WINDOW, ALPHA)
    assert cal is not None
    mon = monitor_for(refs, cal)
    with pytest.raises(ModelError, match=r"no tick size for \['Y'\]"):
        ModelMonitor(config=mon.config, manifest=mon.manifest, symbols=("X", "Y"),
                     sample_interval_ns=STEP_NS)  # fmt: skip
