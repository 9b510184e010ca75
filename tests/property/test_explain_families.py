"""Explanations for every family: exact coefficient x input for linear and logistic models
(summing to the score or the logit), a sampled Shapley estimate for ONNX graphs (additive
whatever its budget, equal to the exact values for a linear graph, within its stated
standard error of the exact enumeration for an MLP), and ``tradeloop why`` answering for a
LightGBM, a logistic and an ONNX model folder through the daemon's own ``Explainers``."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from pathlib import Path

import lightgbm as lgb
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.explanations import Explainers, ExplanationJob, explain_line, explanations_path
from engine.features import FeatureSet
from engine.signals.explain import LinearExplainer, SampledShapleyExplainer
from engine.signals.linear import LinearModel, LinearParams
from engine.signals.manifest import LabelSpec, Manifest, TimeRange, sha256_file, write_manifest
from engine.signals.onnx_model import OnnxModel, explanation_background
from replay.cli import main
from tests.onnx_support import FEATURES, ml_config, onnx_folder, training_rows

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(
    weights=st.lists(finite, min_size=1, max_size=8),
    bias=finite,
    link=st.sampled_from(["identity", "logistic"]),
    data=st.data(),
)
def test_linear_explanation_sums_to_the_score_or_logit(
    weights: list[float], bias: float, link: str, data: st.DataObject
) -> None:
    # mutation tried: the intercept left out of the base (np.append(w * row, 0.0)) fails
    # whenever the bias is not 0
    names = [f"f{i}" for i in range(len(weights))]
    row = np.array(data.draw(st.lists(finite, min_size=len(weights), max_size=len(weights))))
    explainer = LinearExplainer(weights, bias, link, names)
    phi = explainer.explain(row)
    raw = explainer.raw_score(row)
    assert math.isclose(float(phi.sum()), raw, rel_tol=1e-9, abs_tol=1e-9)
    model = LinearModel("m", LinearParams(features=names, weights=weights, bias=bias, link=link))
    score = float(model.predict(row.reshape(1, -1))[0])
    if link == "identity":
        assert score == raw  # the same sum in the same order
    elif 1e-12 < score < 1 - 1e-12:
        assert math.isclose(math.log(score / (1 - score)), raw, rel_tol=1e-6, abs_tol=1e-6)
    assert np.array_equal(phi[:-1], np.asarray(weights) * row)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    return OnnxModel.load(onnx_folder(tmp_path_factory.mktemp("mlp"), "mlp")[0])


def _exact_baseline_shapley(score, x: np.ndarray, background: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Every permutation enumerated (k! of them): the exact values the sampler estimates."""
    k = x.shape[0]
    phi = np.zeros(k)
    perms = list(itertools.permutations(range(k)))
    for order in perms:
        current = background.copy()
        before = float(score(current[None])[0])
        for j in order:
            current[j] = x[j]
            after = float(score(current[None])[0])
            phi[j] += after - before
            before = after
    return phi / len(perms)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(0, 199), permutations=st.integers(1, 40))
def test_sampled_shapley_is_additive_at_any_budget(
    mlp: OnnxModel, index: int, permutations: int
) -> None:
    # mutation tried: not carrying the switched features to the next step
    # (dropping ``rows[:, i] = rows[:, i - 1]``) breaks the telescoping sum: fails at once
    x = training_rows(200, 21)[0][index]
    background, _ = explanation_background(mlp.manifest)
    explainer = SampledShapleyExplainer(mlp.predict, background, "mean", permutations=permutations)
    phi = explainer.explain(x)
    assert math.isclose(float(phi.sum()), explainer.raw_score(x), abs_tol=1e-6)
    assert phi[-1] == pytest.approx(float(mlp.predict(background[None])[0]))
    assert explainer.budget["evaluations"] == explainer.permutations * (len(FEATURES) + 1)


def test_sampled_shapley_close_to_exact_within_its_stated_error(mlp: OnnxModel) -> None:
    background, note = explanation_background(mlp.manifest)
    assert note.startswith("the training mean")
    explainer = SampledShapleyExplainer(mlp.predict, background, note, permutations=64)
    worst = 0.0
    for x in training_rows(20, 22)[0]:
        exact = _exact_baseline_shapley(mlp.predict, x, background)
        estimate = explainer.explain(x)[:-1]
        error = explainer.budget["max_std_error"]
        assert np.all(np.abs(estimate - exact) <= 4 * error + 1e-6)
        worst = max(worst, float(np.abs(estimate - exact).max()))
    assert worst > 0.0  # an MLP has interactions: a sample is not the exact value


