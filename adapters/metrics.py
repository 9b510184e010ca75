"""The daemon's Prometheus metrics, in a registry of their own.

Names carry the application prefix and base units (seconds, counts as ``_total``). The
engine's events reach ``DaemonMetrics.on_event`` as one of its sinks; the MQTT session's
counters (messages in, bad messages by reason) are read at scrape time, so the session
counts on its hot path with a plain ``Counter`` and nothing else.

==========================================  =========  ==================================
metric                                      type       labels, meaning
==========================================  =========  ==================================
``tradeloop_messages_in_total``             counter    ``kind``: quote, trade, report,
                                                       command (the session's count)
``tradeloop_decode_errors_total``           counter    ``reason``: undecodable, oversized,
                                                       crossed, unauthenticated, ...
``tradeloop_orders_total``                  counter    ``status``: requested, risk_rejected,
                                                       published, dropped, accepted,
                                                       rejected, cancelled, filled
``tradeloop_risk_rejections_total``         counter    ``check``
``tradeloop_tick_to_order_seconds``         histogram  receipt of the market data that led
                                                       to an order -> its publish
``tradeloop_journal_fsync_seconds``         histogram  journal calls that fsynced
``tradeloop_broker_connected``              gauge      1 connected, 0 not
``tradeloop_trading_state``                 gauge      0 ACTIVE, 1 REDUCE_ONLY, 2 HALTED
``tradeloop_position``                      gauge      ``instrument``
``tradeloop_pnl``                           gauge      ``instrument``: realized + unrealized
``tradeloop_model_score``                   histogram  the score of every ``Signal``
``tradeloop_build_info``                    gauge      ``version``; always 1
``tradeloop_monitor_ic``                    gauge      ``model``: rolling Spearman IC at
                                                       the last check (NaN: undefined)
``tradeloop_monitor_hit_ratio``             gauge      ``model``: at the last check
``tradeloop_monitor_psi``                   gauge      ``model``, ``series`` (each feature
                                                       and ``score``): PSI of the last
                                                       full drift window
``tradeloop_monitor_drift_threshold``       gauge      ``model``, ``series``: calibrated
``tradeloop_monitor_alarms_total``          counter    ``model``, ``kind``: low_ic, drift,
                                                       accuracy, losing_streak, gap
``tradeloop_monitor_scored_total``          counter    ``model``: predictions scored
``tradeloop_dashboard_requests_total``      counter    ``outcome``: ``refused_<reason>``
                                                       (not_found, wrong_method,
                                                       too_large, bad_body,
                                                       unauthenticated, bad_token,
                                                       read_only, ...) and
                                                       ``accepted_<action>``
==========================================  =========  ==================================

The monitor's figures are copied by :func:`publish_monitor` (the daemon calls it on its
heartbeat), from what the monitor already holds: no figure is recomputed for a scrape.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from engine.events import (
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    RiskRejected,
    Signal,
    TradingState,
)
from engine.monitor import ModelMonitor
from engine.signals.manifest import Manifest
from engine.trading_state import SEVERITY

# 10 us (a fast in-process decision) to 1 s (a stalled loop), about 2.5x apart
LATENCY_BUCKETS_S = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,
)  # fmt: skip
# an fdatasync takes ~0.1 ms on a fast SSD, tens of ms on a busy disk
FSYNC_BUCKETS_S = (50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                   100e-3, 250e-3, 1.0)  # fmt: skip
# model scores: probabilities or small regression outputs
SCORE_BUCKETS = (-1.0, -0.5, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def tradeloop_version() -> str:
    """The installed package's version, or ``unknown`` in a source tree."""
    try:
        return version("tradeloop")
    except PackageNotFoundError:
        return "unknown"


