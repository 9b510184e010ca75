"""Feature kernels (numba) and the ``FeatureSet`` that fuses them into one update."""

from engine.features.feature_set import FeatureSet, FeatureSpec, FeatureState

__all__ = ["FeatureSet", "FeatureSpec", "FeatureState"]
