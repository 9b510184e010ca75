"""The ONNX signal-model plugin (``[model] kind = "onnx"``): a model folder (``model.onnx``
+ manifest with its ``OnnxSpec``), verified like every model folder (manifest hash, model
sha256, feature names and fingerprint), then scored by ONNX Runtime.

The contract with whoever wrote the graph (the ladder's skl2onnx exports, or
``tradeloop models import``): one float32 input ``[rows, len(feature_names)]`` in
``feature_names`` order; the output named in the spec, a float tensor ``[rows]``,
``[rows, 1]`` or ``[rows, classes]`` read at ``column``. Any input scaling lives inside the
graph, so the engine hands it raw features.

Determinism: one intra-op and one inter-op thread, sequential execution, no spinning
worker threads (they would take a core from the decision loop), deterministic compute
asked for. A row's score then does not depend on the rows scored with it
(``tests/engine/signals/test_onnx_model.py`` checks splits of one batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from numba import njit

from engine.errors import ModelError, PluginLoadError
from engine.signals.manifest import Manifest, OnnxSpec, read_manifest, read_verified_model

_FLOAT_OUTPUTS = ("tensor(float)", "tensor(double)")


def session_options() -> ort.SessionOptions:
    """One thread, sequential, deterministic, quiet: how every ONNX graph here is run."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = True
    # ORT's pool threads spin between runs by default: a busy-waiting thread on a 2-core
    # box is a core taken from the loop and the feed decoder
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initialisers are not ours to act on
    return options


def open_session(data: bytes, where: str) -> ort.InferenceSession:
    """An ONNX Runtime session on the graph's bytes (the bytes that were hash-checked).

    Raises:
        ModelError: the bytes are not a graph ONNX Runtime can run (names ``where``).
    """
    try:
        return ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... family, or RuntimeError
        raise ModelError(f"{where}: ONNX Runtime cannot load the graph: {exc}") from exc


def _dim(value: object) -> int | None:
    return value if isinstance(value, int) else None


def check_graph(session: ort.InferenceSession, spec: OnnxSpec, n_features: int, where: str) -> None:
    """Refuse a graph that does not keep the input/output contract of ``spec``.

    Raises:
        ModelError: names what differs (input name, type or width; output name, type,
            rank or column).
    """
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{where}: the graph takes {len(inputs)} inputs "
                         f"({[i.name for i in inputs]}); one float32 [rows, features] input is served")  # fmt: skip
    graph_input = inputs[0]
    if graph_input.name != spec.input:
        raise ModelError(
            f"{where}: the graph's input is {graph_input.name!r}, the manifest says {spec.input!r}"
        )
    if graph_input.type != "tensor(float)":
        raise ModelError(f"{where}: input {graph_input.name!r} is {graph_input.type}; float32 "
                         "(tensor(float)) is the served contract")  # fmt: skip
    shape = list(graph_input.shape)
    if len(shape) != 2 or _dim(shape[1]) not in (None, n_features):
        raise ModelError(f"{where}: input {graph_input.name!r} has shape {shape}; the manifest's "
                         f"{n_features} features need [rows, {n_features}]")  # fmt: skip
    outputs = {o.name: o for o in session.get_outputs()}
    if spec.output not in outputs:
        raise ModelError(
            f"{where}: the graph has no output {spec.output!r} (it has {sorted(outputs)})"
        )
    out = outputs[spec.output]
    if out.type not in _FLOAT_OUTPUTS:
        raise ModelError(f"{where}: output {out.name!r} is {out.type}, not a float tensor "
                         "(a classifier exported with a ZipMap gives maps: export with zipmap=False)")  # fmt: skip
    out_shape = list(out.shape)
    if spec.column >= 0:
        width = _dim(out_shape[1]) if len(out_shape) == 2 else None
        if len(out_shape) != 2 or (width is not None and spec.column >= width):
            raise ModelError(f"{where}: output {out.name!r} has shape {out_shape}; column "
                             f"{spec.column} needs [rows, > {spec.column}]")  # fmt: skip
    elif not (len(out_shape) == 1 or (len(out_shape) == 2 and _dim(out_shape[1]) in (None, 1))):
        raise ModelError(f"{where}: output {out.name!r} has shape {out_shape}; column -1 reads a "
                         "[rows] or [rows, 1] output (name a column of a wider one)")  # fmt: skip


