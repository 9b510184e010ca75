"""Training defects of issue 9 and 10.1: purging by the label's actual end, the label
tolerance, the embargo as a real gap, what the final model is fit on, and degenerate
folds that must neither crash training nor write a manifest the loader refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from engine.signals.lightgbm_model import LightGBMModel
from replay.backtest.runner import run_replay
from replay.research.dataset import Dataset, QuoteHistory, build_dataset
from replay.research.training.fit import lightgbm_params
from replay.research.training.folds import FoldSplit, purge, usable_rows, walk_forward_splits
from replay.research.training.metrics import classification_metrics
from replay.research.training.run import TrainResult, final_iterations
from replay.research.training.run import train as train_model
from tests.replay.research.test_training import ml_config

S = 1_000_000_000
GAP_BEFORE_NS = 5 * S  # the gap opens 5 s before fold 1's test block: t + 2 s < start there
GAP_AFTER_NS = 20 * S
DEGENERATE_FEATURES = ["imb", "imb_ema", "flow_2s", "ret_1s", "spread"]


def _filtered(src: Path, out: Path, drop: pl.Expr) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("quotes.parquet", "trades.parquet"):
        pl.read_parquet(src / name).filter(~drop).write_parquet(out / name)
    return out


@pytest.fixture(scope="module")
def blocks(sample_dir: Path) -> dict[int, tuple[int, int]]:
    """Each fold's test block ``[start, end)`` on the sample; a gap inside the sample
    leaves the usable span, hence these edges, unchanged."""
    cfg = ml_config()
    splits, _ = walk_forward_splits(cfg, build_dataset(cfg, sample_dir, progress=False))
    return {s.fold: (s.test_start_ns, s.test_end_ns) for s in splits}


@pytest.fixture(scope="module")
def gapped(
    sample_dir: Path, blocks: dict[int, tuple[int, int]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int]:
    """The sample with no ticks from 5 s before to 20 s after fold 1's test block start,
    and that start."""
    start = blocks[1][0]
    ts = pl.col("ts_event")
    drop = (ts >= start - GAP_BEFORE_NS) & (ts < start + GAP_AFTER_NS)
    return _filtered(sample_dir, tmp_path_factory.mktemp("gapped"), drop), start


def _fit_rows(split: FoldSplit) -> np.ndarray:
    return np.concatenate([split.train, split.validation])


def _train(data: Path, out: Path, **train: Any) -> TrainResult:
    return train_model(ml_config(**train), data, out, progress=False)


def test_purge_labels_reading_across_a_gap_into_the_test_block_are_purged(
    gapped: tuple[Path, int],
) -> None:
    # a tolerance wide enough to keep the labels that read across the gap
    data, start = gapped
    cfg = ml_config()
    ds = build_dataset(cfg, data, label_tolerance_ns=60 * S, progress=False)
    usable = usable_rows(ds)
    across = usable[
        (ds.ts[usable] + cfg.train.horizon_ns < start) & (ds.label_end_ns[usable] >= start)
    ]
    assert across.shape[0] >= 2  # the setup: nominally clear of the block, actually inside it
    splits, skipped = walk_forward_splits(cfg, ds)
    assert skipped == [] and [s.fold for s in splits] == [0, 1, 2]
    assert splits[1].test_start_ns == start
    for s in splits:
        fit = _fit_rows(s)
        assert ds.label_end_ns[fit].max() < s.test_start_ns - cfg.train.embargo_ns
        assert ds.label_end_ns[s.train].max() < ds.ts[s.validation[0]] - cfg.train.embargo_ns
    assert not np.isin(across, _fit_rows(splits[1])).any()


def test_label_tolerance_drops_and_counts_labels_read_too_late(
    gapped: tuple[Path, int], tmp_path: Path
) -> None:
    data, start = gapped
    cfg = ml_config()
    horizon = cfg.train.horizon_ns
    ds = build_dataset(cfg, data, progress=False)
    # default: max(sample_interval 200 ms, horizon 2 s / 10) = 200 ms
    assert ds.label_tolerance_ns == 200_000_000
    usable = usable_rows(ds)
    assert np.all(ds.label_end_ns[usable] <= ds.ts[usable] + horizon + ds.label_tolerance_ns)
    # the rows whose label would read the first quote after the gap are dropped and counted
    before_gap = (ds.ts >= start - GAP_BEFORE_NS - horizon) & (ds.ts < start - GAP_BEFORE_NS)
    assert before_gap.sum() >= 10 and np.isnan(ds.forward_return[before_gap]).all()
    wide = build_dataset(cfg, data, label_tolerance_ns=60 * S, progress=False)
    assert ds.late_label_rows >= wide.late_label_rows + before_gap.sum()
    result = _train(data, tmp_path / "m")
    facts = result.manifest.metrics
    assert facts["data_late_label_rows"] == ds.late_label_rows
    assert facts["data_label_tolerance_ns"] == 200_000_000
    assert facts["data_usable_rows"] == usable.shape[0]


def test_fold_with_an_empty_test_block_is_skipped_with_a_warning(
    sample_dir: Path, blocks: dict[int, tuple[int, int]], tmp_path: Path
) -> None:
    start, end = blocks[0]
    ts = pl.col("ts_event")
    data = _filtered(sample_dir, tmp_path / "data", (ts >= start) & (ts < end))
    m = _train(data, tmp_path / "m").manifest
    assert [f.fold for f in m.folds] == [1, 2]
    assert "fold 0 skipped: 0 test rows (< 10)" in m.warnings


def test_embargo_keeps_training_labels_embargo_clear_of_each_block(sample_dir: Path) -> None:
    cfg = ml_config(embargo="10s")
    embargo = cfg.train.embargo_ns
    ds = build_dataset(cfg, sample_dir, progress=False)
    splits, _ = walk_forward_splits(cfg, ds)
    assert len(splits) == 3
    for s in splits:
        assert ds.label_end_ns[_fit_rows(s)].max() < s.test_start_ns - embargo
        assert ds.label_end_ns[s.train].max() < ds.ts[s.validation[0]] - embargo
        # the gap is no wider than the rule: the first excluded row ends at the embargo
        assert ds.label_end_ns[s.validation].max() >= s.test_start_ns - embargo - 2 * S
        assert s.purged_rows > 0


def _rows_dataset(ts: np.ndarray, label_end: np.ndarray) -> Dataset:
    n = ts.shape[0]
    empty = QuoteHistory(np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0))
    return Dataset(
        ts=ts,
        instrument=np.zeros(n, np.int32),
        X=np.zeros((n, 1)),
        feature_names=["x"],
        forward_return=np.ones(n),
        label_end_ns=label_end,
        label_tolerance_ns=0,
        late_label_rows=0,
        files=[],
        quotes=empty,
    )


def test_purge_rule_removes_rows_within_embargo_on_both_sides_of_a_block() -> None:
    # block [100, 200), embargo 10: a row (t, L) stays iff L < 90 or t >= 210
    ts = np.array([50, 60, 70, 150, 200, 209, 210, 260], np.int64)
    end = np.array([89, 90, 120, 160, 205, 215, 212, 270], np.int64)
    kept = purge(_rows_dataset(ts, end), np.arange(8), 100, 200, 10)
    assert ts[kept].tolist() == [50, 210, 260]


def test_final_model_is_refit_on_every_fit_row_for_the_median_best_iteration(
    sample_dir: Path, tmp_path: Path
) -> None:
    # a dead zone of 1 bp: the first usable row (0.76 bp) is not fit on, so neither is it
    # in train_range
    cfg = ml_config(dead_zone_bps=1.0)
    result = _train(sample_dir, tmp_path / "m", dead_zone_bps=1.0)
    m = result.manifest
    rounds = final_iterations(m.folds)
    assert rounds == int(np.median([f.best_iteration for f in m.folds]) + 0.5)
    ds = build_dataset(cfg, sample_dir, progress=False)
    usable = usable_rows(ds)
    fit = usable[np.abs(ds.forward_return[usable]) > 1e-4]
    assert fit[0] != usable[0]
    assert m.metrics["final_fit_rows"] == fit.shape[0]
    assert m.metrics["final_iterations"] == rounds
    assert (m.train_range.start_ns, m.train_range.end_ns) == (ds.ts[fit[0]], ds.ts[fit[-1]])
    # an independent refit on exactly those rows gives exactly the saved model
    params = lightgbm_params(cfg, "binary")
    target = (ds.forward_return[fit] > 0).astype(np.float64)
    dtrain = lgb.Dataset(ds.X[fit], target, feature_name=ds.feature_names, free_raw_data=False)
    oracle = lgb.train(params, dtrain, num_boost_round=rounds)
    saved = lgb.Booster(model_file=str(tmp_path / "m" / "model.txt"))
    assert saved.num_trees() == rounds
    np.testing.assert_array_equal(saved.predict(ds.X[usable]), oracle.predict(ds.X[usable]))


def test_metrics_on_degenerate_rows_are_none_not_nan() -> None:
    fwd = np.array([0.001, -0.002, 0.003, -0.001])
    none_up = classification_metrics(np.full(4, 0.2), fwd, 0.0, 0.5)
    assert none_up["precision"] is None and none_up["ic"] is None  # never "up", constant score
    assert none_up["accuracy"] == 0.5 and none_up["recall"] == 0.0
    one_class = classification_metrics(
        np.array([0.1, 0.6, 0.7]), np.array([1e-3, 2e-3, 3e-3]), 0.0, 0.5
    )
    assert one_class["auc"] is None and one_class["precision"] == 1.0
    unlabeled = classification_metrics(np.array([0.1, 0.6, 0.7]), np.zeros(3), 0.0, 0.5)
    assert unlabeled["labeled_rows"] == 0.0
    assert [unlabeled[k] for k in ("accuracy", "precision", "recall", "auc", "ic")] == [None] * 5


@pytest.fixture(scope="module")
def degenerate(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's BTC ticks with equal book sizes throughout (constant imbalance
    features), the mid frozen over fold 1's whole test block and the label horizon around
    it (no labels), then rising one tick per quote (fold 2: only "up" labels)."""
    out = _filtered(
        sample_dir, tmp_path_factory.mktemp("degenerate"), pl.col("symbol") != "BTC-USD"
    )
    cfg = ml_config(features=DEGENERATE_FEATURES)
    splits, _ = walk_forward_splits(cfg, build_dataset(cfg, out, progress=False))
    block = {s.fold: (s.test_start_ns, s.test_end_ns) for s in splits}
    q = pl.read_parquet(out / "quotes.parquet")
    ts = q["ts_event"].to_numpy()
    bid = q["bid"].to_numpy().copy()
    frozen = (ts >= block[1][0] - 3 * S) & (ts < block[2][0] + 3 * S)
    bid[frozen] = bid[np.argmax(frozen)]
    rising = ts >= block[2][0] + 3 * S
    bid[rising] = bid[frozen][-1] + 0.01 * np.arange(1, int(rising.sum()) + 1)
    bid = np.round(bid, 2)
    q.with_columns(
        pl.Series("bid", bid),
        pl.Series("ask", np.round(bid + 0.01, 2)),
        pl.lit(1.0).alias("bid_size"),
        pl.lit(1.0).alias("ask_size"),
    ).write_parquet(out / "quotes.parquet")
    return out


