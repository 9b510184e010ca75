"""The scale each drift series is binned on: the tick, not the price level.

A feature computed from prices on a tick grid has two faults as a drift series when it
is binned as it comes. Its values sit on the grid (a spread of 1, 2, 3 ticks), and
expressed in bps or as a log return that grid is divided by the price level: the
"one-tick" spread is ``1e4 * tick / mid`` bps, a thin band that moves with the mid. Decile
edges then fall inside that band (5 of 9 did on real data) and sort its rows by the price
level, which wanders between training and live: unchanged data drifts, the calibrated
threshold rises to cover it and a real widening barely crosses it. And a price-level
feature (the mid itself, an average of it) measures where the market is, not how it
behaves.

So each series is put on the instrument's own tick at the sample's mid before it is
binned, the same in training (``replay.research.training.run.monitor_reference``) and in
the running monitor, chosen by its feature's kind (``scale_of``; the inputs' kinds
propagate through ``ema``, ``rolling_mean`` and ``rolling_std``):

- ``price_offset`` (``mid``, ``microprice``, ``last_price``, ``vwap``, their averages):
  ``(v - mid) / tick``, the distance from the sample's own mid in ticks. A ratio to a
  reference, the reference being the mid: scale-free in the level. The ``mid`` itself is
  then constant (0): its single bin never alarms, the price level is not a drift.
- ``price_ticks`` (``rolling_std`` of a price): ``v / tick``.
- ``return_ticks`` (``log_return`` of a price): ``-expm1(-v) * mid / tick``, which is the
  price change over the lag in ticks exactly (``mid - mid * exp(-v)``), on the grid.
- ``relative_ticks`` (``realized_vol`` of a price; averages and deviations of a return):
  ``v * mid / tick``.
- ``bps_ticks`` (``spread_bps`` and its averages and deviations): ``v * 1e-4 * mid /
  tick``; the spread itself in whole ticks.
- ``none`` (book and trade-flow imbalance, z-scores, time since a trade, VWAP distance,
  anything of them, the model's score): as it comes; these carry no price unit.

Every scaled value is rounded to ``SNAP_TICKS`` (a thousandth of a tick): the float noise
of ``(ask - bid) / mid * 1e4 * mid`` (1e-9 tick) would otherwise split one tick into
several values, and no bin edge needs a finer place. The drift bins are then counted per
value where a series takes few values (``engine.monitor.stats.drift_bins``).

Scale-free in the level up to this: a tick-scaled quantity that is really proportional
to the price (a volatility in ticks) moves with the level by the level's own ratio (a few
percent over a day), a small fraction of a decile's width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from engine.monitor.stats import F64, I64
from engine.signals.manifest import DriftScale as Scale

Ints = npt.NDArray[np.signedinteger[Any]]

SNAP_TICKS: Final = 1e-3
"""Scaled values are rounded to this many ticks (module docstring)."""

_RAW: Final[dict[str, Scale]] = {
    "mid": "price_offset",
    "microprice": "price_offset",
    "last_price": "price_offset",
    "vwap": "price_offset",
    "spread_bps": "bps_ticks",
}
# what an average (ema, rolling mean) or a deviation (rolling std) of a series is on
_AVERAGE: Final[dict[Scale, Scale]] = {
    "price_offset": "price_offset",
    "return_ticks": "relative_ticks",
    "relative_ticks": "relative_ticks",
    "bps_ticks": "bps_ticks",
    "price_ticks": "price_ticks",
}
_DEVIATION: Final[dict[Scale, Scale]] = {
    "price_offset": "price_ticks",
    "price_ticks": "price_ticks",
    "return_ticks": "relative_ticks",
    "relative_ticks": "relative_ticks",
    "bps_ticks": "bps_ticks",
}


def scale_of(name: str, specs: Mapping[str, Mapping[str, Any]]) -> Scale:
    """The scale of feature ``name`` given every feature's spec by name (the manifest's
    ``feature_specs``); ``none`` for a name without a spec (an extra research column)."""
    seen: set[str] = set()

    def walk(n: str) -> Scale:
        spec = specs.get(n)
        if spec is None or n in seen:
            return "none"
        seen.add(n)
        kind = str(spec.get("kind"))
        if kind in _RAW:
            return _RAW[kind]
        source = spec.get("input")
        inner: Scale = walk(str(source)) if source is not None else "none"
        if kind in ("ema", "rolling_mean"):
            return _AVERAGE.get(inner, "none")
        if kind == "rolling_std":
            return _DEVIATION.get(inner, "none")
        if kind == "log_return":
            return "return_ticks" if inner == "price_offset" else "none"
        if kind == "realized_vol":
            return "relative_ticks" if inner == "price_offset" else "none"
        return "none"

    return walk(name)


def scales_of(names: Sequence[str], specs: Sequence[Mapping[str, Any]]) -> list[Scale]:
    """``scale_of`` for each of ``names`` (the model's features, in order)."""
    by_name = {str(s.get("name")): s for s in specs}
    return [scale_of(n, by_name) for n in names]


def apply_scales(values: F64, scales: Sequence[Scale], mid: F64, tick: F64) -> F64:
    """``values`` (rows x series) with each column put on its scale; ``mid`` and ``tick``
    per row (the sample's own mid, its instrument's tick size). Columns on ``none`` are
    returned as they are (the same floats)."""
    out = values
    for j, scale in enumerate(scales):
        if scale == "none":
            continue
        if out is values:
            out = values.copy()
        v = values[:, j]
        if scale == "price_offset":
            x = (v - mid) / tick
        elif scale == "price_ticks":
            x = v / tick
        elif scale == "return_ticks":
            x = -np.expm1(-v) * mid / tick
        elif scale == "relative_ticks":
            x = v * mid / tick
        else:  # bps_ticks
            x = v * 1e-4 * mid / tick
        # + 0.0 turns the -0.0 of a rounded tiny negative into 0.0: one value, one bin
        out[:, j] = np.round(x / SNAP_TICKS) * SNAP_TICKS + 0.0
    return out


def own_quote_mids(
    quote_ts: I64, quote_instrument: Ints, quote_mid: F64, row_ts: I64, row_instrument: Ints
) -> F64:
    """Each sampled row's own mid, from every quote in stream order: a row is the first
    quote of its instrument in its sampling interval, so it is the first quote of that
    instrument at the row's time (later quotes at the same time do not count, as in the
    monitor, which scales by the sampled quote itself)."""
    mid = np.empty(row_ts.shape[0])
    for i in np.unique(row_instrument):
        at = np.flatnonzero(row_instrument == i)
        mine = quote_instrument == i
        own = np.searchsorted(quote_ts[mine], row_ts[at], side="left")
        mid[at] = quote_mid[mine][own]
    return mid
