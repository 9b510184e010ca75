"""``tradeloop train``: walk-forward training with purging and an embargo, out-of-sample
metrics, and a model folder the engine can load (model file + manifest + report).

Labels: a row at time ``t`` is labelled with the forward mid return read at the first
quote at or after ``t + horizon``; that quote's time is the row's label end ``L``. Rows
whose forward quote is later than ``t + horizon + label_tolerance`` are dropped in
``build_dataset`` (counted; the default tolerance is ``max(sample_interval, horizon /
10)``), so a "2 s" label never measures a 100 s return across a data gap.

Split: the usable rows' time span is cut into ``folds + 1`` equal blocks; fold k tests on
block k+1 ``[start, end)`` and trains on rows before it (expanding window).

Purge and embargo (López de Prado, *Advances in Financial Machine Learning*, 7.4), one
rule for every block a model is evaluated on (a test block, and the early-stopping
validation block inside each training window): a row ``(t, L)`` may be fit on only if
``L < start - embargo`` or ``t >= end + embargo``. So no training label reads a price
within ``embargo`` before the block or inside it (purging by the *actual* label end, not
``t + horizon``), and no training row starts within ``embargo`` after the block ends. In
this expanding walk-forward every training row precedes its block, so only the first
condition removes rows; the second keeps the rule the textbook one for any split.
``embargo`` defaults to the horizon (and may not be shorter).

Validation: the last ``validation_fraction`` of a fold's fit rows (rows with a label;
for classification, outside the dead zone), with the rows before it purged against it as
above. LightGBM stops early on it; the fold records its best iteration.

Final model: refit on every usable row (all fit rows, no validation hold-out) for the
median of the folds' best iterations; ``train_range`` in the manifest is the first and
last time of the rows it was fit on.

Degenerate folds: a metric that is undefined on a fold (no labelled rows, one class, no
"up" prediction, a constant score) is ``None``, never NaN. A fold that cannot be fit
(too few rows, one class in its training window) is skipped with a warning in the
manifest.

Warnings a user can act on (manifest ``warnings``, printed by ``tradeloop train`` and
listed in the report): LightGBM no better than the logistic baseline out of sample (AUC
not above the baseline's), a degenerate fold (best iteration 1: early stopping kept only
the first tree; or one class predicted on every test row), and a third or more of the
rows with features unlabelled (no forward quote in time, or inside the dead zone).

Counts (rows, iterations, nanoseconds) are written as JSON integers.

Where the folds run: in this process one after the other (the default, ``workers=1``), or
as one task per fold (its model's fit and test scores, and the logistic baseline's) on
the sweep's executor (``replay/research/sweep/executor.py``): a local process pool of ``workers``
processes, or a Dask cluster (``scheduler``, or a given ``client``). The dataset is built
once, here; the final refit stays here. Every fit is single-threaded with fixed seeds
(``lightgbm_params``), so a fold gives the same bytes wherever it runs: the manifest and
the model file do not depend on the executor. A fold that fails on a worker (an
exception, a worker that died twice running it alone) stops training with a
``ModelError`` naming the fold: a fold cannot be left out quietly, the out-of-sample
figures would be of other folds than the manifest says.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import platform
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import msgspec
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from engine.config import Config
from engine.errors import LeakageError, ModelError, TradeloopError
from engine.features import FeatureSet
from engine.monitor import calibrate_drift
from engine.monitor.drift import CALIBRATION_METHOD
from engine.signals.manifest import (
    DataFile,
    FoldReport,
    LabelSpec,
    Manifest,
    MonitorReference,
    ReferenceBins,
    TimeRange,
    sha256_file,
    write_manifest,
)
from replay.files.readers import DataSource
from replay.research.dataset import Dataset, ExtraColumn, build_dataset

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Metrics = dict[str, float | int | None]

# below these a fold's fit or its scores say nothing; the fold is skipped with a warning
MIN_TRAIN_ROWS = 50
MIN_VALIDATION_ROWS = 10
MIN_TEST_ROWS = 10
# a third or more of the rows unlabelled: the label (horizon, dead zone, tolerance) does
# not fit the data, and the metrics rest on the remaining few
UNLABELED_WARN_FRACTION = 1 / 3


def _ranks(x: F64) -> F64:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.shape[0])
    ranks[order] = np.arange(x.shape[0], dtype=np.float64)
    # average ranks over ties, so the statistics match the textbook definitions
    xs = x[order]
    start = 0
    for k in range(1, xs.shape[0] + 1):
        if k == xs.shape[0] or xs[k] != xs[start]:
            if k - start > 1:
                ranks[order[start:k]] = (start + k - 1) / 2.0
            start = k
    return ranks


def auc(y: npt.NDArray[np.int64], score: F64) -> float | None:
    """Area under the ROC curve (ties count half); None unless both classes occur."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = _ranks(score)
    return float((r[pos].sum() - n_pos * (n_pos - 1) / 2.0) / (n_pos * n_neg))


