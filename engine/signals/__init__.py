"""Signal models: ``predict(features[n, k]) -> scores[n]``, and threshold-zone signals."""

from engine.signals.base import SignalModel, select_columns
from engine.signals.linear import LinearModel, LinearParams
from engine.signals.zones import Thresholds, ZoneTracker

__all__ = [
    "LinearModel",
    "LinearParams",
    "SignalModel",
    "Thresholds",
    "ZoneTracker",
    "select_columns",
]
