"""``tradeloop models import MODEL.onnx``: a model trained elsewhere, as a model folder.

The graph is inspected (its one float32 input, its float outputs), the output read for the
score chosen (a classifier's ``[rows, 2]`` probabilities at column 1, or a single
``[rows]``/``[rows, 1]`` output), and a standardisation at the graph's entrance (an
``ai.onnx.ml`` ``Scaler`` node, what skl2onnx writes for a ``StandardScaler``) recorded in
the manifest's ``OnnxSpec.scaling``, for explanations in the units the model saw.

The manifest states no out-of-sample figures (``metrics`` empty, no folds): the registry
holds such a version at the shadow stage (``engine.model_registry.out_of_sample_evidence``)
until ``tradeloop evaluate`` has measured it on data after ``--train-end``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import msgspec
import onnx
import onnxruntime as ort

from engine.config import Config
from engine.errors import ConfigError, ModelError
from engine.features import FeatureSet
from engine.signals.manifest import LabelSpec, Manifest, OnnxSpec, TimeRange, write_manifest
from engine.signals.onnx_model import OnnxModel, open_session

MODEL_FILE = "model.onnx"
_FLOAT_TYPES = ("tensor(float)", "tensor(double)")


@dataclass(frozen=True)
class GraphOutput:
    name: str
    type: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class GraphFacts:
    """What an ONNX graph takes and gives (as ONNX Runtime reads it)."""

    input: str
    input_type: str
    input_shape: tuple[int | str | None, ...]
    inputs: int
    outputs: tuple[GraphOutput, ...]
    producer: str


def inspect_graph(data: bytes, where: str) -> GraphFacts:
    """The graph's inputs and outputs.

    Raises:
        ModelError: not a graph ONNX Runtime can load.
    """
    session = open_session(data, where)
    first = session.get_inputs()[0]
    try:
        proto = onnx.load_model_from_string(data)
        producer = f"{proto.producer_name} {proto.producer_version}".strip()
    except Exception as exc:  # onnx raises DecodeError and friends from protobuf
        raise ModelError(f"{where}: not an ONNX model: {exc}") from exc
    return GraphFacts(
        input=first.name,
        input_type=first.type,
        input_shape=tuple(first.shape),
        inputs=len(session.get_inputs()),
        outputs=tuple(GraphOutput(o.name, o.type, tuple(o.shape)) for o in session.get_outputs()),
        producer=producer or "unknown producer",
    )


def choose_output(
    facts: GraphFacts, label: str, output: str | None, column: int | None, where: str
) -> tuple[str, int]:
    """The output and column to read the score from.

    A classifier's two-column probabilities give column 1 (the class "up"); a single
    float ``[rows]`` or ``[rows, 1]`` output gives column -1. ``output``/``column`` name
    them when the graph has several candidates.

    Raises:
        ModelError: no float output fits, or several do and none was named.
    """
    floats = [o for o in facts.outputs if o.type in _FLOAT_TYPES]
    if output is not None:
        named = [o for o in facts.outputs if o.name == output]
        if not named:
            raise ModelError(f"{where}: no output {output!r} (outputs: "
                             f"{', '.join(o.name for o in facts.outputs)})")  # fmt: skip
        floats = named
    if not floats:
        raise ModelError(f"{where}: no float tensor output (outputs: "
                         f"{', '.join(f'{o.name} {o.type}' for o in facts.outputs)}); a classifier "
                         "exported with a ZipMap gives maps: export it with zipmap=False")  # fmt: skip
    if column is not None:
        if len(floats) != 1:
            raise ModelError(f"{where}: --column needs --output (float outputs: "
                             f"{', '.join(o.name for o in floats)})")  # fmt: skip
        return floats[0].name, column
    single = [o for o in floats if len(o.shape) == 1 or (len(o.shape) == 2 and o.shape[1] == 1)]
    pairs = [o for o in floats if len(o.shape) == 2 and o.shape[1] == 2]
    if label == "classification" and len(pairs) == 1:
        return pairs[0].name, 1
    if len(single) == 1:
        return single[0].name, -1
    raise ModelError(f"{where}: cannot tell which output is the score (float outputs: "
                     f"{', '.join(f'{o.name} {list(o.shape)}' for o in floats)}): name it with "
                     "--output (and --column for a wide one)")  # fmt: skip


def entrance_scaling(
    data: bytes, input_name: str, n_features: int
) -> dict[str, list[float]] | None:
    """The standardisation the graph applies to its input first, as ``mean``/``scale``
    (``(x - mean) / scale``), or None when its first step is something else."""
    proto = onnx.load_model_from_string(data)
    for node in proto.graph.node:
        if input_name not in node.input:
            continue
        if node.op_type != "Scaler":
            return None
        attrs = {a.name: list(a.floats) for a in node.attribute}
        offset, scale = attrs.get("offset", []), attrs.get("scale", [])
        if len(offset) == 1:
            offset = offset * n_features
        if len(scale) == 1:
            scale = scale * n_features
        if len(offset) != n_features or len(scale) != n_features or any(s == 0 for s in scale):
            return None
        # ONNX's Scaler multiplies by ``scale``: sklearn's scale_ (the divisor) is its inverse
        return {"mean": [float(v) for v in offset], "scale": [1.0 / float(s) for s in scale]}
    return None


def import_onnx(
    model_path: str | Path,
    out: str | Path,
    *,
    config: Config,
    features: list[str],
    label: LabelSpec,
    train_range: TimeRange,
    name: str | None = None,
    output: str | None = None,
    column: int | None = None,
    force: bool = False,
) -> Manifest:
    """Write a model folder for an ONNX graph trained elsewhere: ``model.onnx``, its manifest
    (features checked against the config's feature set, no out-of-sample figures) and the
    manifest's hash; the folder is loaded by the engine's own loader before it is kept.

    Raises:
        ConfigError: a feature the config's ``[[features]]`` do not declare; ``out``
            exists (without ``force``).
        ModelError: the graph cannot be read, takes other than one float32 input of the
            features' width, or has no output to read the score from.
    """
    src = Path(model_path)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise ModelError(f"{src}: cannot read: {exc.strerror}") from exc
    fs = FeatureSet(list(config.features))
    missing = [f for f in features if f not in fs.names]
    if missing:
        raise ConfigError("--features", f"{', '.join(missing)}: not features of the config's "
                          f"set ({', '.join(fs.names)})")  # fmt: skip
    if len(set(features)) != len(features):
        raise ConfigError("--features", "a feature is named twice")
    facts = inspect_graph(data, str(src))
    out_name, out_column = choose_output(facts, label.kind, output, column, str(src))
    spec = OnnxSpec(
        input=facts.input,
        output=out_name,
        column=out_column,
        scaling=entrance_scaling(data, facts.input, len(features)),
        producer=f"{facts.producer} (imported)",
    )
    target = Path(out)
    if target.exists() and not force:
        raise ConfigError("--out", f"{target} exists (--force replaces it)")
    manifest = Manifest(
        name=name or target.name,
        kind="onnx",
        model_file=MODEL_FILE,
        model_sha256=hashlib.sha256(data).hexdigest(),
        output="probability" if label.kind == "classification" else "raw",
        feature_names=list(features),
        feature_fingerprint=fs.fingerprint,
        feature_specs=[msgspec.to_builtins(s) for s in config.features],
        label=label,
        train_range=train_range,
        library_versions={"onnxruntime": ort.__version__, "onnx": package_version("onnx")},
        warnings=[
            f"imported from {src.name}: no out-of-sample figures; the registry holds it at "
            "the shadow stage until `tradeloop evaluate` measures it on data after "
            "its training range"
        ],
        onnx=spec,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(data)
        write_manifest(tmp, manifest)
        OnnxModel.load(tmp)  # what the engine will do: refuse the folder now, not at start-up
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
