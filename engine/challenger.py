"""The challenger in shadow: a second registry model scored on the champion's feature
rows, batch by batch, with its own monitor. It never reaches the strategy or the router:
its zone changes are ``ChallengerSignal`` events (a type no strategy hook takes), emitted
to the engine's sinks (the decisions log) at the tick they happen, so a replay of the
journal emits the same ones at the same place.

It is a ``ScoreObserver`` of the engine: ``observe`` scores the batch (the full feature
matrix from ``Engine.batch_features``) and returns the ticks of its zone changes and its
monitor's alarms; ``act`` emits them in tick order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from engine.engine import Engine
from engine.events import ChallengerSignal
from engine.monitor import ModelMonitor
from engine.signals import SignalModel, ZoneTracker, select_columns
from engine.ticks import TickBatch

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class ChallengerShadow:
    """Scores ``model`` beside the engine's champion.

    Args:
        engine: the engine whose feature rows it scores (its sinks get the signals).
        model: the challenger, already checked against the engine's feature set.
        version: its registry version (tags every ``ChallengerSignal``).
        monitor: its own monitor (no host: a challenger's alarms are recorded, never
            acted on), or None.

    Raises:
        PluginLoadError: the model needs a feature the set does not compute.
    """

    def __init__(
        self, engine: Engine, model: SignalModel, version: str, monitor: ModelMonitor | None
    ) -> None:
        self.engine = engine
        self.monitor = monitor
        self.model = model
        self.version = version
        self.columns = select_columns(model.name, model.feature_names, engine.features.names)
        thresholds = engine.strategy.thresholds()
        self.thresholds = np.asarray(sorted(thresholds), np.float64)
        self.zones = ZoneTracker(thresholds, len(engine.instruments)) if thresholds else None
        self.signals = 0
        # zone agreement with the champion, over ticks where both scores are defined
        self.compared = 0
        self.agreed = 0
        self._pending: list[ChallengerSignal] = []
        self._pending_at: list[int] = []
        self._next = 0

    def switch(self, model: SignalModel, version: str, monitor: ModelMonitor | None) -> None:
        """Score ``model`` from the next batch on (a journaled switch of the alias)."""
        self.columns = select_columns(model.name, model.feature_names, self.engine.features.names)
        self.model = model
        self.version = version
        self.monitor = monitor

    def observe(self, batch: TickBatch, features: F64, scores: F64) -> I64:
        """Score the batch; returns the ticks at which a challenger signal or alarm is due."""
        self._flush()
        inputs = np.ascontiguousarray(self.engine.batch_features()[:, self.columns])
        mine = self.model.predict(inputs)
        marks: list[I64] = []
        if self.monitor is not None:
            marks.append(self.monitor.observe(batch, inputs, mine))
        if self.zones is not None:
            self._agreement(scores, mine)
            idx, zone, prev = self.zones.changes(batch, mine)
            symbols = self.engine.instruments.instruments
            name = self.model.name
            self._pending = [
                ChallengerSignal(
                    ts_event=int(batch.ts_event[t]),
                    ts_recv=int(batch.ts_recv[t]),
                    instrument=symbols[batch.instrument[t]].symbol,
                    model=name,
                    version=self.version,
                    score=float(mine[t]),
                    zone=int(z),
                    previous_zone=int(p),
                )
                for t, z, p in zip(idx.tolist(), zone.tolist(), prev.tolist())
            ]
            self._pending_at = idx.tolist()
            self._next = 0
            marks.append(idx)
        if not marks:
            return np.empty(0, np.int64)
        return np.unique(np.concatenate(marks))

    def act(self, index: int) -> None:
        """Emit what is due at batch index ``index`` (alarms are only recorded)."""
        if self.monitor is not None:
            self.monitor.act(index)
        while self._next < len(self._pending) and self._pending_at[self._next] <= index:
            signal = self._pending[self._next]
            self._next += 1
            self.signals += 1
            self.engine.counters["challenger_signals"] += 1
            self.engine.emit(signal)

    def _flush(self) -> None:
        # a batch's signals are all emitted by its end; this is a guard, never a reorder
        self.act(np.iinfo(np.int64).max)
        self._pending, self._pending_at, self._next = [], [], 0

    def _agreement(self, champion: F64, challenger: F64) -> None:
        both = np.isfinite(champion) & np.isfinite(challenger)
        n = int(np.count_nonzero(both))
        if n == 0:
            return
        th = self.thresholds
        a = np.searchsorted(th, champion[both], side="right")
        b = np.searchsorted(th, challenger[both], side="right")
        self.compared += n
        self.agreed += int(np.count_nonzero(a == b))

    def summary(self) -> dict[str, Any]:
        """Signal count, zone agreement with the champion, and the monitor's figures."""
        figures = self.monitor.latest() if self.monitor is not None else {}
        return {
            "version": self.version,
            "model": self.model.name,
            "signals": self.signals,
            "ticks_compared": self.compared,
            "zone_agreement": self.agreed / self.compared if self.compared else None,
            "ic": figures.get("ic"),
            "hit_ratio": figures.get("hit_ratio"),
            "scored": figures.get("scored"),
        }


__all__ = ["ChallengerShadow"]