class OnnxModel:
    """Scores with an ONNX graph through ONNX Runtime.

    ``predict`` casts the rows to float32 (the graph's contract), runs the graph and
    returns the spec's column as float64. A row with a non-finite feature (NaN while
    warming up, or a value beyond float32's range) scores NaN whatever the graph would
    say, and so does a row the graph scores non-finite (counted in ``non_finite_scores``):
    no zone, no signal, no order from it.
    """

    def __init__(
        self, name: str, manifest: Manifest, session: ort.InferenceSession, where: str
    ) -> None:
        if manifest.onnx is None:
            raise ModelError(f"{where}: manifest kind {manifest.kind!r} has no onnx spec")
        spec = manifest.onnx
        check_graph(session, spec, len(manifest.feature_names), where)
        self.name = name
        self.manifest = manifest
        self.spec = spec
        self.source = where
        self.feature_names: tuple[str, ...] = tuple(manifest.feature_names)
        self.non_finite_scores = 0
        self._session = session
        self._input = spec.input
        self._outputs = [spec.output]
        self._column = spec.column

    @classmethod
    def load(cls, folder: str | Path, name: str | None = None) -> OnnxModel:
        """Load a model folder: manifest and its hash, model sha256, the graph's contract.

        Raises:
            ModelError: missing/tampered file, a manifest of another kind, a graph ONNX
                Runtime cannot run or whose input/output differ from the manifest's spec.
        """
        manifest = read_manifest(folder)
        if manifest.kind != "onnx":
            raise ModelError(f"{folder}: manifest kind is {manifest.kind!r}, not 'onnx'")
        path, data = read_verified_model(folder, manifest)
        return cls(name or manifest.name, manifest, open_session(data, str(path)), str(path))

    @classmethod
    def from_config(cls, config: Any) -> OnnxModel:
        """Plugin entry: ``[model] kind = "onnx", path = "models/x"``."""
        if not config.path:
            raise PluginLoadError("onnx", "[model].path must name a model folder")
        return cls.load(config.path, config.name if config.name != "model" else None)

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        n = features.shape[0]
        x = np.empty((n, features.shape[1]), np.float32)
        scores = np.empty(n)
        # one numba pass casts and checks, one takes the column: the per-row path stays
        # close to ONNX Runtime's own call (numpy's cast, isfinite and masks cost more than
        # a small graph)
        _to_float32(features, x, scores)
        if n == 0:
            return scores
        out = self._session.run(self._outputs, {self._input: x})[0]
        if out.ndim == 1:
            out = out.reshape(n, 1)
        self.non_finite_scores += _take_scores(out, max(self._column, 0), scores)
        return scores


@njit(cache=True, nogil=True)
def _to_float32(features, x, scores):  # type: ignore[no-untyped-def]
    # a row with any value that is not finite as float32 (NaN, inf, beyond float32's range)
    # goes to the graph as zeros, so no graph ever sees a NaN it might route or reject,
    # and is marked NaN in ``scores`` (0.0: a row to score)
    limit = 3.4028234663852886e38
    for r in range(features.shape[0]):
        scores[r] = 0.0
        for j in range(features.shape[1]):
            v = features[r, j]
            if -limit <= v <= limit:
                x[r, j] = v
            else:
                scores[r] = np.nan
        if scores[r] != 0.0:
            for j in range(features.shape[1]):
                x[r, j] = 0.0


@njit(cache=True, nogil=True)
def _take_scores(out, column, scores):  # type: ignore[no-untyped-def]
    # the column as float64 where a row was scored; a finite row the graph scored
    # non-finite is NaN too, and counted
    bad = 0
    for r in range(scores.shape[0]):
        if scores[r] == 0.0:
            v = np.float64(out[r, column])
            if np.isfinite(v):
                scores[r] = v
            else:
                scores[r] = np.nan
                bad += 1
    return bad


def explanation_background(manifest: Manifest) -> tuple[npt.NDArray[np.float64], str]:
    """The row an ONNX model's sampled Shapley explanation starts from, and its name.

    With the graph's input scaling recorded: the training mean (zeros in the scaled space
    the model computes in). Else the training medians from the manifest's reference bins
    (those counted on the features' own scale). Else zeros.
    """
    k = len(manifest.feature_names)
    spec = manifest.onnx
    if spec is not None and spec.scaling is not None and len(spec.scaling.get("mean", [])) == k:
        return np.asarray(
            spec.scaling["mean"], np.float64
        ), "the training mean (zeros in the scaled space)"
    reference = manifest.reference
    if reference is not None and all(
        reference.features[n].scale == "none" for n in manifest.feature_names
    ):
        medians = []
        for name in manifest.feature_names:
            bins = reference.features[name]
            edges = bins.edges
            cumulative = np.cumsum(bins.fractions)
            b = int(np.searchsorted(cumulative, 0.5))
            if not edges:
                medians.append(0.0)
            elif b == 0:
                medians.append(edges[0])
            elif b >= len(edges):
                medians.append(edges[-1])
            else:
                medians.append(0.5 * (edges[b - 1] + edges[b]))
        return np.asarray(
            medians, np.float64
        ), "the training medians (the manifest's reference bins)"
    return np.zeros(k), "zeros (no scaling or reference bins recorded)"
