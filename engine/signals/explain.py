"""Per-decision explanations, one per model family, each an :class:`Explainer`:

- :class:`TreeExplainer`: exact TreeSHAP on the compiled LightGBM trees (gbdt, a single
  tree, a random forest), in numba;
- :class:`LinearExplainer`: exact for a linear or logistic model, coefficient x input,
  summing with the intercept to the score (identity link) or the logit (logistic);
- :class:`SampledShapleyExplainer`: any model scored as a black box (ONNX graphs: SVMs,
  MLPs), a permutation-sampled Shapley estimate against one background row, with a fixed
  budget of permutations that is stated in every explanation.

Each returns ``k + 1`` numbers for a row: the features' contributions, then the base (the
expected value, the intercept, the background's score); they sum to ``raw_score(row)``.

TreeSHAP in detail.

For one feature row, :class:`TreeExplainer` returns each feature's SHAP contribution to
the raw score (before the objective's sigmoid/exp/square) and, last, the expected value
over the training data; the ``k + 1`` numbers sum to the raw score. They equal
``Booster.predict(X, pred_contrib=True)`` to 1e-9 because the kernel is LightGBM's own
``Tree::TreeSHAP`` (Lundberg et al., "Algorithm 2": the path of unique features grown by
EXTEND and shrunk by UNWIND, weights from each node's cover), operation for operation:

- cover is the training row count LightGBM writes per node and leaf (``internal_count``,
  ``leaf_count``); a split sends ``count(child) / count(node)`` of the background down
  each side;
- the "hot" child is the one the row takes, by the evaluator's rules in
  :mod:`engine.signals.trees` (``|v| <= kZeroThreshold`` is 0.0; NaN is 0.0 unless the
  node's missing type is NaN; a missing value goes the default way; else ``v <= t``);
- a tree's expected value is ``sum(leaf_count / root_count * leaf_value)`` in leaf order;
  trees are accumulated in file order from 0.0, as ``GBDT::PredictContrib`` does.

The recursion is unrolled onto an explicit stack (hot child first, as LightGBM recurses),
so the kernel compiles with ``nogil`` and can run on a worker thread next to the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.errors import ModelError
from engine.signals.lightgbm_text import (
    MISSING_NAN,
    MISSING_ZERO,
    TextModel,
    parse_model_text,
)
from engine.signals.trees import K_ZERO, CompiledTrees

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@njit(cache=True, inline="always")
def _hot_child(fval, node, threshold, left, right, default_child, missing):  # type: ignore[no-untyped-def]
    # Tree::NumericalDecision, as trees._leaf_index takes it, for one node
    mt = missing[node]
    if math.isnan(fval) and mt != MISSING_NAN:
        fval = 0.0
    if (mt == MISSING_ZERO and -K_ZERO <= fval <= K_ZERO) or (
        mt == MISSING_NAN and math.isnan(fval)
    ):
        return default_child[node]
    if fval <= threshold[node]:
        return left[node]
    return right[node]


# The three path kernels below copy LightGBM's tree.cpp expression by expression (the same
# operand order and int/double mixing), so the rounding, not just the maths, is the same.
# A path element is (feature pf, zero fraction pz, one fraction po, weight pw) at base + i.


@njit(cache=True, inline="always")
def _extend(pf, pz, po, pw, base, depth, zero, one, feature):  # type: ignore[no-untyped-def]
    pf[base + depth] = feature
    pz[base + depth] = zero
    po[base + depth] = one
    pw[base + depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        pw[base + i + 1] += one * pw[base + i] * (i + 1) / float(depth + 1)
        pw[base + i] = zero * pw[base + i] * (depth - i) / float(depth + 1)


@njit(cache=True, inline="always")
def _unwind(pf, pz, po, pw, base, depth, index):  # type: ignore[no-untyped-def]
    one = po[base + index]
    zero = pz[base + index]
    next_one = pw[base + depth]
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            tmp = pw[base + i]
            pw[base + i] = next_one * (depth + 1) / ((i + 1) * one)
            next_one = tmp - pw[base + i] * zero * (depth - i) / float(depth + 1)
        else:
            pw[base + i] = (pw[base + i] * (depth + 1)) / (zero * (depth - i))
    for i in range(index, depth):
        pf[base + i] = pf[base + i + 1]
        pz[base + i] = pz[base + i + 1]
        po[base + i] = po[base + i + 1]


@njit(cache=True, inline="always")
def _unwound_sum(pz, po, pw, base, depth, index):  # type: ignore[no-untyped-def]
    one = po[base + index]
    zero = pz[base + index]
    next_one = pw[base + depth]
    total = 0.0
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            tmp = next_one * (depth + 1) / ((i + 1) * one)
            total += tmp
            next_one = pw[base + i] - tmp * zero * ((depth - i) / float(depth + 1))
        else:
            total += (pw[base + i] / zero) / ((depth - i) / float(depth + 1))
    return total


@njit(cache=True, error_model="numpy")
def _tree_shap(row, phi, root, feature, threshold, left, right, default_child, missing,  # type: ignore[no-untyped-def]
               leaf_value, node_cover, leaf_cover, pf, pz, po, pw, s_node, s_parent, s_depth,
               s_zero, s_one, s_feature):  # fmt: skip
    # One call of Tree::TreeSHAP(root, depth 0, fractions 1, 1, feature -1), unrolled. A
    # visit's path segment starts at parent_base + depth and copies the parent's first
    # `depth` elements; everything a hot subtree writes lies above its parent's segment, so
    # that segment is intact when the cold sibling is popped.
    top = 0
    s_node[0] = root
    s_parent[0] = 0
    s_depth[0] = 0
    s_zero[0] = 1.0
    s_one[0] = 1.0
    s_feature[0] = -1
    top = 1
    while top > 0:
        top -= 1
        node = s_node[top]
        parent = s_parent[top]
        depth = s_depth[top]
        base = parent + depth
        for i in range(depth):
            pf[base + i] = pf[parent + i]
            pz[base + i] = pz[parent + i]
            po[base + i] = po[parent + i]
            pw[base + i] = pw[parent + i]
        _extend(pf, pz, po, pw, base, depth, s_zero[top], s_one[top], s_feature[top])
        if node < 0:
            value = leaf_value[~node]
            for i in range(1, depth + 1):
                w = _unwound_sum(pz, po, pw, base, depth, i)
                phi[pf[base + i]] += w * (po[base + i] - pz[base + i]) * value
            continue
        split = feature[node]
        hot = _hot_child(row[split], node, threshold, left, right, default_child, missing)
        cold = right[node] if hot == left[node] else left[node]
        w = float(node_cover[node])
        hot_zero = (node_cover[hot] if hot >= 0 else leaf_cover[~hot]) / w
        cold_zero = (node_cover[cold] if cold >= 0 else leaf_cover[~cold]) / w
        incoming_zero = 1.0
        incoming_one = 1.0
        index = 0
        while index <= depth and pf[base + index] != split:
            index += 1
        if index != depth + 1:
            incoming_zero = pz[base + index]
            incoming_one = po[base + index]
            _unwind(pf, pz, po, pw, base, depth, index)
            depth -= 1
        # cold pushed first so the hot subtree is walked first, as LightGBM recurses
        s_node[top] = cold
        s_parent[top] = base
        s_depth[top] = depth + 1
        s_zero[top] = cold_zero * incoming_zero
        s_one[top] = 0.0
        s_feature[top] = split
        s_node[top + 1] = hot
        s_parent[top + 1] = base
        s_depth[top + 1] = depth + 1
        s_zero[top + 1] = hot_zero * incoming_zero
        s_one[top + 1] = incoming_one
        s_feature[top + 1] = split
        top += 2


@njit(cache=True, nogil=True, error_model="numpy")
def explain_rows(X, roots, feature, threshold, left, right, default_child, missing, leaf_value,  # type: ignore[no-untyped-def]
                 node_cover, leaf_cover, expected_value, max_depth, out):  # fmt: skip
    """SHAP contributions of the rows of ``X`` (float64[n, k]) into ``out`` (float64[n, k+1]):
    column ``j < k`` is feature ``j``'s share of the raw score, column ``k`` the expected
    value. Thread-safe: the path and stack buffers are the call's own."""
    k = X.shape[1]
    length = max_depth + 1
    size = length * (length + 1) // 2  # one path segment per depth, each one longer
    pf = np.empty(size, np.int64)
    pz = np.empty(size)
    po = np.empty(size)
    pw = np.empty(size)
    # at most one pending cold sibling per level above the node being expanded, plus its two
    stack = max_depth + 2
    s_node = np.empty(stack, np.int64)
    s_parent = np.empty(stack, np.int64)
    s_depth = np.empty(stack, np.int64)
    s_zero = np.empty(stack)
    s_one = np.empty(stack)
    s_feature = np.empty(stack, np.int64)
    row = np.empty(k)
    for r in range(X.shape[0]):
        for j in range(k):
            v = X[r, j]
            row[j] = 0.0 if -K_ZERO <= v <= K_ZERO else v  # NaN compares false: kept
        for j in range(k + 1):
            out[r, j] = 0.0
        phi = out[r]
        for t in range(roots.shape[0]):
            if roots[t] >= 0:
                _tree_shap(row, phi, roots[t], feature, threshold, left, right, default_child,
                           missing, leaf_value, node_cover, leaf_cover, pf, pz, po, pw, s_node,
                           s_parent, s_depth, s_zero, s_one, s_feature)  # fmt: skip
        phi[k] = expected_value


