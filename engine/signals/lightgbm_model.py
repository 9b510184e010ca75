"""The LightGBM signal-model plugin: a model folder (LightGBM text file + manifest),
verified, parsed and validated by our own reader, then scored by the compiled tree
evaluator. LightGBM itself is never called: its loader crashes the process on damaged
text, and scoring does not need it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import ModelError, PluginLoadError
from engine.signals.lightgbm_text import OutputTransform, parse_model_text
from engine.signals.manifest import Manifest, read_manifest, read_verified_model
from engine.signals.trees import CompiledTrees

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class LightGBMModel:
    """Scores with a LightGBM model compiled to numba.

    ``predict`` returns what ``Booster.predict`` would: the probability for a ``binary``
    objective (manifest ``output = "probability"``), the objective's output otherwise
    (``output = "raw"``; ``reg_sqrt`` squared back, log links exponentiated). A row with
    a NaN feature scores NaN (warm-up), even though the trees could route missing values,
    so no decision is ever taken on an unwarmed feature.
    """

    def __init__(self, name: str, manifest: Manifest, trees: CompiledTrees) -> None:
        if list(trees.feature_names) != list(manifest.feature_names):
            raise ModelError(f"{trees.source}: model features {list(trees.feature_names)} differ from the "
                             f"manifest's {manifest.feature_names}")  # fmt: skip
        is_probability = trees.objective.transform == OutputTransform.SIGMOID
        if is_probability != (manifest.output == "probability"):
            raise ModelError(f"{trees.source}: objective {trees.objective.text!r} does not give "
                             f"manifest output {manifest.output!r}")  # fmt: skip
        self.name = name
        self.manifest = manifest
        self.trees = trees
        self.feature_names: tuple[str, ...] = tuple(manifest.feature_names)

    @classmethod
    def load(cls, folder: str | Path, name: str | None = None) -> LightGBMModel:
        """Load a model folder: manifest and its hash, model sha256, text format, compile.

        Raises:
            ModelError: missing/tampered file, damaged or unsupported model text (names
                the line), manifest mismatch.
        """
        manifest = read_manifest(folder)
        if manifest.kind != "lightgbm":
            raise ModelError(f"{folder}: manifest kind is {manifest.kind!r}, not 'lightgbm'")
        if Path(manifest.model_file).suffix in _PICKLE_SUFFIXES:
            raise ModelError(f"{Path(folder) / manifest.model_file}: pickled models are refused; "
                             "save LightGBM's text format")  # fmt: skip
        path, data = read_verified_model(folder, manifest)
        trees = CompiledTrees(parse_model_text(data, str(path)))
        return cls(name or manifest.name, manifest, trees)

    @classmethod
    def from_config(cls, config: Any) -> LightGBMModel:
        """Plugin entry: ``[model] kind = "lightgbm", path = "models/x"``."""
        if not config.path:
            raise PluginLoadError("lightgbm", "[model].path must name a model folder")
        return cls.load(config.path, config.name if config.name != "model" else None)

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = self.trees.predict(features)
        out[np.isnan(features).any(axis=1)] = np.nan
        return out
