"""ONNX test models: scikit-learn models really fitted on data generated here, exported with
skl2onnx, and written as model folders through ``tradeloop models import``'s own code.

The features are the bundled ML config's order-flow columns; the label leans on the book
imbalance, so a model's score moves with ``imb`` and crosses the strategy's thresholds.
"""

from __future__ import annotations

import tomllib
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from skl2onnx import to_onnx
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from engine.config import Config, config_from_dict
from engine.signals.manifest import LabelSpec, TimeRange
from replay.registry.onnx_import import import_onnx

FEATURES = ["imb", "imb_ema", "spread"]
TRAIN_END_NS = 1_700_000_000 * 10**9
Family = Literal["mlp", "svm", "logistic", "ridge"]


def ml_config(**extra: Any) -> Config:
    """The bundled ML config (its [[features]] are the set the models are checked against)."""
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    return config_from_dict(data | extra)


def training_rows(
    n: int = 1500, seed: int = 5
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Rows of (imb, imb_ema, spread bps) on the sample's scales and an "up" label that
    leans on the imbalance, non-linearly (so an MLP and an SVM have something to fit)."""
    rng = np.random.default_rng(seed)
    imb = rng.uniform(-1, 1, n)
    imb_ema = 0.6 * imb + rng.normal(0, 0.2, n)
    spread = rng.gamma(2.0, 1.5, n)
    raw = 1.5 * imb + 0.8 * imb_ema * np.abs(imb) - 0.05 * spread + rng.normal(0, 0.6, n)
    return np.column_stack([imb, imb_ema, spread]), (raw > 0).astype(np.int64)


def fit(family: Family, X: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> Pipeline:
    estimator: Any = {
        "mlp": lambda: MLPClassifier((32, 32), max_iter=200, random_state=0),
        "svm": lambda: SVC(C=1.0, probability=True, random_state=0),
        "logistic": lambda: LogisticRegression(),
        "ridge": lambda: Ridge(alpha=1.0),
    }[family]()
    pipe = make_pipeline(StandardScaler(), estimator)
    with warnings.catch_warnings():
        # a 200-epoch MLP may stop short of sklearn's tolerance; SVC(probability=True) is
        # deprecated in sklearn 1.9: both are about the fit, not about serving it
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        target = y.astype(np.float64) if family == "ridge" else y
        pipe.fit(X, target)
    return pipe


def export(pipe: Pipeline, n_features: int, *, zipmap: bool = False) -> bytes:
    options = {} if isinstance(pipe[-1], Ridge) else {"zipmap": zipmap}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        onx = to_onnx(pipe, np.zeros((1, n_features), np.float32), options=options,
                      target_opset={"": 17, "ai.onnx.ml": 3})  # fmt: skip
    return onx.SerializeToString()


def onnx_folder(
    root: Path, family: Family = "mlp", *, name: str | None = None, seed: int = 5
) -> tuple[Path, Pipeline]:
    """A model folder (``model.onnx`` + manifest) of a ``family`` model fitted here, written
    by the importer; and the fitted scikit-learn pipeline (the oracle)."""
    X, y = training_rows(seed=seed)
    pipe = fit(family, X, y)
    path = root / f"{name or family}.onnx"
    path.write_bytes(export(pipe, len(FEATURES)))
    label = "regression" if family == "ridge" else "classification"
    folder = root / (name or family)
    import_onnx(path, folder, config=ml_config(), features=FEATURES,
                label=LabelSpec(kind=label, horizon_ns=2_000_000_000),
                train_range=TimeRange(start_ns=TRAIN_END_NS - 3600 * 10**9, end_ns=TRAIN_END_NS))  # fmt: skip
    return folder, pipe


def oracle(pipe: Pipeline, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """What scikit-learn itself scores (class-1 probability, or the regression)."""
    if isinstance(pipe[-1], Ridge):
        return np.asarray(pipe.predict(X), np.float64)
    return np.asarray(pipe.predict_proba(X)[:, 1], np.float64)
