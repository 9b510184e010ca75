"""Significance, baselines and costs in training (issue 21, items 1 to 3).

The data are made here: rows every 250 ms of one instrument, AR(1) features and forward
returns over 8 rows of a random walk (so the labels overlap 8-fold, as a 2 s label
sampled every 250 ms does), with an edge planted on one feature or none. Training is
real (LightGBM and the logistic model, few trees, small folds).

The wrong changes these tests catch: an i.i.d. permutation instead of the circular shift
(on overlapping noise it calls a fifth of the runs significant, see
``test_shift_test_keeps_its_level_on_overlapping_noise_where_iid_permutation_does_not``);
a feature's sign chosen on its test rows; a cost of one side only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.signal import lfilter
from scipy.stats import binom

from engine.config import Config
from engine.signals.manifest import read_manifest
from replay.research.dataset import Dataset, QuoteHistory
from replay.research.training.assessment import (
    NEGATIVE_NET_EDGE,
    NOT_BETTER_THAN_BASELINE,
    NOT_BETTER_THAN_CHANCE,
    Assessment,
    assess,
)
from replay.research.training.baselines import (
    NET_EDGE_FORMULA,
    Thresholds,
    net_edge,
    signed_features,
    strategy_thresholds,
)
from replay.research.training.folds import walk_forward_splits
from replay.research.training.metrics import classification_metrics, spearman
from replay.research.training.significance import (
    block_rows,
    estimate,
    ic_figures,
    label_overlap_rows,
    resampling,
    series_figures,
    shifted_auc,
)
from replay.research.training.walk_forward import walk_forward
from tests.replay.research.test_training import ml_config

S = 1_000_000_000
START_NS = 1_704_067_200 * S
STEP_NS = 250_000_000
HORIZON_ROWS = 8  # the config's 2 s horizon at 250 ms rows
# few small trees: each seed's walk-forward takes a fraction of a second
CHEAP: dict[str, Any] = {
    "folds": 4,
    "sample_interval": "250ms",
    "max_rounds": 40,
    "early_stopping_rounds": 5,
    "num_leaves": 7,
    "min_data_in_leaf": 20,
}


def ar1(rng: np.random.Generator, n: int, k: int, phi: float) -> np.ndarray:
    """k unit-variance AR(1) series of n rows."""
    e = rng.normal(size=(n, k)) * np.sqrt(1 - phi**2)
    e[0] /= np.sqrt(1 - phi**2)  # start in the stationary distribution
    return np.asarray(lfilter([1.0], [1.0, -phi], e, axis=0))


def overlapping_returns(rng: np.random.Generator, n: int, step_bps: float = 1.0) -> np.ndarray:
    """Each row's return over the next ``HORIZON_ROWS`` steps of a random walk."""
    steps = rng.normal(0.0, step_bps * 1e-4, n + HORIZON_ROWS)
    walk = np.concatenate(([0.0], np.cumsum(steps)))
    return walk[1 + HORIZON_ROWS : n + 1 + HORIZON_ROWS] - walk[1 : n + 1]


def synthetic(
    seed: int,
    n: int = 2400,
    features: int = 3,
    edge_bps: float = 0.0,
    phi: float = 0.9,
    spread_bps: float = 1.0,
    step_bps: float = 1.0,
) -> Dataset:
    """``edge_bps`` times feature x0 added to every forward return (0: features and labels
    independent); the label ends ``HORIZON_ROWS`` rows later."""
    rng = np.random.default_rng(seed)
    ts = START_NS + np.arange(n, dtype=np.int64) * STEP_NS
    X = ar1(rng, n, features, phi)
    fwd = overlapping_returns(rng, n, step_bps) + edge_bps * 1e-4 * X[:, 0]
    empty = QuoteHistory(np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0))
    return Dataset(
        ts=ts,
        instrument=np.zeros(n, np.int32),
        X=X,
        feature_names=[f"x{j}" for j in range(features)],
        forward_return=fwd,
        label_end_ns=ts + HORIZON_ROWS * STEP_NS,
        label_tolerance_ns=0,
        late_label_rows=0,
        files=[],
        quotes=empty,
        spread_bps=np.full(n, spread_bps),
    )


def fit_and_assess(cfg: Config, ds: Dataset, replicates: int = 999) -> Assessment:
    """What ``train`` runs between the walk-forward and the model folder."""
    model = cfg.train.model
    splits, _ = walk_forward_splits(cfg, ds)
    _, score, fwd = walk_forward(cfg, ds, model, splits)
    logistic = None
    if model == "lightgbm":
        _, logistic, _ = walk_forward(cfg, ds, "logistic", splits)
    return assess(cfg, ds, splits, score, fwd, logistic, replicates)


