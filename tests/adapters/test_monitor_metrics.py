"""The model monitor's figures on the daemon's Prometheus endpoint: scraped over HTTP
from a real server on a free port, equal to the monitor's own figures; counters move by
the difference, so publishing twice counts nothing twice."""

from __future__ import annotations

import math
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import DaemonMetrics, publish_engine_monitors, publish_monitor
from engine.config import MonitorConfig
from engine.monitor import ModelMonitor
from engine.signals.manifest import MonitorReference, ReferenceBins
from tests.engine.test_monitor import manifest, quotes


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("tradeloop_monitor_")
    }


def monitor_with_figures() -> ModelMonitor:
    """A monitor that has checked (inverted score: IC -1, one low-IC alarm) and seen full
    drift windows (the scores sit near 0.5 +- 0.01, in two of the four bins: one drift
    alarm)."""
    bins = ReferenceBins(edges=[0.4, 0.5, 0.6], fractions=[0.25, 0.25, 0.25, 0.25],
                         drift_threshold=0.5)  # fmt: skip
    ref = MonitorReference(rows=100, sample_interval_ns=100, label_tolerance_ns=100, window=20,
                           configured_false_alarm_rate=0.01, calibration_method="time_blocks",
                           false_alarm_bound=0.01, features={"x": bins}, score=bins)  # fmt: skip
    cfg = MonitorConfig(window=10, check_every=1, ic_min=0.0, accuracy_margin=None, gap=None,
                        drift_window=20)  # fmt: skip
    mon = ModelMonitor(config=cfg, manifest=manifest(ref), symbols=("X",), sample_interval_ns=100)
    n = 60
    rng = np.random.default_rng(1)
    mids = 100 + np.cumsum(rng.normal(size=n))
    score = 0.5 - np.log(np.roll(mids, -1) / mids)  # inverted: IC -1 once scored
    marks = mon.observe(
        quotes((np.arange(n) * 1000).tolist(), mids.tolist()), score[:, None], score
    )
    for m in marks.tolist():
        mon.act(m)
    return mon


def test_publish_monitor_figures_scraped_over_http_equal_the_monitor() -> None:
    mon = monitor_with_figures()
    fig = mon.latest()
    assert fig["ic"] == -1.0 and fig["alarms"]["low_ic"] == 1 and fig["psi"]["x"] is not None
    metrics = DaemonMetrics(("X",))
    port = metrics.serve(0, addr="127.0.0.1")
    try:
        publish_monitor(metrics, mon)
        got = scrape(port)
        m = (("model", "m"),)
        assert got[("tradeloop_monitor_ic", m)] == -1.0
        assert got[("tradeloop_monitor_hit_ratio", m)] == fig["hit_ratio"]
        for series in ("x", "score"):
            labels = (("model", "m"), ("series", series))
            assert got[("tradeloop_monitor_psi", labels)] == fig["psi"][series]
            assert got[("tradeloop_monitor_drift_threshold", labels)] == 0.5
        assert got[("tradeloop_monitor_alarms_total", (("kind", "low_ic"), ("model", "m")))] == 1
        for kind, count in fig["alarms"].items():  # drift fired too: scores sit off the bins
            assert (
                got[("tradeloop_monitor_alarms_total", (("kind", kind), ("model", "m")))] == count
            )
        assert fig["alarms"]["drift"] == 1 and fig["alarms"]["gap"] == 0
        assert got[("tradeloop_monitor_scored_total", m)] == fig["scored"] > 0
        # publishing again (a heartbeat with nothing new) counts nothing twice
        publish_monitor(metrics, mon)
        again = scrape(port)
        assert again[("tradeloop_monitor_scored_total", m)] == fig["scored"]
        assert again[("tradeloop_monitor_alarms_total", (("kind", "low_ic"), ("model", "m")))] == 1
    finally:
        metrics.close()


def test_publish_monitor_before_any_check_exports_nan() -> None:
    mon = ModelMonitor(config=MonitorConfig(), manifest=manifest(), symbols=("X",),
                       sample_interval_ns=100)  # fmt: skip
    metrics = DaemonMetrics(("X",))
    publish_monitor(metrics, mon)
    ic = metrics.registry.get_sample_value("tradeloop_monitor_ic", {"model": "m"})
    assert ic is not None and math.isnan(ic)
    scored = metrics.registry.get_sample_value("tradeloop_monitor_scored_total", {"model": "m"})
    assert scored == 0.0


class FakeEngine:
    def __init__(self, observers: list[object]) -> None:
        self.observers = observers


def test_publish_engine_monitors_finds_the_attached_monitor() -> None:
    mon = monitor_with_figures()
    metrics = DaemonMetrics(("X",))
    publish_engine_monitors(metrics, FakeEngine([object(), mon]))
    assert metrics.registry.get_sample_value("tradeloop_monitor_ic", {"model": "m"}) == -1.0


def test_publish_monitor_replaced_or_reset_monitor_starts_a_new_baseline() -> None:
    """A label whose monitor is replaced (a model switched or reloaded) or reset (counts go
    down) keeps publishing: the new monitor's counts are added from zero, the counters never
    go down, and another label (another version) is untouched. Fails if publishing keeps
    one baseline per label (``inc`` of a negative step raises ValueError, or the new
    monitor's first counts are swallowed by the old one's)."""
    metrics = DaemonMetrics(("X",))
    first = monitor_with_figures()
    counts = first.latest()
    scored, low_ic = counts["scored"], counts["alarms"]["low_ic"]
    assert scored > 0 and low_ic == 1

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    publish_monitor(metrics, first, label="m@aaa")
    publish_monitor(metrics, first, label="m@bbb")
    # the same label, a fresh monitor that has counted nothing yet: nothing subtracted
    fresh = ModelMonitor(config=MonitorConfig(), manifest=manifest(), symbols=("X",),
                         sample_interval_ns=100)  # fmt: skip
    publish_monitor(metrics, fresh, label="m@aaa")
    assert value("tradeloop_monitor_scored_total", model="m@aaa") == scored
    assert math.isnan(value("tradeloop_monitor_ic", model="m@aaa") or 0.0)
    # the label gets another monitor with figures: its counts are added in full
    second = monitor_with_figures()
    publish_monitor(metrics, second, label="m@aaa")
    assert value("tradeloop_monitor_scored_total", model="m@aaa") == 2 * scored
    assert value("tradeloop_monitor_alarms_total", model="m@aaa", kind="low_ic") == 2
    assert value("tradeloop_monitor_ic", model="m@aaa") == -1.0
    # the same monitor reset in place (its counts went down): a new baseline too
    second.__init__(config=MonitorConfig(), manifest=manifest(), symbols=("X",),  # type: ignore[misc]
                    sample_interval_ns=100)  # fmt: skip
    publish_monitor(metrics, second, label="m@aaa")
    assert value("tradeloop_monitor_scored_total", model="m@aaa") == 2 * scored
    # the other version's label is its own
    assert value("tradeloop_monitor_scored_total", model="m@bbb") == scored
    assert value("tradeloop_monitor_alarms_total", model="m@bbb", kind="low_ic") == 1
