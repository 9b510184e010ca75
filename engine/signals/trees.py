"""LightGBM boosters compiled to flat arrays and evaluated in numba.

Matches ``Booster.predict`` (raw score and probability) to 1e-9: the same decision rule
(missing values by each node's missing type and default direction, ``fval <= threshold``
in double), trees summed in the same order. Categorical splits, linear trees, multiclass
and averaged (random forest) outputs are refused with a ``ModelError``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.errors import ModelError

MISSING_NONE = 0
MISSING_ZERO = 1
MISSING_NAN = 2
_MISSING = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}
# LightGBM's kZeroThreshold: |x| <= 1e-35 counts as zero for missing_type Zero
K_ZERO = 1e-35


# rows of the int node table
N_FEATURE = 0
N_LEFT = 1
N_RIGHT = 2
N_DEFAULT_LEFT = 3
N_MISSING = 4


@njit(cache=True, inline="always")
def _tree_value(X, r, node, nodes, threshold, leaf_value):  # type: ignore[no-untyped-def]
    while node >= 0:
        fval = X[r, nodes[N_FEATURE, node]]
        mt = nodes[N_MISSING, node]
        if math.isnan(fval) and mt != MISSING_NAN:
            fval = 0.0
        if (mt == MISSING_ZERO and -K_ZERO < fval <= K_ZERO) or (
            mt == MISSING_NAN and math.isnan(fval)
        ):
            node = nodes[N_LEFT, node] if nodes[N_DEFAULT_LEFT, node] else nodes[N_RIGHT, node]
        elif fval <= threshold[node]:
            node = nodes[N_LEFT, node]
        else:
            node = nodes[N_RIGHT, node]
    return leaf_value[~node]


@njit(cache=True, nogil=True)
def predict_rows(X, roots, nodes, threshold, leaf_value, sigmoid, out):  # type: ignore[no-untyped-def]
    """Scores of rows of ``X`` (float64[n, k]): the sum over trees, in tree order, then
    ``1 / (1 + exp(-sigmoid * raw))`` when ``sigmoid > 0`` (binary probability)."""
    for r in range(X.shape[0]):
        s = 0.0
        for t in range(roots.shape[0]):
            s += _tree_value(X, r, roots[t], nodes, threshold, leaf_value)
        out[r] = 1.0 / (1.0 + math.exp(-sigmoid * s)) if sigmoid > 0.0 else s


class CompiledTrees:
    """A booster's trees as arrays. Internal nodes are indices >= 0; leaf ``j`` is ``~j``.

    Args:
        dump: ``Booster.dump_model()``.

    Raises:
        ModelError: a feature the evaluator does not support.
    """

    def __init__(self, dump: dict[str, Any]) -> None:
        if dump.get("num_class", 1) != 1 or dump.get("num_tree_per_iteration", 1) != 1:
            raise ModelError("multiclass LightGBM models are not supported")
        if dump.get("average_output"):
            raise ModelError("random-forest (average_output) LightGBM models are not supported")
        objective = str(dump.get("objective", ""))
        self.objective = objective.split()[0] if objective else "regression"
        self.sigmoid = 1.0
        if self.objective == "binary":
            m = re.search(r"sigmoid:([0-9.eE+-]+)", objective)
            self.sigmoid = float(m.group(1)) if m else 1.0
        elif self.objective not in (
            "regression",
            "regression_l1",
            "huber",
            "fair",
            "quantile",
            "mape",
        ):
            raise ModelError(
                f"objective {self.objective!r} is not supported (binary and regression are)"
            )
        self.feature_names: list[str] = list(dump.get("feature_names", []))
        self.n_features = int(dump.get("max_feature_idx", len(self.feature_names) - 1)) + 1
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        default_left: list[bool] = []
        missing: list[int] = []
        leaves: list[float] = []
        roots: list[int] = []

        def walk(node: dict[str, Any]) -> int:
            if "leaf_value" in node and "split_feature" not in node:
                leaves.append(float(node["leaf_value"]))
                return ~(len(leaves) - 1)
            if node.get("decision_type", "<=") != "<=":
                raise ModelError(
                    "categorical splits are not supported: train with numerical features only"
                )
            idx = len(feature)
            feature.append(int(node["split_feature"]))
            threshold.append(float(node["threshold"]))
            default_left.append(bool(node.get("default_left", True)))
            missing.append(_MISSING[node.get("missing_type", "None")])
            left.append(0)
            right.append(0)
            left[idx] = walk(node["left_child"])
            right[idx] = walk(node["right_child"])
            return idx

        for tree in dump["tree_info"]:
            if tree.get("num_cat", 0):
                raise ModelError(
                    "categorical splits are not supported: train with numerical features only"
                )
            if "leaf_coeff" in str(tree.get("tree_structure", {}))[:2000] or tree.get("is_linear"):
                raise ModelError("linear trees are not supported")
            roots.append(walk(tree["tree_structure"]))
        self.roots = np.array(roots, np.int64)
        n = max(len(feature), 1)
        self.nodes = np.zeros((5, n), np.int64)
        if feature:
            self.nodes[N_FEATURE] = feature
            self.nodes[N_LEFT] = left
            self.nodes[N_RIGHT] = right
            self.nodes[N_DEFAULT_LEFT] = default_left
            self.nodes[N_MISSING] = missing
        self.threshold = np.array(threshold or [0.0], np.float64)
        self.leaf_value = np.array(leaves, np.float64)

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    def predict(
        self, X: npt.NDArray[np.float64], raw_score: bool = False
    ) -> npt.NDArray[np.float64]:
        """Probability (binary objective) or raw score of each row of ``X``.

        Raises:
            ModelError: ``X`` is not float64[n, n_features].
        """
        if X.dtype != np.float64 or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelError(
                f"expected float64[n, {self.n_features}] features, got shape {X.shape}"
            )
        out = np.empty(X.shape[0])
        sigmoid = self.sigmoid if (self.objective == "binary" and not raw_score) else 0.0
        predict_rows(X, self.roots, self.nodes, self.threshold, self.leaf_value, sigmoid, out)
        return out
