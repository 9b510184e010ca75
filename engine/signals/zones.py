"""Signals are sparse: one is emitted only when a score moves into another threshold zone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.ticks import TickBatch


@njit(cache=True, nogil=True)
def _zone_changes(inst, scores, thresholds, half_band, last_zone, out_idx, out_zone, out_prev):  # type: ignore[no-untyped-def]
    n_out = 0
    m = thresholds.shape[0]
    for t in range(scores.shape[0]):
        s = scores[t]
        i = inst[t]
        current = last_zone[i]
        if np.isnan(s):
            z = -1
        elif current < 0:  # entering the defined zones: where the score is, no band
            z = 0
            while z < m and s >= thresholds[z]:
                z += 1
        else:
            # up: thresholds the score is past by half the band; down: those it has not
            # fallen below by half the band. The zone moves only out of [down, up].
            up = 0
            while up < m and s >= thresholds[up] + half_band:
                up += 1
            down = up
            while down < m and s >= thresholds[down] - half_band:
                down += 1
            if up > current:
                z = up
            elif down < current:
                z = down
            else:
                z = current
        if z != current:
            if z >= 0:  # leaving the defined zones (NaN) is not a tradable signal
                out_idx[n_out] = t
                out_zone[n_out] = z
                out_prev[n_out] = current
                n_out += 1
            last_zone[i] = z
    return n_out


class Thresholds(tuple[float, ...]):
    """A strategy's threshold levels with a dead band (what ``Strategy.thresholds`` may
    return instead of a plain sequence).

    With a dead band ``d``, a zone is left only once the score is ``d / 2`` past the
    threshold it crosses: a score sitting on a threshold does not flip zone at every tick.
    Two zone changes in opposite directions are then always more than ``d`` of score
    apart (tested as a property); ``d = 0`` is the plain zones.

    Raises:
        ValueError: a negative or non-finite dead band.
    """

    dead_band: float

    def __new__(cls, values: Sequence[float], dead_band: float = 0.0) -> Thresholds:
        if not (dead_band >= 0.0 and np.isfinite(dead_band)):
            raise ValueError(f"dead_band must be a finite number >= 0, got {dead_band}")
        obj = super().__new__(cls, (float(v) for v in values))
        obj.dead_band = float(dead_band)
        return obj


class ZoneTracker:
    """Per-instrument zone of the score against sorted thresholds, carried across batches.

    ``zone`` = number of thresholds <= score (with a dead band, see ``Thresholds``: the
    zone moves only once the score is half the band past a threshold); -1 while the score
    is NaN. Entering the defined zones (after NaN) takes the score's zone directly.
    """

    def __init__(self, thresholds: Sequence[float], n_instruments: int) -> None:
        th = np.asarray(sorted(thresholds), np.float64)
        if np.any(~np.isfinite(th)):
            raise ValueError("thresholds must be finite")
        self.thresholds = th
        self.dead_band = thresholds.dead_band if isinstance(thresholds, Thresholds) else 0.0
        self.last_zone = np.full(n_instruments, -1, np.int64)

    def changes(
        self, batch: TickBatch, scores: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Tick indices where a zone changed, the new zones and the previous ones."""
        n = scores.shape[0]
        idx = np.empty(n, np.int64)
        zone = np.empty(n, np.int64)
        prev = np.empty(n, np.int64)
        k = _zone_changes(batch.instrument, scores, self.thresholds, 0.5 * self.dead_band,
                          self.last_zone, idx, zone, prev)  # fmt: skip
        return idx[:k], zone[:k], prev[:k]