def spearman(a: F64, b: F64) -> float | None:
    """Spearman rank correlation; None for fewer than 3 rows or a constant input."""
    if a.shape[0] < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def classification_metrics(score: F64, fwd: F64, dead_zone: float, threshold: float) -> Metrics:
    """Accuracy, precision, recall, AUC on rows outside the dead zone; IC on all rows.

    A metric undefined on these rows is None: accuracy with no labelled row, precision
    with no "up" prediction, recall with no "up" label, AUC without both classes, IC with
    fewer than 3 rows or a constant score or return. Row counts are always defined.
    """
    labeled = np.abs(fwd) > dead_zone
    y = (fwd[labeled] > 0).astype(np.int64)
    pred = (score[labeled] >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    return {
        "rows": int(score.shape[0]),
        "labeled_rows": int(y.shape[0]),
        "predicted_up_rows": int((score >= threshold).sum()),
        "accuracy": _ratio(int((pred == y).sum()), int(y.shape[0])),
        "precision": _ratio(tp, int(pred.sum())),
        "recall": _ratio(tp, int(y.sum())),
        "auc": auc(y, score[labeled]),
        "ic": spearman(score, fwd),
    }


def fit_logistic(
    X: F64, y: npt.NDArray[np.int64], l2: float = 1.0, iterations: int = 25
) -> tuple[F64, float]:
    """L2-regularised logistic regression by Newton steps on standardised inputs; returns
    weights and bias in the raw feature space."""
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    Z = np.column_stack([(X - mu) / sd, np.ones(X.shape[0])])
    w = np.zeros(Z.shape[1])
    reg = np.full(Z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(Z @ w)))
        grad = Z.T @ (p - y) + reg * w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    weights = w[:-1] / sd
    return weights, float(w[-1] - np.dot(weights, mu))