class _SessionCounters(Collector):
    """Exports a live ``Counter[str]`` of the MQTT session at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] = dict

    def collect(self) -> Iterator[CounterMetricFamily]:
        counts = dict(self.source())  # a copy: the loop thread keeps counting
        messages = CounterMetricFamily(
            "tradeloop_messages_in", "MQTT messages received, by kind", labels=["kind"]
        )
        errors = CounterMetricFamily(
            "tradeloop_decode_errors",
            "inbound messages refused (undecodable, invalid, oversized, unsigned)",
            labels=["reason"],
        )
        for key, value in sorted(counts.items()):
            if key.startswith("messages_in_"):
                messages.add_metric([key.removeprefix("messages_in_")], value)
            elif key == "oversized":
                errors.add_metric(["oversized"], value)
            elif key.startswith("bad_") and key != "bad_messages":
                errors.add_metric([key.removeprefix("bad_")], value)
            elif key == "commands_unauthenticated":
                errors.add_metric(["unauthenticated"], value)
        yield messages
        yield errors

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())


class DaemonMetrics:
    """Every metric of one daemon, registered in ``registry``.

    Args:
        symbols: instrument symbols, for the per-instrument gauges.
        build_version: the version label of ``tradeloop_build_info``.
    """

    def __init__(self, symbols: tuple[str, ...], build_version: str | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.symbols = symbols
        self._session = _SessionCounters()
        r.register(self._session)
        self.orders = Counter(
            "tradeloop_orders", "orders by what happened to them", ["status"], registry=r
        )
        self.risk_rejections = Counter(
            "tradeloop_risk_rejections", "orders refused by a pre-trade check", ["check"],
            registry=r,
        )  # fmt: skip
        self.tick_to_order = Histogram(
            "tradeloop_tick_to_order_seconds",
            "receipt of the market data that led to an order -> the order's publish",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.journal_fsync = Histogram(
            "tradeloop_journal_fsync_seconds",
            "duration of journal calls that fsynced",
            buckets=FSYNC_BUCKETS_S,
            registry=r,
        )
        self.broker_connected = Gauge(
            "tradeloop_broker_connected", "1 while connected to the broker", registry=r
        )
        self.trading_state = Gauge(
            "tradeloop_trading_state", "0 ACTIVE, 1 REDUCE_ONLY, 2 HALTED", registry=r
        )
        self.position = Gauge("tradeloop_position", "signed position", ["instrument"], registry=r)
        self.pnl = Gauge(
            "tradeloop_pnl", "realized + unrealized PnL, net of fees", ["instrument"], registry=r
        )
        self.model_score = Histogram(
            "tradeloop_model_score", "score carried by each Signal", buckets=SCORE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.monitor_ic = Gauge(
            "tradeloop_monitor_ic", "rolling Spearman IC at the last monitor check", ["model"],
            registry=r,
        )  # fmt: skip
        self.monitor_hit_ratio = Gauge(
            "tradeloop_monitor_hit_ratio", "hit ratio at the last monitor check", ["model"],
            registry=r,
        )  # fmt: skip
        self.monitor_psi = Gauge(
            "tradeloop_monitor_psi", "PSI of the last full drift window", ["model", "series"],
            registry=r,
        )  # fmt: skip
        self.monitor_drift_threshold = Gauge(
            "tradeloop_monitor_drift_threshold", "calibrated PSI alarm threshold",
            ["model", "series"], registry=r,
        )  # fmt: skip
        self.monitor_alarms = Counter(
            "tradeloop_monitor_alarms", "model monitor alarms fired", ["model", "kind"],
            registry=r,
        )  # fmt: skip
        self.monitor_scored = Counter(
            "tradeloop_monitor_scored", "predictions scored by the monitor", ["model"],
            registry=r,
        )  # fmt: skip
        self.dashboard_requests = Counter(
            "tradeloop_dashboard_requests", "dashboard requests refused (by reason) and "
            "operator actions accepted", ["outcome"], registry=r,
        )  # fmt: skip
        # what publish_monitor last copied, per label: the monitor it read and its counts;
        # counters only ever move by the difference, so they stay monotonic whatever the
        # call rate, and another monitor under the label starts from zero
        self._monitor_published: dict[str, tuple[object, dict[str, int]]] = {}
        build = Gauge("tradeloop_build_info", "always 1", ["version"], registry=r)
        build.labels(build_version or tradeloop_version()).set(1)
        for s in symbols:
            self.position.labels(s).set(0.0)
            self.pnl.labels(s).set(0.0)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def watch_session(self, counters: Callable[[], Mapping[str, int]]) -> None:
        """Export the session's counters (messages in, bad messages) from ``counters()``."""
        self._session.source = counters

    def on_event(self, event: Event) -> None:
        """Engine sink: count orders, refusals, reports, scores and state changes."""
        match event:
            case OrderRequest():
                self.orders.labels("requested").inc()
            case RiskRejected():
                self.orders.labels("risk_rejected").inc()
                self.risk_rejections.labels(event.check).inc()
            case Fill():
                self.orders.labels("filled").inc()
            case OrderAccepted():
                self.orders.labels("accepted").inc()
            case OrderRejected():
                self.orders.labels("rejected").inc()
            case OrderCancelled():
                self.orders.labels("cancelled").inc()
            case Signal():
                if event.score == event.score:  # NaN scores do not go into buckets
                    self.model_score.observe(event.score)
            case TradingState():
                self.trading_state.set(SEVERITY[event.state])

    def set_book(self, positions: list[float], pnl: list[float]) -> None:
        """Per-instrument position and PnL, in ``symbols`` order."""
        for s, p, q in zip(self.symbols, positions, pnl):
            self.position.labels(s).set(p)
            self.pnl.labels(s).set(q)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the HTTP endpoint (``/metrics``) on a thread; returns the bound port.

        ``addr`` is ``[live] metrics_host``: this machine only by default (the endpoint
        shows positions and PnL); a container names its compose network's address.

        Raises:
            OSError: the port cannot be bound.
        """
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint, if one runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None


class MonitorFigures(Protocol):
    """What ``publish_monitor`` reads of a monitor (``engine.monitor.ModelMonitor``)."""

    @property
    def manifest(self) -> Manifest: ...

    def latest(self) -> dict[str, Any]: ...


def publish_monitor(
    metrics: DaemonMetrics, monitor: MonitorFigures, *, label: str | None = None
) -> None:
    """Copy the monitor's latest figures into ``metrics``, labelled ``label`` (default: the
    model's name): IC, hit ratio, PSI and threshold per series as gauges (NaN where
    undefined), alarms by kind and scored predictions as counters. Cheap: reads what the
    monitor holds, no recomputation; call it on the heartbeat or after a check, from the
    loop thread.

    A counter only moves up, by what the monitor counted since the last call. Another
    monitor under the same label (a model reloaded or switched, a monitor rebuilt) or one
    whose counts went down (reset) starts a new baseline at zero: its counts are added to
    the label's totals, never subtracted.
    """
    model = label if label is not None else monitor.manifest.name
    fig = monitor.latest()
    metrics.monitor_ic.labels(model).set(_gauge(fig["ic"]))
    metrics.monitor_hit_ratio.labels(model).set(_gauge(fig["hit_ratio"]))
    for series, value in fig["psi"].items():
        metrics.monitor_psi.labels(model, series).set(_gauge(value))
    for series, value in fig["drift_threshold"].items():
        metrics.monitor_drift_threshold.labels(model, series).set(_gauge(value))
    counts: dict[str, int] = {**fig["alarms"], _SCORED: fig["scored"]}
    source, seen = metrics._monitor_published.get(model, (None, {}))
    if source is not monitor or any(n < seen.get(k, 0) for k, n in counts.items()):
        seen = {}
    for kind, count in counts.items():
        step = count - seen.get(kind, 0)
        if kind == _SCORED:
            metrics.monitor_scored.labels(model).inc(step)
        else:
            metrics.monitor_alarms.labels(model, kind).inc(step)
    metrics._monitor_published[model] = (monitor, counts)


_SCORED: Final = "\x00scored"  # not an alarm kind


class HasObservers(Protocol):
    """An engine, as far as ``publish_engine_monitors`` needs it."""

    @property
    def observers(self) -> Sequence[object]: ...


def publish_engine_monitors(metrics: DaemonMetrics, engine: HasObservers) -> None:
    """``publish_monitor`` for every model monitor attached to ``engine`` (its
    observers, read at each call, so a model reloaded with a new monitor is followed):
    the one call the daemon makes on each heartbeat."""
    for observer in engine.observers:
        if isinstance(observer, ModelMonitor):
            publish_monitor(metrics, observer)


def _gauge(value: float | None) -> float:
    return math.nan if value is None else float(value)


__all__ = [
    "LATENCY_BUCKETS_S",
    "DaemonMetrics",
    "MonitorFigures",
    "publish_engine_monitors",
    "publish_monitor",
    "tradeloop_version",
]
