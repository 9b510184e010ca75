"""The model monitor across a regime change, on a LightGBM model trained in the test on
the first regime: the IC and drift alarms trip after the change and not before, and the
configured action (reduce only) takes effect; and the drift threshold's false-alarm rate,
measured on non-overlapping windows of held-out unchanged data, is within its stated
bound. The same with the bundled features (the raw spread in bps among them) and every
alarm calibrated: the manifest states each alarm's rate, the unchanged held-out replay
keeps them, and the change (three ticks wider, the edge inverted) alarms on the spread
and the IC."""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.config import Config, config_from_dict
from engine.monitor import ModelMonitor
from engine.monitor.scales import apply_scales, own_quote_mids
from engine.monitor.stats import bucket_index, psi, window_counts
from engine.plugins import load_model
from engine.signals.manifest import read_manifest
from replay.backtest.runner import run_replay
from replay.files.sample_data import START_NS, generate
from replay.research.dataset import build_dataset
from replay.research.training.run import train

HOUR_NS = 3600 * 10**9
HOURS = 4.0
TRAIN_END_H = 2.0  # train on the first two hours of the first regime
CHANGE_H = 2.0 + 10 / 60  # the regime changes 10 minutes after training ends
SPAN_H = (2.0 + 5 / 60, 2.5)  # replayed: 5 minutes before the change to 20 after
SEED = 12
# Stationary inputs, and the spread smoothed over 20 quotes: the raw spread in bps sits on
# a few tick-grid values whose bins move with the price level, its EMA is spread out
FEATURES = ["imb", "imb_ema", "flow_2s", "ret_1s", "z_mid_10s", "spread_ema"]
# the bundled config's own features: the raw spread in bps (binned in whole ticks now),
# returns and realized volatility (in ticks at the mid)
BUNDLED = ["imb", "imb_ema", "flow_2s", "ret_1s", "z_mid_10s", "spread", "rv_10s"]
ALPHA = 0.01


def config(model: Path | None = None, features: list[str] = FEATURES, **monitor: Any) -> Config:
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = data["instruments"][:2]
    data["features"].append({"name": "spread_ema", "kind": "ema", "input": "spread", "span": 20})
    data["train"] |= {"folds": 3, "sample_interval": "200ms", "min_data_in_leaf": 50,
                      "features": features}  # fmt: skip
    data["monitor"] = {"window": 1000, "drift_window": 500, "false_alarm_rate": ALPHA,
                       "check_every": 10, **monitor}  # fmt: skip
    if model is not None:
        data["model"]["path"] = str(model)
    return config_from_dict(data)


