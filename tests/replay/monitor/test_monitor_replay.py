"""The model monitor in replay, on a LightGBM model trained in the test: held-out data of
the same process (no drift alarm at the calibrated thresholds, where the conventional 0.1
fires on most windows; positive IC; labels equal to training's), shifted data (drift
alarm acting on the trading state, under an operator kill too), an inverted model (IC
alarm), batch invariance and the report files."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from engine.config import Config, config_from_dict
from engine.engine import Engine
from engine.events import Command
from engine.monitor import ModelMonitor
from engine.monitor.stats import spearman
from engine.signals import SignalModel
from engine.signals.manifest import read_manifest
from replay.backtest.runner import Recorder, build_engine, run_loop, tick_batches
from replay.files.readers import BadRowCounts
from replay.files.sample_data import split_by_time
from replay.monitor.report import monitor_document, write_monitor_report
from replay.research.dataset import build_dataset
from replay.research.training.run import train

SYMBOLS = [
    {"symbol": "BTC-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-5},
    {"symbol": "ETH-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-4},
]
# Stationary inputs only: spread in bps on a tick grid is a proxy of the price level
# (1 tick / mid), which wanders between the training and the held-out span, so its
# quantile bins drift on "unchanged" data; the monitor rightly flags it, but it is not
# what these tests are about.
FEATURES = ["imb", "imb_ema", "flow_2s", "ret_1s", "z_mid_10s"]
MONITOR = {"window": 500, "drift_window": 500, "false_alarm_rate": 0.01, "check_every": 10}


def config(model: Path | None = None, **monitor: Any) -> Config:
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = SYMBOLS
    data["train"] |= {"folds": 3, "sample_interval": "200ms", "min_data_in_leaf": 50,
                      "features": FEATURES}  # fmt: skip
    data["monitor"] = {**MONITOR, **monitor}
    if model is not None:
        data["model"]["path"] = str(model)
    return config_from_dict(data)


@pytest.fixture(scope="module")
def split(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Train on the first two thirds, a model folder, the last third held out, and the
    held-out third shifted (spread doubled, bid sizes tripled: book imbalance biased)."""
    root = tmp_path_factory.mktemp("monitor")
    split_by_time(sample_dir, root / "train", root / "hold", 2 / 3)
    train(config(), root / "train", root / "model", progress=False)
    shifted = root / "shifted"
    shifted.mkdir()
    q = pl.read_parquet(root / "hold" / "quotes.parquet")
    q = q.with_columns(
        ask=(pl.col("bid") + 2 * (pl.col("ask") - pl.col("bid"))).round(2),
        bid_size=pl.col("bid_size") * 3,
    )
    q.write_parquet(shifted / "quotes.parquet")
    pl.read_parquet(root / "hold" / "trades.parquet").write_parquet(shifted / "trades.parquet")
    return root / "model", root / "hold", shifted


def replay(cfg: Config, data: Path, batch_size: int = 4096,
           prepare: Callable[[Engine], None] | None = None) -> tuple[Engine, Recorder, ModelMonitor]:  # fmt: skip
    engine, recorder, monitor = build_engine(cfg)
    if prepare is not None:
        prepare(engine)
    assert monitor is not None
    batches, _ = tick_batches(cfg, data, engine.instruments, BadRowCounts(), batch_size)
    run_loop(engine.run(batches))
    return engine, recorder, monitor


