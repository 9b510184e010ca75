"""The final model of a family written into its folder: the model file, and what the
manifest says about it (kind, output, feature importance, the ONNX spec).

- LightGBM families (``tree``, ``random_forest``, ``gbdt``): ``model.txt``, LightGBM's
  text format, kind ``"lightgbm"``; importance: each feature's share of the split gain.
- ``linear`` and ``logistic``: ``linear.json`` (``engine.signals.linear.LinearParams``),
  kind ``"linear"``, link ``identity`` (raw bps) or ``logistic`` (a probability);
  importance: each ``|weight| * std(feature)``'s share, the weight on the scale the
  feature moves on.
- ``svm`` and ``mlp``: ``model.onnx`` (``onnx_export``), kind ``"onnx"``; importance: the
  drop in the score's variance when a feature is held at its mean, as a share (the
  model-agnostic counterpart of the others, on the fit rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from engine.signals.manifest import OnnxSpec
from replay.research.training.trained import TrainedModel

F64 = npt.NDArray[np.float64]

# the rows the ONNX families' importance is measured on: enough for a stable share,
# few enough to cost well under a second
IMPORTANCE_ROWS = 500


@dataclass(frozen=True)
class ModelFile:
    model_file: str
    kind: Literal["lightgbm", "linear", "onnx"]
    output: Literal["probability", "raw"]
    importance: dict[str, float]
    onnx: OnnxSpec | None = None


def write_model_file(
    folder: Path,
    final: TrainedModel,
    feature_names: list[str],
    X_fit: F64,
    output: Literal["probability", "raw"],
) -> ModelFile:
    """Write the final model's file into ``folder``; ``X_fit``: the rows it was fit on."""
    if final.booster is not None:
        final.booster.save_model(str(folder / "model.txt"), num_iteration=final.iterations)
        gain = final.booster.feature_importance(importance_type="gain", iteration=final.iterations)
        return ModelFile("model.txt", "lightgbm", output, _shares(feature_names, gain))
    if final.pipeline is not None:
        from replay.research.training.onnx_export import export_pipeline

        export = export_pipeline(final.pipeline, len(feature_names))
        (folder / "model.onnx").write_bytes(export.data)
        return ModelFile(
            "model.onnx",
            "onnx",
            output,
            _shares(feature_names, held_at_mean(final, X_fit)),
            export.spec,
        )
    assert final.linear is not None
    w, b = final.linear
    linear = {
        "features": feature_names,
        "weights": w.tolist(),
        "bias": b,
        "link": final.link,
    }
    (folder / "linear.json").write_text(json.dumps(linear, indent=2) + "\n")
    contrib = np.abs(w) * np.nanstd(X_fit, axis=0)
    return ModelFile("linear.json", "linear", output, _shares(feature_names, contrib))


def held_at_mean(model: TrainedModel, X: F64) -> F64:
    """Per feature, how much of the score's variance goes when that feature is held at
    its mean (clipped at 0), on at most ``IMPORTANCE_ROWS`` evenly spaced rows."""
    if X.shape[0] > IMPORTANCE_ROWS:
        X = X[np.linspace(0, X.shape[0] - 1, IMPORTANCE_ROWS).round().astype(np.int64)]
    base = model.predict(X)
    total = float(np.var(base))
    out = np.zeros(X.shape[1])
    if total == 0.0:
        return out
    for j in range(X.shape[1]):
        held = X.copy()
        held[:, j] = X[:, j].mean()
        out[j] = max(0.0, float(np.var(base - model.predict(held))))
    return out


def _shares(names: list[str], values: F64) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    total = float(v.sum()) or 1.0
    return {n: float(x) / total for n, x in zip(names, v, strict=True)}