def time_slice(src: Path, dst: Path, from_h: float, to_h: float) -> None:
    dst.mkdir(parents=True)
    keep = pl.col("ts_event").is_between(
        START_NS + int(from_h * HOUR_NS), START_NS + int(to_h * HOUR_NS), closed="left"
    )
    for kind in ("quotes", "trades"):
        pl.read_parquet(src / f"{kind}.parquet").filter(keep).write_parquet(dst / f"{kind}.parquet")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process generated twice with the same seed, once with a regime change: their
    first regimes are the same ticks. The model is trained on the first two hours; the
    unchanged data's last two hours are held out; the changed data's span around the
    change is replayed."""
    root = tmp_path_factory.mktemp("regime")
    generate(root / "same", symbols=2, hours=HOURS, seed=SEED)
    generate(root / "changed", symbols=2, hours=HOURS, seed=SEED,
             regime_change_at=CHANGE_H / HOURS)  # fmt: skip
    time_slice(root / "same", root / "train", 0.0, TRAIN_END_H)
    time_slice(root / "same", root / "hold", TRAIN_END_H, HOURS)
    time_slice(root / "changed", root / "span", *SPAN_H)
    train(config(), root / "train", root / "model", progress=False)
    return {name: root / name for name in ("model", "hold", "span", "train")}


def test_sample_data_regime_change_keeps_the_first_regime(tmp_path: Path) -> None:
    generate(tmp_path / "a", symbols=1, hours=0.05, seed=3)
    generate(tmp_path / "b", symbols=1, hours=0.05, seed=3, regime_change_at=0.5)
    cut = START_NS + int(0.025 * HOUR_NS)
    a, b = (pl.read_parquet(tmp_path / f / "quotes.parquet") for f in ("a", "b"))
    assert a.filter(pl.col("ts_event") < cut).equals(b.filter(pl.col("ts_event") < cut))
    spread = [(q["ask"] - q["bid"]).mean() for q in (a, b)]
    after = [q.filter(pl.col("ts_event") >= cut) for q in (a, b)]
    widened = [float((q["ask"] - q["bid"]).mean()) for q in after]  # type: ignore[arg-type]
    assert widened[1] > widened[0] + 0.02  # 3 ticks of 0.01 wider, on average
    assert spread[1] != spread[0]


def test_regime_change_trips_ic_and_drift_alarms_after_not_before(
    folders: dict[str, Path],
) -> None:
    cfg = config(folders["model"], ic_min=-0.1, on_low_ic="reduce_only", on_drift="reduce_only",
                 losing_streak=None, accuracy_margin=None)  # fmt: skip
    run = run_replay(cfg, folders["span"], progress=False)
    monitor = run.monitor
    assert monitor is not None
    change = START_NS + int(CHANGE_H * HOUR_NS)
    alarms = monitor.alarms
    # before: a full IC window and some 2,500 drift windows of the first regime, no alarm
    early = [p for p in monitor.performance_history if p["ts"] < change]
    assert len(early) * 10 > cfg.monitor.window and all(p["ic"] > -0.1 for p in early[-5:])
    assert not [a for a in alarms if a["ts"] < change]
    # after: both, within about a window (IC 1000 predictions, drift 500 samples, 10 a second)
    first = {k: min(a["ts"] for a in alarms if a["kind"] == k) for k in ("low_ic", "drift")}
    for ts in first.values():
        assert change < ts < change + 120 * 10**9
    drift_alarm = next(a for a in alarms if a["kind"] == "drift")
    assert "spread_ema" in drift_alarm["message"]
    # the action: reduce only, claimed by the engine itself at the first alarm's tick
    assert run.engine.risk.state == "REDUCE_ONLY"
    state = run.recorder.states[0]
    assert (state.state, state.source) == ("REDUCE_ONLY", "automatic")
    assert state.ts_event == min(first.values()) and state.reason.startswith("monitor:")
    monitor_alarms = [a for a in run.recorder.alarms if a.source == "monitor"]
    assert monitor_alarms[0].ts_event == state.ts_event
    assert all(a.severity == "critical" for a in monitor_alarms)
    # the relation inverted: once the window holds only the second regime, IC stays below 0
    late = [p["ic"] for p in monitor.performance_history if p["ts"] > change + 200 * 10**9]
    assert late and max(late) < 0 and float(np.mean(late)) < -0.1


def test_drift_threshold_false_alarm_rate_on_unchanged_data_within_stated_bound(
    folders: dict[str, Path],
) -> None:
    cfg = config(folders["model"])
    reference = read_manifest(folders["model"]).reference
    assert reference is not None and reference.false_alarm_bound is not None
    assert reference.configured_false_alarm_rate == ALPHA
    # stated: 130-odd disjoint held-out windows of training cannot reach 1 %: the
    # thresholds are the seven series' maxima, and a new window passes any of them, so
    # the bound is (excursions at a maximum + 1) / (n + 1), above the configured rate
    # (it was 1 / (n + 1) before the maxima were counted, and held-out rates of 2-5 %
    # were measured against it), and training says so
    stated = reference.false_alarm_bound
    assert reference.calibration_method == "time_blocks"
    n_eff = reference.effective_windows  # after the dependence correction
    assert reference.independent_windows > 120 and 0 < n_eff <= reference.independent_windows
    assert stated > ALPHA
    assert stated * (n_eff + 1) == pytest.approx(round(stated * (n_eff + 1)))
    assert any("cannot state a false-alarm rate of 0.01" in w
               for w in read_manifest(folders["model"]).warnings)  # fmt: skip
    # the monitor's samples of the held-out two hours (rows with every feature defined),
    # scored by the model, in time order
    ds = build_dataset(cfg, folders["hold"], progress=False)
    defined = ~np.isnan(ds.X).any(axis=1)
    assert np.all(np.diff(ds.ts[defined]) >= 0)
    x = ds.X[defined]
    assert cfg.model is not None
    bins = [reference.features[f] for f in FEATURES] + [reference.score]
    # on the scales the bins were counted on (spread_ema in ticks at each row's own mid)
    inst = ds.instrument[defined]
    mid = own_quote_mids(ds.quotes.ts, ds.quotes.instrument, ds.quotes.mid, ds.ts[defined], inst)
    tick = np.array([reference.tick_sizes[i.symbol] for i in cfg.instruments])[inst]
    values = apply_scales(np.column_stack([x, load_model(cfg.model).predict(x)]),
                          [b.scale for b in bins], mid, tick)  # fmt: skip
    # non-overlapping windows, so their alarms are close to independent trials (the
    # monitor's own check, one window per sample, shares most rows between neighbours)
    window = reference.window
    starts = np.arange(0, values.shape[0] - window + 1, window)
    alarmed = np.zeros(starts.shape[0], np.bool_)
    for j, b in enumerate(bins):
        edges, shares = np.asarray(b.edges), np.asarray(b.fractions)
        counts = window_counts(bucket_index(edges, values[:, j]), shares.shape[0], window, starts)
        alarmed |= psi(shares, counts / window) > b.drift_threshold
    n = starts.shape[0]
    assert n > 120
    rate = float(np.mean(alarmed))
    # one-sided binomial tolerance, 3 standard deviations of the rate at the stated bound
    # (not the configured rate: the bound is what the manifest claims). One two-hour
    # sample has ~137 disjoint windows, too few to tell 0.8 % from 1.5 %: the power to
    # catch an understated rate is in tests/engine/test_monitor_calibration.py
    assert rate <= stated + 3 * math.sqrt(stated * (1 - stated) / n), (rate, n, stated)


@pytest.fixture(scope="module")
def bundled(folders: dict[str, Path]) -> Path:
    """A model of the bundled features, trained on the same first two hours."""
    out = folders["model"].parent / "bundled"
    train(config(features=BUNDLED), folders["train"], out, progress=False)
    return out


def test_bundled_manifest_bins_the_spread_in_ticks_and_states_every_alarm_rate(
    bundled: Path,
) -> None:
    manifest = read_manifest(bundled)
    ref = manifest.reference
    assert ref is not None and ref.tick_sizes == {"BTC-USD": 0.01, "ETH-USD": 0.01}
    spread = ref.features["spread"]
    # 1 to 4 ticks: one bin per tick, edges half way between (never inside a tick's mass)
    assert (spread.scale, spread.binning) == ("bps_ticks", "values")
    assert spread.edges == [1.5, 2.5, 3.5] and spread.fractions[0] > 0.5
    assert ref.features["ret_1s"].scale == "return_ticks"
    assert ref.features["rv_10s"].scale == "relative_ticks"
    assert ref.features["imb"].scale == "none" and ref.score.scale == "none"
    # the low-IC alarm: training's out-of-sample IC, 2 s labels every 200 ms (10 per
    # label), windows of 1,000 predictions (100 effective labels), 1 % per window
    low_ic, streak = ref.low_ic, ref.losing_streak
    assert low_ic is not None and streak is not None
    assert low_ic.expected_ic == manifest.metrics["oos_ic"] and low_ic.calibrated
    assert (low_ic.labels_per_horizon, low_ic.effective_labels) == (10.0, 100.0)
    assert low_ic.false_alarm_rate == ALPHA and low_ic.threshold < low_ic.expected_ic - 0.2
    assert streak.hit_ratio == manifest.metrics["oos_accuracy"] and streak.window == 100
    assert streak.false_alarm_rate <= ALPHA and streak.length >= 10
    # the monitor at training's config runs exactly these
    cfg = config(bundled, BUNDLED)
    monitor = ModelMonitor(config=cfg.monitor, manifest=manifest,
                           symbols=("BTC-USD", "ETH-USD"), sample_interval_ns=1)  # fmt: skip
    assert monitor.low_ic.threshold == low_ic.threshold
    assert monitor.streak.length == streak.length


def test_bundled_unchanged_held_out_replay_keeps_the_stated_rates(
    folders: dict[str, Path], bundled: Path
) -> None:
    run = run_replay(config(bundled, BUNDLED), folders["hold"], progress=False)
    assert run.monitor is not None
    snap = run.monitor.snapshot()
    drift = snap["drift"]
    stated = drift["stated_false_alarm_bound"]
    # the share of every full window (one per sample) over the calibrated thresholds,
    # against the stated bound with the tolerance of its ~110 disjoint windows
    disjoint = drift["windows_checked"] // drift["window"]
    tolerance = 3 * math.sqrt(stated * (1 - stated) / disjoint)
    assert drift["share_of_windows_over"]["calibrated"] <= stated + tolerance, drift
    # low IC: the share of checks below the threshold, against 1 % per window with the
    # tolerance of its ~54 disjoint windows
    ic = snap["alarms"]["calibration"]["low_ic"]
    windows = snap["predictions"]["scored"] / snap["window"]
    assert ic["share_of_checks_below"] <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / windows)


def test_bundled_regime_change_alarms_on_the_spread_and_the_ic(
    folders: dict[str, Path], bundled: Path
) -> None:
    cfg = config(bundled, BUNDLED, losing_streak=None, accuracy_margin=None)
    run = run_replay(cfg, folders["span"], progress=False)
    assert run.monitor is not None
    change = START_NS + int(CHANGE_H * HOUR_NS)
    alarms = run.monitor.alarms
    assert not [a for a in alarms if a["ts"] < change]
    first = {k: min(a["ts"] for a in alarms if a["kind"] == k) for k in ("low_ic", "drift")}
    drift = next(a for a in alarms if a["kind"] == "drift")
    # the spread three ticks wider: within a window, far over its threshold
    assert change < first["drift"] < change + 70 * 10**9 and "spread PSI" in drift["message"]
    series = run.monitor.snapshot()["drift"]["series"]["spread"]
    assert series["max_psi"] > 10 * series["threshold"]
    # the edge inverted: the calibrated threshold (about 0.2 below training's IC) is
    # crossed within about a window of predictions
    assert change < first["low_ic"] < change + 200 * 10**9
