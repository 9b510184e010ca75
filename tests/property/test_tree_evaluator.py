"""The compiled tree evaluator, built from our own parse of the text format, equals
LightGBM's own predict (the oracle, used only here) on random models and inputs, and
on hand-written one-split models that pin each missing-value rule at its edges."""

from __future__ import annotations

import math

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ModelError
from engine.signals.trees import K_ZERO, CompiledTrees

# values at the edges of LightGBM's zero rule: kZeroThreshold is float32(1e-35) widened,
# so 1e-35 and 1.00000001e-35 are zero to it; 8e-36 is zero but above a 5e-36 threshold
EDGE_VALUES = [math.nan, 0.0, -0.0, 1e-36, -1e-36, 8e-36, -8e-36, 1e-35, -1e-35, 1.00000001e-35,
               -1.00000001e-35, K_ZERO, -K_ZERO, math.nextafter(K_ZERO, 1.0),
               -math.nextafter(K_ZERO, 1.0), 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0]  # fmt: skip


def _with_edges(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = rng.uniform(size=X.shape) < 0.15
    X[mask] = rng.choice(EDGE_VALUES, size=int(mask.sum()))
    return X


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    objective=st.sampled_from(["binary", "regression", "regression_sqrt"]),
    sigmoid=st.sampled_from([1.0, 0.35, 2.5]),
    leaves=st.integers(2, 40),
    rounds=st.integers(1, 60),
    k=st.integers(1, 6),
    nan_rate=st.sampled_from([0.0, 0.05, 0.3]),
    zero_rate=st.sampled_from([0.0, 0.2]),
    use_missing=st.booleans(),
    zero_as_missing=st.booleans(),
)
def test_compiled_trees_equal_booster_predict(seed: int, objective: str, sigmoid: float, leaves: int, rounds: int,
                                              k: int, nan_rate: float, zero_rate: float, use_missing: bool,
                                              zero_as_missing: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    n = 600
    X = rng.normal(size=(n, k)) * rng.choice([1e-3, 1.0, 1e4])
    X[rng.uniform(size=X.shape) < nan_rate] = np.nan
    X[rng.uniform(size=X.shape) < zero_rate] = 0.0
    signal = np.nan_to_num(X[:, 0]) + rng.normal(0, 1, n) * np.nanstd(X[:, 0])
    if objective == "binary":
        y = (signal > np.nanmedian(signal)).astype(float)
    else:
        y = signal / (np.std(signal) or 1.0) * 3.0 + 1.0
    params = {"objective": "regression" if objective == "regression_sqrt" else objective,
              "reg_sqrt": objective == "regression_sqrt", "sigmoid": sigmoid, "num_leaves": leaves,
              "min_data_in_leaf": 3, "verbose": -1, "seed": seed % 1000, "use_missing": use_missing,
              "zero_as_missing": zero_as_missing, "learning_rate": 0.3}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=rounds)
    trees = CompiledTrees.from_text(booster.model_to_string())
    Xq = rng.normal(size=(300, k)) * rng.choice([1e-3, 1.0, 1e4])
    Xq[rng.uniform(size=Xq.shape) < 0.2] = np.nan
    Xq[rng.uniform(size=Xq.shape) < 0.1] = 0.0
    Xq = _with_edges(Xq, rng)
    Xq[:5] = X[:5]  # training rows, split thresholds hit exactly
    np.testing.assert_allclose(
        trees.predict(Xq, raw_score=True), booster.predict(Xq, raw_score=True), rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(trees.predict(Xq), booster.predict(Xq), rtol=0, atol=1e-9)
    # one row at a time: the live path
    for r in range(3):
        assert abs(trees.predict(Xq[r : r + 1])[0] - booster.predict(Xq[r : r + 1])[0]) <= 1e-9


@pytest.mark.parametrize(
    ("objective", "extra"),
    [
        ("binary", {"sigmoid": 0.7}),
        ("regression", {}),
        ("regression", {"reg_sqrt": True}),
        ("regression_l1", {"reg_sqrt": True}),
        ("huber", {}),
        ("fair", {}),
        ("quantile", {}),
        ("mape", {}),
        ("poisson", {}),
        ("gamma", {}),
        ("tweedie", {}),
    ],
)
def test_every_accepted_objective_transform_equals_booster_predict(
    objective: str, extra: dict[str, object]
) -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(1500, 3))
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    raw = np.nan_to_num(X[:, 0]) * 2 + rng.normal(size=1500)
    y = (raw > 0).astype(float) if objective == "binary" else np.abs(raw) + 0.1
    params = {"objective": objective, "verbose": -1, "min_data_in_leaf": 5, **extra}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=15)
    trees = CompiledTrees.from_text(booster.model_to_string())
    Xq = _with_edges(rng.normal(size=(400, 3)), rng)
    np.testing.assert_allclose(trees.predict(Xq), booster.predict(Xq), rtol=0, atol=1e-9)


