"""The compiled tree evaluator equals LightGBM's own predict, on random models and inputs."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ModelError
from engine.signals.trees import CompiledTrees


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    objective=st.sampled_from(["binary", "regression"]),
    leaves=st.integers(2, 40),
    rounds=st.integers(1, 60),
    k=st.integers(1, 6),
    nan_rate=st.sampled_from([0.0, 0.05, 0.3]),
    zero_rate=st.sampled_from([0.0, 0.2]),
    use_missing=st.booleans(),
    zero_as_missing=st.booleans(),
)
def test_compiled_trees_equal_booster_predict(seed: int, objective: str, leaves: int, rounds: int, k: int,
                                              nan_rate: float, zero_rate: float, use_missing: bool,
                                              zero_as_missing: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    n = 600
    X = rng.normal(size=(n, k)) * rng.choice([1e-3, 1.0, 1e4])
    X[rng.uniform(size=X.shape) < nan_rate] = np.nan
    X[rng.uniform(size=X.shape) < zero_rate] = 0.0
    signal = (
        np.nan_to_num(X[:, 0]) + rng.normal(0, 1, n) * np.nanstd(X[:, 0])
        if k
        else rng.normal(size=n)
    )
    y = (signal > np.nanmedian(signal)).astype(float) if objective == "binary" else signal
    params = {"objective": objective, "num_leaves": leaves, "min_data_in_leaf": 3, "verbose": -1, "seed": seed % 1000,
              "use_missing": use_missing, "zero_as_missing": zero_as_missing, "learning_rate": 0.3}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=rounds)
    trees = CompiledTrees(booster.dump_model())
    Xq = rng.normal(size=(300, k)) * rng.choice([1e-3, 1.0, 1e4])
    Xq[rng.uniform(size=Xq.shape) < 0.2] = np.nan
    Xq[rng.uniform(size=Xq.shape) < 0.1] = 0.0
    Xq[:5] = X[:5]  # training rows, split thresholds hit exactly
    np.testing.assert_allclose(
        trees.predict(Xq, raw_score=True), booster.predict(Xq, raw_score=True), rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(trees.predict(Xq), booster.predict(Xq), rtol=0, atol=1e-9)
    # one row at a time: the live path
    for r in range(3):
        assert abs(trees.predict(Xq[r : r + 1])[0] - booster.predict(Xq[r : r + 1])[0]) <= 1e-9


def test_categorical_splits_are_refused_clearly() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 5, 500), rng.normal(size=500)]).astype(float)
    y = (X[:, 0] == 2).astype(float)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(X, y, categorical_feature=[0]),
                        num_boost_round=3)  # fmt: skip
    with pytest.raises(ModelError, match="categorical"):
        CompiledTrees(booster.dump_model())


def test_multiclass_is_refused_clearly() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(X, rng.integers(0, 3, 300)),
                        num_boost_round=2)  # fmt: skip
    with pytest.raises(ModelError, match="multiclass"):
        CompiledTrees(booster.dump_model())