def warned(a: Assessment, phrase: str) -> bool:
    return any(phrase in w for w in a.warnings)


# ---- pure noise, planted edges, baselines, costs (full walk-forward training) -------------

NOISE_SEEDS = 40


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lightgbm", "logistic"])
def test_noise_over_many_seeds_warns_not_better_than_chance_in_95_percent(model: str) -> None:
    cfg = ml_config(model=model, **CHEAP)
    runs = [fit_and_assess(cfg, synthetic(1000 + seed)) for seed in range(NOISE_SEEDS)]
    warns = sum(warned(a, NOT_BETTER_THAN_CHANCE) for a in runs)
    assert warns >= 0.95 * NOISE_SEEDS, f"{warns} of {NOISE_SEEDS}"
    # the verdict and the warning agree, and a model called significant is so on both
    for a in runs:
        s = a.statistics
        assert (s.better_than_chance is True) == (not warned(a, NOT_BETTER_THAN_CHANCE))
        if s.better_than_chance:
            assert all((s.metrics[k].p_value or 1.0) < 0.05 for k in ("auc", "ic"))


@pytest.mark.parametrize("model", ["lightgbm", "logistic"])
def test_planted_edge_is_significant_and_its_feature_is_a_baseline_not_beaten(model: str) -> None:
    a = fit_and_assess(ml_config(model=model, **CHEAP), synthetic(1, edge_bps=1.0))
    s = a.statistics
    assert s.better_than_chance is True and not warned(a, NOT_BETTER_THAN_CHANCE)
    for k in ("auc", "ic"):
        e = s.metrics[k]
        assert e.p_value is not None and e.p_value < 0.05
        assert e.low is not None and e.chance is not None and e.low > e.chance
    # x0 carries the whole edge: alone it is the best baseline, and the model does not
    # beat it significantly
    best = s.versus_best_baseline
    assert best is not None and best.baseline == "x0" and not best.significant
    assert warned(a, NOT_BETTER_THAN_BASELINE) and warned(a, "feature 'x0' alone")
    ranks = {b.name: b.rank for b in s.baselines}
    assert ranks["x0"] == 1 and s.model_rank == ranks[model]
    assert max(ranks["x1"], ranks["x2"]) == len(s.baselines)  # pure-noise features last
    x0 = next(b for b in s.baselines if b.name == "x0")
    assert x0.kind == "feature" and x0.signs == [1, 1, 1, 1]
    assert (x0.metrics["ic"].p_value or 1.0) < 0.05


def test_model_better_than_every_single_feature_is_reported_significant() -> None:
    # the edge needs both features (their product): no single feature nor a linear model
    # has it, the trees do
    ds = synthetic(5, n=4000, edge_bps=0.0)
    ds.forward_return += 1.5e-4 * np.sign(ds.X[:, 0] * ds.X[:, 1])
    a = fit_and_assess(ml_config(**{**CHEAP, "max_rounds": 80}), ds)
    s = a.statistics
    assert s.model_rank == 1 and s.better_than_chance is True
    assert s.versus_best_baseline is not None and s.versus_best_baseline.significant
    assert not warned(a, NOT_BETTER_THAN_BASELINE) and not warned(a, NOT_BETTER_THAN_CHANCE)


THRESHOLDS = {"upper": 0.55, "lower": 0.45, "exit": 0.5}


@pytest.mark.parametrize(("edge_bps", "negative"), [(1.0, True), (12.0, False)])
def test_net_edge_small_edge_under_costs_warns_large_edge_does_not(
    edge_bps: float, negative: bool
) -> None:
    # fee 1 bp a side and a 1 bp spread: a round trip costs 3 bps
    cfg = ml_config(model="logistic", strategy=THRESHOLDS, **CHEAP)
    a = fit_and_assess(cfg, synthetic(3, edge_bps=edge_bps))
    e = a.statistics.net_edge
    assert e is not None and e.trades > 100
    assert e.fee_bps == 1.0 and e.half_spread_bps == pytest.approx(0.5)
    assert e.cost_bps == pytest.approx(3.0)
    gross, net = e.gross_edge_bps, e.net_edge_bps
    assert gross.value is not None and net.value is not None
    assert net.value == pytest.approx(gross.value - 3.0)
    # the small edge is real (the gross edge is significant) and still loses after costs
    assert gross.p_value is not None and gross.p_value < 0.05
    assert (net.value < 0) == negative
    assert warned(a, NEGATIVE_NET_EDGE) == negative
    if negative:
        assert net.high is not None and net.high < 0


