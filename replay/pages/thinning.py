"""Long series made light for a page: the envelope of a line (spikes kept), and the
colours the charts share."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PALETTE = ("#1f5fa8", "#c0392b", "#27ae60", "#8e44ad", "#e67e22", "#16a085", "#7f8c8d")


def thin(x: FloatArray, y: FloatArray, columns: int = 1500) -> tuple[FloatArray, FloatArray]:
    """At most about ``2 * columns`` points with the same envelope: the first, the min and
    the max of each of ``columns`` equal runs of points, in order."""
    n = len(x)
    if n <= 2 * columns:
        return x, y
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    keep = [edges[:-1]]
    for reduce in (np.minimum, np.maximum):
        best = reduce.reduceat(y, edges[:-1])
        # the first index in each run where the run's extreme occurs
        run = np.repeat(np.arange(columns), np.diff(edges))
        hit = np.flatnonzero(y == best[run])
        first = np.unique(run[hit], return_index=True)[1]
        keep.append(hit[first])
    idx = np.unique(np.concatenate([*keep, [n - 1]]))
    return x[idx], y[idx]
