"""The scikit-learn families of the ladder (``svm``, ``mlp``): one fit on a fold's rows.

Both are ``Pipeline(StandardScaler, estimator)``: the scaling is fit on the training rows
only and travels inside the pipeline (and inside the exported ONNX graph), so a served
model standardises exactly as it was trained.

- ``svm``: ``SVC(probability=True)`` for a classification label (Platt-scaled
  probabilities from an internal 5-fold cross-validation, seeded), ``SVR`` for a
  regression one. Its fit is O(n^2) in memory and worse in time, so at most
  ``max_fit_rows`` rows are fit on, evenly spaced through the window (every k-th row
  keeps the whole span, where the last rows alone would keep one regime); the note on
  the model says so and becomes a manifest warning.
- ``mlp``: ``MLPClassifier``/``MLPRegressor`` (ReLU, Adam), one epoch at a time with
  ``partial_fit`` over the rows in a seeded shuffled order; after each epoch the loss on
  the fold's purged validation rows is measured and the best epoch's weights kept; it
  stops after ``patience`` epochs without a better loss. scikit-learn's own
  ``early_stopping`` is not used: it validates on a random 10 % of the training rows,
  which sit between training rows whose labels overlap theirs. Without validation rows
  (the final refit) it runs ``rounds`` epochs: the median of the folds' best.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from engine.errors import ModelError
from replay.research.training.trained import TrainedModel

F64 = npt.NDArray[np.float64]


def capped_rows(n: int, cap: int) -> npt.NDArray[np.int64]:
    """At most ``cap`` of ``n`` rows, evenly spaced from the first to the last."""
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


# scikit-learn 1.9 deprecates SVC(probability=True) (removal in 1.11) in favour of
# CalibratedClassifierCV(SVC(), ensemble=False): the same Platt scaling, which skl2onnx
# 1.20 does not convert as one SVM op. Until the pin moves, the deprecation is silenced
# here and in the export, by message, and nowhere else.
SVC_PROBABILITY_DEPRECATION = r".*(`probability` parameter|Attribute `prob[AB]_`).*deprecated"


def fit_sklearn(
    classify: bool,
    family: str,
    params: dict[str, Any],
    train: tuple[F64, F64],
    validation: tuple[F64, F64] | None,
    rounds: int = 0,
) -> TrainedModel:
    """Fit the ``svm`` or ``mlp`` pipeline (module docstring).

    Raises:
        ModelError: the estimator refused the rows (one class, a constant column).
    """
    try:
        if family == "svm":
            return _fit_svm(classify, params, train)
        return _fit_mlp(classify, params, train, validation, rounds)
    except ValueError as exc:
        raise ModelError(f"{family}: scikit-learn refused the rows: {exc}") from exc


def _fit_svm(classify: bool, p: dict[str, Any], train: tuple[F64, F64]) -> TrainedModel:
    X, y = train
    cap = int(p["max_fit_rows"])
    keep = capped_rows(X.shape[0], cap)
    notes: tuple[str, ...] = ()
    if keep.shape[0] < X.shape[0]:
        notes = (
            f"svm fit on {keep.shape[0]:,} of {X.shape[0]:,} rows, evenly spaced "
            f"([train.model_params.svm] max_fit_rows = {cap:,}: an SVM's fit grows as the "
            "square of its rows)",
        )
    estimator: Any
    if classify:
        estimator = SVC(
            C=float(p["c"]),
            kernel=p["kernel"],
            gamma=p["gamma"],
            probability=True,
            random_state=int(p["seed"]),
        )
    else:
        estimator = SVR(C=float(p["c"]), kernel=p["kernel"], gamma=p["gamma"], epsilon=float(p["epsilon"]))  # fmt: skip
    pipe = Pipeline([("scale", StandardScaler()), ("model", estimator)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", SVC_PROBABILITY_DEPRECATION, FutureWarning)
        pipe.fit(X[keep], y[keep].astype(np.int64) if classify else y[keep])
    return TrainedModel(family="svm", pipeline=pipe, notes=notes)


def _fit_mlp(
    classify: bool,
    p: dict[str, Any],
    train: tuple[F64, F64],
    validation: tuple[F64, F64] | None,
    rounds: int,
) -> TrainedModel:
    X, y = train
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    kwargs: dict[str, Any] = {
        "hidden_layer_sizes": tuple(p["hidden"]),
        "alpha": float(p["alpha"]),
        "learning_rate_init": float(p["learning_rate"]),
        # at most the rows: scikit-learn clips a larger batch itself, with a warning
        "batch_size": min(int(p["batch_size"]), X.shape[0]),
        "random_state": int(p["seed"]),
        "shuffle": True,
    }
    net: Any = MLPClassifier(**kwargs) if classify else MLPRegressor(**kwargs)
    target = y.astype(np.int64) if classify else y
    classes = np.array([0, 1])
    epochs = int(p["max_epochs"]) if validation is not None else max(1, rounds)
    best_loss, best_epoch, best_net = np.inf, 0, None
    Zv = scaler.transform(validation[0]) if validation is not None else None
    for epoch in range(1, epochs + 1):
        with warnings.catch_warnings():
            # one epoch per call is the point: "not converged" is expected, not news
            warnings.simplefilter("ignore", ConvergenceWarning)
            if classify:
                net.partial_fit(Z, target, classes=classes)
            else:
                net.partial_fit(Z, target)
        if validation is None or Zv is None:
            continue
        loss = _validation_loss(net, classify, Zv, validation[1])
        if loss < best_loss - 1e-12:
            best_loss, best_epoch, best_net = loss, epoch, copy.deepcopy(net)
        elif epoch - best_epoch >= int(p["patience"]):
            break
    if validation is not None:
        assert best_net is not None
        net = best_net
    else:
        best_epoch = epochs
    pipe = Pipeline([("scale", scaler), ("model", net)])
    return TrainedModel(family="mlp", pipeline=pipe, iterations=best_epoch)


def _validation_loss(net: Any, classify: bool, Z: F64, y: F64) -> float:
    if classify:
        prob = np.clip(net.predict_proba(Z)[:, 1], 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))
    return float(np.mean((net.predict(Z) - y) ** 2))
