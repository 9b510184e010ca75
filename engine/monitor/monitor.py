"""The model monitor: how a model's predictions fare once their horizon has passed, how
far live features and scores drift from training, the feed's quality, and alarms.

Predictions are sampled as training rows are: the first quote of each instrument in
every ``sample_interval`` whose features and score are all defined. A prediction at
``t`` is scored against the mid log-return from the last quote at or before ``t`` to
the first quote at or after ``t + horizon``, the label's rule in training; one whose
forward quote comes later than ``t + horizon + label_tolerance`` is dropped and counted
(``late_labels``), as training drops it. Scored predictions enter a rolling window of
the last ``window`` (N); every ``check_every`` of them the window's Spearman IC, hit
ratio (outside the label's dead zone, as training's accuracy), Brier score and
expected calibration error (probability models) are taken and the alarms checked.
``low_ic``, ``accuracy`` and ``losing_streak`` are calibrated from training's out-of-sample
IC and accuracy to ``false_alarm_rate`` per window (``engine.monitor.alarms``); drift samples are
put on their scales (ticks, not the price level: ``engine.monitor.scales``) before they
are binned, as training binned them.

Everything is computed from the tick stream in stream order, so the figures and the
tick an alarm lands on do not depend on how the stream is cut into batches. An alarm
fires when its condition starts to hold, and again only after the condition was clear
for a whole window (``drift_window`` samples, ``window`` scored predictions), so a figure
hovering at its threshold does not fire at every check; each firing is
an ``Alarm`` event (source ``"monitor"``), a counter, a log line and its configured
action. ``reduce_only`` and ``halted`` are the engine's own sticky claim on the trading
state: never lowering another source's claim (an operator kill stays a kill), cleared
by an operator ``resume``.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from typing import Any, Literal, Protocol

import numpy as np

from engine.config import Config, MonitorConfig
from engine.engine import Engine
from engine.errors import ModelError
from engine.events import Alarm, Event, Fill, Severity, TradingStateName
from engine.monitor.alarms import (
    accuracy_alarm,
    alarm_figures,
    losing_streak_alarm,
    low_ic_alarm,
    out_of_sample,
)
from engine.monitor.drift import DriftWindow, conventional_key
from engine.monitor.edges import alarm_edges
from engine.monitor.round_trips import RoundTrips
from engine.monitor.scales import apply_scales
from engine.monitor.stats import (
    CONVENTIONAL_PSI,
    F64,
    I64,
    brier,
    calibration_table,
    hit_ratio,
    spearman,
)
from engine.signals.manifest import DriftScale, Manifest
from engine.ticks import QUOTE, TRADE, TickBatch

log = logging.getLogger("tradeloop.monitor")

AlarmKind = Literal["low_ic", "accuracy", "drift", "losing_streak", "gap"]
_KIND_ORDER: dict[AlarmKind, int] = {
    "gap": 0,
    "drift": 1,
    "low_ic": 2,
    "accuracy": 3,
    "losing_streak": 4,
}
_NEVER = int(np.iinfo(np.int64).max)
_STATE: dict[str, TradingStateName] = {"reduce_only": "REDUCE_ONLY", "halted": "HALTED"}


class MonitorHost(Protocol):
    """What the monitor needs of the engine it watches."""

    counters: Counter[str]

    def emit(self, event: Event) -> None: ...

    def raise_automatic(self, state: TradingStateName, reason: str, *, sticky: bool) -> None: ...


class ModelMonitor:
    """Watches one model's predictions and inputs; an engine ``ScoreObserver`` and an
    event sink (for the model's own fills).

    Args:
        config: the ``[monitor]`` section.
        manifest: the model's manifest (label, out-of-sample figures, reference bins).
        symbols: the engine's instruments, in index order.
        sample_interval_ns: sampling interval when the manifest has none (older models).
        host: the engine alarms are emitted to and state claims made on (None: alarms
            are only recorded).

    Raises:
        ModelError: the manifest's drift thresholds were calibrated for another window
            or false-alarm rate than the config asks for.
    """

    def __init__(
        self,
        *,
        config: MonitorConfig,
        manifest: Manifest,
        symbols: tuple[str, ...],
        sample_interval_ns: int,
        host: MonitorHost | None = None,
    ) -> None:
        self.config = config
        self.manifest = manifest
        self.symbols = symbols
        self.host = host
        # live, an alarm is news for whoever watches the log; a replay puts its alarms in
        # the report and lowers this to INFO (shown with -v), so stderr stays readable
        self.alarm_log_level = logging.WARNING
        ref = manifest.reference
        self.horizon_ns = manifest.label.horizon_ns
        self.dead_zone = manifest.label.dead_zone_bps * 1e-4
        self.probability = manifest.output == "probability"
        self.threshold = 0.5 if self.probability else 0.0
        self.sample_interval_ns = ref.sample_interval_ns if ref else sample_interval_ns
        tolerance = manifest.metrics.get("data_label_tolerance_ns")
        if ref is not None:
            self.label_tolerance_ns = ref.label_tolerance_ns
        elif tolerance is not None:
            self.label_tolerance_ns = int(tolerance)
        else:  # training's default
            self.label_tolerance_ns = max(self.sample_interval_ns, self.horizon_ns // 10)
        self.series = [*manifest.feature_names, "score"]
        self._scales: list[DriftScale] = []
        self._tick = np.empty(0)
        self.drift: DriftWindow | None = None
        self.drift_thresholds: F64 | None = None
        if ref is not None:
            if ref.window != config.drift_window:
                raise ModelError(f"model {manifest.name!r}: drift thresholds were calibrated for "
                                 f"windows of {ref.window} samples, [monitor] drift_window is "
                                 f"{config.drift_window}: set it to {ref.window} or retrain")  # fmt: skip
            if abs(ref.configured_false_alarm_rate - config.false_alarm_rate) > 1e-12:
                raise ModelError(f"model {manifest.name!r}: drift thresholds were calibrated for a "
                                 f"false-alarm rate of {ref.configured_false_alarm_rate:g}, [monitor] "
                                 f"false_alarm_rate is {config.false_alarm_rate:g}: set it or retrain")  # fmt: skip
            bins = [ref.features[f] for f in manifest.feature_names] + [ref.score]
            self._scales = [b.scale for b in bins]
            if any(s != "none" for s in self._scales):
                unknown = [s for s in symbols if s not in ref.tick_sizes]
                if unknown:
                    raise ModelError(f"model {manifest.name!r}: its drift bins are in ticks but "
                                     f"the manifest records no tick size for {unknown}: it "
                                     "was trained on other instruments; retrain")  # fmt: skip
                self._tick = np.array([ref.tick_sizes[s] for s in symbols], np.float64)
            self.drift = DriftWindow(
                [(np.asarray(b.edges, np.float64), np.asarray(b.fractions)) for b in bins],
                ref.window,
            )
            if all(b.drift_threshold is not None for b in bins):
                self.drift_thresholds = np.array([b.drift_threshold for b in bins], np.float64)
                if ref.calibration_method == "in_sample":
                    log.warning("model %s: drift thresholds calibrated in sample (a manifest from "
                                "before held-out calibration): their false-alarm rate on new data "
                                "is above the configured %g and unstated; retrain the model for "
                                "a stated bound", manifest.name, ref.configured_false_alarm_rate)  # fmt: skip
        # the low-IC and losing-streak alarms, from training's out-of-sample figures at this
        # config's window and rate (the manifest's reference states them at training's)
        oos = out_of_sample(manifest.metrics, self.horizon_ns, self.sample_interval_ns)
        rate = config.false_alarm_rate
        self.low_ic = low_ic_alarm(oos, config.ic_min, config.window, rate)
        self.streak = losing_streak_alarm(oos, config.losing_streak,
                                          config.losing_streak_window, rate)  # fmt: skip
        self.accuracy = accuracy_alarm(oos, config.accuracy_margin, config.window, rate)
        score_ref = ref.score.edges if ref is not None else []
        if score_ref:
            self.calibration_edges = np.asarray(score_ref, np.float64)
        elif self.probability:
            self.calibration_edges = np.linspace(0.1, 0.9, 9)
        else:
            self.calibration_edges = np.empty(0)
        n = len(symbols)
        # sampling and labels, per instrument
        self._last_bucket = np.full(n, -1, np.int64)
        self._last_quote_ts = np.full(n, -1, np.int64)
        self._last_tick_ts = np.full(n, -1, np.int64)
        self._pending_t = [np.empty(0, np.int64) for _ in range(n)]
        self._pending_mid = [np.empty(0) for _ in range(n)]
        self._pending_score = [np.empty(0) for _ in range(n)]
        # the window of the last N scored predictions
        size = config.window
        self._score = np.zeros(size)
        self._realized = np.zeros(size)
        self._filled = 0
        self._next = 0
        self.counts: Counter[str] = Counter()
        self.longest_gap_ns = 0
        # drift figures over every full window seen
        self._drift_last: F64 | None = None
        self._drift_max = np.zeros(len(self.series))
        self._drift_windows = 0
        self._drift_over = Counter[str]()
        # alarms: whether each condition holds now, what fired, what waits for its tick
        self._holding: dict[AlarmKind, bool] = dict.fromkeys(_KIND_ORDER, False)
        self._armed: dict[AlarmKind, bool] = dict.fromkeys(_KIND_ORDER, True)
        self._clear: Counter[AlarmKind] = Counter()
        # an alarm fires again only after its condition was clear for a whole window, so
        # a figure hovering at its threshold does not fire at every check
        checks = -(-config.window // config.check_every)
        self._rearm_after: dict[AlarmKind, int] = {
            "drift": config.drift_window, "low_ic": checks, "accuracy": checks,
        }  # fmt: skip
        self.alarm_counts: Counter[str] = Counter()
        self._ic_checks = 0  # full-window checks with a low-IC threshold, and those below it
        self._ic_below = 0
        self._accuracy_checks = 0  # the same for the accuracy threshold
        self._accuracy_below = 0
        self.alarms: list[dict[str, Any]] = []
        self._queued: list[tuple[int, int, AlarmKind, str, int]] = []
        self._queued_next = 0
        self.trips = RoundTrips()
        # a losing streak alarms again only once the model's round trips have made back
        # the losses of the streak that alarmed (PnL back at its level before that streak):
        # a model that keeps losing to costs raises one alarm, not one per streak
        self._streak_rearm_pnl: float | None = None
        self._streak_start_pnl = 0.0
        self._last_check: dict[str, Any] = {}
        self.performance_history: deque[dict[str, Any]] = deque(maxlen=config.history or None)
        self.drift_history: deque[dict[str, Any]] = deque(maxlen=config.history or None)

    # the engine's ScoreObserver

    def observe(self, batch: TickBatch, features: F64, scores: F64) -> I64:
        """Take one batch (model inputs and scores per tick); returns the indices at which
        alarms are due (``act``)."""
        self._flush()
        alarms: list[tuple[int, int, AlarmKind, str, int]] = []
        self._data_quality(batch, alarms)
        quote = batch.kind == QUOTE
        rows = self._sample(batch, quote)
        ok = np.isfinite(scores[rows]) & np.all(np.isfinite(features[rows]), axis=1)
        self.counts["samples_incomplete"] += int(rows.shape[0] - np.count_nonzero(ok))
        rows = rows[ok]
        self.counts["samples"] += int(rows.shape[0])
        if self.drift is not None and rows.shape[0]:
            self._drift(batch, rows, np.column_stack((features[rows], scores[rows])), alarms)
        self._score_predictions(batch, quote, rows, scores, alarms)
        alarms.sort(key=lambda a: (a[0], a[1]))
        self._queued, self._queued_next = alarms, 0
        return np.unique(np.array([a[0] for a in alarms], np.int64))

    def act(self, index: int) -> None:
        """Fire the alarms due at batch index ``index``."""
        q = self._queued
        while self._queued_next < len(q) and q[self._queued_next][0] <= index:
            _, _, kind, message, ts = q[self._queued_next]
            self._queued_next += 1
            self._fire(kind, message, ts)

    def _flush(self) -> None:
        self.act(_NEVER)

    # the engine's event sink

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Fill):
            return
        for trip_pnl in self.trips.on_fill(event):
            if self.trips.losing_streak == 1:
                self._streak_start_pnl = self.trips.pnl - trip_pnl
            k = self.streak.length
            if k is None:
                continue
            streak = self.trips.losing_streak
            rearm = self._streak_rearm_pnl
            if rearm is not None and self.trips.pnl >= rearm:
                self._streak_rearm_pnl = rearm = None
            if streak == k and rearm is None:
                self._streak_rearm_pnl = self._streak_start_pnl
                self._fire("losing_streak", f"{streak} losing round trips in a row "
                           f"(last PnL {self.trips.pnl:.2f} in total); {self.streak.note}",
                           event.ts_event)  # fmt: skip

    def count_bad_ticks(self, n: int) -> None:
        """Ticks the source refused (undecodable, bad rows): counted in the bad-tick rate."""
        self.counts["bad_ticks"] += n

    # stages of ``observe``

    def _data_quality(
        self, batch: TickBatch, alarms: list[tuple[int, int, AlarmKind, str, int]]
    ) -> None:
        ts, inst = batch.ts_event, batch.instrument
        quote = batch.kind == QUOTE
        self.counts["ticks"] += len(batch)
        self.counts["quotes"] += int(np.count_nonzero(quote))
        self.counts["trades"] += int(np.count_nonzero(batch.kind == TRADE))
        gap, stale = self.config.gap_ns, self.config.stale_quote_age_ns
        if stale is not None:
            delay = batch.ts_recv[quote] - ts[quote]
            self.counts["delayed_quotes"] += int(np.count_nonzero(delay > stale))
        for i in np.unique(inst):
            idx = np.flatnonzero(inst == i)
            t = ts[idx]
            before = np.concatenate(([self._last_tick_ts[i]], t[:-1]))
            spans = np.where(before >= 0, t - before, 0)
            self.longest_gap_ns = max(self.longest_gap_ns, int(spans.max()))
            if gap is not None:
                for k in np.flatnonzero(spans > gap):
                    self.counts["gaps"] += 1
                    alarms.append((int(idx[k]), _KIND_ORDER["gap"], "gap",
                                   f"no tick of {self.symbols[i]} for {spans[k] / 1e9:.3g} s",
                                   int(t[k])))  # fmt: skip
            self._last_tick_ts[i] = t[-1]
            if stale is not None:
                # a trade printed while the instrument's last quote was older than allowed
                q = quote[idx]
                last_q = np.maximum(
                    np.maximum.accumulate(np.where(q, t, -1)), self._last_quote_ts[i]
                )
                old = ~q & (last_q >= 0) & (t - last_q > stale)
                self.counts["stale_quotes"] += int(np.count_nonzero(old))

    def _sample(self, batch: TickBatch, quote: np.ndarray[Any, np.dtype[np.bool_]]) -> I64:
        """The first quote of each instrument in each sampling interval (training's rows)."""
        keep = np.zeros(len(batch), np.bool_)
        bucket = batch.ts_event // self.sample_interval_ns
        for i in np.unique(batch.instrument[quote]):
            idx = np.flatnonzero(quote & (batch.instrument == i))
            b = bucket[idx]
            first = np.concatenate(([b[0] != self._last_bucket[i]], b[1:] != b[:-1]))
            keep[idx[first]] = True
            self._last_bucket[i] = b[-1]
        return np.flatnonzero(keep)

    def _drift(
        self,
        batch: TickBatch,
        rows: I64,
        values: F64,
        alarms: list[tuple[int, int, AlarmKind, str, int]],
    ) -> None:
        assert self.drift is not None
        seen = self.drift.seen
        if self._tick.shape[0]:
            # on the scales training binned them on: ticks at the sample's own mid
            mid = 0.5 * (batch.bid[rows] + batch.ask[rows])
            values = apply_scales(values, self._scales, mid, self._tick[batch.instrument[rows]])
        psis = self.drift.update(values)
        full = ~np.isnan(psis[:, 0])
        if not np.any(full):
            return
        p = psis[full]
        at = rows[full]
        self._drift_windows += int(p.shape[0])
        self._drift_max = np.maximum(self._drift_max, p.max(axis=0))
        self._drift_last = p[-1].copy()
        for c in CONVENTIONAL_PSI:
            self._drift_over[conventional_key(c)] += int(np.count_nonzero(np.any(p > c, axis=1)))
        every = self.config.check_every
        numbers = seen + np.flatnonzero(full) + 1  # 1-based sample numbers
        for r in np.flatnonzero(numbers % every == 0).tolist():
            self.drift_history.append(
                {"ts": int(batch.ts_event[at[r]]), "sample": int(numbers[r]),
                 "psi": dict(zip(self.series, map(float, p[r]), strict=True))}
            )  # fmt: skip
        if self.drift_thresholds is None:
            return
        over = p > self.drift_thresholds
        breach = np.any(over, axis=1)
        self._drift_over["calibrated"] += int(np.count_nonzero(breach))
        # the message only for the samples that fire: a drift that holds for a long
        # stretch is checked at every sample
        for r in self._edges("drift", breach).tolist():
            names = [
                f"{self.series[j]} PSI {p[r, j]:.3f} > {self.drift_thresholds[j]:.3f}"
                for j in np.flatnonzero(over[r]).tolist()
            ]
            message = f"drift over the last {self.drift.window} samples: " + ", ".join(names)
            alarms.append((int(at[r]), _KIND_ORDER["drift"], "drift", message,
                           int(batch.ts_event[at[r]])))  # fmt: skip

    def _score_predictions(
        self,
        batch: TickBatch,
        quote: np.ndarray[Any, np.dtype[np.bool_]],
        rows: I64,
        scores: F64,
        alarms: list[tuple[int, int, AlarmKind, str, int]],
    ) -> None:
        ts, inst = batch.ts_event, batch.instrument
        mid = 0.5 * (batch.bid + batch.ask)
        at_parts: list[I64] = []
        score_parts: list[F64] = []
        real_parts: list[F64] = []
        h, tol = self.horizon_ns, self.label_tolerance_ns
        for i in np.unique(inst[quote]):
            qi = np.flatnonzero(quote & (inst == i))
            qts, qmid = ts[qi], mid[qi]
            pt, pm, ps = self._pending_t[i], self._pending_mid[i], self._pending_score[i]
            # a prediction's own mid is the last quote stamped at its time: later quotes at
            # the same time may come in this batch
            last = self._last_quote_ts[i]
            if pt.shape[0] and pt[-1] == last:
                c = int(np.searchsorted(qts, last, side="right"))
                if c:
                    pm = pm.copy()
                    pm[-1] = qmid[c - 1]
            new = rows[inst[rows] == i]
            if new.shape[0]:
                nt = ts[new]
                now = np.searchsorted(qts, nt, side="right") - 1
                pt = np.concatenate((pt, nt))
                pm = np.concatenate((pm, qmid[now]))
                ps = np.concatenate((ps, scores[new]))
                self.counts["predictions"] += int(new.shape[0])
            self._last_quote_ts[i] = qts[-1]
            fwd = np.searchsorted(qts, pt + h, side="left")
            done = int(np.count_nonzero(fwd < qts.shape[0]))  # a prefix: pt is sorted
            if done:
                f = fwd[:done]
                late = qts[f] > pt[:done] + h + tol
                self.counts["late_labels"] += int(np.count_nonzero(late))
                on_time = ~late
                at_parts.append(qi[f[on_time]])
                score_parts.append(ps[:done][on_time])
                real_parts.append(np.log(qmid[f[on_time]] / pm[:done][on_time]))
            self._pending_t[i], self._pending_mid[i], self._pending_score[i] = (
                pt[done:],
                pm[done:],
                ps[done:],
            )
        if not at_parts:
            return
        at = np.concatenate(at_parts)
        order = np.argsort(at, kind="stable")
        at, sc, re = (
            at[order],
            np.concatenate(score_parts)[order],
            np.concatenate(real_parts)[order],
        )
        # entered into the window a run at a time, up to each check (every
        # ``check_every``-th scored prediction overall): the window at a check is the one
        # entering them one by one would give, whatever the batch
        every = self.config.check_every
        scored = self.counts["scored"]
        lo = 0
        for k in range((every - 1 - scored) % every, at.shape[0], every):
            self._enter(sc[lo : k + 1], re[lo : k + 1])
            lo = k + 1
            self._check(int(at[k]), int(ts[at[k]]), alarms)
        self._enter(sc[lo:], re[lo:])

    def _enter(self, score: F64, realized: F64) -> None:
        """Put scored predictions, in order, into the ring of the last N."""
        n, size = score.shape[0], self.config.window
        if n == 0:
            return
        keep = min(n, size)  # of more than N, only the last N stay
        slots = (self._next + (n - keep) + np.arange(keep)) % size
        self._score[slots] = score[n - keep :]
        self._realized[slots] = realized[n - keep :]
        self._next = (self._next + n) % size
        self._filled = min(self._filled + n, size)
        self.counts["scored"] += n

    def _check(
        self, index: int, ts: int, alarms: list[tuple[int, int, AlarmKind, str, int]]
    ) -> None:
        fig = self._performance(buckets=False)
        self._last_check = {"ts": ts, "scored": self.counts["scored"], "ic": fig["ic"],
                            "hit_ratio": fig["hit_ratio"], "brier": fig["brier"], "ece": fig["ece"]}  # fmt: skip
        self.performance_history.append(self._last_check)
        if self._filled < self.config.window:
            return
        cfg = self.config
        ic = fig["ic"]
        threshold = self.low_ic.threshold
        low = threshold is not None and ic is not None and ic < threshold
        if threshold is not None:
            self._ic_checks += 1
            self._ic_below += int(low)
        self._edge("low_ic", low, index, ts, alarms,
                   f"IC {ic if ic is None else round(ic, 4)} over the last {cfg.window} scored "
                   f"predictions is below {threshold if threshold is None else round(threshold, 4)} "
                   f"({self.low_ic.note})")  # fmt: skip
        hit = fig["hit_ratio"]
        labelled = fig["labelled_rows"]
        floor = self.accuracy.threshold_at(labelled)
        below = floor is not None and hit is not None and hit < floor
        if floor is not None:
            self._accuracy_checks += 1
            self._accuracy_below += int(below)
        self._edge("accuracy", below, index, ts, alarms,
                   f"hit ratio {hit if hit is None else round(hit, 4)} over the window's "
                   f"{labelled} labelled predictions is below "
                   f"{floor if floor is None else round(floor, 4)} ({self.accuracy.note})")  # fmt: skip

    def _edge(
        self,
        kind: AlarmKind,
        holds: bool,
        index: int,
        ts: int,
        alarms: list[tuple[int, int, AlarmKind, str, int]],
        message: str,
    ) -> None:
        if self._edges(kind, np.array([holds])).shape[0]:
            alarms.append((index, _KIND_ORDER[kind], kind, message, ts))

    def _edges(self, kind: AlarmKind, holds: np.ndarray[Any, np.dtype[np.bool_]]) -> I64:
        """The edge rule over consecutive checks of one alarm; the positions that fire."""
        if holds.shape[0] == 0:
            return np.empty(0, np.int64)
        fired, armed, clear = alarm_edges(
            holds, self._armed[kind], self._clear[kind], self._rearm_after[kind]
        )
        self._holding[kind] = bool(holds[-1])
        self._armed[kind] = bool(armed)
        self._clear[kind] = int(clear)
        return fired

    def _fire(self, kind: AlarmKind, message: str, ts: int) -> None:
        action = getattr(self.config, f"on_{kind}")
        self.alarm_counts[kind] += 1
        self.alarms.append({"ts": ts, "kind": kind, "action": action, "message": message})
        text = f"model {self.manifest.name}: {message}"
        log.log(self.alarm_log_level, "monitor alarm (%s, %s): %s", kind, action, text)
        if self.host is None:
            return
        self.host.counters["monitor_alarms"] += 1
        self.host.counters[f"monitor_alarms_{kind}"] += 1
        severity: Severity = "warning" if action == "notify" else "critical"
        self.host.emit(Alarm(ts_event=ts, ts_recv=ts, source="monitor", severity=severity,
                             message=text))  # fmt: skip
        if action != "notify":
            self.host.raise_automatic(_STATE[action], f"monitor: {text}", sticky=True)

    # figures

    def performance(self) -> dict[str, Any]:
        """IC, hit ratio, Brier score, ECE and the calibration table over the window of
        the last N scored predictions (None where undefined)."""
        return self._performance(buckets=True)

    def _performance(self, *, buckets: bool) -> dict[str, Any]:
        # a check needs the figures, not the calibration table as dicts (40 floats put
        # into dicts at every check was a fifth of the monitor's cost per tick)
        n = self._filled
        score, real = self.window_values()
        labelled = np.abs(real) > self.dead_zone
        s, r = score[labelled], real[labelled]
        outcome = (r > 0).astype(np.float64)
        edges = self.calibration_edges
        table: list[dict[str, Any]] = []
        ece: float | None = None
        if edges.shape[0] or self.probability:
            target = outcome if self.probability else r * 1e4
            count, mean_s, mean_r = calibration_table(s, target, edges)
            if self.probability and s.shape[0]:
                # expected_calibration_error's own table is this one: reuse it (one
                # bincount pass per check, not two)
                used = count > 0
                ece = float(np.sum(count[used] / s.shape[0] * np.abs(mean_s[used] - mean_r[used])))
            bounds = [-np.inf, *edges.tolist(), np.inf]
            for k in range(count.shape[0] if buckets else 0):
                table.append({
                    "low": _finite(bounds[k]), "high": _finite(bounds[k + 1]), "rows": int(count[k]),
                    "mean_score": _finite(mean_s[k]), "realized": _finite(mean_r[k]),
                })  # fmt: skip
        return {
            "window_rows": n,
            "labelled_rows": int(s.shape[0]),
            "ic": spearman(score, real),
            "hit_ratio": hit_ratio(s, r, self.threshold),
            "brier": brier(s, outcome) if self.probability else None,
            "ece": ece,
            "mean_realized_bps": float(np.mean(real) * 1e4) if n else None,
            "calibration": table,
            "calibration_realized": "frequency of an up move"
            if self.probability
            else "mean forward return, bps",
        }

    def window_values(self) -> tuple[F64, F64]:
        """Score and realized return of the scored predictions in the window, oldest first."""
        n, size = self._filled, self.config.window
        if n < size:
            return self._score[:n].copy(), self._realized[:n].copy()
        k = self._next  # the oldest slot
        return (
            np.concatenate((self._score[k:], self._score[:k])),
            np.concatenate((self._realized[k:], self._realized[:k])),
        )

    def snapshot(self) -> dict[str, Any]:
        """Every current figure as plain JSON-ready values (for reports and metrics)."""
        c, m, ref = self.counts, self.manifest, self.manifest.reference
        drift: dict[str, Any] = {"enabled": self.drift is not None}
        if self.drift is not None and ref is not None:
            last = self._drift_last
            thresholds = self.drift_thresholds
            bins = [ref.features[f] for f in m.feature_names] + [ref.score]
            windows = self._drift_windows
            drift |= {
                "window": self.drift.window,
                "configured_false_alarm_rate": ref.configured_false_alarm_rate,
                "training_false_alarm_rate": ref.false_alarm_rate,
                "calibration_method": ref.calibration_method,
                "stated_false_alarm_bound": ref.false_alarm_bound,
                "calibration_windows": ref.windows,
                "independent_calibration_windows": ref.independent_windows,
                "effective_calibration_windows": ref.effective_windows or None,
                "training_conventional_false_alarm_rates": ref.conventional_false_alarm_rates,
                "windows_checked": windows,
                "share_of_windows_over": {
                    "calibrated": _share(self._drift_over["calibrated"], windows)
                    if thresholds is not None
                    else None,
                    **{
                        conventional_key(t): _share(self._drift_over[conventional_key(t)], windows)
                        for t in CONVENTIONAL_PSI
                    },
                },
                "series": {
                    name: {
                        "psi": None if last is None else float(last[j]),
                        "max_psi": float(self._drift_max[j]) if windows else None,
                        "threshold": None if thresholds is None else float(thresholds[j]),
                        "training_conventional_false_alarm_rates": bins[j].conventional_false_alarm_rates,
                        "scale": bins[j].scale,
                        "binning": bins[j].binning,
                        "bins": len(bins[j].fractions),
                    }
                    for j, name in enumerate(self.series)
                },
            }  # fmt: skip
        ticks = c["ticks"]
        return {
            "model": m.name,
            "output": m.output,
            "horizon_ns": self.horizon_ns,
            "sample_interval_ns": self.sample_interval_ns,
            "label_tolerance_ns": self.label_tolerance_ns,
            "window": self.config.window,
            "check_every": self.config.check_every,
            "predictions": {
                "samples": c["samples"],
                "samples_incomplete": c["samples_incomplete"],
                "made": c["predictions"],
                "pending": int(sum(p.shape[0] for p in self._pending_t)),
                "scored": c["scored"],
                "late_labels": c["late_labels"],
            },
            "performance": self.performance(),
            "training": {k: m.metrics.get(k) for k in ("oos_ic", "oos_accuracy", "oos_auc")},
            "drift": drift,
            "data_quality": {
                "ticks": ticks,
                "quotes": c["quotes"],
                "trades": c["trades"],
                "bad_ticks": c["bad_ticks"],
                "bad_tick_rate": _share(c["bad_ticks"], ticks + c["bad_ticks"]),
                "gaps": c["gaps"],
                "gap_threshold_ns": self.config.gap_ns,
                "longest_gap_ns": self.longest_gap_ns,
                "stale_quotes": c["stale_quotes"],
                "delayed_quotes": c["delayed_quotes"],
                "stale_quote_age_ns": self.config.stale_quote_age_ns,
            },
            "trades": self.trips.snapshot(),
            "alarms": {
                "count": int(sum(self.alarm_counts.values())),
                "by_kind": {k: self.alarm_counts[k] for k in _KIND_ORDER},
                "holding": {k: v for k, v in self._holding.items() if k != "gap"},
                "events": list(self.alarms),
                "calibration": alarm_figures(
                    self.low_ic,
                    self.streak,
                    self._ic_checks,
                    self._ic_below,
                    self.accuracy,
                    self._accuracy_checks,
                    self._accuracy_below,
                ),
            },
        }

    def latest(self) -> dict[str, Any]:
        """The figures as of the last check and the last full drift window, without
        recomputing anything (cheap enough for every heartbeat): ``ic`` and
        ``hit_ratio`` (None before the first check or where undefined), ``psi`` and
        ``drift_threshold`` per series (None before a full window / uncalibrated),
        ``alarms`` by kind and ``scored`` predictions so far."""
        last = self._last_check
        psis = self._drift_last
        thresholds = self.drift_thresholds
        return {
            "ic": last.get("ic"),
            "hit_ratio": last.get("hit_ratio"),
            "scored": self.counts["scored"],
            "psi": {
                name: None if psis is None else float(psis[j]) for j, name in enumerate(self.series)
            },
            "drift_threshold": {
                name: None if thresholds is None else float(thresholds[j])
                for j, name in enumerate(self.series)
            },
            "alarms": {k: self.alarm_counts[k] for k in _KIND_ORDER},
        }

    def history(self) -> dict[str, list[dict[str, Any]]]:
        """The figures at each check, for plots: performance and drift."""
        return {"performance": list(self.performance_history), "drift": list(self.drift_history)}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def attach_monitor(engine: Engine, config: Config) -> ModelMonitor | None:
    """Build the monitor of ``engine``'s model and hook it in (observer and event sink);
    None when ``[monitor] enabled = false`` or the model has no manifest.

    Raises:
        ModelError: see ``ModelMonitor``.
    """
    manifest = getattr(engine.model, "manifest", None)
    if not config.monitor.enabled or not isinstance(manifest, Manifest):
        return None
    monitor = ModelMonitor(
        config=config.monitor,
        manifest=manifest,
        symbols=engine.instruments.symbols,
        sample_interval_ns=config.train.sample_interval_ns,
        host=engine,
    )
    engine.observers.append(monitor)
    engine.sinks.append(monitor)
    return monitor
