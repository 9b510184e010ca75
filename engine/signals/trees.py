"""LightGBM models compiled to flat arrays and evaluated in numba, from our own parse.

The arrays come from :mod:`engine.signals.lightgbm_text` (validated text), never from a
``Booster``: scoring needs no LightGBM at all. The evaluator matches ``Booster.predict`` to
1e-9 by following LightGBM's own rules:

- a dense row passes through LightGBM's predictor as (index, value) pairs that drop every
  ``|value| <= kZeroThreshold``, so the trees see 0.0 there;
- ``Tree::NumericalDecision``: NaN becomes 0.0 unless the node's missing type is NaN; a
  missing value (zero for type Zero, NaN for type NaN) goes the node's default way;
  otherwise ``value <= threshold`` (in double) goes left;
- trees are summed in file order from 0.0, then the objective's output transform;
- a random forest (``average_output``, ``boosting = "rf"``) is the mean of its trees:
  its leaf values are stored divided by the number of trees, so the sum is the mean
  and everything that reads the leaves (TreeSHAP in ``engine.signals.explain``) sees the
  forest's own scale. LightGBM divides the sum instead; the two differ by rounding only
  (a few ulps, tested to 1e-12 against ``Booster.predict``). LightGBM 4.7's
  ``raw_score=True`` and ``pred_contrib=True`` return the forest's *sum* (its
  probabilities use the mean); ours are the mean, consistent with the probability.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.errors import ModelError
from engine.signals.lightgbm_text import (
    DEFAULT_LEFT_BIT,
    MISSING_NAN,
    MISSING_ZERO,
    Objective,
    OutputTransform,
    TextModel,
    parse_model_text,
)

# LightGBM declares ``const double kZeroThreshold = 1e-35f``: the float literal widened to
# double is 1.0000000180025095e-35, not the double 1e-35; values between the two are zero to it.
K_ZERO = float(np.float32(1e-35))

_SIGMOID = int(OutputTransform.SIGMOID)
_SIGNED_SQUARE = int(OutputTransform.SIGNED_SQUARE)
_EXP = int(OutputTransform.EXP)


@njit(cache=True, inline="always")
def _leaf_index(row, node, feature, threshold, left, right, default_child, missing):  # type: ignore[no-untyped-def]
    while node >= 0:
        fval = row[feature[node]]
        mt = missing[node]
        if math.isnan(fval) and mt != MISSING_NAN:
            fval = 0.0
        if (mt == MISSING_ZERO and -K_ZERO <= fval <= K_ZERO) or (
            mt == MISSING_NAN and math.isnan(fval)
        ):
            node = default_child[node]
        elif fval <= threshold[node]:
            node = left[node]
        else:
            node = right[node]
    return ~node


@njit(cache=True, inline="always")
def _output(score, transform, parameter):  # type: ignore[no-untyped-def]
    if transform == _SIGMOID:
        return 1.0 / (1.0 + math.exp(-parameter * score))
    if transform == _SIGNED_SQUARE:
        # Common::Sign(s) * s * s, as LightGBM's RegressionL2loss::ConvertOutput writes it
        sign = 1.0 if score > 0.0 else (-1.0 if score < 0.0 else 0.0)
        return sign * score * score
    if transform == _EXP:
        return math.exp(score)
    return score


@njit(cache=True, nogil=True)
def predict_rows(X, roots, feature, threshold, left, right, default_child, missing, leaf_value,  # type: ignore[no-untyped-def]
                 transform, parameter, out):  # fmt: skip
    """Scores of the rows of ``X`` (float64[n, k]) into ``out``: the sum of the trees'
    leaves in tree order, then the output transform (``transform`` < 0: none, raw score)."""
    row = np.empty(X.shape[1])
    for r in range(X.shape[0]):
        for j in range(X.shape[1]):
            v = X[r, j]
            row[j] = 0.0 if -K_ZERO <= v <= K_ZERO else v  # NaN compares false: kept
        s = 0.0
        for t in range(roots.shape[0]):
            s += leaf_value[
                _leaf_index(row, roots[t], feature, threshold, left, right, default_child, missing)
            ]
        out[r] = s if transform < 0 else _output(s, transform, parameter)


class CompiledTrees:
    """A validated LightGBM text model as arrays. Node ``i >= 0``; leaf ``j`` is ``~j``.

    Args:
        model: the parse of the model text (:func:`parse_model_text`).
    """

    def __init__(self, model: TextModel) -> None:
        self.source = model.source
        self.objective: Objective = model.objective
        self.feature_names: tuple[str, ...] = model.feature_names
        self.n_features = model.max_feature_idx + 1
        n_nodes = sum(t.num_leaves - 1 for t in model.trees)
        n_leaves = sum(t.num_leaves for t in model.trees)
        self.feature = np.zeros(max(n_nodes, 1), np.int32)
        self.threshold = np.zeros(max(n_nodes, 1), np.float64)
        self.left = np.zeros(max(n_nodes, 1), np.int32)
        self.right = np.zeros(max(n_nodes, 1), np.int32)
        self.default_child = np.zeros(max(n_nodes, 1), np.int32)
        self.missing = np.zeros(max(n_nodes, 1), np.int8)
        self.leaf_value = np.empty(n_leaves, np.float64)
        self.roots = np.empty(len(model.trees), np.int32)
        self.average_output = model.average_output
        node0 = leaf0 = 0
        for t, tree in enumerate(model.trees):
            m = tree.num_leaves - 1
            nodes = slice(node0, node0 + m)

            def shift(child: npt.NDArray[np.int64], n0: int = node0, l0: int = leaf0) -> npt.NDArray[np.int64]:  # fmt: skip
                return np.where(child >= 0, child + n0, ~(~child + l0))

            left, right = shift(tree.left), shift(tree.right)
            self.feature[nodes] = tree.split_feature
            self.threshold[nodes] = tree.threshold
            self.left[nodes] = left
            self.right[nodes] = right
            self.default_child[nodes] = np.where(tree.decision_type & DEFAULT_LEFT_BIT, left, right)
            self.missing[nodes] = (tree.decision_type >> 2) & 3
            self.leaf_value[leaf0 : leaf0 + tree.num_leaves] = tree.leaf_value
            self.roots[t] = node0 if m > 0 else ~leaf0
            node0 += m
            leaf0 += tree.num_leaves
        if model.average_output and model.trees:
            self.leaf_value /= len(model.trees)

    @classmethod
    def from_text(cls, text: str | bytes, source: str = "<model text>") -> CompiledTrees:
        """Compile LightGBM model text (``save_model``/``model_to_string`` output).

        Raises:
            ModelError: the text breaks a rule of the format; names ``source`` and the line.
        """
        return cls(parse_model_text(text, source))

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    def predict(
        self, X: npt.NDArray[np.float64], raw_score: bool = False
    ) -> npt.NDArray[np.float64]:
        """What ``Booster.predict`` returns for each row of ``X`` (the objective's output:
        a probability for ``binary``), or the summed tree score with ``raw_score``.

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
        transform = -1 if raw_score else int(self.objective.transform)
        predict_rows(X, self.roots, self.feature, self.threshold, self.left, self.right,
                     self.default_child, self.missing, self.leaf_value, transform,
                     self.objective.parameter, out)  # fmt: skip
        return out