@dataclass(frozen=True)
class Cover:
    """Training rows that reached each node (``internal_count``) and leaf (``leaf_count``),
    concatenated in tree order: the node and leaf numbering of :class:`CompiledTrees`."""

    node: I64
    leaf: I64


def read_cover(model: TextModel) -> Cover:
    """The node and leaf counts of every tree of ``model``, in file order (the cover the
    parse validated: one list of integers in range per tree, of the right length)."""
    return Cover(
        node=np.concatenate([t.internal_count for t in model.trees]).astype(np.int64),
        leaf=np.concatenate([t.leaf_count for t in model.trees]).astype(np.int64),
    )


class TreeExplainer:
    """Exact TreeSHAP for a compiled LightGBM model, equal to ``pred_contrib=True``.

    Args:
        trees: the compiled model (its arrays are shared, not copied).
        cover: its node and leaf counts (:func:`read_cover`).

    Raises:
        ModelError: the cover does not fit the trees, or a node or leaf has no training
            rows (its fractions would divide by zero).
    """

    def __init__(self, trees: CompiledTrees, cover: Cover) -> None:
        n_leaves = int(trees.leaf_value.shape[0])
        n_nodes = n_leaves - trees.n_trees  # each tree has one leaf more than nodes
        if cover.node.shape != (n_nodes,) or cover.leaf.shape != (n_leaves,):
            raise ModelError(f"{trees.source}: cover for {cover.node.shape[0]} nodes and "
                             f"{cover.leaf.shape[0]} leaves, the model has {n_nodes} and "
                             f"{n_leaves}")  # fmt: skip
        if (cover.node <= 0).any() or (cover.leaf <= 0).any():
            raise ModelError(f"{trees.source}: a node or leaf has a zero count: SHAP values "
                             "are undefined for it")  # fmt: skip
        self.trees = trees
        self.feature_names = trees.feature_names
        self.n_features = trees.n_features
        # padded like CompiledTrees' node arrays, which are never empty
        self._node_cover = np.ones(max(n_nodes, 1), np.int64)
        self._node_cover[:n_nodes] = cover.node
        self._leaf_cover = cover.leaf.astype(np.int64, copy=True)
        self.expected_value, self.max_depth = _expected_value_and_depth(trees, cover)
        self.method = "TreeSHAP (exact)"
        self.budget: dict[str, float] = {}

    def raw_score(self, row: F64) -> float:
        """The trees' own sum for ``row`` (before the objective's transform)."""
        return float(
            self.trees.predict(np.asarray(row, np.float64).reshape(1, -1), raw_score=True)[0]
        )

    @classmethod
    def from_text(cls, text: str | bytes, source: str = "<model text>") -> TreeExplainer:
        """Compile LightGBM model text and read its counts.

        Raises:
            ModelError: the text breaks a rule of the format (names ``source`` and the
                line), or its counts cannot weight a split.
        """
        model = parse_model_text(text, source)
        return cls(CompiledTrees(model), read_cover(model))

    def explain(self, row: F64) -> F64:
        """Contributions of one row (float64[k]) to the raw score, then the expected value:
        float64[k + 1], summing to ``trees.predict(row[None], raw_score=True)[0]``.

        Raises:
            ModelError: ``row`` is not k numbers.
        """
        row = np.asarray(row, np.float64)
        if row.shape != (self.n_features,):
            raise ModelError(f"expected float64[{self.n_features}] features, got shape {row.shape}")
        return self.explain_rows(row.reshape(1, -1)).reshape(-1)

    def explain_rows(self, X: F64) -> F64:
        """:meth:`explain` for each row of ``X`` (float64[n, k]): float64[n, k + 1].

        Raises:
            ModelError: ``X`` is not float64[n, k].
        """
        if X.dtype != np.float64 or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelError(f"expected float64[n, {self.n_features}] features, got shape {X.shape}")  # fmt: skip
        out = np.empty((X.shape[0], self.n_features + 1))
        t = self.trees
        explain_rows(X, t.roots, t.feature, t.threshold, t.left, t.right, t.default_child,
                     t.missing, t.leaf_value, self._node_cover, self._leaf_cover,
                     self.expected_value, self.max_depth, out)  # fmt: skip
        return out

    def top_contributions(
        self, row: F64, names: Sequence[str] | None = None, n: int = 3
    ) -> list[tuple[str, float]]:
        """The ``n`` features that moved this row's raw score most, largest ``|share|``
        first (ties in column order); features with no share at all are left out.

        Args:
            row: float64[k], the features as scored.
            names: one per column; the model's feature names by default.
            n: how many to return at most.

        Raises:
            ModelError: ``row`` is not k numbers, or ``names`` is not k names.
        """
        names = self.feature_names if names is None else names
        if len(names) != self.n_features:
            raise ModelError(f"{len(names)} names for {self.n_features} features")
        phi = self.explain(row)[: self.n_features]
        order = sorted(range(self.n_features), key=lambda j: (-abs(phi[j]), j))
        return [(names[j], float(phi[j])) for j in order[:n] if phi[j] != 0.0]


