"""Every walk-forward fold fit and scored: its model's test scores and metrics, and the
logistic baseline's scores.

Where the folds run: in this process one after the other (the default, ``workers=1``), or
as one task per fold (its model's fit and test scores, and the logistic baseline's) on
the sweep's executor (``replay/research/sweep/executor.py``): a local process pool of ``workers``
processes, or a Dask cluster (``scheduler``, or a given ``client``). The dataset is built
once, by ``train``; the final refit stays there. Every fit is single-threaded with fixed
seeds (``lightgbm_params``), so a fold gives the same bytes wherever it runs: the manifest
and the model file do not depend on the executor. A fold that fails on a worker (an
exception, a worker that died twice running it alone) stops training with a
``ModelError`` naming the fold: a fold cannot be left out quietly, the out-of-sample
figures would be of other folds than the manifest says. What a worker runs:
``replay/research/training/worker.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from engine.config import Config
from engine.errors import ModelError
from engine.signals.manifest import FoldReport
from replay.research.dataset import Dataset
from replay.research.training.families import canonical, score_threshold
from replay.research.training.fit import (
    FitSettings,
    _fit,
    family_target,
    fit_params,
    min_data_in_leaf,
)
from replay.research.training.folds import FoldSplit, _range, fold_bounds
from replay.research.training.metrics import Metrics, classification_metrics
from replay.research.training.worker import FoldMatrix, FoldOutcome, FoldTask, run_fold

F64 = npt.NDArray[np.float64]


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
    threshold = score_threshold(kind, t.label)
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
    if canonical(kind) == "gbdt":
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
        bounds=fold_bounds(cfg, ds, s),
    )


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
    rows = int(s.train.shape[0])
    return FoldTask(
        fold=s.fold,
        kinds=kinds,
        settings=FitSettings(classify, t.early_stopping_rounds, t.max_rounds, ds.feature_names),
        params=fit_params(cfg, kinds[0], rows),
        baseline_params=fit_params(cfg, "logistic", rows) if len(kinds) > 1 else {},
        dead_zone=t.dead_zone_bps * 1e-4,
        threshold=score_threshold(kinds[0], t.label),
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
    baseline = canonical(t.model) != "logistic" and t.label == "classification"
    kinds = (t.model, "logistic") if baseline else (t.model,)
    fwd = ds.forward_return
    # the model's target; the logistic baseline's (the class) is derived on the worker
    target = family_target(cfg, t.model, fwd)
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
                preload=("replay.research.training.worker",),
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