def test_net_edge_follows_the_formula_round_trip_fees_and_spread() -> None:
    score = np.array([0.7, 0.5, 0.3, 0.6, 0.4, 0.56, 0.2, 0.5])
    fwd = np.array([5e-4, 1e-4, -2e-4, -1e-4, 3e-4, 2e-4, 1e-4, 0.0])
    spread = np.array([2.0, 1.0, 4.0, 2.0, 1.0, 3.0, 2.0, 1.0])
    rs = resampling(np.array([0, 8]), 1, seed=1, replicates=50)
    e = net_edge(Thresholds(0.55, 0.45, True), 1.5, score, fwd, spread, rs)
    d = np.array([1, 0, -1, 1, -1, 1, -1, 0])
    trades = d != 0
    per_trade = d * fwd * 1e4 - 2 * 1.5 - spread  # two fees and two half spreads
    assert (e.trades, e.long_trades, e.short_trades, e.rows) == (6, 3, 3, 8)
    assert e.net_edge_bps.value == pytest.approx(per_trade[trades].mean())
    assert e.gross_edge_bps.value == pytest.approx((d * fwd * 1e4)[trades].mean())
    assert e.half_spread_bps == pytest.approx(spread[trades].mean() / 2)
    assert e.formula == NET_EDGE_FORMULA and "2 * fee_bps" in e.formula
    long_only = net_edge(Thresholds(0.55, 0.45, False), 1.5, score, fwd, spread, rs)
    assert (long_only.trades, long_only.short_trades) == (3, 0)


def test_strategy_without_thresholds_has_no_net_edge_and_says_why() -> None:
    cfg = ml_config(**CHEAP)
    assert isinstance(strategy_thresholds(cfg), Thresholds)
    ema = Config(
        instruments=cfg.instruments,
        features=cfg.features,
        train=cfg.train,
        strategy=type(cfg.strategy)(name="ema_cross", params={"qty": 1.0}),
    )
    note = strategy_thresholds(ema)
    assert isinstance(note, str) and "no upper/lower score thresholds" in note
    a = fit_and_assess(ema, synthetic(2), replicates=99)
    assert a.statistics.net_edge is None and "ema_cross" in a.statistics.net_edge_note


def test_feature_sign_is_chosen_on_training_rows_never_on_test_rows() -> None:
    # x0 predicts the return up to the last fold's test block and the opposite inside it:
    # a sign chosen on test rows would flip there and hide the failure
    ds = synthetic(4, n=2500, edge_bps=0.0)
    cfg = ml_config(**CHEAP)
    splits, _ = walk_forward_splits(cfg, ds)
    last = splits[-1].test
    sign = np.ones(len(ds))
    sign[last] = -1.0
    ds.forward_return += 3e-4 * sign * ds.X[:, 0]
    signed, signs = signed_features(ds, splits)[0]
    assert signs == [1, 1, 1, 1]
    tail = slice(signed.shape[0] - last.shape[0], None)
    rho = spearman(signed[tail], ds.forward_return[last])
    assert rho is not None and rho < -0.3


# ---- the statistics themselves (cheap, many seeds) ---------------------------------------


def test_shift_test_keeps_its_level_on_overlapping_noise_where_iid_permutation_does_not() -> None:
    # 200 seeds of a persistent score against independent 8-fold overlapping returns: the
    # circular shift's false-significance rate stays within the binomial bound of 5 %;
    # an i.i.d. permutation of the returns (the wrong change) is far above it
    seeds, n, level = 200, 2400, 0.05
    bounds = np.linspace(0, n, 5).astype(np.int64)
    shift_hits = iid_hits = covered = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        x = ar1(rng, n, 1, 0.9)[:, 0]
        fwd = overlapping_returns(rng, n)
        rs = resampling(bounds, block_rows(HORIZON_ROWS + 1, n), seed, replicates=199)
        ic, _ = ic_figures(x, fwd, rs)
        assert ic.p_value is not None and ic.low is not None and ic.high is not None
        shift_hits += ic.p_value < level
        covered += ic.low <= 0.0 <= ic.high
        rx = np.argsort(np.argsort(x)).astype(np.float64)
        ry = np.argsort(np.argsort(fwd)).astype(np.float64)
        rx -= rx.mean()
        ry -= ry.mean()
        perms = rng.permuted(np.tile(np.arange(n), (199, 1)), axis=1)
        null = (ry[perms] @ rx) / np.sqrt((rx @ rx) * (ry @ ry))
        iid_hits += (1 + (null >= rx @ ry / np.sqrt((rx @ rx) * (ry @ ry))).sum()) / 200 < level
    bound = binom.ppf(0.999, seeds, level)  # 20 of 200
    assert shift_hits <= bound, shift_hits
    assert iid_hits > bound, iid_hits
    # the intervals cover the true IC (0) near their 95 %: blocks shorter than the
    # scores' memory cost a few points (measured 0.91-0.93)
    assert covered >= 0.88 * seeds, covered


