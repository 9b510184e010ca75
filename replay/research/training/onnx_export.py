"""A trained scikit-learn pipeline (``svm``, ``mlp``) as ONNX: ``model.onnx`` and the
manifest's ``OnnxSpec``.

The graph takes one float32 input ``features`` of shape ``[rows, k]`` in the manifest's
feature order; the scaler is inside it (``Scaler`` op), so a served model standardises
as it was trained, and ``scaling`` in the spec records the same mean and scale to explain
a decision in the units the model saw. Classifiers are converted with ``zipmap`` off: the
output ``probabilities`` is a plain float32 ``[rows, 2]`` tensor and the score is its
column 1; regressors give ``variable`` ``[rows, 1]`` (column -1).

Precision: ONNX Runtime computes in float32 where scikit-learn computes in float64; the
scores agree to float32 precision (tested). NaN: no imputer is added, so a NaN input
flows through the arithmetic to a NaN score for the MLP and the SVR; the SVC's
``SVMClassifier`` op gives 0.5 to a row with a NaN (measured), so the serving wrapper
must set NaN itself for a row with any NaN input, as the tree models do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import skl2onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from engine.signals.manifest import OnnxSpec
from replay.research.training.sklearn_fit import SVC_PROBABILITY_DEPRECATION

INPUT_NAME = "features"
GRAPH_NAME = "tradeloop"
# ai.onnx opset 17 and ai.onnx.ml 3: what onnxruntime >= 1.14 runs, and skl2onnx 1.20 writes
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class OnnxExport:
    """The serialised graph and how to run it."""

    data: bytes
    spec: OnnxSpec


def export_pipeline(pipeline: Any, n_features: int) -> OnnxExport:
    """The pipeline as an ONNX graph with its spec (module docstring)."""
    model = pipeline.named_steps["model"]
    classify = hasattr(model, "predict_proba")
    options = {id(model): {"zipmap": False}} if classify else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", SVC_PROBABILITY_DEPRECATION, FutureWarning)
        onx = convert_sklearn(
            pipeline,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options=options,
            target_opset=TARGET_OPSET,
            # a fixed graph name: skl2onnx's default is a random uuid, and the same model
            # must give the same bytes (and sha256) wherever its folds ran
            name=GRAPH_NAME,
        )
    outputs = [o.name for o in onx.graph.output]
    output = "probabilities" if classify else outputs[0]
    if output not in outputs:
        output = outputs[-1]
    scaler = pipeline.named_steps["scale"]
    spec = OnnxSpec(
        input=INPUT_NAME,
        output=output,
        column=1 if classify else -1,
        scaling={
            "mean": [float(v) for v in np.asarray(scaler.mean_, np.float64)],
            "scale": [float(v) for v in np.asarray(scaler.scale_, np.float64)],
        },
        producer=f"skl2onnx {skl2onnx.__version__}",
    )
    return OnnxExport(onx.SerializeToString(), spec)