def test_degenerate_folds_train_write_defined_or_null_metrics_and_load(
    degenerate: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deg"
    result = _train(degenerate, out, features=DEGENERATE_FEATURES)
    m = result.manifest
    # the file holds no NaN: every undefined metric is an explicit null
    raw = (out / "manifest.json").read_text()
    doc = json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in manifest.json"))
    folds = {f["fold"]: f["metrics"] for f in doc["folds"]}
    assert set(folds) == {0, 1, 2}
    assert folds[1]["labeled_rows"] == 0 and folds[1]["rows"] > 100
    for key in ("accuracy", "precision", "recall", "auc", "ic"):
        assert folds[1][key] is None, key
    assert folds[2]["auc"] is None and folds[2]["recall"] is not None  # only "up" labels
    values = [v for f in folds.values() for v in f.values()] + list(doc["metrics"].values())
    assert all(v is None or math.isfinite(v) for v in values)
    assert m.feature_importance["imb"] == m.feature_importance["imb_ema"] == 0.0  # constant
    assert "n/a" in (out / "training_report.html").read_text()
    # the real loader and replay accept the folder (null metrics included)
    model = LightGBMModel.load(out)
    assert model.feature_names == tuple(DEGENERATE_FEATURES)
    run = run_replay(ml_config(out, features=DEGENERATE_FEATURES), degenerate, progress=False)
    assert isinstance(run.engine.model, LightGBMModel)
    assert run.engine.counters["signals"] > 0
