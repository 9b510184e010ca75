"""Training a user can steer (issue 13.4): defaults that learn on minutes of data,
warnings that say when a model is not worth trusting, integer counts, a decile chart
without gaps, and a logistic model folder that says how replay loads it."""

from __future__ import annotations

import html
import json
import re
import shutil
import tomllib
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from engine.config import Config, TrainConfig, config_from_dict
from engine.signals.linear import LinearModel
from replay.backtest.runner import run_replay
from replay.research.training.fit import min_data_in_leaf
from replay.research.training.report import score_deciles
from replay.research.training.run import TrainResult, baseline_warnings, train
from tests.replay.research.test_training import SYMBOLS

REAL_DAY = "spot_btcusdt_20240808"  # 5.8 minutes of Binance BTCUSDT quotes and trades
BTCUSDT = [{"symbol": "BTCUSDT", "venue": "BINANCE", "tick_size": 0.01, "lot_size": 1e-5}]


def bundled_config(instruments: list[dict[str, Any]] = SYMBOLS, **train: Any) -> Config:
    """The bundled ML config with its own [train] defaults (no test overrides)."""
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = instruments
    data["train"] |= train
    return config_from_dict(data)


def _train(cfg: Config, data: Path, out: Path) -> TrainResult:
    return train(cfg, data, out, progress=False)


@pytest.fixture(scope="module")
def six_minutes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import REAL_DATA

    if not (REAL_DATA / f"{REAL_DAY}-quotes.parquet").exists():
        pytest.skip(
            f"real market data not present at {REAL_DATA} (only in the project's CI workspace)"
        )
    out = tmp_path_factory.mktemp("six_minutes")
    for kind in ("quotes", "trades"):
        shutil.copy(REAL_DATA / f"{REAL_DAY}-{kind}.parquet", out)
    return out


