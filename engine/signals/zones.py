"""Signals are sparse: one is emitted only when a score moves into another threshold zone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.ticks import TickBatch


@njit(cache=True, nogil=True)
def _zone_changes(inst, scores, thresholds, last_zone, out_idx, out_zone, out_prev):  # type: ignore[no-untyped-def]
    n_out = 0
    m = thresholds.shape[0]
    for t in range(scores.shape[0]):
        s = scores[t]
        if np.isnan(s):
            z = -1
        else:
            z = 0
            while z < m and s >= thresholds[z]:
                z += 1
        i = inst[t]
        if z != last_zone[i]:
            if z >= 0:  # leaving the defined zones (NaN) is not a tradable signal
                out_idx[n_out] = t
                out_zone[n_out] = z
                out_prev[n_out] = last_zone[i]
                n_out += 1
            last_zone[i] = z
    return n_out


class ZoneTracker:
    """Per-instrument zone of the score against sorted thresholds, carried across batches.

    ``zone`` = number of thresholds <= score; -1 while the score is NaN.
    """

    def __init__(self, thresholds: Sequence[float], n_instruments: int) -> None:
        th = np.asarray(sorted(thresholds), np.float64)
        if np.any(~np.isfinite(th)):
            raise ValueError("thresholds must be finite")
        self.thresholds = th
        self.last_zone = np.full(n_instruments, -1, np.int64)

    def changes(
        self, batch: TickBatch, scores: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Tick indices where a zone changed, the new zones and the previous ones."""
        n = scores.shape[0]
        idx = np.empty(n, np.int64)
        zone = np.empty(n, np.int64)
        prev = np.empty(n, np.int64)
        k = _zone_changes(
            batch.instrument, scores, self.thresholds, self.last_zone, idx, zone, prev
        )
        return idx[:k], zone[:k], prev[:k]
