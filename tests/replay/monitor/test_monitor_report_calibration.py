"""The monitor page states how its drift thresholds were calibrated and the false-alarm
bound they carry (``drift.calibration_method``, ``stated_false_alarm_bound``,
``calibration_windows``, ``independent_calibration_windows`` of the snapshot), and says
"no stated bound; retrain" for thresholds of an in-sample manifest or a document that
does not record them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from engine.config import MonitorConfig
from engine.monitor import ModelMonitor
from engine.monitor.stats import reference_bins
from engine.signals.manifest import (
    LabelSpec,
    Manifest,
    MonitorReference,
    ReferenceBins,
    TimeRange,
)
from engine.ticks import TickBatch
from replay.monitor.report import monitor_document, write_monitor_page


def document(
    method: Literal["in_sample", "time_blocks"],
    bound: float | None,
    independent: int,
    config: MonitorConfig | None = None,
    **metrics: float,
) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(3000, 2))
    bins = [reference_bins(train[:, j], 10) for j in range(2)]
    rb = [ReferenceBins(edges=e.tolist(), fractions=f.tolist(), drift_threshold=0.4)
          for e, f in bins]  # fmt: skip
    ref = MonitorReference(rows=3000, sample_interval_ns=100, label_tolerance_ns=1000, window=50,
                           configured_false_alarm_rate=0.01, false_alarm_rate=0.008,
                           windows=2760, calibration_method=method, independent_windows=independent,
                           false_alarm_bound=bound, features={"f0": rb[0]}, score=rb[1])  # fmt: skip
    manifest = Manifest(name="m", kind="lightgbm", model_file="m.txt", model_sha256="0" * 64,
                        output="probability", feature_names=["f0"], feature_fingerprint="f",
                        feature_specs=[], label=LabelSpec(horizon_ns=500),
                        train_range=TimeRange(start_ns=0, end_ns=1), reference=ref,
                        metrics=dict(metrics))  # fmt: skip
    logging.disable(logging.WARNING)  # the in-sample manifest's warning: not the point here
    try:
        cfg = config or MonitorConfig(window=50, drift_window=50, gap=None)
        mon = ModelMonitor(config=cfg, manifest=manifest, symbols=("X",),
                           sample_interval_ns=100)  # fmt: skip
        n = 400
        ts = np.arange(n, dtype=np.int64) * 100
        mid = 100 + np.cumsum(rng.normal(0, 0.01, n))
        one = np.ones(n)
        ticks = TickBatch.quotes(ts, ts, np.zeros(n, np.int32), mid - 0.01, mid + 0.01, one, one)
        mon.observe(ticks, rng.normal(size=(n, 1)), rng.uniform(size=n))
    finally:
        logging.disable(logging.NOTSET)
    return monitor_document(mon)


def page(doc: dict[str, Any], folder: Path) -> str:
    html_path, _ = write_monitor_page(doc, folder)
    return html_path.read_text()


def test_monitor_page_states_held_out_calibration_and_its_bound(tmp_path: Path) -> None:
    doc = document("time_blocks", 0.0099, independent=60)
    drift = doc["drift"]
    assert (drift["calibration_method"], drift["stated_false_alarm_bound"]) == (
        "time_blocks",
        0.0099,
    )
    html = page(doc, tmp_path)
    assert "held-out time blocks, 2760 training windows (60 disjoint)" in html
    assert "stated false-alarm bound 0.0099 per window" in html
    assert "retrain" not in html and "above the configured" not in html


def test_monitor_page_says_when_the_bound_is_above_the_configured_rate(tmp_path: Path) -> None:
    # 40 disjoint windows cannot reach 1 %: the thresholds are the maxima, bound 1/41
    html = page(document("time_blocks", 1 / 41, independent=40), tmp_path)
    assert "stated false-alarm bound 0.0244" in html
    assert "above the configured 0.01" in html


@pytest.mark.parametrize("recorded", [True, False])
def test_monitor_page_in_sample_or_unrecorded_calibration_has_no_stated_bound(
    tmp_path: Path, recorded: bool
) -> None:
    doc = document("in_sample", None, independent=0)
    if not recorded:  # a monitor.json written before the snapshot carried the method
        for key in ("calibration_method", "stated_false_alarm_bound", "calibration_windows",
                    "independent_calibration_windows"):  # fmt: skip
            del doc["drift"][key]
    html = page(doc, tmp_path)
    assert "no stated bound; retrain" in html
    assert "stated false-alarm bound" not in html


def test_monitor_page_states_the_low_ic_and_losing_streak_rates(tmp_path: Path) -> None:
    """Calibrated from the manifest's out-of-sample IC and hit ratio (horizon 500 ns,
    sampled every 100 ns: 5 predictions per label): each alarm's threshold and the
    false-alarm rate it states, and the share of this run's checks below the IC's."""
    doc = document("time_blocks", 0.0099, independent=60, oos_ic=0.3, oos_rows=20_000,
                   oos_accuracy=0.56, oos_labeled_rows=20_000)  # fmt: skip
    cal = doc["alarms"]["calibration"]
    assert cal["low_ic"]["calibrated"] and cal["low_ic"]["false_alarm_rate"] == 0.01
    assert cal["low_ic"]["labels_per_horizon"] == 5.0 and cal["low_ic"]["effective_labels"] == 10
    assert cal["low_ic"]["checks"] > 0 and cal["low_ic"]["share_of_checks_below"] is not None
    assert cal["losing_streak"]["calibrated"] and cal["losing_streak"]["false_alarm_rate"] <= 0.01
    html = page(doc, tmp_path)
    assert "Alarm thresholds and their false-alarm rates" in html
    assert "low IC: calibrated: training&#x27;s out-of-sample IC 0.3000" in html
    assert "false-alarm rate 0.01 per window" in html
    assert f"losing streak: calibrated: {cal['losing_streak']['length']} losses in a row" in html
    assert "IC below the threshold at" in html


def test_monitor_page_states_the_rate_of_a_fixed_threshold_or_that_it_has_none(
    tmp_path: Path,
) -> None:
    fixed = MonitorConfig(window=50, drift_window=50, gap=None, ic_min=0.0, losing_streak=5)
    html = page(document("time_blocks", 0.0099, 60, fixed, oos_ic=0.05, oos_rows=20_000,
                         oos_accuracy=0.5, oos_labeled_rows=20_000), tmp_path)  # fmt: skip
    assert "fixed at 0 by [monitor] ic_min: false-alarm rate" in html
    assert "fixed at 5 by [monitor] losing_streak: false-alarm rate" in html
    # no out-of-sample figures in the manifest: calibrated alarms are off, and say why
    html = page(document("time_blocks", 0.0099, 60), tmp_path)
    assert "off: not calibrated, the manifest has no out-of-sample IC" in html
    assert "off: not calibrated, the manifest has no out-of-sample hit ratio" in html