@pytest.fixture(scope="module")
def sample_default(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _train(bundled_config(), sample_dir, tmp_path_factory.mktemp("default") / "m")


def test_train_config_min_data_in_leaf_default_scales_with_the_fit_rows() -> None:
    assert TrainConfig().min_data_in_leaf is None
    cfg = bundled_config()
    assert [min_data_in_leaf(cfg, n) for n in (0, 114, 400, 4_000, 8_000, 10**6)] == [
        5,
        5,
        10,
        100,
        200,
        200,
    ]
    assert min_data_in_leaf(bundled_config(min_data_in_leaf=200), 114) == 200


def test_train_six_minutes_of_real_data_default_settings_learn(
    six_minutes: Path, tmp_path: Path
) -> None:
    m = _train(bundled_config(BTCUSDT), six_minutes, tmp_path / "m").manifest
    # 114 to 469 training rows a fold: a fixed min_data_in_leaf of 200 stopped every fold
    # at its first tree and predicted one class on every test row
    learnt = [f for f in m.folds if f.best_iteration > 1]
    assert len(m.folds) == 4 and len(learnt) >= 3
    assert all(f.metrics["auc"] is not None and f.metrics["auc"] > 0.6 for f in learnt)
    assert m.metrics["final_iterations"] > 1
    assert m.metrics["oos_ic"] > 0.0


def test_train_six_minutes_of_real_data_old_leaf_size_warns_of_degenerate_folds(
    six_minutes: Path, tmp_path: Path
) -> None:
    m = _train(bundled_config(BTCUSDT, min_data_in_leaf=200), six_minutes, tmp_path / "m").manifest
    assert all(f.best_iteration == 1 for f in m.folds)
    for f in m.folds:
        assert any(w.startswith(f"fold {f.fold}: best iteration 1 ") for w in m.warnings)
        assert any(
            re.match(rf"fold {f.fold}: every one of its \d+ test rows", w) for w in m.warnings
        )
    # and an unchanged mid over 2 s is common on BTCUSDT: 41 % of its rows have no label
    assert any("have no label" in w for w in m.warnings)


def test_train_sample_data_default_settings_no_degenerate_fold(
    sample_default: TrainResult,
) -> None:
    m = sample_default.manifest
    assert len(m.folds) == 4 and all(f.best_iteration > 1 for f in m.folds)
    assert not any(w.startswith("fold") or "no label" in w for w in m.warnings)


def test_train_no_better_than_logistic_baseline_warns_in_manifest_and_report(
    sample_default: TrainResult,
) -> None:
    m = sample_default.manifest
    # the sample's order-flow relation is linear: the trees cannot beat the baseline
    assert m.metrics["oos_auc"] <= m.metrics["baseline_logistic_oos_auc"]
    [warning] = [w for w in m.warnings if "logistic baseline" in w]
    assert "no better than the logistic baseline" in warning
    page = (sample_default.folder / "training_report.html").read_text()
    assert "no better than the logistic baseline" in page


def test_baseline_warnings_only_when_not_above_the_baseline() -> None:
    assert baseline_warnings({"auc": 0.61}, {"auc": 0.60}) == []
    assert baseline_warnings({"auc": 0.60}, {}) == []  # no baseline (logistic, regression)
    assert baseline_warnings({"auc": None}, {"auc": 0.60}) == []
    assert len(baseline_warnings({"auc": 0.60}, {"auc": 0.60})) == 1


def test_train_degenerate_folds_warn_in_manifest_and_report(
    sample_dir: Path, tmp_path: Path
) -> None:
    # leaves too large to split: every fold stops at its first tree and scores a constant
    result = _train(bundled_config(min_data_in_leaf=100_000), sample_dir, tmp_path / "m")
    m = result.manifest
    page = (result.folder / "training_report.html").read_text()
    for f in m.folds:
        assert f.best_iteration == 1
        assert f.metrics["predicted_up_rows"] in (0, f.metrics["rows"])
        for w in m.warnings:
            if w.startswith(f"fold {f.fold}: "):
                assert html.escape(w) in page
        assert any(w.startswith(f"fold {f.fold}: best iteration 1 ") for w in m.warnings)
        assert any(w.startswith(f"fold {f.fold}: every one of its ") for w in m.warnings)


def test_train_a_third_of_rows_unlabelled_warns(sample_dir: Path, tmp_path: Path) -> None:
    # 1.5 bps: about 37 % of the sample's 2 s returns are smaller
    cfg = bundled_config(dead_zone_bps=1.5)
    result = _train(cfg, sample_dir, tmp_path / "m")
    m = result.manifest
    unlabeled = m.metrics["data_unlabeled_rows"]
    assert isinstance(unlabeled, int) and unlabeled > 0
    [warning] = [w for w in m.warnings if "have no label" in w]
    share = int(warning.split("(")[1].split("%")[0])
    assert share >= 33
    assert html.escape(warning) in (result.folder / "training_report.html").read_text()


def test_train_row_counts_are_integers_in_manifest_and_report(
    sample_default: TrainResult,
) -> None:
    doc = json.loads((sample_default.folder / "manifest.json").read_text())
    for key in (
        "data_rows",
        "data_usable_rows",
        "data_unlabeled_rows",
        "data_late_label_rows",
        "data_label_tolerance_ns",
        "final_fit_rows",
        "final_iterations",
        "final_min_data_in_leaf",
        "oos_rows",
        "oos_labeled_rows",
        "baseline_logistic_oos_rows",
    ):
        assert type(doc["metrics"][key]) is int, key
    for fold in doc["folds"]:
        for key in ("rows", "labeled_rows", "predicted_up_rows", "purged_rows", "min_data_in_leaf"):
            assert type(fold["metrics"][key]) is int, key
    page = (sample_default.folder / "training_report.html").read_text()
    rows = doc["metrics"]["oos_rows"]
    assert f"<th>oos_rows</th><td>{rows:,}</td>" in page
    assert not re.search(r"<td>\d[\d,]*\.0000</td>", page)  # no count printed as a float


def test_score_deciles_tied_scores_fill_every_decile_deterministically() -> None:
    # three distinct scores (a model of a few trees): quantile edges repeat, and the old
    # chart left deciles empty
    score = np.repeat([0.4, 0.5, 0.6], [500, 300, 203])
    deciles = score_deciles(score)
    counts = np.bincount(deciles, minlength=10)
    assert counts.min() >= 100 and counts.max() <= 101 and counts.sum() == score.shape[0]
    assert np.all(np.diff(deciles) >= 0)  # sorted scores (ties in row order) rank in order
    shuffled = np.random.default_rng(1).permutation(score.shape[0])
    again = score_deciles(score[shuffled])
    assert np.array_equal(np.bincount(again, minlength=10), counts)
    # by rank: every score of a decile is at most every score of the next one
    by_decile = [score[shuffled][again == d] for d in range(10)]
    assert all(a.max() <= b.min() for a, b in pairwise(by_decile))


def test_train_logistic_folder_names_the_kind_replay_loads_it_with(
    sample_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "logit"
    cfg = bundled_config(model="logistic")  # its [model] kind is "lightgbm"
    m = _train(cfg, sample_dir, out).manifest
    assert m.kind == "linear"
    assert isinstance(LinearModel.load(str(out)), LinearModel)
    data = msgspec.to_builtins(bundled_config())
    data["model"] |= {"kind": "linear", "path": str(out)}
    run = run_replay(config_from_dict(data), sample_dir, progress=False)
    assert run.engine.counters["signals"] > 0


def test_train_logistic_folder_replays_without_editing_model_kind(
    sample_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "logit"
    _train(bundled_config(model="logistic"), sample_dir, out)
    data = msgspec.to_builtins(bundled_config())
    data["model"]["path"] = str(out)  # kind stays "lightgbm"
    run = run_replay(config_from_dict(data), sample_dir, progress=False)
    assert isinstance(run.engine.model, LinearModel)
