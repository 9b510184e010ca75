"""Model monitoring, the same in replay and live: predictions scored once their horizon
has passed (IC, hit ratio, calibration), feature and score drift against the training
distribution (PSI with calibrated thresholds), data quality, the model's own trades, and
alarms that act on the trading state. Pure engine code: no I/O."""

from engine.monitor.drift import DriftCalibration, DriftWindow, calibrate_drift
from engine.monitor.monitor import AlarmKind, ModelMonitor, MonitorHost, attach_monitor
from engine.monitor.round_trips import RoundTrip, RoundTrips, round_trips_of

__all__ = [
    "AlarmKind",
    "DriftCalibration",
    "DriftWindow",
    "ModelMonitor",
    "MonitorHost",
    "RoundTrip",
    "RoundTrips",
    "attach_monitor",
    "calibrate_drift",
    "round_trips_of",
]
