"""The alarm edge rule, compiled: an alarm fires when its condition starts to hold, and
again only after the condition was clear for ``rearm_after`` checks in a row.

Drift is checked at every sample, so the rule runs over a batch's samples in one call
instead of one Python call per sample (it was most of the monitor's per-tick cost when a
condition held for long stretches); the per-check alarms use the same function on one
value, so there is one rule.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


@numba.njit(cache=True)
def alarm_edges(holds: B, armed: bool, clear: int, rearm_after: int) -> tuple[I64, bool, int]:
    """Run the rule over ``holds`` (the condition at each check, in order) from the state
    ``armed`` / ``clear`` (checks clear in a row); returns the positions that fire and the
    state after the last check."""
    fired = np.empty(holds.shape[0], np.int64)
    n = 0
    for r in range(holds.shape[0]):
        if holds[r]:
            clear = 0
            if armed:
                armed = False
                fired[n] = r
                n += 1
        else:
            clear += 1
            if clear >= rearm_after:
                armed = True
    return fired[:n], armed, clear
