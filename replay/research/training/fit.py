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
from replay.research.training.families import (
    LIGHTGBM_FAMILIES,
    ONNX_FAMILIES,
    SPECS,
    canonical,
    family_params,
    fits_return,
)
from replay.research.training.sklearn_fit import fit_sklearn
from replay.research.training.trained import TrainedModel

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


def lightgbm_params(
    cfg: Config, objective: str, rows: int = 0, family: str = "gbdt"
) -> dict[str, Any]:
    """LightGBM parameters for a fit of ``family`` (``tree``, ``random_forest``, ``gbdt``)
    on ``rows`` rows: single-threaded and deterministic, so the same rows give the same
    model bytes.

    One thread whatever the executor: the threads are written into the model file's
    parameters (other bytes), and LightGBM promises the same trees only for the same
    ``num_threads``. (On the sample data and on 300,000 random rows, 1 and 2 threads and
    ``deterministic``/``force_row_wise`` on or off gave the same trees; the pin keeps
    that from resting on the data.) Folds on N workers use N threads: N <= cores.

    ``tree``: learning rate 1 and no bagging, so the one tree is the full fit of its
    leaves; ``random_forest``: ``boosting = "rf"`` (bagging every tree, required by
    LightGBM, and the trees averaged); ``gbdt``: ``[train]``'s shrinkage and leaves.
    """
    t = cfg.train
    fam = canonical(family)
    p = family_params(cfg, fam)
    base: dict[str, Any] = {
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
    if fam == "tree":
        depth = int(p["max_depth"])
        base.update(
            num_leaves=min(2**depth, 131_072),
            max_depth=depth,
            learning_rate=1.0,
            feature_fraction=1.0,
            bagging_fraction=1.0,
            bagging_freq=0,
        )
    elif fam == "random_forest":
        base.update(
            {FOREST_TREES: int(p["trees"])},
            boosting="rf",
            num_leaves=int(p["num_leaves"]),
            bagging_fraction=float(p["bagging_fraction"]),
            feature_fraction=float(p["feature_fraction"]),
        )
    elif p != SPECS["gbdt"].defaults:
        # only what the user changed: the defaults' model bytes stay those of before
        base.update(
            max_depth=int(p["max_depth"]),
            lambda_l2=float(p["lambda_l2"]),
            feature_fraction=float(p["feature_fraction"]),
            bagging_fraction=float(p["bagging_fraction"]),
        )
    return base


# the forest's tree count rides with LightGBM's parameters to a worker; taken out before
# they reach LightGBM (a ``num_iterations`` there would override the round count with a
# warning)
FOREST_TREES = "tradeloop_forest_trees"


def fit_params(cfg: Config, family: str, rows: int = 0) -> dict[str, Any]:
    """What one fit of ``family`` on ``rows`` rows is given: LightGBM's parameters for the
    tree families, the family's ``model_params`` (with the seed) for the others."""
    fam = canonical(family)
    classify = cfg.train.label == "classification"
    if fam in LIGHTGBM_FAMILIES:
        return lightgbm_params(cfg, "binary" if classify else "regression", rows, fam)
    return {**family_params(cfg, fam), "seed": cfg.train.seed}


def fit_ridge(X: F64, y: F64, l2: float = 1.0) -> tuple[F64, float]:
    """Ridge least squares on standardised inputs (the penalty ``l2`` on every
    standardised coefficient, none on the intercept); weights and bias in the raw feature
    space. Solved by the normal equations in float64: the few features here keep them
    well conditioned once standardised."""
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    Z = (X - mu) / sd
    yc = y - y.mean()
    coef = np.linalg.solve(Z.T @ Z + l2 * np.eye(Z.shape[1]), Z.T @ yc)
    weights = coef / sd
    return weights, float(y.mean() - np.dot(weights, mu))


def _target(cfg: Config, ds: Dataset, rows: I64, family: str = "gbdt") -> F64:
    fwd = ds.forward_return[rows]
    return family_target(cfg, family, fwd)


def family_target(cfg: Config, family: str, fwd: F64) -> F64:
    """What ``family`` is fit on: the 0/1 class of the forward return, or the return in
    bps (regression labels, and ``linear`` always)."""
    if fits_return(family, cfg.train.label):
        return fwd * 1e4
    return (fwd > 0).astype(np.float64)


def _fit(
    cfg: Config, ds: Dataset, kind: str, train: I64, validation: I64 | None, rounds: int = 0
) -> TrainedModel:
    """Fit ``kind`` (a family) on ``train``; the early-stopped families stop on
    ``validation``, or without one run ``rounds`` iterations (epochs for the MLP)."""
    t = cfg.train
    classify = t.label == "classification"
    held_out = None
    if validation is not None:
        held_out = (ds.X[validation], _target(cfg, ds, validation, kind))
    return _fit_arrays(
        FitSettings(classify, t.early_stopping_rounds, t.max_rounds, ds.feature_names),
        kind,
        fit_params(cfg, kind, int(train.shape[0])),
        (ds.X[train], _target(cfg, ds, train, kind)),
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
    """``_fit`` on the rows' features and targets themselves (what a worker holds);
    ``params``: ``fit_params`` of the family."""
    fam = canonical(kind)
    Xtr, ytr = train
    if fam == "logistic":
        if not settings.classify:
            raise ModelError("the logistic model needs label = 'classification'")
        p = {**SPECS["logistic"].defaults, **params}
        w = fit_logistic(Xtr, ytr.astype(np.int64), float(p["l2"]), int(p["iterations"]))
        return TrainedModel(linear=w, family=fam)
    if fam == "linear":
        p = {**SPECS["linear"].defaults, **params}
        return TrainedModel(linear=fit_ridge(Xtr, ytr, float(p["l2"])), family=fam, link="identity")
    if fam in ONNX_FAMILIES:
        return fit_sklearn(settings.classify, fam, params, train, validation, rounds)
    dtrain = lgb.Dataset(Xtr, ytr, feature_name=settings.feature_names, free_raw_data=False)
    if fam == "tree":
        return TrainedModel(booster=lgb.train(params, dtrain, num_boost_round=1), iterations=1, family=fam)  # fmt: skip
    if fam == "random_forest":
        # a forest is not early-stopped: more trees only average more, they do not overfit
        lgb_params = {k: v for k, v in params.items() if k != FOREST_TREES}
        trees = int(params.get(FOREST_TREES, SPECS["random_forest"].defaults["trees"]))
        booster = lgb.train(lgb_params, dtrain, num_boost_round=trees)
        return TrainedModel(booster=booster, iterations=trees, family=fam)
    if validation is None:
        booster = lgb.train(params, dtrain, num_boost_round=rounds)
        return TrainedModel(booster=booster, iterations=rounds, family=fam)
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
    return TrainedModel(booster=booster, iterations=best, family=fam)
