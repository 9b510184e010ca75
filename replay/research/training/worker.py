"""One walk-forward fold on a worker of the sweep's executor: what the worker receives
(``FoldTask``, its rows as arrays or row numbers into a scattered ``FoldMatrix``), what it
sends back (``FoldOutcome``), and ``run_fold``. A process pool's forkserver preloads this
module (``walk_forward_on_executor``), and the worker function is pickled by its path."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import TradeloopError
from replay.research.training.families import fits_return
from replay.research.training.fit import FitSettings, _fit_arrays
from replay.research.training.metrics import Metrics, classification_metrics

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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
    params: dict[str, Any]  # the model family's (fit_params) for this fold's training rows
    dead_zone: float
    threshold: float
    arrays: FoldArrays | None = None
    rows: tuple[I64, I64, I64] | None = None  # train, validation, test
    baseline_params: dict[str, Any] = field(default_factory=dict)  # the logistic model's


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
        models = []
        for k, kind in enumerate(task.kinds):
            y_train, y_validation = a.y_train, a.y_validation
            if k > 0 and fits_return(task.kinds[0], "classification"):
                # the model was fit on the return in bps (``linear``); the baseline on its class
                y_train = (y_train > 0).astype(np.float64)
                y_validation = (y_validation > 0).astype(np.float64)
            params = task.params if k == 0 else task.baseline_params
            models.append(
                _fit_arrays(
                    task.settings,
                    kind,
                    params,
                    (a.X_train, y_train),
                    (a.X_validation, y_validation),
                )
            )
        scores = [m.predict(a.X_test) for m in models]
        metrics = classification_metrics(scores[0], a.forward_test, task.dead_zone, task.threshold)
    except TradeloopError as exc:
        return FoldOutcome(task.fold, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a fold's failure is the parent's to report, with the fold
        frames = "".join(traceback.format_tb(exc.__traceback__, limit=-3))
        return FoldOutcome(task.fold, error=f"{type(exc).__name__}: {exc}", details=frames)
    baseline = scores[1] if len(scores) > 1 else None
    return FoldOutcome(task.fold, models[0].iterations, metrics, scores[0], baseline)
