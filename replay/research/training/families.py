"""The model ladder's families (``[train] model``), simplest first, and their
hyperparameters (``[train] model_params``).

Every family goes through the one training path: the same dataset, the same purged
walk-forward folds, the same manifest, registry, monitor reference and assessment. They
differ in what they fit, what they score and how a decision is explained:

- ``linear``: ridge least squares of the forward return in bps on the standardised
  features, for either label kind. For a classification label a linear *probability*
  model (least squares on 0/1) is the wrong tool: its scores leave [0, 1] and its errors
  are not Gaussian; the return in bps is what a linear model estimates well and what a
  threshold on it means in money. Served as a linear model (``kind = "linear"``,
  ``link = "identity"``, output ``"raw"``: basis points), so its thresholds are in bps.
- ``logistic``: L2 logistic regression by Newton steps (classification only), output a
  probability.
- ``tree``: one LightGBM tree, depth-limited (``max_depth``), learning rate 1.
- ``random_forest``: LightGBM ``boosting = "rf"``: ``trees`` trees, each on a bagged
  share of the rows and features, averaged (the compiled evaluator serves the mean).
- ``gbdt`` (``lightgbm``, its earlier name): gradient-boosted trees, early-stopped on
  each fold's purged validation rows; ``[train]``'s ``num_leaves``, ``learning_rate``,
  ``max_rounds`` and ``early_stopping_rounds``.
- ``svm``: scikit-learn ``Pipeline(StandardScaler, SVC(probability=True))`` (``SVR`` for
  regression), exported to ONNX. Fitting an SVC costs O(n^2) memory and more time, so it
  is fit on at most ``max_fit_rows`` rows, evenly spaced through the training window
  (a warning in the manifest says so when the cap applies).
- ``mlp``: ``Pipeline(StandardScaler, MLPClassifier)`` (``MLPRegressor`` for regression),
  trained epoch by epoch and early-stopped on the fold's purged validation rows (never
  scikit-learn's random split, which would validate on rows interleaved with the
  training rows, overlapping labels and all); exported to ONNX.

Linear trees (LightGBM ``linear_tree``) stay refused: the compiled evaluator and
TreeSHAP serve piecewise-constant trees only, and a leaf's linear model extrapolates
without bound on inputs outside its training range, the failure a tree otherwise
cannot have.

``model_params``: flat keys are the ``[train] model`` family's; a table named after a
family (``[train.model_params.svm]``) holds that family's, which is how ``--ladder``
gives each family its own. An unknown key is a ``ConfigError`` naming the keys the
family takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from engine.config import Config
from engine.errors import ConfigError

Family = Literal["linear", "logistic", "tree", "random_forest", "gbdt", "svm", "mlp"]
FAMILIES: tuple[Family, ...] = (
    "linear",
    "logistic",
    "tree",
    "random_forest",
    "gbdt",
    "svm",
    "mlp",
)
LIGHTGBM_FAMILIES = ("tree", "random_forest", "gbdt")
ONNX_FAMILIES = ("svm", "mlp")
# families whose folds early-stop: the final refit runs the folds' median best count
EARLY_STOPPED = ("gbdt", "mlp")


def canonical(name: str) -> Family:
    """The family of a ``[train] model`` name (``lightgbm`` is ``gbdt``).

    Raises:
        ConfigError: not a family of the ladder.
    """
    if name == "lightgbm":
        return "gbdt"
    for f in FAMILIES:
        if f == name:
            return f
    raise ConfigError("train.model", f"{name!r} is not a model family; one of {list(FAMILIES)}")


@dataclass(frozen=True)
class FamilySpec:
    """A family's hyperparameters with their defaults, and what a user reads about it."""

    name: Family
    defaults: dict[str, Any]
    fits: str  # what it fits, in words
    explanation: str  # how one decision is explained