def _expected_value_and_depth(trees: CompiledTrees, cover: Cover) -> tuple[float, int]:
    expected = 0.0
    max_depth = 0
    leaf0 = 0
    for root in trees.roots.tolist():
        if root < 0:
            expected += float(trees.leaf_value[~root])
            leaf0 += 1
            continue
        leaves = 0
        stack = [(root, 0)]
        while stack:
            node, depth = stack.pop()
            for child in (int(trees.left[node]), int(trees.right[node])):
                if child >= 0:
                    stack.append((child, depth + 1))
                else:
                    leaves += 1
                    max_depth = max(max_depth, depth + 1)
        # Tree::ExpectedValue: int count / double total, summed in leaf order
        total = float(cover.node[root])
        value = 0.0
        for j in range(leaf0, leaf0 + leaves):
            value += (int(cover.leaf[j]) / total) * float(trees.leaf_value[j])
        expected += value
        leaf0 += leaves
    return expected, max_depth


class Explainer(Protocol):
    """What the explanations worker needs of a family's explainer.

    Attributes:
        n_features: k, the row's length.
        method: how contributions are computed, in words (shown with every explanation).
        budget: what an estimate cost and how far to trust it (empty for exact methods).
    """

    n_features: int
    method: str
    budget: dict[str, float]

    def explain(self, row: F64) -> F64:
        """float64[k + 1]: the contributions, then the base; they sum to ``raw_score``."""
        ...

    def raw_score(self, row: F64) -> float:
        """The score the contributions add up to (the trees' sum, the logit, the score)."""
        ...


