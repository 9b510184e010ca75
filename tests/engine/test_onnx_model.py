"""The ONNX signal model: the folder's checks (manifest hash, model sha256, the graph's
input and output against the manifest, feature names and fingerprint in the engine),
scores equal to scikit-learn's own, batch invariance, NaN in -> NaN out, float32 inputs.

Models are scikit-learn pipelines fitted here and exported with skl2onnx
(``tests/onnx_support.py``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import ModelConfig
from engine.errors import ModelError, PluginLoadError
from engine.features import FeatureSet
from engine.plugins import load_model
from engine.signals.manifest import (
    check_against_features,
    read_manifest,
    sha256_file,
    write_manifest,
)
from engine.signals.onnx_model import OnnxModel
from tests.onnx_support import FEATURES, export, fit, ml_config, onnx_folder, oracle, training_rows


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    return onnx_folder(tmp_path_factory.mktemp("onnx"), "mlp")


@pytest.fixture(scope="module")
def loaded(mlp: tuple[Path, object]) -> OnnxModel:
    return OnnxModel.load(mlp[0])


def _rows(n: int, seed: int) -> np.ndarray:
    return training_rows(n, seed)[0]


@pytest.mark.parametrize("family", ["mlp", "svm", "logistic", "ridge"])
def test_onnx_model_scores_match_sklearn(tmp_path: Path, family: str) -> None:
    folder, pipe = onnx_folder(tmp_path, family)  # type: ignore[arg-type]
    model = load_model(ModelConfig(kind="onnx", path=str(folder)))
    X = _rows(500, 9)
    # float32 inputs: the graph's contract; sklearn computes in float64
    assert np.allclose(model.predict(X), oracle(pipe, X), atol=2e-5)
    manifest = read_manifest(folder)
    assert manifest.onnx is not None and manifest.onnx.scaling is not None
    assert np.allclose(manifest.onnx.scaling["mean"], pipe[0].mean_, rtol=1e-6)  # type: ignore[index]
    assert np.allclose(manifest.onnx.scaling["scale"], pipe[0].scale_, rtol=1e-6)  # type: ignore[index]


def test_onnx_model_kind_lightgbm_config_loads_onnx_folder(mlp: tuple[Path, object]) -> None:
    # a trained folder says what it is: a config that still says lightgbm gets the onnx model
    assert isinstance(load_model(ModelConfig(kind="lightgbm", path=str(mlp[0]))), OnnxModel)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, 300), max_size=6))
def test_onnx_model_any_split_of_a_batch_scores_the_same(
    loaded: OnnxModel, cuts: list[int]
) -> None:
    # mutation tried: predict standardising each batch by its own mean (a "helpful" rescale)
    # makes every split differ from the whole
    X = _rows(300, 11)
    whole = loaded.predict(X)
    bounds = [0, *sorted(cuts), 300]
    parts = np.concatenate([loaded.predict(X[a:b]) for a, b in itertools.pairwise(bounds)])
    assert np.array_equal(whole, parts)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    holes=st.lists(st.tuples(st.integers(0, 49), st.integers(0, 2)), min_size=1, max_size=20),
    value=st.sampled_from([np.nan, np.inf, -np.inf, 1e300]),
)
def test_onnx_model_non_finite_feature_scores_nan_others_unchanged(
    loaded: OnnxModel, holes: list[tuple[int, int]], value: float
) -> None:
    # mutation tried: not marking the row (``scores[r] = np.nan`` in _to_float32) lets the graph's score
    # of the zeroed row through (a number: an order could follow from an unwarmed feature)
    X = _rows(50, 13)
    clean = loaded.predict(X)
    for r, c in holes:
        X[r, c] = value
    bad = np.zeros(50, bool)
    bad[[r for r, _ in holes]] = True
    scores = loaded.predict(X)
    assert np.isnan(scores[bad]).all()  # 1e300 is beyond float32: inf after the cast
    assert np.array_equal(scores[~bad], clean[~bad])


def test_onnx_model_casts_inputs_to_float32(loaded: OnnxModel) -> None:
    X = _rows(20, 3)
    nudged = X + 1e-12  # below float32's resolution at these magnitudes
    assert np.array_equal(
        loaded.predict(X), loaded.predict(nudged.astype(np.float32).astype(np.float64))
    )
    assert loaded.predict(X).dtype == np.float64
    assert loaded.predict(X[:0]).shape == (0,)


def test_onnx_model_tampered_graph_refused(tmp_path: Path) -> None:
    folder, _ = onnx_folder(tmp_path, "logistic")
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-5] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 .* does not match"):
        OnnxModel.load(folder)
    with pytest.raises(PluginLoadError, match="does not match"):
        load_model(ModelConfig(kind="onnx", path=str(folder)))


def test_onnx_model_manifest_spec_differs_from_graph_refused(tmp_path: Path) -> None:
    folder, _ = onnx_folder(tmp_path, "logistic")
    manifest = read_manifest(folder)
    assert manifest.onnx is not None
    for spec, message in [
        (msgspec.structs.replace(manifest.onnx, input="x"), "the graph's input is 'X'"),
        (msgspec.structs.replace(manifest.onnx, output="nope"), "no output 'nope'"),
        (msgspec.structs.replace(manifest.onnx, output="label"), "not a float tensor"),
        (msgspec.structs.replace(manifest.onnx, column=2), "column 2 needs"),
    ]:
        write_manifest(folder, msgspec.structs.replace(manifest, onnx=spec))
        with pytest.raises(ModelError, match=message):
            OnnxModel.load(folder)
    wider = msgspec.structs.replace(
        manifest, onnx=manifest.onnx, feature_names=[*FEATURES, "flow_2s"]
    )
    write_manifest(folder, wider)
    with pytest.raises(ModelError, match=r"shape \['N', 3\]|shape \[None, 3\]"):
        OnnxModel.load(folder)


def test_onnx_model_graph_with_zipmap_output_refused(tmp_path: Path) -> None:
    X, y = training_rows(300)
    folder, _ = onnx_folder(tmp_path, "logistic")
    (folder / "model.onnx").write_bytes(export(fit("logistic", X, y), 3, zipmap=True))
    manifest = read_manifest(folder)
    assert manifest.onnx is not None
    spec = msgspec.structs.replace(manifest.onnx, output="output_probability")
    write_manifest(folder, msgspec.structs.replace(manifest, onnx=spec,
                                                   model_sha256=sha256_file(folder / "model.onnx")))  # fmt: skip
    with pytest.raises(ModelError, match="ZipMap"):
        OnnxModel.load(folder)


def test_onnx_model_other_feature_set_refused(mlp: tuple[Path, object]) -> None:
    manifest = read_manifest(mlp[0])
    cfg = ml_config()
    fs = FeatureSet(list(cfg.features))
    check_against_features(manifest, fs.names, fs.fingerprint)  # the set it was imported for
    other = FeatureSet(list(cfg.features)[:3])  # mid, imb, imb_ema: spread missing
    with pytest.raises(ModelError, match="spread"):
        check_against_features(manifest, other.names, other.fingerprint)
    changed = [
        msgspec.structs.replace(s, span=21) if s.name == "imb_ema" else s for s in cfg.features
    ]
    fs2 = FeatureSet(changed)
    with pytest.raises(ModelError, match="different"):
        check_against_features(manifest, fs2.names, fs2.fingerprint)