def one_split_model(decision_type: int, threshold: float, objective: str = "regression",
                    feature: int = 0) -> str:  # fmt: skip
    """A LightGBM text model with one split, written by hand (tree_sizes included)."""
    tree = (
        "Tree=0\nnum_leaves=2\nnum_cat=0\n"
        f"split_feature={feature}\nsplit_gain=1\nthreshold={threshold!r}\n"
        f"decision_type={decision_type}\nleft_child=-1\nright_child=-2\n"
        "leaf_value=-1.25 2.5\nleaf_weight=1 1\nleaf_count=1 1\n"
        "internal_value=0\ninternal_weight=2\ninternal_count=2\nis_linear=0\nshrinkage=1\n\n\n"
    )
    return (
        "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
        f"max_feature_idx=1\nobjective={objective}\nfeature_names=a b\n"
        f"feature_infos=none none\ntree_sizes={len(tree)}\n\n{tree}end of trees\n"
    )


@pytest.mark.parametrize("decision_type", [0, 2, 4, 6, 8, 10])
@pytest.mark.parametrize("threshold", [0.0, K_ZERO, -K_ZERO, 5e-36, -5e-36, 1e-35, 0.5, -0.5])
def test_missing_value_rules_equal_booster_at_the_zero_edges(
    decision_type: int, threshold: float
) -> None:
    text = one_split_model(decision_type, threshold)
    booster = lgb.Booster(model_str=text)
    trees = CompiledTrees.from_text(text)
    X = np.array([[v, 0.0] for v in [*EDGE_VALUES, threshold, math.nextafter(threshold, math.inf),
                                     math.nextafter(threshold, -math.inf)]])  # fmt: skip
    np.testing.assert_array_equal(trees.predict(X), booster.predict(X))


def test_zero_threshold_is_lightgbms_float_constant() -> None:
    # kZeroThreshold = 1e-35f: the float literal, widened
    assert float(np.float32(1e-35)) == K_ZERO == 1.0000000180025095e-35
    # missing type Zero, default right: 1.00000001e-35 is zero to LightGBM, goes right
    trees = CompiledTrees.from_text(one_split_model(4, 0.5))
    assert trees.predict(np.array([[1.00000001e-35, 0.0], [-K_ZERO, 0.0]])).tolist() == [2.5, 2.5]


def test_reg_sqrt_output_is_squared_back() -> None:
    trees = CompiledTrees.from_text(one_split_model(2, 0.5, objective="regression sqrt"))
    X = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert trees.predict(X, raw_score=True).tolist() == [-1.25, 2.5]
    assert trees.predict(X).tolist() == [-1.5625, 6.25]


def test_binary_sigmoid_parameter_is_applied() -> None:
    trees = CompiledTrees.from_text(one_split_model(2, 0.5, objective="binary sigmoid:0.5"))
    assert trees.predict(np.array([[1.0, 0.0]]))[0] == 1.0 / (1.0 + math.exp(-0.5 * 2.5))


def test_categorical_splits_are_refused_clearly() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 5, 500), rng.normal(size=500)]).astype(float)
    y = (X[:, 0] == 2).astype(float)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(X, y, categorical_feature=[0]),
                        num_boost_round=3)  # fmt: skip
    with pytest.raises(ModelError, match=r"line \d+: tree 0: categorical"):
        CompiledTrees.from_text(booster.model_to_string())


def test_multiclass_is_refused_clearly() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(X, rng.integers(0, 3, 300)),
                        num_boost_round=2)  # fmt: skip
    with pytest.raises(ModelError, match=r"line 3: num_class must be 1: multiclass"):
        CompiledTrees.from_text(booster.model_to_string())


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"objective": "cross_entropy"}, r"line 7: objective 'cross_entropy' is not supported"),
        ({"objective": "binary", "linear_tree": True}, r"linear trees are not supported"),
    ],
)  # fmt: skip
def test_unsupported_models_are_refused_by_name(params: dict[str, object], match: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    y = (X[:, 0] + rng.normal(size=400) > 0).astype(float)
    booster = lgb.train({"verbose": -1, **params}, lgb.Dataset(X, y), num_boost_round=3)
    with pytest.raises(ModelError, match=match):
        CompiledTrees.from_text(booster.model_to_string())
