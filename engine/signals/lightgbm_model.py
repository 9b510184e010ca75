"""The LightGBM signal-model plugin: a model folder (LightGBM text file + manifest),
verified, then scored by the compiled tree evaluator (never LightGBM at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import ModelError, PluginLoadError
from engine.signals.manifest import Manifest, read_manifest, verified_model_path
from engine.signals.trees import CompiledTrees


class LightGBMModel:
    """Scores with a LightGBM booster compiled to numba.

    ``predict`` returns the probability for a binary objective (``output =
    "probability"`` in the manifest) or the raw score; a row with a NaN feature scores NaN
    (warm-up), even though the trees could route missing values, so no decision is ever
    taken on an unwarmed feature.
    """

    def __init__(self, name: str, manifest: Manifest, trees: CompiledTrees) -> None:
        if trees.n_features != len(manifest.feature_names):
            raise ModelError(f"model {name!r}: booster has {trees.n_features} features, manifest lists "
                             f"{len(manifest.feature_names)}")  # fmt: skip
        self.name = name
        self.manifest = manifest
        self.trees = trees
        self.feature_names: tuple[str, ...] = tuple(manifest.feature_names)
        self._raw = manifest.output == "raw"

    @classmethod
    def load(cls, folder: str | Path, name: str | None = None) -> LightGBMModel:
        """Load a model folder: manifest, sha256 check, LightGBM text file, compile.

        Raises:
            ModelError: missing/tampered file, unsupported model, manifest mismatch.
        """
        import lightgbm as lgb  # loading only: scoring never calls LightGBM

        manifest = read_manifest(folder)
        if manifest.kind != "lightgbm":
            raise ModelError(f"{folder}: manifest kind is {manifest.kind!r}, not 'lightgbm'")
        path = verified_model_path(folder, manifest)
        if path.suffix in (".pkl", ".pickle", ".joblib"):
            raise ModelError(f"{path}: pickled models are refused; save LightGBM's text format")
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{path}: not a LightGBM text model: {exc}") from exc
        trees = CompiledTrees(booster.dump_model())
        if trees.feature_names and list(trees.feature_names) != list(manifest.feature_names):
            raise ModelError(f"{path}: booster features {trees.feature_names} differ from the manifest's "
                             f"{manifest.feature_names}")  # fmt: skip
        return cls(name or manifest.name, manifest, trees)

    @classmethod
    def from_config(cls, config: Any) -> LightGBMModel:
        """Plugin entry: ``[model] kind = "lightgbm", path = "models/x"``."""
        if not config.path:
            raise PluginLoadError("lightgbm", "[model].path must name a model folder")
        return cls.load(config.path, config.name if config.name != "model" else None)

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = self.trees.predict(features, raw_score=self._raw)
        out[np.isnan(features).any(axis=1)] = np.nan
        return out