def test_shifted_figures_equal_metrics_of_rotated_labels() -> None:
    rng = np.random.default_rng(8)
    n = 700
    bounds = np.array([0, 200, 450, 700])
    score = np.round(rng.normal(size=n), 1)  # ties
    fwd = np.round(0.2 * score + rng.normal(size=n), 1) * 1e-4  # ties and zero returns
    rs = resampling(bounds, 12, seed=3, replicates=40)
    dz, thr = 0.5e-4, 0.1
    figures = series_figures(score, fwd, dz, thr, rs)
    nulls: dict[str, list[float]] = {
        k: [] for k in ("accuracy", "precision", "recall", "auc", "ic")
    }
    fold_nulls: list[list[float]] = [[] for _ in range(3)]
    for b in range(rs.replicates):
        rolled = fwd.copy()
        for f in range(3):
            sl = slice(bounds[f], bounds[f + 1])
            rolled[sl] = np.roll(fwd[sl], -rs.lags[b, f])
        m = classification_metrics(score, rolled, dz, thr)
        for k in nulls:
            nulls[k].append(np.nan if m[k] is None else float(m[k]))
        for f in range(3):
            sl = slice(bounds[f], bounds[f + 1])
            fold_nulls[f].append(classification_metrics(score[sl], rolled[sl], dz, thr)["auc"])
    values = classification_metrics(score, fwd, dz, thr)
    for k, null in nulls.items():
        want = estimate(values[k], None, np.array(null))
        got = figures.overall[k]
        assert got.value == values[k]
        assert got.p_value == want.p_value, k
        assert got.chance == pytest.approx(want.chance, abs=1e-12), k
    code = np.where(np.abs(fwd) > dz, np.where(fwd > 0, 2, 1), 0).astype(np.int8)
    auc_null = shifted_auc(score, code, rs)
    for f in range(3):
        np.testing.assert_allclose(auc_null[:, f], fold_nulls[f], atol=1e-12)
        sl = slice(bounds[f], bounds[f + 1])
        assert (
            figures.folds[f]["auc"].value
            == classification_metrics(score[sl], fwd[sl], dz, thr)["auc"]
        )


def test_block_sums_equal_sums_over_the_resampled_rows() -> None:
    rng = np.random.default_rng(2)
    bounds = np.array([0, 53, 130, 131])  # a one-row fold, blocks cut and wrapping
    x = rng.normal(size=131)
    rs = resampling(bounds, 10, seed=4, replicates=30)
    sums = rs.sums(x)[0]
    for b in range(rs.replicates):
        for f in range(3):
            a, e = bounds[f], bounds[f + 1]
            m = e - a
            rows = np.concatenate(
                [
                    a + (s + np.arange(length)) % m
                    for s, length in zip(rs.starts[f][b], rs.lengths[f])
                ]
            )
            assert rows.shape[0] == m  # a replicate has the fold's rows
            assert sums[b, f] == pytest.approx(x[rows].sum(), abs=1e-12)
    assert list(rs.shiftable) == [True, True, False]  # the one-row fold cannot shift


def test_linear_bootstrap_of_auc_and_ic_matches_the_full_bootstrap() -> None:
    # the full bootstrap re-ranks every replicate; the linear one (what training runs)
    # must give the same spread and interval
    rng = np.random.default_rng(3)
    n = 1500
    bounds = np.array([0, 400, 900, 1500])
    score = np.round(rng.normal(size=n), 1)
    fwd = np.round(0.3 * score + rng.normal(size=n), 1)
    rs = resampling(bounds, 10, seed=5, replicates=400)
    figures = series_figures(score, fwd, 0.0, 0.0, rs, per_fold=False)
    full: dict[str, list[float]] = {"ic": [], "auc": []}
    for b in range(rs.replicates):
        rows = np.concatenate(
            [
                bounds[f] + (s + np.arange(length)) % (bounds[f + 1] - bounds[f])
                for f in range(3)
                for s, length in zip(rs.starts[f][b], rs.lengths[f])
            ]
        )
        m = classification_metrics(score[rows], fwd[rows], 0.0, 0.0)
        full["ic"].append(float(m["ic"]))  # type: ignore[arg-type]
        full["auc"].append(float(m["auc"]))  # type: ignore[arg-type]
    for k, reps in full.items():
        e = figures.overall[k]
        low, high = np.quantile(reps, [0.025, 0.975])
        assert e.low == pytest.approx(low, abs=0.15 * (high - low)), k
        assert e.high == pytest.approx(high, abs=0.15 * (high - low)), k