def test_manifest_holds_reference_bins_and_calibrated_thresholds(
    split: tuple[Path, Path, Path],
) -> None:
    ref = read_manifest(split[0]).reference
    assert ref is not None and list(ref.features) == FEATURES
    assert ref.window == 500 and ref.configured_false_alarm_rate == 0.01
    assert ref.sample_interval_ns == 200_000_000 and ref.label_tolerance_ns == 200_000_000
    # every start of 500 consecutive rows within each of 5 time blocks, held out from
    # the bins it is scored against
    assert ref.calibration_method == "time_blocks" and ref.calibration_blocks == 5
    assert sum(ref.calibration_block_rows) == ref.rows
    assert ref.windows == ref.rows - 5 * (500 - 1)
    assert ref.independent_windows == sum(r // 500 for r in ref.calibration_block_rows)
    # the stated bound for new windows, (j + 1) / (n + 1); measured on the held-out
    # windows: the calibrated thresholds alarm on at most that share, the conventional
    # PSI > 0.1 on most and PSI > 0.25 on many (autocorrelated features wander far in 500
    # samples, about 100 s of data)
    n = ref.independent_windows
    assert ref.false_alarm_bound is not None
    # 5,000-odd rows hold 10 disjoint windows of 500: no threshold can state 1 %, the
    # thresholds are the six series' maxima and training says so (the earlier in-sample
    # figure claimed 1 %). A new window passes any of the maxima: the bound counts the
    # windows holding one, (m + 1) / (n + 1) with 1 <= m <= 6 (it was 1 / 11 before)
    assert n == 10 and ref.effective_windows <= n
    m = ref.false_alarm_bound * (ref.effective_windows + 1) - 1
    assert m == pytest.approx(round(m)) and 1 <= round(m) <= 6
    assert any("cannot state a false-alarm rate of 0.01" in w
               for w in read_manifest(split[0]).warnings)  # fmt: skip
    assert ref.false_alarm_rate is not None and ref.false_alarm_rate <= ref.false_alarm_bound
    assert ref.conventional_false_alarm_rates["0.1"] > 0.5
    assert ref.conventional_false_alarm_rates["0.25"] > 0.1
    for bins in (*ref.features.values(), ref.score):
        assert len(bins.edges) == 9 and bins.drift_threshold is not None
        assert bins.drift_threshold > 0.1  # above the conventional line, for every series


def test_held_out_data_no_drift_alarm_positive_ic_training_labels(
    split: tuple[Path, Path, Path],
) -> None:
    model, hold, _ = split
    cfg = config(model, window=100_000)  # one window over the whole run
    engine, recorder, monitor = replay(cfg, hold)
    snap = monitor.snapshot()
    drift = snap["drift"]
    assert monitor.alarm_counts["drift"] == 0
    assert not [a for a in recorder.alarms if "drift" in a.message]
    # measured on this run's 2,000-odd full windows of unchanged data: none over the
    # calibrated thresholds, most over the conventional 0.1 (it would have alarmed at once)
    over = drift["share_of_windows_over"]
    assert drift["windows_checked"] > 2000
    assert over["calibrated"] == 0.0
    assert over["0.1"] > 0.5
    first = min(v["max_psi"] for v in drift["series"].values())
    assert first > 0.1
    # the model still predicts out of sample
    score, realized = monitor.window_values()
    assert snap["performance"]["ic"] == spearman(score, realized) > 0.05
    assert snap["performance"]["hit_ratio"] > 0.5
    # every scored prediction is a training row of this data with its training label
    ds = build_dataset(cfg, hold, progress=False)
    rows = ~np.isnan(ds.X).any(axis=1) & ~np.isnan(ds.forward_return)
    assert snap["predictions"]["scored"] == int(rows.sum())
    np.testing.assert_allclose(
        np.sort(realized), np.sort(ds.forward_return[rows]), rtol=0, atol=1e-15
    )
    assert engine.model is not None
    np.testing.assert_allclose(np.sort(score), np.sort(engine.model.predict(ds.X[rows])), atol=1e-9)


def test_shifted_features_raise_a_drift_alarm_that_reduces_only(
    split: tuple[Path, Path, Path],
) -> None:
    model, _, shifted = split
    cfg = config(model, on_drift="reduce_only", losing_streak=None, ic_min=None)
    engine, recorder, monitor = replay(cfg, shifted)
    assert monitor.alarm_counts["drift"] >= 1
    snap = monitor.snapshot()
    assert snap["drift"]["series"]["imb"]["max_psi"] > snap["drift"]["series"]["imb"]["threshold"]
    # as soon as the first window is full, and held for nearly every window after
    assert snap["drift"]["share_of_windows_over"]["calibrated"] > 0.9
    alarm = next(a for a in recorder.alarms if a.source == "monitor")
    assert alarm.severity == "critical" and "imb" in alarm.message
    assert engine.risk.state == "REDUCE_ONLY"
    change = recorder.states[-1]
    assert change.source == "automatic" and change.reason.startswith("monitor:")
    assert change.ts_event == alarm.ts_event
    assert engine.counters["monitor_alarms_drift"] == monitor.alarm_counts["drift"]


def test_monitor_reduce_only_never_lowers_an_operator_kill(split: tuple[Path, Path, Path]) -> None:
    model, _, shifted = split
    cfg = config(model, on_drift="reduce_only", losing_streak=None, ic_min=None)

    def kill(engine: Engine) -> None:
        engine.on_command(Command(ts_event=0, ts_recv=0, action="kill", reason="test", issuer="op"))

    engine, recorder, monitor = replay(cfg, shifted, prepare=kill)
    assert monitor.alarm_counts["drift"] >= 1
    trading = engine.risk.trading
    assert engine.risk.state == "HALTED" and trading.source == "operator"
    assert trading.claim("automatic") == "REDUCE_ONLY"  # claimed, but below the kill
    assert [s.state for s in recorder.states] == ["HALTED"]
    engine.on_command(Command(ts_event=1, ts_recv=1, action="resume", issuer="op"))
    assert engine.risk.state == "ACTIVE"  # the operator's resume clears the sticky claim


class Inverted:
    """The trained model with its signal turned upside down."""

    def __init__(self, inner: SignalModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.feature_names = inner.feature_names
        self.manifest = getattr(inner, "manifest")  # noqa: B009

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return 1.0 - self.inner.predict(features)


def test_inverted_signal_raises_an_ic_alarm(split: tuple[Path, Path, Path]) -> None:
    model, hold, _ = split
    # the trained model's IC over 500 scored predictions dips to about 0 on this data (labels
    # of consecutive rows overlap: 500 rows hold far fewer independent returns); an
    # inverted model sits near -0.13
    cfg = config(model, ic_min=-0.05, on_low_ic="reduce_only", losing_streak=None)

    def invert(engine: Engine) -> None:
        assert engine.model is not None
        engine.model = Inverted(engine.model)

    engine, recorder, monitor = replay(cfg, hold, prepare=invert)
    assert monitor.alarm_counts["low_ic"] >= 1
    assert monitor.snapshot()["performance"]["ic"] < 0
    assert engine.risk.state == "REDUCE_ONLY"
    assert any(a.source == "monitor" and "IC" in a.message for a in recorder.alarms)
    # the same data with the model as trained: no IC alarm
    _, _, plain = replay(cfg, hold)
    assert plain.alarm_counts["low_ic"] == 0 and plain.snapshot()["performance"]["ic"] > 0


def test_monitor_figures_do_not_depend_on_batch_size(split: tuple[Path, Path, Path]) -> None:
    model, _, shifted = split
    # every kind of alarm, two of them acting: a losing streak (decided on a fill) reduces
    # only, then a low IC halts
    cfg = config(model, ic_min=0.05, losing_streak=2, on_losing_streak="reduce_only",
                 on_low_ic="halted")  # fmt: skip
    runs = [replay(cfg, shifted, batch_size=b) for b in (4096, 7, 1)]
    docs = [monitor_document(m) for _, _, m in runs]
    by_kind = docs[0]["alarms"]["by_kind"]
    assert by_kind["drift"] and by_kind["losing_streak"] and by_kind["low_ic"]
    assert [s.state for s in runs[0][1].states] == ["REDUCE_ONLY", "HALTED"]
    assert docs[0]["predictions"]["scored"] > 1000
    assert docs[1] == docs[0] and docs[2] == docs[0]
    key = [[(f.ts_event, f.side, f.qty, f.price) for f in r.fills] for _, r, _ in runs]
    assert key[1] == key[0] and key[2] == key[0]
    states = [[(s.ts_event, s.state, s.source) for s in r.states] for _, r, _ in runs]
    assert states[1] == states[0] and states[2] == states[0]


def test_monitor_report_files(split: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, hold, _ = split
    _, _, monitor = replay(config(model), hold)
    paths = write_monitor_report(monitor, tmp_path / "a")
    write_monitor_report(monitor, tmp_path / "b")
    assert [p.name for p in paths] == ["monitor.json", "monitor.png"]
    for p in paths:
        assert p.stat().st_size > 500 and p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
    doc = json.loads(paths[0].read_text())
    assert doc["model"] == "model" and doc["history"]["performance"] and doc["history"]["drift"]
    assert set(doc["drift"]["series"]) == {*FEATURES, "score"}
    assert "psi" in doc["definitions"]
