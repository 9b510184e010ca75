"""One fit of a model on rows of the dataset: LightGBM (single-threaded, deterministic,
early-stopped on validation rows or run for a given number of rounds) or the logistic
baseline, and LightGBM's parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from engine.config import Config
from engine.errors import ModelError
from replay.research.dataset import Dataset

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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