def test_label_overlap_rows_count_rows_within_a_label_span() -> None:
    ts = np.array([0, 1, 2, 3, 10, 11, 12], np.int64)
    label_end = ts + 2
    # fold 0: rows 0-3 (row 0's label spans rows 0, 1, 2); fold 1: rows 10-12
    assert label_overlap_rows(ts, label_end, np.array([0, 4, 7])) == 3
    # two instruments interleaved: twice the rows within one span
    ts2 = np.repeat(np.arange(10, dtype=np.int64), 2)
    assert label_overlap_rows(ts2, ts2 + 2, np.array([0, 20])) == 6
    assert block_rows(9, 2400) == 14  # n^(1/3) = 13.4 > 9
    assert block_rows(40, 2400) == 40


def test_estimates_values_equal_classification_metrics_per_fold_and_overall() -> None:
    ds = synthetic(6, edge_bps=0.5)
    cfg = ml_config(**CHEAP)
    splits, _ = walk_forward_splits(cfg, ds)
    folds, score, fwd = walk_forward(cfg, ds, "lightgbm", splits)
    s = assess(cfg, ds, splits, score, fwd, None, replicates=99).statistics
    assert s.metrics["auc"].value == classification_metrics(score, fwd, 0.0, 0.5)["auc"]
    assert [f.fold for f in s.folds] == [f.fold for f in folds]
    for fold, sig in zip(folds, s.folds, strict=True):
        for k in ("accuracy", "precision", "recall", "auc", "ic"):
            assert sig.metrics[k].value == fold.metrics[k], (fold.fold, k)
    assert s.replicates == 99 and s.label_overlap_rows == HORIZON_ROWS + 1
    assert s.block_rows == block_rows(HORIZON_ROWS + 1, score.shape[0])


# ---- the whole command: manifest, report, command line -----------------------------------


def test_cli_train_prints_and_records_significance_baselines_and_costs(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib import resources

    from replay.cli import main

    cfg = (resources.files("replay") / "ml_config.toml").read_text()
    (tmp_path / "c.toml").write_text(cfg.replace("folds = 4", "folds = 3"))
    out_dir = tmp_path / "m"
    assert (
        main(
            ["train", str(sample_dir), "--config", str(tmp_path / "c.toml"), "--out", str(out_dir)]
        )
        == 0
    )
    out = capsys.readouterr().out
    m = read_manifest(out_dir)
    s = m.statistics
    assert s is not None
    # the sample's order-flow edge is real; book imbalance alone beats the trees on it,
    # and at 1 bp fees the thresholds lose money: all three said, everywhere
    assert s.better_than_chance is True
    assert re.search(
        r"significance \(out of sample, blocks of \d+ rows, 999 replicates\): AUC", out
    )
    assert re.search(r"ranked by out-of-sample IC \(of 9\): 1\. ", out)
    for phrase in (NOT_BETTER_THAN_BASELINE, NEGATIVE_NET_EDGE):
        [warning] = [w for w in m.warnings if phrase in w]
        assert f"warning: {warning}" in out
    page = (out_dir / "training_report.html").read_text()
    for title in ("Significance (out of sample)", "Baselines on the same out-of-sample rows",
                  "Net edge per trade after costs"):  # fmt: skip
        assert title in page
    assert "2 * fee_bps" in page  # the formula, in words
    # every out-of-sample metric has its interval and p-value, overall and per fold
    for e in s.metrics.values():
        assert e.low is not None and e.high is not None and e.p_value is not None
    assert len(s.folds) == len(m.folds) == 3
    for f in s.folds:
        assert set(f.metrics) == {"accuracy", "precision", "recall", "auc", "ic"}
    names = [b.name for b in s.baselines]
    assert set(names) == {"lightgbm", "logistic", *m.feature_names}
    assert [b.rank for b in s.baselines] == list(range(1, len(names) + 1))
    doc = json.loads((out_dir / "manifest.json").read_text())
    assert doc["statistics"]["net_edge"]["formula"] == NET_EDGE_FORMULA
    assert "<th>oos_auc</th>" in page and "p = " in page