SPECS: dict[Family, FamilySpec] = {
    "linear": FamilySpec(
        "linear",
        {"l2": 1.0},
        "ridge least squares of the forward return in bps on standardised features",
        "exact: each coefficient times its input (the score is their sum plus the bias)",
    ),
    "logistic": FamilySpec(
        "logistic",
        {"l2": 1.0, "iterations": 25},
        "L2 logistic regression (Newton steps) of up/down on standardised features",
        "exact: each coefficient times its input, on the log-odds",
    ),
    "tree": FamilySpec(
        "tree",
        {"max_depth": 4},
        "one LightGBM tree of depth at most max_depth",
        "exact: TreeSHAP over the one tree (the decision path's splits)",
    ),
    "random_forest": FamilySpec(
        "random_forest",
        {"trees": 50, "num_leaves": 31, "bagging_fraction": 0.632, "feature_fraction": 0.8},
        "LightGBM random forest: bagged trees, averaged",
        "exact: TreeSHAP, averaged over the trees",
    ),
    "gbdt": FamilySpec(
        "gbdt",
        {"max_depth": -1, "lambda_l2": 0.0, "feature_fraction": 0.9, "bagging_fraction": 0.8},
        "LightGBM gradient-boosted trees, early-stopped per fold",
        "exact: TreeSHAP over the boosted trees",
    ),
    "svm": FamilySpec(
        "svm",
        {"c": 1.0, "kernel": "rbf", "gamma": "scale", "epsilon": 0.1, "max_fit_rows": 1000},
        "scikit-learn SVC (Platt probabilities) or SVR, RBF kernel, on standardised features",
        "sampled: permutation-sampled Shapley values against a background row, a fixed "
        "budget of permutations (no exact path for a kernel)",
    ),
    "mlp": FamilySpec(
        "mlp",
        {
            "hidden": [32, 32],
            "alpha": 1e-4,
            "learning_rate": 1e-3,
            "max_epochs": 60,
            "patience": 5,
            "batch_size": 256,
        },
        "scikit-learn MLP (ReLU, Adam), early-stopped on the fold's purged validation rows",
        "sampled: permutation-sampled Shapley values against a background row, a fixed "
        "budget of permutations",
    ),
}


def output_of(family: str, label: str) -> Literal["probability", "raw"]:
    """What the family's scores are: a probability of "up" or a value in the label's
    units (bps). ``linear`` is always raw; the others follow the label."""
    if canonical(family) == "linear":
        return "raw"
    return "probability" if label == "classification" else "raw"


def score_threshold(family: str, label: str) -> float:
    """Where a score says "up": 0.5 for a probability, 0 bps for a raw score."""
    return 0.5 if output_of(family, label) == "probability" else 0.0


def fits_return(family: str, label: str) -> bool:
    """Whether the family is fit on the forward return in bps (else on the 0/1 class)."""
    return label != "classification" or canonical(family) == "linear"


def family_params(cfg: Config, family: str) -> dict[str, Any]:
    """The family's hyperparameters: its defaults, overridden by ``[train] model_params``
    (flat keys for the ``[train] model`` family, a table named after a family for it).

    Raises:
        ConfigError: a key the family does not take (names those it takes), a value of
            the wrong type or out of range, or a table named after no family.
    """
    fam = canonical(family)
    spec = SPECS[fam]
    given: dict[str, Any] = {}
    own = canonical(cfg.train.model)
    for key, value in cfg.train.model_params.items():
        if isinstance(value, dict):
            if key not in FAMILIES:
                raise ConfigError(
                    f"train.model_params.{key}",
                    f"a table of model_params must be named after a family, one of {list(FAMILIES)}",
                )
            if key == fam:
                given.update(value)
        elif fam == own:
            given[key] = value
    out = dict(spec.defaults)
    for key, value in given.items():
        if key not in spec.defaults:
            raise ConfigError(
                f"train.model_params.{key}",
                f"family {fam!r} takes {sorted(spec.defaults)}, not {key!r}",
            )
        out[key] = _checked(fam, key, value, spec.defaults[key])
    return out


_POSITIVE = {"l2", "c", "alpha", "learning_rate", "epsilon"}
_FRACTIONS = {"bagging_fraction", "feature_fraction"}


def _checked(fam: str, key: str, value: Any, default: Any) -> Any:
    where = f"train.model_params.{key}"
    if key == "hidden":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int) and 1 <= v <= 4096 for v in value)
        ):
            raise ConfigError(where, "a list of layer widths, each 1 to 4096, e.g. [32, 32]")
        return list(value)
    if key == "kernel":
        if value not in ("rbf", "linear", "poly", "sigmoid"):
            raise ConfigError(where, "one of 'rbf', 'linear', 'poly', 'sigmoid'")
        return value
    if key == "gamma":
        if value in ("scale", "auto"):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
        raise ConfigError(where, "'scale', 'auto' or a number above 0")
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(where, f"an integer for {fam}, got {value!r}")
        # gbdt's max_depth -1 is LightGBM's "no limit"; the tree family's is its point
        low = -1 if (key == "max_depth" and fam != "tree") else (2 if key == "num_leaves" else 1)
        if value < low or (key == "max_depth" and value == 0):
            raise ConfigError(where, f"at least {low}" + (" and not 0" if key == "max_depth" else ""))  # fmt: skip
        return value
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(where, f"a finite number for {fam}, got {value!r}")
    v = float(value)
    if key in _POSITIVE and v <= 0:
        raise ConfigError(where, "above 0")
    if key in _FRACTIONS and not 0.0 < v <= 1.0:
        raise ConfigError(where, "above 0 and at most 1")
    if key == "lambda_l2" and v < 0:
        raise ConfigError(where, "at least 0")
    return v
