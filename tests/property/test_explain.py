"""TreeSHAP on the compiled trees equals LightGBM's ``pred_contrib=True`` (the oracle, used
only here) on random models and inputs, row by row and in batches, and its contributions
sum to the raw score; hand-written one-split models pin the missing-value rules."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ModelError
from engine.signals.explain import Cover, TreeExplainer, read_cover
from engine.signals.lightgbm_text import parse_model_text
from engine.signals.trees import CompiledTrees
from tests.property.test_tree_evaluator import EDGE_VALUES, one_split_model


def _queries(rng: np.random.Generator, X: np.ndarray, scale: float) -> np.ndarray:
    k = X.shape[1]
    Xq = rng.normal(size=(120, k)) * scale
    Xq[rng.uniform(size=Xq.shape) < 0.2] = np.nan
    Xq[rng.uniform(size=Xq.shape) < 0.1] = 0.0
    mask = rng.uniform(size=Xq.shape) < 0.1
    Xq[mask] = rng.choice(EDGE_VALUES, size=int(mask.sum()))
    Xq[:5] = X[:5]  # training rows: split thresholds hit exactly
    Xq[5] = np.nan
    Xq[6] = 0.0
    return Xq


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    objective=st.sampled_from(["binary", "regression"]),
    leaves=st.integers(2, 31),
    rounds=st.integers(1, 40),
    k=st.integers(1, 8),
    nan_rate=st.sampled_from([0.0, 0.05, 0.3]),
    zero_rate=st.sampled_from([0.0, 0.2]),
    use_missing=st.booleans(),
    zero_as_missing=st.booleans(),
)
def test_explainer_random_models_equal_pred_contrib(seed: int, objective: str, leaves: int, rounds: int,
                                                    k: int, nan_rate: float, zero_rate: float,
                                                    use_missing: bool, zero_as_missing: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    n = 500
    scale = float(rng.choice([1e-3, 1.0, 1e4]))
    X = rng.normal(size=(n, k)) * scale
    X[rng.uniform(size=X.shape) < nan_rate] = np.nan
    X[rng.uniform(size=X.shape) < zero_rate] = 0.0
    # an interaction and a repeated feature, so paths split on one feature more than once
    signal = np.nan_to_num(X[:, 0]) * (1.0 + (np.nan_to_num(X[:, -1]) > 0))
    signal = signal + rng.normal(0, 1, n) * (np.nanstd(X[:, 0]) or 1.0)
    if objective == "binary":
        y = (signal > np.nanmedian(signal)).astype(float)
    else:
        y = signal / (np.std(signal) or 1.0) * 3.0 + 1.0
    params = {"objective": objective, "num_leaves": leaves, "min_data_in_leaf": 3, "verbose": -1,
              "seed": seed % 1000, "use_missing": use_missing, "zero_as_missing": zero_as_missing,
              "learning_rate": 0.3, "num_threads": 1}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=rounds)
    text = booster.model_to_string()
    explainer = TreeExplainer.from_text(text)
    Xq = _queries(rng, X, scale)

    expected = booster.predict(Xq, pred_contrib=True, num_threads=1)
    ours = explainer.explain_rows(Xq)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    raw = CompiledTrees.from_text(text).predict(Xq, raw_score=True)
    np.testing.assert_allclose(ours.sum(axis=1), raw, rtol=0, atol=1e-9)
    assert np.all(ours[:, -1] == explainer.expected_value)
    # one row at a time (the live path) is the batch, bit for bit
    for r in range(0, Xq.shape[0], 7):
        assert np.array_equal(explainer.explain(Xq[r]), ours[r])


@pytest.mark.parametrize("decision_type", [0, 2, 4, 6, 8, 10])
@pytest.mark.parametrize("threshold", [0.25, -0.25, 0.0, 5e-36, -1e-30])
def test_explainer_one_split_missing_rules_equal_pred_contrib(decision_type: int, threshold: float) -> None:  # fmt: skip
    text = one_split_model(decision_type, threshold)
    oracle = lgb.Booster(model_str=text)
    explainer = TreeExplainer.from_text(text)
    Xq = np.array([[v, w] for v in EDGE_VALUES for w in (0.0, math.nan, 3.0)])
    np.testing.assert_allclose(
        explainer.explain_rows(Xq), oracle.predict(Xq, pred_contrib=True), rtol=0, atol=1e-12
    )


def test_explainer_constant_model_gives_only_expected_value() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    booster = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 500},
                        lgb.Dataset(X, np.full(200, 2.5)), num_boost_round=3)  # fmt: skip
    explainer = TreeExplainer.from_text(booster.model_to_string())
    got = explainer.explain(X[0])
    np.testing.assert_allclose(
        got, booster.predict(X[:1], pred_contrib=True)[0], rtol=0, atol=1e-12
    )
    assert list(got[:3]) == [0.0, 0.0, 0.0]
    assert explainer.top_contributions(X[0]) == []


def _model(seed: int = 5, k: int = 5) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1000, k))
    y = 3 * X[:, 2] - X[:, 0] + 0.1 * rng.normal(size=1000)
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 15},
                        lgb.Dataset(X, y), num_boost_round=20)  # fmt: skip
    return booster, X


def test_top_contributions_largest_magnitude_first_with_names() -> None:
    booster, _ = _model()
    explainer = TreeExplainer.from_text(booster.model_to_string())
    row = np.array([2.0, 0.0, -1.5, 0.0, 0.0])
    phi = explainer.explain(row)
    top = explainer.top_contributions(row, ["a", "b", "c", "d", "e"], n=2)
    assert [name for name, _ in top] == ["c", "a"]
    assert top == [("c", phi[2]), ("a", phi[0])]
    assert abs(top[0][1]) >= abs(top[1][1])
    assert [name for name, _ in explainer.top_contributions(row, n=1)] == ["Column_2"]


def test_explainer_on_worker_threads_equals_serial() -> None:
    booster, X = _model(seed=9)
    explainer = TreeExplainer.from_text(booster.model_to_string())
    serial = explainer.explain_rows(X[:200])
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(explainer.explain, X[:200]))
    assert np.array_equal(np.array(rows), serial)


def test_explainer_wrong_shapes_raise_model_error() -> None:
    booster, X = _model()
    explainer = TreeExplainer.from_text(booster.model_to_string())
    with pytest.raises(ModelError, match=r"float64\[5\]"):
        explainer.explain(X[0, :4])
    with pytest.raises(ModelError, match=r"float64\[n, 5\]"):
        explainer.explain_rows(X[:, :4])
    with pytest.raises(ModelError, match="3 names for 5 features"):
        explainer.top_contributions(X[0], ["a", "b", "c"])


def test_cover_comes_from_the_parse_and_a_zero_count_is_refused() -> None:
    booster, _ = _model()
    model = parse_model_text(booster.model_to_string())
    cover = read_cover(model)
    assert cover.node.size == sum(t.num_leaves - 1 for t in model.trees)
    assert cover.leaf.size == sum(t.num_leaves for t in model.trees)
    zero = Cover(node=cover.node, leaf=np.where(np.arange(cover.leaf.size) == 3, 0, cover.leaf))
    with pytest.raises(ModelError, match="zero count"):
        TreeExplainer(CompiledTrees(model), zero)
    with pytest.raises(ModelError, match="cover for"):
        TreeExplainer(CompiledTrees(model), Cover(node=cover.node[:-1], leaf=cover.leaf))
