"""The transparent baseline: a linear score ``w . x + b``, optionally through a logistic link."""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from numba import njit

from engine.errors import ModelError, PluginLoadError


class LinearParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    features: list[str]
    weights: list[float]
    bias: float = 0.0
    link: Literal["identity", "logistic"] = "identity"


class LinearModel:
    """score = link(sum_i w_i x_i + b); NaN if any input is NaN.

    Raises:
        PluginLoadError: weights and features differ in length or a weight is not finite.
    """

    def __init__(self, name: str, params: LinearParams) -> None:
        if len(params.features) != len(params.weights) or not params.features:
            raise PluginLoadError(name, "linear model needs one weight per feature")
        if not all(math.isfinite(w) for w in [*params.weights, params.bias]):
            raise PluginLoadError(name, "linear model weights must be finite")
        self.name = name
        self.params = params
        self.feature_names: tuple[str, ...] = tuple(params.features)
        self._w = np.asarray(params.weights, np.float64)
        self._b = float(params.bias)
        self.manifest: object | None = None

    @classmethod
    def load(cls, folder: str, name: str | None = None) -> LinearModel:
        """Load a model folder written by ``tradeloop train`` with ``model = "logistic"``.

        Raises:
            ModelError: missing or tampered file, or a manifest of another kind.
        """
        from engine.signals.manifest import read_manifest, verified_model_path

        manifest = read_manifest(folder)
        if manifest.kind != "linear":
            raise ModelError(f"{folder}: manifest kind is {manifest.kind!r}, not 'linear'")
        path = verified_model_path(folder, manifest)
        try:
            params = msgspec.json.decode(path.read_bytes(), type=LinearParams)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ModelError(f"{path}: invalid linear model: {exc}") from exc
        model = cls(name or manifest.name, params)
        model.manifest = manifest
        return model

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = np.empty(features.shape[0])
        _linear_scores(features, self._w, self._b, self.params.link == "logistic", out)
        return out


@njit(cache=True, nogil=True)
def _linear_scores(X, w, b, logistic, out):  # type: ignore[no-untyped-def]
    # an explicit sum in a fixed order: a BLAS dot may change the summation order with
    # the batch shape, and scores must not depend on how ticks were batched
    for r in range(X.shape[0]):
        s = b
        for j in range(w.shape[0]):
            s += w[j] * X[r, j]
        out[r] = 1.0 / (1.0 + math.exp(-s)) if logistic else s