def min_data_in_leaf(cfg: Config, rows: int) -> int:
    """LightGBM's ``min_data_in_leaf`` for a fit on ``rows`` rows: ``[train]``'s value if
    set, else a fortieth of the rows between 5 and 200. 200 (from 8,000 rows on) keeps
    leaves from fitting noise on long data; a fixed 200 cannot split at all on the 100 to
    500 rows a fold of a few minutes has, so each fold stopped at one constant tree. 5
    still lets a 15-leaf tree split 100 rows."""
    fixed = cfg.train.min_data_in_leaf
    return fixed if fixed is not None else max(5, min(200, rows // 40))


def lightgbm_params(cfg: Config, objective: str, rows: int = 0) -> dict[str, Any]:
    """LightGBM parameters for a fit on ``rows`` rows: single-threaded and deterministic,
    so the same rows give the same model bytes.

    One thread whatever the executor: the threads are written into the model file's
    parameters (other bytes), and LightGBM promises the same trees only for the same
    ``num_threads``. (On the sample data and on 300,000 random rows, 1 and 2 threads and
    ``deterministic``/``force_row_wise`` on or off gave the same trees; the pin keeps
    that from resting on the data.) Folds on N workers use N threads: N <= cores."""
    t = cfg.train
    return {
        "objective": objective,
        "num_leaves": t.num_leaves,
        "learning_rate": t.learning_rate,
        "min_data_in_leaf": min_data_in_leaf(cfg, rows),
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": t.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbose": -1,
    }


def purge(ds: Dataset, rows: I64, start_ns: int, end_ns: int, embargo_ns: int) -> I64:
    """The ``rows`` that may be fit on when a model is evaluated on ``[start_ns, end_ns)``:
    a row ``(t, label end L)`` stays only if ``L < start_ns - embargo_ns`` or
    ``t >= end_ns + embargo_ns``."""
    before = ds.label_end_ns[rows] < start_ns - embargo_ns
    after = ds.ts[rows] >= end_ns + embargo_ns
    return rows[before | after]


@dataclass(frozen=True)
class FoldSplit:
    """One walk-forward fold: the rows fit on, the early-stopping rows, the test rows."""

    fold: int
    test_start_ns: int
    test_end_ns: int  # the test block is [test_start_ns, test_end_ns)
    train: I64
    validation: I64
    test: I64
    purged_rows: int  # fit rows before the test block removed by purge + embargo


def _fit_rows(cfg: Config, ds: Dataset, rows: I64) -> I64:
    """Rows a model learns from: a label, and for classification outside the dead zone."""
    if cfg.train.label != "classification":
        return rows
    return rows[np.abs(ds.forward_return[rows]) > cfg.train.dead_zone_bps * 1e-4]


def usable_rows(ds: Dataset) -> I64:
    """Rows with every feature and a label (in time order)."""
    return np.flatnonzero(~np.isnan(ds.X).any(axis=1) & ~np.isnan(ds.forward_return))


def walk_forward_splits(cfg: Config, ds: Dataset) -> tuple[list[FoldSplit], list[str]]:
    """The purged, embargoed walk-forward folds, and a reason for each fold skipped.

    Raises:
        ModelError: fewer than two usable rows.
    """
    t = cfg.train
    usable = usable_rows(ds)
    if usable.shape[0] < 2:
        raise ModelError(f"{usable.shape[0]} usable rows: more data or a shorter sample_interval")
    ts, embargo = ds.ts, t.embargo_ns
    t0, t1 = int(ts[usable[0]]), int(ts[usable[-1]])
    edges = [t0 + (t1 - t0) * k // (t.folds + 1) for k in range(t.folds + 2)]
    edges[-1] = t1 + 1
    splits: list[FoldSplit] = []
    skipped: list[str] = []
    for k in range(t.folds):
        start, end = edges[k + 1], edges[k + 2]
        test = usable[(ts[usable] >= start) & (ts[usable] < end)]
        before = _fit_rows(cfg, ds, usable[ts[usable] < start])
        candidates = purge(ds, before, start, end, embargo)
        n_valid = max(1, int(candidates.shape[0] * t.validation_fraction))
        validation = candidates[-n_valid:]
        train = candidates[:-n_valid]
        if validation.shape[0]:
            block_end = int(ts[validation[-1]]) + 1
            train = purge(ds, train, int(ts[validation[0]]), block_end, embargo)
        reason = _unfit_reason(cfg, ds, train, validation, test)
        if reason:
            skipped.append(f"fold {k} skipped: {reason}")
            continue
        purged = int(before.shape[0] - candidates.shape[0])
        splits.append(FoldSplit(k, start, end, train, validation, test, purged))
    return splits, skipped


def _unfit_reason(cfg: Config, ds: Dataset, train: I64, validation: I64, test: I64) -> str:
    if test.shape[0] < MIN_TEST_ROWS:
        return f"{test.shape[0]} test rows (< {MIN_TEST_ROWS})"
    if validation.shape[0] < MIN_VALIDATION_ROWS:
        return f"{validation.shape[0]} validation rows (< {MIN_VALIDATION_ROWS})"
    return _train_problem(cfg, ds, train)


def _train_problem(cfg: Config, ds: Dataset, train: I64) -> str:
    if train.shape[0] < MIN_TRAIN_ROWS:
        return f"{train.shape[0]} training rows after purging (< {MIN_TRAIN_ROWS})"
    if cfg.train.label == "classification" and np.unique(ds.forward_return[train] > 0).shape[0] < 2:
        return "one class in the training rows"
    return ""


class TrainedModel:
    """A fitted booster (scored with its first ``iterations`` trees) or logistic weights."""

    def __init__(
        self,
        booster: lgb.Booster | None = None,
        linear: tuple[F64, float] | None = None,
        iterations: int = 0,
    ) -> None:
        self.booster = booster
        self.linear = linear
        self.iterations = iterations

    def predict(self, X: F64) -> F64:
        if self.booster is not None:
            return np.asarray(self.booster.predict(X, num_iteration=self.iterations or None))
        assert self.linear is not None
        w, b = self.linear
        return 1.0 / (1.0 + np.exp(-(X @ w + b)))


def _target(cfg: Config, ds: Dataset, rows: I64) -> F64:
    fwd = ds.forward_return[rows]
    return (fwd > 0).astype(np.float64) if cfg.train.label == "classification" else fwd * 1e4


def _fit(
    cfg: Config, ds: Dataset, kind: str, train: I64, validation: I64 | None, rounds: int = 0
) -> TrainedModel:
    """Fit on ``train``; LightGBM stops early on ``validation``, or without one runs
    ``rounds`` iterations."""
    t = cfg.train
    classify = t.label == "classification"
    params: dict[str, Any] = {}
    if kind != "logistic":
        params = lightgbm_params(cfg, "binary" if classify else "regression", int(train.shape[0]))
    held_out = None
    if validation is not None:
        held_out = (ds.X[validation], _target(cfg, ds, validation))
    return _fit_arrays(
        FitSettings(classify, t.early_stopping_rounds, t.max_rounds, ds.feature_names),
        kind,
        params,
        (ds.X[train], _target(cfg, ds, train)),
        held_out,
        rounds,
    )


@dataclass(frozen=True)
class FitSettings:
    """What a fit reads of ``[train]``, as plain data a worker receives."""

    classify: bool
    early_stopping_rounds: int
    max_rounds: int
    feature_names: list[str]


def _fit_arrays(
    settings: FitSettings,
    kind: str,
    params: dict[str, Any],
    train: tuple[F64, F64],
    validation: tuple[F64, F64] | None,
    rounds: int = 0,
) -> TrainedModel:
    """``_fit`` on the rows' features and targets themselves (what a worker holds)."""
    Xtr, ytr = train
    if kind == "logistic":
        if not settings.classify:
            raise ModelError("the logistic baseline needs label = 'classification'")
        return TrainedModel(linear=fit_logistic(Xtr, ytr.astype(np.int64)))
    dtrain = lgb.Dataset(Xtr, ytr, feature_name=settings.feature_names, free_raw_data=False)
    if validation is None:
        booster = lgb.train(params, dtrain, num_boost_round=rounds)
        return TrainedModel(booster=booster, iterations=rounds)
    dvalid = lgb.Dataset(validation[0], validation[1], reference=dtrain)
    stop = lgb.early_stopping(settings.early_stopping_rounds, verbose=False)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=settings.max_rounds,
        valid_sets=[dvalid],
        callbacks=[stop],
    )
    best = int(booster.best_iteration or settings.max_rounds)
    return TrainedModel(booster=booster, iterations=best)


@dataclass
class TrainResult:
    manifest: Manifest
    folder: Path
    oos_score: F64
    oos_forward: F64
    baseline_metrics: Metrics


def walk_forward(
    cfg: Config, ds: Dataset, kind: str, splits: list[FoldSplit], progress: bool | None = None
) -> tuple[list[FoldReport], F64, F64]:
    """Fit and score every fold of ``splits``.

    Raises:
        ModelError: no fold could be fit.
    """
    t = cfg.train
    folds: list[FoldReport] = []
    scores, forwards = [], []
    dz = t.dead_zone_bps * 1e-4
    threshold = 0.5 if t.label == "classification" else 0.0
    disable = None if progress is None else not progress
    for s in tqdm(splits, desc=f"walk-forward {kind}", disable=disable, leave=False):
        model = _fit(cfg, ds, kind, s.train, s.validation)
        score = model.predict(ds.X[s.test])
        metrics = classification_metrics(score, ds.forward_return[s.test], dz, threshold)
        scores.append(score)
        forwards.append(ds.forward_return[s.test])
        folds.append(_fold_report(cfg, ds, kind, s, model.iterations, metrics))
    if not folds:
        raise ModelError(NO_FOLD)
    return folds, np.concatenate(scores), np.concatenate(forwards)


NO_FOLD = (
    "no walk-forward fold had enough rows: more data, fewer folds or a shorter sample_interval"
)


def _fold_report(
    cfg: Config, ds: Dataset, kind: str, s: FoldSplit, iterations: int, metrics: Metrics
) -> FoldReport:
    # the keys after the test metrics in this order: the manifest's bytes follow it
    metrics["purged_rows"] = s.purged_rows
    if kind == "lightgbm":
        metrics["min_data_in_leaf"] = min_data_in_leaf(cfg, int(s.train.shape[0]))
    return FoldReport(
        fold=s.fold,
        train=_range(ds.ts, s.train),
        validation=_range(ds.ts, s.validation),
        test=_range(ds.ts, s.test),
        train_rows=int(s.train.shape[0]),
        test_rows=int(s.test.shape[0]),
        best_iteration=iterations,
        metrics=metrics,
    )


@dataclass(frozen=True)
class FoldArrays:
    """One fold's rows of the built dataset: features and targets of its training and
    early-stopping rows, features and forward returns of its test rows."""

    X_train: F64
    y_train: F64
    X_validation: F64
    y_validation: F64
    X_test: F64
    forward_test: F64


@dataclass(frozen=True)
class FoldMatrix:
    """The built dataset as a Dask cluster receives it, once (``client.scatter``): every
    row's features, fit target and forward return."""

    X: F64
    target: F64
    forward: F64

    def rows(self, train: I64, validation: I64, test: I64) -> FoldArrays:
        return FoldArrays(
            self.X[train],
            self.target[train],
            self.X[validation],
            self.target[validation],
            self.X[test],
            self.forward[test],
        )


@dataclass(frozen=True)
class FoldTask:
    """What a worker receives for one fold: what its fits read of the config, and its rows,
    either as arrays (``arrays``: a process pool) or as row numbers into the scattered
    ``FoldMatrix`` (``rows``: Dask)."""

    fold: int
    kinds: tuple[str, ...]  # the model, then "logistic" when the baseline is scored
    settings: FitSettings
    params: dict[str, Any]  # LightGBM's for this fold's training rows
    dead_zone: float
    threshold: float
    arrays: FoldArrays | None = None
    rows: tuple[I64, I64, I64] | None = None  # train, validation, test


@dataclass(frozen=True)
class FoldOutcome:
    """What a worker sends back: the model's best iteration, test metrics and test scores,
    the baseline's test scores (``None`` without a baseline); or the error that stopped
    the fold (then ``error``, and ``details``: the innermost frames of a bug's traceback)."""

    fold: int
    iterations: int = 0
    metrics: Metrics = field(default_factory=dict)
    score: F64 | None = None
    baseline_score: F64 | None = None
    error: str | None = None
    details: str = ""


def run_fold(task: FoldTask, matrix: FoldMatrix | None = None) -> FoldOutcome:
    """Fit and score one fold: the model, then the logistic baseline (runs on a worker).

    The same calls as the serial ``walk_forward`` on the same rows, so the same bytes. An
    exception is returned as the outcome's error (ours and LightGBM's do not all survive
    pickling): a ``TradeloopError`` as its line, anything else with its frames.
    """
    try:
        if task.arrays is not None:
            a = task.arrays
        else:
            assert task.rows is not None and matrix is not None
            a = matrix.rows(*task.rows)
        models = [
            _fit_arrays(
                task.settings,
                kind,
                task.params if kind != "logistic" else {},
                (a.X_train, a.y_train),
                (a.X_validation, a.y_validation),
            )
            for kind in task.kinds
        ]
        scores = [m.predict(a.X_test) for m in models]
        metrics = classification_metrics(scores[0], a.forward_test, task.dead_zone, task.threshold)
    except TradeloopError as exc:
        return FoldOutcome(task.fold, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a fold's failure is the parent's to report, with the fold
        frames = "".join(traceback.format_tb(exc.__traceback__, limit=-3))
        return FoldOutcome(task.fold, error=f"{type(exc).__name__}: {exc}", details=frames)
    baseline = scores[1] if len(scores) > 1 else None
    return FoldOutcome(task.fold, models[0].iterations, metrics, scores[0], baseline)


FOLD_WORKER_DIED = (
    "its worker process died running it alone, twice (killed, out of memory, or a crash in "
    "native code)"
)


def _fold_failed(task: FoldTask, error: str) -> FoldOutcome:
    return FoldOutcome(task.fold, error=error)


def _fold_task(
    cfg: Config, ds: Dataset, s: FoldSplit, kinds: tuple[str, ...], target: F64, ship: bool
) -> FoldTask:
    t = cfg.train
    classify = t.label == "classification"
    params: dict[str, Any] = {}
    if kinds[0] != "logistic":
        params = lightgbm_params(cfg, "binary" if classify else "regression", int(s.train.shape[0]))
    return FoldTask(
        fold=s.fold,
        kinds=kinds,
        settings=FitSettings(classify, t.early_stopping_rounds, t.max_rounds, ds.feature_names),
        params=params,
        dead_zone=t.dead_zone_bps * 1e-4,
        threshold=0.5 if classify else 0.0,
        arrays=FoldMatrix(ds.X, target, ds.forward_return).rows(s.train, s.validation, s.test)
        if ship
        else None,
        rows=None if ship else (s.train, s.validation, s.test),
    )


@dataclass(frozen=True)
class WalkForward:
    """Every fold's report, the model's out-of-sample scores and forward returns over all
    folds in time order, and the logistic baseline's scores (``None`` without one)."""

    folds: list[FoldReport]
    score: F64
    forward: F64
    baseline_score: F64 | None


def walk_forward_on_executor(
    cfg: Config,
    ds: Dataset,
    splits: list[FoldSplit],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    client: Any = None,
    progress: bool | None = None,
    fold_function: Callable[..., FoldOutcome] = run_fold,
) -> WalkForward:
    """Fit and score every fold of ``splits`` as one task per fold on a local process pool
    of ``workers`` (without ``scheduler`` or ``client``) or on a Dask cluster;
    ``fold_function`` runs a fold on a worker (``run_fold``; tests put faults around it).

    What a worker receives. A pool's task carries its fold's rows as arrays, pickled:
    the training rows grow with the fold, so the folds ship about ``folds / 2`` times the
    matrix in all (held in the parent meanwhile), against ``workers`` times for the whole
    matrix sent to every worker, and a pool started afresh after a dead worker needs
    nothing sent again. On Dask the matrix is scattered once and a task carries row
    numbers: a cluster may be remote, where bytes cost most, and each worker fetches the
    matrix once. Not file paths, as a sweep trial gets: a fold needs the built dataset
    (features and labels over all the files), and building it again on every worker
    would cost more than shipping it.

    Raises:
        ModelError: a fold failed on a worker (named), or no fold could be fit.
    """
    from replay.research.sweep.executor import dask_client, run_tasks_on_dask, run_tasks_on_pool

    t = cfg.train
    if not splits:
        raise ModelError(NO_FOLD)
    baseline = t.model == "lightgbm" and t.label == "classification"
    kinds = (t.model, "logistic") if baseline else (t.model,)
    fwd = ds.forward_return
    target = (fwd > 0).astype(np.float64) if t.label == "classification" else fwd * 1e4
    # the longest fits first: a fold's training rows grow with it, and a long fold started
    # last would leave the other workers idle at the end (the reports are put back in
    # fold order, so the order of running changes no byte)
    largest_first = sorted(splits, key=lambda s: (-s.train.shape[0], s.fold))
    outcomes: dict[int, FoldOutcome] = {}
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(
                total=len(splits),
                desc="walk-forward folds",
                unit="fold",
                disable=None if progress is None else not progress,
                leave=False,
            )
        )

        def done(task: FoldTask, outcome: FoldOutcome) -> None:
            if outcome.error is not None:
                # one line for the user; a bug's frames ride along as a note
                line = outcome.error.splitlines()[0] if outcome.error else "no reason given"
                err = ModelError(f"walk-forward fold {task.fold} failed: {line}")
                if outcome.details:
                    err.add_note(f"on the worker:\n{outcome.details}")
                raise err
            outcomes[task.fold] = outcome
            bar.update(1)

        if client is None and scheduler is None:
            tasks = [_fold_task(cfg, ds, s, kinds, target, ship=True) for s in largest_first]
            run_tasks_on_pool(
                tasks,
                max(1, min(workers, len(tasks))),
                done,
                function=fold_function,
                key=lambda task: str(task.fold),
                failed=_fold_failed,
                died=FOLD_WORKER_DIED,
                preload=("replay.research.training",),
            )
        else:
            if client is None:
                client = stack.enter_context(dask_client(scheduler))
            # hash=False: no need to tokenise the whole matrix to name it
            matrix = client.scatter(FoldMatrix(ds.X, target, fwd), hash=False)
            stack.callback(client.cancel, [matrix])
            tasks = [_fold_task(cfg, ds, s, kinds, target, ship=False) for s in largest_first]
            run_tasks_on_dask(
                client,
                tasks,
                done,
                function=fold_function,
                args=(matrix,),
                failed=_fold_failed,
            )
    folds, scores, forwards, baselines = [], [], [], []
    for s in splits:
        o = outcomes[s.fold]
        assert o.score is not None
        folds.append(_fold_report(cfg, ds, t.model, s, o.iterations, o.metrics))
        scores.append(o.score)
        forwards.append(ds.forward_return[s.test])
        if o.baseline_score is not None:
            baselines.append(o.baseline_score)
    return WalkForward(
        folds,
        np.concatenate(scores),
        np.concatenate(forwards),
        np.concatenate(baselines) if baseline else None,
    )


def _range(ts: I64, rows: I64) -> TimeRange:
    return TimeRange(start_ns=int(ts[rows[0]]), end_ns=int(ts[rows[-1]]))


def final_iterations(folds: list[FoldReport]) -> int:
    """The final model's LightGBM iterations: the median of the folds' early-stopped best
    iterations (rounded half up), so the refit on all rows needs no hold-out of its own."""
    return max(1, int(np.floor(np.median([f.best_iteration for f in folds]) + 0.5)))


def train(
    cfg: Config,
    data: str | Path | DataSource,
    out: str | Path,
    *,
    extra_columns: dict[str, ExtraColumn] | None = None,
    allow_lookahead: bool = False,
    label_tolerance_ns: int | None = None,
    progress: bool | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    client: Any = None,
) -> TrainResult:
    """Build the dataset, evaluate walk-forward, fit the final model, write the model folder.

    Args:
        data: a folder or file of ticks, or a ``DataSource`` (named files, a column
            mapping, a time range), as replay reads them.
        label_tolerance_ns: how late a label's forward quote may be (default
            ``max(sample_interval, horizon / 10)``); later rows are dropped and counted.
        workers: the folds on a local process pool of this many workers; 1 (the default)
            runs them here, one after the other. Each fit takes one thread, so no more
            workers than cores.
        scheduler: the folds on the Dask cluster of this scheduler address.
        client: the folds on the Dask cluster of this ``distributed.Client``.
        The model folder is the same bytes for each of these.

    Raises:
        LeakageError: an extra column looks ahead (unless ``allow_lookahead``).
        ModelError: not enough data for the split, one class in all the data, or a fold
            that failed on a worker.
    """
    t = cfg.train
    ds = build_dataset(
        cfg,
        data,
        extra_columns=extra_columns,
        label_tolerance_ns=label_tolerance_ns,
        progress=progress,
    )
    if ds.lookahead and not allow_lookahead:
        raise LeakageError(
            str(data),
            f"columns {ds.lookahead} change when future data is removed: they look "
            "ahead and would score well in research and fail live",
        )
    warnings = [
        f"look-ahead column {c!r} (audit failed): results are not achievable live"
        for c in ds.lookahead
    ]
    splits, skipped = walk_forward_splits(cfg, ds)
    warnings += skipped
    dz = t.dead_zone_bps * 1e-4
    threshold = 0.5 if t.label == "classification" else 0.0
    baseline: Metrics = {}
    if workers <= 1 and scheduler is None and client is None:
        folds, oos_score, oos_fwd = walk_forward(cfg, ds, t.model, splits, progress)
        if t.model == "lightgbm" and t.label == "classification":
            _, b_score, b_fwd = walk_forward(cfg, ds, "logistic", splits, progress)
            baseline = classification_metrics(b_score, b_fwd, dz, 0.5)
    else:
        wf = walk_forward_on_executor(
            cfg, ds, splits, workers=workers, scheduler=scheduler, client=client, progress=progress
        )
        folds, oos_score, oos_fwd = wf.folds, wf.score, wf.forward
        if wf.baseline_score is not None:
            baseline = classification_metrics(wf.baseline_score, oos_fwd, dz, 0.5)
    overall = classification_metrics(oos_score, oos_fwd, dz, threshold)
    warnings += baseline_warnings(overall, baseline)
    warnings += fold_warnings(t.model, folds)
    unlabeled, with_features = unlabeled_rows(cfg, ds)
    if with_features and unlabeled >= UNLABELED_WARN_FRACTION * with_features:
        warnings.append(
            f"{unlabeled:,} of {with_features:,} rows with features ({unlabeled / with_features:.0%}) "
            f"have no label (no quote within {ds.label_tolerance_ns / 1e9:g}s after the "
            f"{t.horizon_ns / 1e9:g}s horizon, or a return within the {t.dead_zone_bps:g} bps "
            "dead zone, e.g. an unchanged mid): the metrics rest on the rest; a longer "
            "horizon labels more rows"
        )
    oos_auc = overall["auc"]
    if oos_auc is not None and oos_auc > t.suspicious_auc:
        warnings.append(
            f"out-of-sample AUC {oos_auc:.3f} > {t.suspicious_auc}: too good to be true for "
            "market data; check for leakage"
        )
    usable = usable_rows(ds)
    fit_rows = _fit_rows(cfg, ds, usable)
    problem = _train_problem(cfg, ds, fit_rows)
    if problem:
        raise ModelError(f"the final model cannot be fit: {problem}")
    rounds = final_iterations(folds) if t.model == "lightgbm" else 0
    final = _fit(cfg, ds, t.model, fit_rows, None, rounds)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    fs = FeatureSet(list(cfg.features))
    importance: dict[str, float] = {}
    if final.booster is not None:
        model_file = "model.txt"
        final.booster.save_model(str(folder / model_file), num_iteration=final.iterations)
        gain = final.booster.feature_importance(importance_type="gain", iteration=final.iterations)
        total = float(gain.sum()) or 1.0
        importance = {n: float(g) / total for n, g in zip(ds.feature_names, gain, strict=True)}
        output = "probability" if t.label == "classification" else "raw"
    else:
        assert final.linear is not None
        model_file = "linear.json"
        w, b = final.linear
        linear = {
            "features": ds.feature_names,
            "weights": w.tolist(),
            "bias": b,
            "link": "logistic",
        }
        (folder / model_file).write_text(json.dumps(linear, indent=2) + "\n")
        scale = np.nanstd(ds.X[fit_rows], axis=0)
        contrib = np.abs(w) * scale
        importance = {
            n: float(c / (contrib.sum() or 1.0))
            for n, c in zip(ds.feature_names, contrib, strict=True)
        }
        output = "probability"
    reference = monitor_reference(cfg, ds, usable, final)
    if reference.score.drift_threshold is None:
        warnings.append(
            f"{reference.rows} usable rows, fewer than two [monitor] drift_window = "
            f"{reference.window}: no drift thresholds, the monitor will not alarm on drift"
        )
    elif (reference.false_alarm_bound or 0.0) > reference.configured_false_alarm_rate:
        warnings.append(
            f"{reference.independent_windows} disjoint drift windows of {reference.window} "
            f"rows cannot state a false-alarm rate of {reference.configured_false_alarm_rate:g}: "
            f"the drift thresholds are the held-out maxima and their stated bound is "
            f"{reference.false_alarm_bound:.4f} (more rows or a shorter drift_window)"
        )
    # dataset and final-fit facts ride in ``metrics`` until the manifest has a home for them
    facts: Metrics = {
        "data_rows": len(ds),
        "data_usable_rows": int(usable.shape[0]),
        "data_unlabeled_rows": unlabeled,
        "data_late_label_rows": int(ds.late_label_rows),
        "data_label_tolerance_ns": int(ds.label_tolerance_ns),
        "final_fit_rows": int(fit_rows.shape[0]),
        "final_iterations": int(final.iterations),
    }
    if final.booster is not None:
        facts["final_min_data_in_leaf"] = min_data_in_leaf(cfg, int(fit_rows.shape[0]))
    kind = "lightgbm" if final.booster is not None else "linear"
    manifest = Manifest(
        name=folder.name,
        kind=kind,
        model_file=model_file,
        model_sha256=sha256_file(folder / model_file),
        output=output,
        feature_names=ds.feature_names,
        feature_fingerprint=fs.fingerprint,
        feature_specs=[msgspec.to_builtins(s) for s in cfg.features],
        label=LabelSpec(kind=t.label, horizon_ns=t.horizon_ns, dead_zone_bps=t.dead_zone_bps),
        train_range=_range(ds.ts, fit_rows),
        folds=folds,
        metrics={
            **{f"oos_{k}": v for k, v in overall.items()},
            **{f"baseline_logistic_oos_{k}": v for k, v in baseline.items()},
            **facts,
        },
        feature_importance=importance,
        data_files=[
            DataFile(path=p.name, sha256=sha256_file(p), bytes=p.stat().st_size) for p in ds.files
        ],
        library_versions={
            "lightgbm": lgb.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "tradeloop": _version(),
        },
        warnings=warnings,
        reference=reference,
    )
    write_manifest(folder, manifest)
    _write_report(folder, manifest, oos_score, oos_fwd)
    return TrainResult(manifest, folder, oos_score, oos_fwd, baseline)


def baseline_warnings(overall: Metrics, baseline: Metrics) -> list[str]:
    """A warning when the model's out-of-sample AUC is not above the logistic baseline's
    (both defined); nothing without a baseline."""
    ours, theirs = overall.get("auc"), baseline.get("auc")
    if ours is None or theirs is None or ours > theirs:
        return []
    return [
        f"out-of-sample AUC {ours:.3f} is no better than the logistic baseline's "
        f"{theirs:.3f}: the trees add nothing the linear model lacks on this data; "
        'more data, or model = "logistic"'
    ]


def fold_warnings(kind: str, folds: list[FoldReport]) -> list[str]:
    """A warning per degenerate fold: LightGBM's best iteration 1 (early stopping kept
    only the first tree: nothing learnt), or every test row scored as one class."""
    out: list[str] = []
    for f in folds:
        if kind == "lightgbm" and f.best_iteration <= 1:
            out.append(
                f"fold {f.fold}: best iteration {f.best_iteration} of {f.train_rows:,} training "
                f"rows (min_data_in_leaf {_count(f.metrics.get('min_data_in_leaf'))}): no tree "
                "after the first improved the validation loss, the fold learnt nothing"
            )
        up, rows = f.metrics.get("predicted_up_rows"), f.metrics.get("rows")
        if up is not None and rows and up in (0, rows):
            side = "up" if up else "not up"
            out.append(
                f"fold {f.fold}: every one of its {int(rows):,} test rows predicted {side!r}"
            )
    return out


def unlabeled_rows(cfg: Config, ds: Dataset) -> tuple[int, int]:
    """Rows with every feature but no label (no forward quote in time, or for
    classification a return inside the dead zone), and rows with every feature."""
    with_features = ~np.isnan(ds.X).any(axis=1)
    fwd = ds.forward_return[with_features]
    labeled = ~np.isnan(fwd)
    if cfg.train.label == "classification":
        labeled &= np.abs(np.nan_to_num(fwd)) > cfg.train.dead_zone_bps * 1e-4
    n = int(with_features.sum())
    return n - int(labeled.sum()), n


def score_deciles(score: F64) -> I64:
    """Each score's decile 0-9 by rank, ties broken by row order: every decile holds a
    tenth of the rows (to one row) however many scores tie, where quantile edges of a
    score with few distinct values repeat and leave empty deciles."""
    n = score.shape[0]
    order = np.lexsort((np.arange(n), score))
    deciles = np.empty(n, np.int64)
    deciles[order] = np.arange(n) * 10 // max(n, 1)
    return deciles


def monitor_reference(cfg: Config, ds: Dataset, rows: I64, model: TrainedModel) -> MonitorReference:
    """The model monitor's reference: quantile bins of every feature and of the final
    model's score over ``rows``, with PSI thresholds calibrated on held-out time blocks of
    them (``engine.monitor.drift``: each block's windows against bins of the others).

    ``rows`` are every usable row (all features and a label), not only the rows the
    classifier was fit on: the monitor sees every sampled row, and dropping the dead
    zone (at 0 bps, every unchanged mid) would skew features tied to quiet markets.
    """
    m = cfg.monitor
    values = np.column_stack((ds.X[rows], model.predict(ds.X[rows])))
    refs, cal = calibrate_drift(values, m.reference_bins, m.drift_window, m.false_alarm_rate)
    bins = [
        ReferenceBins(
            edges=edges.tolist(),
            fractions=fractions.tolist(),
            drift_threshold=None if cal is None else cal.thresholds[j],
            conventional_false_alarm_rates={} if cal is None else cal.series_conventional_rates[j],
        )
        for j, (edges, fractions) in enumerate(refs)
    ]
    return MonitorReference(
        rows=int(rows.shape[0]),
        sample_interval_ns=cfg.train.sample_interval_ns,
        label_tolerance_ns=ds.label_tolerance_ns,
        window=m.drift_window,
        configured_false_alarm_rate=m.false_alarm_rate,
        false_alarm_rate=None if cal is None else cal.false_alarm_rate,
        windows=0 if cal is None else cal.windows,
        conventional_false_alarm_rates={} if cal is None else cal.conventional_rates,
        calibration_method=CALIBRATION_METHOD,
        calibration_blocks=0 if cal is None else cal.blocks,
        calibration_block_rows=[] if cal is None else cal.block_rows,
        independent_windows=0 if cal is None else cal.independent_windows,
        false_alarm_bound=None if cal is None else cal.false_alarm_bound,
        features=dict(zip(ds.feature_names, bins[:-1], strict=True)),
        score=bins[-1],
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tradeloop")
    except PackageNotFoundError:
        return "unknown"


def _write_report(folder: Path, m: Manifest, score: F64, fwd: F64) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(m.feature_importance)
    axes[0].barh(names, [m.feature_importance[n] for n in names], color="#1f5fa8")
    axes[0].set_title("feature importance (final model)")
    bucket = score_deciles(score)
    mean_bps = [
        float(np.mean(fwd[bucket == d]) * 1e4) if np.any(bucket == d) else 0.0 for d in range(10)
    ]
    distinct = np.unique(score).shape[0]
    axes[1].bar(range(1, 11), mean_bps, color=["#c0392b" if v < 0 else "#27ae60" for v in mean_bps])
    axes[1].set_title(
        f"out-of-sample forward return by score decile (IC {_fmt(m.metrics.get('oos_ic'))})"
    )
    axes[1].set_xlabel(
        "score decile (by rank; ties split in time order)"
        if distinct < score.shape[0]
        else "score decile"
    )
    axes[1].set_ylabel(f"mean forward return over {m.label.horizon_ns / 1e9:g}s, bps")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    png = buf.getvalue()
    (folder / "training_report.png").write_bytes(png)

    keys = ["accuracy", "precision", "recall", "auc", "ic"]
    counts = ["labeled_rows", "predicted_up_rows", "purged_rows", "min_data_in_leaf"]
    fold_rows = "".join(
        f"<tr><td>{f.fold}</td><td>{f.train_rows}</td><td>{f.test_rows}</td><td>{f.best_iteration}</td>"
        + "".join(f"<td>{_fmt(f.metrics.get(k))}</td>" for k in keys)
        + "".join(f"<td>{_count(f.metrics.get(k))}</td>" for k in counts)
        + "</tr>"
        for f in m.folds
    )
    overall = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
        for k, v in m.metrics.items()
        if k.startswith(("oos_", "baseline_"))
    )
    mx = m.metrics
    data = (
        f"<p>{_count(mx.get('data_rows'))} sampled rows, {_count(mx.get('data_usable_rows'))} usable "
        f"({_count(mx.get('data_unlabeled_rows'))} with features but no label) "
        f"(every feature and a label); {_count(mx.get('data_late_label_rows'))} dropped because the "
        f"label's forward quote came more than {_seconds(mx.get('data_label_tolerance_ns'))} after "
        f"t + {m.label.horizon_ns / 1e9:g}s. Final model: refit on all "
        f"{_count(mx.get('final_fit_rows'))} fit rows from {m.train_range.start_ns} to "
        f"{m.train_range.end_ns} ns, {_count(mx.get('final_iterations'))} iterations (median of "
        "the folds' early-stopped best iterations; 0 for the logistic model), min_data_in_leaf "
        f"{_count(mx.get('final_min_data_in_leaf'))}.</p>"
    )
    warn = "".join(f"<li><b>{html.escape(w)}</b></li>" for w in m.warnings) or "<li>none</li>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>training report {html.escape(m.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}</style></head><body>
<h1>Training report: {html.escape(m.name)} ({m.kind})</h1>
<p>label: {m.label.kind}, forward mid return over {m.label.horizon_ns / 1e9:g}s, dead zone {m.label.dead_zone_bps} bps;
features {", ".join(m.feature_names)} (fingerprint <code>{m.feature_fingerprint[:16]}</code>);
model sha256 <code>{m.model_sha256[:16]}</code></p>
<h2>Data and final fit</h2>{data}
<h2>Warnings</h2><ul>{warn}</ul>
<img src="data:image/png;base64,{base64.b64encode(png).decode()}" style="width:100%">
<h2>Walk-forward folds (purged by label end, embargoed)</h2><table><tr><th>fold</th><th>train rows</th>
<th>test rows</th><th>best iteration</th>{"".join(f"<th>{k}</th>" for k in keys + counts)}</tr>{fold_rows}</table>
<h2>Out-of-sample, all folds</h2><table>{overall}</table>
<p>n/a: undefined on these rows (no labelled row, one class, no "up" prediction, or a constant score).</p>
</body></html>"""
    (folder / "training_report.html").write_text(page)


def _fmt(v: float | None) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    return "n/a" if v is None or v != v else f"{v:.4f}"


def _count(v: float | None) -> str:
    return "n/a" if v is None else f"{int(v):,}"


def _seconds(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1e9:g}s"
