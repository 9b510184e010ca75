"""Scoring time per row of a trained family, measured as the engine serves it: the model
folder loaded by its own loader (checks and all), then one-row ``predict`` calls.

ONNX folders are served by ``engine.signals.onnx_model.OnnxModel`` where it exists; until
then by an ONNX Runtime session of the same file (one thread), and ``scorer`` says which.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.signals.manifest import Manifest

F64 = npt.NDArray[np.float64]

# the last test rows scored one at a time: enough for a stable mean, a fraction of a
# second for the slowest family
SCORING_ROWS = 500
WARMUP_ROWS = 20
PASSES = 5


@dataclass(frozen=True)
class ScoringTime:
    us_per_row: float
    rows: int
    scorer: str


def served_model(folder: Path, manifest: Manifest) -> tuple[Any, str]:
    """The folder's model as the engine loads it, and what it is."""
    if manifest.kind == "lightgbm":
        from engine.signals.lightgbm_model import LightGBMModel

        return LightGBMModel.load(folder), "LightGBMModel (compiled trees)"
    if manifest.kind == "linear":
        from engine.signals.linear import LinearModel

        return LinearModel.load(str(folder)), "LinearModel"
    try:
        from engine.signals.onnx_model import OnnxModel  # type: ignore[import-not-found,unused-ignore]

        return OnnxModel.load(folder), "OnnxModel"
    except ImportError:
        return _RuntimeSession(folder, manifest), "onnxruntime InferenceSession (1 thread)"


class _RuntimeSession:
    def __init__(self, folder: Path, manifest: Manifest) -> None:
        import onnxruntime as ort

        assert manifest.onnx is not None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(folder / manifest.model_file), options, providers=["CPUExecutionProvider"]
        )
        self._spec = manifest.onnx

    def predict(self, X: F64) -> F64:
        out = self._session.run([self._spec.output], {self._spec.input: X.astype(np.float32)})[0]
        s = out[:, self._spec.column] if self._spec.column >= 0 else out.reshape(-1)
        return np.asarray(s, np.float64)


def time_scoring(folder: Path, manifest: Manifest, X: F64, rows: int = SCORING_ROWS) -> ScoringTime:
    """Per-row wall time of one-row ``predict`` calls over the last ``rows`` rows of
    ``X``: the rows are timed in ``PASSES`` consecutive chunks and the fastest chunk's
    mean is reported (as ``timeit`` takes the best repeat: on a shared machine the
    slower chunks measure the other processes)."""
    model, scorer = served_model(folder, manifest)
    X = np.ascontiguousarray(X[-rows:], np.float64)
    for i in range(min(WARMUP_ROWS, X.shape[0])):
        model.predict(X[i : i + 1])
    best = np.inf
    for chunk in np.array_split(np.arange(X.shape[0]), PASSES):
        if chunk.shape[0] == 0:
            continue
        started = time.perf_counter_ns()
        for i in chunk:
            model.predict(X[i : i + 1])
        best = min(best, (time.perf_counter_ns() - started) / 1e3 / chunk.shape[0])
    return ScoringTime(float(best) if np.isfinite(best) else 0.0, int(X.shape[0]), scorer)