def test_sampled_shapley_exact_for_a_linear_graph(tmp_path: Path) -> None:
    folder, pipe = onnx_folder(tmp_path, "ridge")
    model = OnnxModel.load(folder)
    background, _ = explanation_background(model.manifest)
    explainer = SampledShapleyExplainer(model.predict, background, "mean", permutations=4)
    ridge = pipe[-1]
    scale = pipe[0].scale_  # type: ignore[index]
    for x in training_rows(10, 23)[0]:
        phi = explainer.explain(x)
        # a linear score's Shapley values against a background: w_j (x_j - b_j) / s_j
        assert np.allclose(phi[:-1], ridge.coef_ * (x - background) / scale, atol=1e-5)


def test_sampled_shapley_same_row_same_explanation(mlp: OnnxModel) -> None:
    background, note = explanation_background(mlp.manifest)
    a = SampledShapleyExplainer(mlp.predict, background, note)
    b = SampledShapleyExplainer(mlp.predict, background, note)
    x = training_rows(3, 24)[0][1]
    assert np.array_equal(a.explain(x), b.explain(x))  # live and replay agree


# --- tradeloop why, one model folder per family


def _lightgbm_folder(root: Path) -> Path:
    X, y = training_rows(800, 31)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "min_data_in_leaf": 10},
                        lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=10)  # fmt: skip
    folder = root / "gbdt"
    folder.mkdir()
    booster.save_model(str(folder / "model.txt"))
    _manifest(folder, "lightgbm", "model.txt")
    return folder


def _logistic_folder(root: Path, link: str = "logistic") -> Path:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    X, y = training_rows(800, 32)
    if link == "logistic":
        fit = LogisticRegression().fit(X, y)
        weights, bias = fit.coef_[0], fit.intercept_[0]
    else:
        line = LinearRegression().fit(X, y.astype(np.float64))
        weights, bias = line.coef_, line.intercept_
    params = LinearParams(features=FEATURES, weights=[float(w) for w in weights],
                          bias=float(bias), link=link)  # type: ignore[arg-type]  # fmt: skip
    folder = root / ("logistic" if link == "logistic" else "linear")
    folder.mkdir()
    (folder / "linear.json").write_bytes(msgspec.json.encode(params))
    _manifest(folder, "linear", "linear.json")
    return folder


def _manifest(folder: Path, kind: str, model_file: str) -> None:
    fs = FeatureSet(list(ml_config().features))
    span = TimeRange(start_ns=1, end_ns=2)
    write_manifest(folder, Manifest(name=folder.name, kind=kind, model_file=model_file,  # type: ignore[arg-type]
                                    model_sha256=sha256_file(folder / model_file), output="probability",
                                    feature_names=FEATURES, feature_fingerprint=fs.fingerprint,
                                    feature_specs=[], label=LabelSpec(), train_range=span))  # fmt: skip


@pytest.mark.parametrize("family", ["gbdt", "linear", "logistic", "svm", "mlp"])
def test_why_answers_for_each_family(tmp_path: Path, family: str) -> None:
    folder = {
        "gbdt": _lightgbm_folder,
        "linear": lambda root: _logistic_folder(root, "identity"),
        "logistic": _logistic_folder,
        "svm": lambda root: onnx_folder(root, "svm")[0],
        "mlp": lambda root: onnx_folder(root, "mlp")[0],
    }[family](tmp_path)
    explainer = Explainers(lambda version: folder, permutations=16).get("")
    assert explainer is not None
    t0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
    row = training_rows(1, 33)[0][0]
    job = ExplanationJob(ts_event=t0, instrument="BTC-USD", model=family, version="",
                         score=0.6, names=tuple(FEATURES), row=row, order_ids=["n1-s-1"])  # fmt: skip
    line = explain_line(job, explainer, 2)
    journal = tmp_path / "journal"
    journal.mkdir()
    explanations_path(journal, "s1").write_bytes(line)
    doc = json.loads(line)
    total = sum(v for _, v in doc["contributions"]) + doc["rest"] + doc["expected_value"]
    assert math.isclose(total, doc["raw_score"], abs_tol=1e-9)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["why", str(journal), "--at", "2026-01-01T00:00:01"])
    printed = out.getvalue()
    assert (code, err.getvalue()) == (0, "")
    assert "orders: n1-s-1" in printed and f"model {family}" in printed
    sampled = "sampled Shapley (permutation sampling, 16 antithetic"
    method = {"gbdt": "TreeSHAP (exact)", "linear": "exact (coefficient x input",
              "logistic": "exact (coefficient x input", "svm": sampled, "mlp": sampled}[family]  # fmt: skip
    assert f"method: {method}" in printed
    if family == "linear":
        assert "sum to the score" in printed
    if family == "logistic":
        assert "sum to the logit" in printed
    if family in ("svm", "mlp"):
        assert "budget: 16 permutations, 64 model evaluations" in printed
        assert "largest standard error" in printed
    else:
        assert "budget" not in doc and "budget:" not in printed