class LinearExplainer:
    """Exact contributions of a linear score ``b + sum_j w_j x_j``: ``w_j x_j`` for each
    feature and the intercept ``b`` as the base, summed in the scorer's order (the
    intercept first), so the sum is the model's raw score to rounding. With a logistic
    link the raw score is the logit, and the probability is its sigmoid.

    Raises:
        ModelError: weights and names differ in length.
    """

    def __init__(
        self, weights: Sequence[float], bias: float, link: str, names: Sequence[str]
    ) -> None:
        if len(weights) != len(names):
            raise ModelError(f"{len(weights)} weights for {len(names)} features")
        self.weights = np.asarray(weights, np.float64)
        self.bias = float(bias)
        self.link = link
        self.feature_names = tuple(names)
        self.n_features = len(names)
        target = "the logit" if link == "logistic" else "the score"
        self.method = f"exact (coefficient x input; with the intercept they sum to {target})"
        self.budget: dict[str, float] = {}

    def explain(self, row: F64) -> F64:
        row = np.asarray(row, np.float64)
        if row.shape != (self.n_features,):
            raise ModelError(f"expected float64[{self.n_features}] features, got shape {row.shape}")
        return np.append(self.weights * row, self.bias)

    def raw_score(self, row: F64) -> float:
        s = self.bias
        for w, x in zip(self.weights.tolist(), np.asarray(row, np.float64).tolist(), strict=True):
            s += w * x  # the scorer's order: intercept first, then the features in order
        return s


