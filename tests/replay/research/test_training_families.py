"""The ladder's families, each really fit on data the test generates: hyperparameter
checks, the random forest served exactly by the compiled trees, the ONNX export scoring
as scikit-learn does, the SVM's row cap, the MLP's early stopping on its own validation
rows, and the linear family's ridge on the return in bps."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest

from engine.config import Config, config_from_dict
from engine.errors import ConfigError
from engine.signals.explain import TreeExplainer
from engine.signals.trees import CompiledTrees
from replay.research.training.families import (
    FAMILIES,
    SPECS,
    canonical,
    family_params,
    output_of,
)
from replay.research.training.fit import FitSettings, _fit_arrays, fit_params, fit_ridge
from replay.research.training.onnx_export import export_pipeline
from replay.research.training.sklearn_fit import capped_rows, fit_sklearn

NAMES = ["a", "b", "c", "d"]


def config(**train: Any) -> Config:
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["train"] |= train
    return config_from_dict(data)


def planted(n: int, seed: int, classify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Four features; the target depends on the first two (non-linearly on the second)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    signal = 0.8 * X[:, 0] + 0.5 * np.abs(X[:, 1]) - 0.4
    y = signal + rng.normal(size=n)
    return X, ((y > 0).astype(np.float64) if classify else y)


def test_family_params_unknown_key_names_the_accepted_keys() -> None:
    cfg = config(model="svm", model_params={"C": 2.0})
    with pytest.raises(ConfigError, match=r"family 'svm' takes \['c', 'epsilon', 'gamma'"):
        family_params(cfg, "svm")


def test_family_params_tables_apply_to_their_family_flat_keys_to_the_model() -> None:
    cfg = config(model="mlp", model_params={"max_epochs": 5, "svm": {"max_fit_rows": 300}})
    assert family_params(cfg, "mlp")["max_epochs"] == 5
    assert family_params(cfg, "svm")["max_fit_rows"] == 300
    assert family_params(cfg, "linear") == SPECS["linear"].defaults
    with pytest.raises(ConfigError, match="named after a family"):
        family_params(config(model_params={"forest": {"trees": 3}}), "gbdt")
    with pytest.raises(ConfigError, match="at least 1"):
        family_params(config(model="tree", model_params={"max_depth": -1}), "tree")
    with pytest.raises(ConfigError, match="list of layer widths"):
        family_params(config(model="mlp", model_params={"hidden": [0]}), "mlp")


def test_lightgbm_is_gbdt_and_every_family_says_what_it_scores() -> None:
    assert canonical("lightgbm") == "gbdt"
    assert output_of("linear", "classification") == "raw"  # the return in bps, not a probability
    assert [output_of(f, "classification") for f in FAMILIES[1:]] == ["probability"] * 6
    assert {output_of(f, "regression") for f in FAMILIES if f != "logistic"} == {"raw"}


@pytest.mark.parametrize("classify", [True, False])
def test_random_forest_compiled_trees_equal_booster_predict(classify: bool) -> None:
    cfg = config(model="random_forest", label="classification" if classify else "regression",
                 model_params={"trees": 25, "num_leaves": 15})  # fmt: skip
    X, y = planted(3000, 1, classify)
    model = _fit_arrays(
        FitSettings(classify, 30, 300, NAMES),
        "random_forest",
        fit_params(cfg, "random_forest", 2000),
        (X[:2000], y[:2000]),
        None,
    )
    assert model.booster is not None and model.iterations == 25
    text = model.booster.model_to_string()
    assert "average_output" in text
    trees = CompiledTrees.from_text(text)
    rows = np.random.default_rng(2).normal(size=(5000, 4)) * 1.5
    rows[::97, 2] = np.nan  # missing values take the trees' default ways, as in LightGBM
    np.testing.assert_allclose(trees.predict(rows), model.booster.predict(rows), rtol=0, atol=1e-12)
    # TreeSHAP on the forest's scale: its shares sum to our (mean) raw score, and equal
    # LightGBM's contributions (which are on the sum of the trees) divided by their number
    shap = TreeExplainer.from_text(text).explain_rows(rows[:200])
    np.testing.assert_allclose(
        shap.sum(axis=1), trees.predict(rows[:200], raw_score=True), atol=1e-12
    )
    contrib = model.booster.predict(rows[:200], pred_contrib=True) / 25
    np.testing.assert_allclose(shap, contrib, atol=1e-12)


def test_tree_family_is_one_depth_limited_tree() -> None:
    cfg = config(model="tree", model_params={"max_depth": 3})
    X, y = planted(2000, 3)
    model = _fit_arrays(FitSettings(True, 30, 300, NAMES), "tree", fit_params(cfg, "tree", 2000),
                        (X, y), (X[:200], y[:200]))  # fmt: skip
    assert model.booster is not None and model.booster.num_trees() == 1
    dump = model.booster.dump_model()["tree_info"][0]
    assert dump["num_leaves"] <= 8

    def depth(node: dict[str, Any]) -> int:
        return 0 if "leaf_value" in node else 1 + max(depth(node["left_child"]), depth(node["right_child"]))  # fmt: skip

    assert 1 <= depth(dump["tree_structure"]) <= 3


def test_linear_family_is_ridge_on_the_return_in_bps() -> None:
    X, y = planted(4000, 4, classify=False)
    w, b = fit_ridge(X, y, l2=1e-9)
    A = np.column_stack([X, np.ones(X.shape[0])])
    exact = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(np.append(w, b), exact, atol=1e-8)
    shrunk, _ = fit_ridge(X, y, l2=1e4)
    assert np.abs(shrunk).sum() < 0.5 * np.abs(w).sum()  # the penalty does shrink


def _onnx_scores(data: bytes, spec: Any, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = session.run([spec.output], {spec.input: X.astype(np.float32)})[0]
    return out[:, spec.column] if spec.column >= 0 else out.reshape(-1)


@pytest.mark.parametrize("family", ["svm", "mlp"])
@pytest.mark.parametrize("classify", [True, False])
def test_onnx_export_scores_as_sklearn_does(family: str, classify: bool) -> None:
    X, y = planted(1600, 5, classify)
    params = {**SPECS[family].defaults, "seed": 7, "max_epochs": 30, "max_fit_rows": 800}
    model = fit_sklearn(classify, family, params, (X[:1000], y[:1000]), (X[1000:1300], y[1000:1300]))  # fmt: skip
    export = export_pipeline(model.pipeline, 4)
    spec = export.spec
    assert spec.input == "features" and spec.producer.startswith("skl2onnx ")
    # the same model, the same bytes (skl2onnx would name the graph by a random uuid)
    assert export_pipeline(model.pipeline, 4).data == export.data
    assert spec.column == (1 if classify else -1)
    scaler = model.pipeline.named_steps["scale"]
    assert spec.scaling is not None
    np.testing.assert_allclose(spec.scaling["mean"], scaler.mean_)
    np.testing.assert_allclose(spec.scaling["scale"], scaler.scale_)
    test = X[1300:]
    ours = _onnx_scores(export.data, spec, test)
    theirs = model.predict(test)
    # float32 inside the graph against float64 in scikit-learn
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 if classify else 1e-4)
    if classify:
        assert ours.min() >= 0.0 and ours.max() <= 1.0
    if family == "mlp" or not classify:
        # NaN in, NaN out through the graph itself (the SVC op does not: see onnx_export)
        bad = test[:3].copy()
        bad[1, 2] = np.nan
        got = _onnx_scores(export.data, spec, bad)
        assert np.isnan(got[1]) and not np.isnan(got[[0, 2]]).any()


def test_svm_fits_on_at_most_its_cap_evenly_spaced_and_says_so() -> None:
    assert capped_rows(10, 20).tolist() == list(range(10))
    keep = capped_rows(10_000, 300)
    assert keep.shape[0] == 300 and keep[0] == 0 and keep[-1] == 9_999
    X, y = planted(1200, 6)
    params = {**SPECS["svm"].defaults, "seed": 7, "max_fit_rows": 400}
    model = fit_sklearn(True, "svm", params, (X, y), None)
    assert model.pipeline.named_steps["model"].shape_fit_[0] == 400
    assert model.notes and "400 of 1,200 rows" in model.notes[0]
    uncapped = fit_sklearn(True, "svm", {**params, "max_fit_rows": 5000}, (X, y), None)
    assert uncapped.notes == ()


def test_mlp_early_stops_on_its_validation_rows_and_the_refit_repeats_the_best_epoch() -> None:
    X, y = planted(1500, 8)
    params = {**SPECS["mlp"].defaults, "seed": 3, "max_epochs": 60, "patience": 4}
    stopped = fit_sklearn(True, "mlp", params, (X[:1000], y[:1000]), (X[1000:], y[1000:]))
    best = stopped.iterations
    assert 1 <= best < 60
    # the same rows for exactly the best number of epochs, no validation: the same net,
    # so the kept weights are those of the best epoch on the validation rows
    refit = fit_sklearn(True, "mlp", params, (X[:1000], y[:1000]), None, rounds=best)
    np.testing.assert_array_equal(refit.predict(X[1000:]), stopped.predict(X[1000:]))
    longer = fit_sklearn(True, "mlp", params, (X[:1000], y[:1000]), None, rounds=best + 3)
    assert not np.array_equal(longer.predict(X[1000:]), stopped.predict(X[1000:]))


def test_lightgbm_refuses_linear_trees_by_name() -> None:
    X, y = planted(600, 9, classify=False)
    booster = lgb.train({"objective": "regression", "linear_tree": True, "verbose": -1,
                         "num_threads": 1}, lgb.Dataset(X, y), num_boost_round=2)  # fmt: skip
    from engine.errors import ModelError

    with pytest.raises(ModelError, match="linear trees are not supported"):
        CompiledTrees.from_text(booster.model_to_string())
