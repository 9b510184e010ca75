"""A fitted model of one family, as the folds, the final fit and the monitor use it."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


class TrainedModel:
    """A fitted model of one family: a booster (scored with its first ``iterations``
    trees), linear weights (``link``: ``"logistic"`` or ``"identity"``), or a scikit-learn
    pipeline; ``notes``: what the fit had to do that the manifest should say (a cap on
    the rows an SVM was fit on)."""

    def __init__(
        self,
        booster: lgb.Booster | None = None,
        linear: tuple[F64, float] | None = None,
        iterations: int = 0,
        *,
        family: str = "gbdt",
        link: str = "logistic",
        pipeline: Any = None,
        notes: tuple[str, ...] = (),
    ) -> None:
        self.booster = booster
        self.linear = linear
        self.iterations = iterations
        self.family = family
        self.link = link
        self.pipeline = pipeline
        self.notes = notes

    def predict(self, X: F64) -> F64:
        if self.booster is not None:
            return np.asarray(self.booster.predict(X, num_iteration=self.iterations or None))
        if self.pipeline is not None:
            return pipeline_scores(self.pipeline, X)
        assert self.linear is not None
        w, b = self.linear
        s = X @ w + b
        return s if self.link == "identity" else 1.0 / (1.0 + np.exp(-s))


def pipeline_scores(pipeline: Any, X: F64) -> F64:
    """A scikit-learn pipeline's scores: the class-1 probability of a classifier, the
    prediction of a regressor."""
    if hasattr(pipeline, "predict_proba"):
        return np.asarray(pipeline.predict_proba(X)[:, 1], np.float64)
    return np.asarray(pipeline.predict(X), np.float64)