DEFAULT_PERMUTATIONS = 64


class SampledShapleyExplainer:
    """Shapley contributions of a black-box score, estimated by permutation sampling.

    The game is the "baseline Shapley" one: the value of a set of features is the score of
    the row with those features taken from the row and the others from one ``background``
    row (the training mean, i.e. zeros in the model's scaled space, when the scaling is
    known). For each sampled permutation the features are switched from the background to
    the row one at a time and each gets the change of the score it caused; a permutation's
    changes sum to ``score(row) - score(background)`` exactly, so the average over any
    number of permutations does too (additivity holds to rounding, whatever the budget).
    Permutations come in antithetic pairs (a permutation and its reverse), which cancels
    the order bias of a pair of features exactly and lowers the variance; the generator's
    seed is fixed, so the same row gets the same explanation live and in a replay.

    Budget: ``permutations`` (even) permutations cost ``permutations * (k + 1)`` rows,
    scored in one call. ``budget`` after each ``explain`` states it, with the largest
    standard error of a contribution (over the antithetic pairs).

    Args:
        score: the model's scores of float64 rows (``SignalModel.predict``).
        background: float64[k], the reference row.
        background_note: where the background comes from, in words.
        permutations: the sample budget (rounded up to even, at least 2).
        seed: the permutations' seed.
    """

    def __init__(
        self,
        score: Callable[[F64], F64],
        background: F64,
        background_note: str,
        *,
        permutations: int = DEFAULT_PERMUTATIONS,
        seed: int = 0,
    ) -> None:
        self.background = np.asarray(background, np.float64).copy()
        if self.background.ndim != 1 or not np.isfinite(self.background).all():
            raise ModelError("the background must be one row of finite numbers")
        self.n_features = int(self.background.shape[0])
        self.permutations = max(2, permutations + permutations % 2)
        self.background_note = background_note
        self.method = (
            f"sampled Shapley (permutation sampling, {self.permutations} antithetic "
            f"permutations, background: {background_note})"
        )
        self.budget: dict[str, float] = {"permutations": float(self.permutations),
                                         "evaluations": float(self.permutations * (self.n_features + 1))}  # fmt: skip
        self._score = score
        rng = np.random.default_rng(seed)
        half = [rng.permutation(self.n_features) for _ in range(self.permutations // 2)]
        self._orders = np.array([p for q in half for p in (q, q[::-1])], np.int64)

    def raw_score(self, row: F64) -> float:
        return float(self._score(np.asarray(row, np.float64).reshape(1, -1))[0])

    def explain(self, row: F64) -> F64:
        row = np.asarray(row, np.float64)
        k = self.n_features
        if row.shape != (k,):
            raise ModelError(f"expected float64[{k}] features, got shape {row.shape}")
        m = self.permutations
        # rows[p, i]: the background with the first i features of permutation p switched
        rows = np.broadcast_to(self.background, (m, k + 1, k)).copy()
        for i in range(1, k + 1):
            rows[:, i] = rows[:, i - 1]
            cols = self._orders[:, i - 1]
            rows[np.arange(m), i, cols] = row[cols]
        scores = np.asarray(self._score(rows.reshape(-1, k)), np.float64).reshape(m, k + 1)
        steps = np.diff(scores, axis=1)  # steps[p, i]: the change feature orders[p, i] made
        phi_each = np.zeros((m, k))
        phi_each[np.arange(m)[:, None], self._orders] = steps
        phi = phi_each.mean(axis=0)
        pairs = phi_each.reshape(m // 2, 2, k).mean(axis=1)
        budget = {k_: v for k_, v in self.budget.items() if k_ != "max_std_error"}
        if pairs.shape[0] > 1:  # one pair has no spread to measure
            error = pairs.std(axis=0, ddof=1).max() / math.sqrt(pairs.shape[0])
            budget["max_std_error"] = float(error)
        self.budget = budget
        return np.append(phi, scores[0, 0])
