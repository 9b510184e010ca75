"""L2 feature values as of each tick: the port the engine reads book features through.

``BookSource`` is what the engine asks, once per tick micro-batch and in time order, for
the L2 features (``FeatureSet.book_specs`` order) as of each tick. ``DepthAsOf`` is the
one implementation: it pulls depth batches from any iterator (files in replay, the
broker live), applies every depth row at or before the batch's last tick to its
``BookFeatureSet``, and gives each tick the values after the last complete update of its
instrument at or before the tick (a depth row and a tick with the same stamp: the depth
row counts as before). Which depth rows a tick sees depends only on the stamps, never on
how either stream was cut into batches; training's as-of join
(``replay.research.dataset.book_features_asof``) uses the same rule.

The rows it applied for a batch are kept in ``last_rows``, for the engine to hand to a
router that fills on depth (``engine.ports.DepthConsumer``): the simulated venue needs the
book even where no L2 feature is configured (``features`` None then). Live, the rows come
one journaled batch at a time through ``push``, before the ticks received after them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.book.batch import F_END, DepthBatch
from engine.errors import DataError
from engine.features.book_features import BookFeatureSet
from engine.ticks import TickBatch


class BookSource(Protocol):
    # the depth rows the last ``asof`` applied (None: none), for the engine's router
    last_rows: DepthBatch | None

    def asof(self, batch: TickBatch) -> npt.NDArray[np.float64]:
        """The L2 features as of each tick of ``batch``, [len(batch), k]."""
        ...

    def push(self, rows: DepthBatch) -> None:
        """Apply depth rows received now (live), before any tick received after them."""
        ...


class DepthAsOf:
    """L2 features as of each tick, from a time-ordered stream of depth batches.

    Args:
        features: the set's L2 features, or None (no L2 feature: the rows are only taken,
            for ``last_rows``, and ``asof`` gives no column).
        depth: the depth batches in time order (replay's files); None: only ``push``.

    Raises:
        DataError: (from ``asof`` and ``push``) the depth stream's stamps go backwards.
    """

    def __init__(
        self, features: BookFeatureSet | None, depth: Iterator[DepthBatch] | None = None
    ) -> None:
        self.features = features
        # None live (a plain value: an engine snapshot can hold it, an iterator it cannot)
        self._depth = depth
        self._pending: DepthBatch | None = None
        self._done = depth is None
        self._last_ts = np.iinfo(np.int64).min
        self.last_rows: DepthBatch | None = None

    def _check_order(self, p: DepthBatch) -> None:
        if len(p) and (
            int(p.ts_event[0]) < self._last_ts
            or (len(p) > 1 and bool(np.any(p.ts_event[1:] < p.ts_event[:-1])))
        ):
            raise DataError("<depth>", "depth stamps go backwards (files overlap?)")
        if len(p):
            self._last_ts = int(p.ts_event[-1])

    def push(self, rows: DepthBatch) -> None:
        """Apply rows received now (live: ``Engine.process_depth``); the ticks received
        after them read the features as of these rows (``asof`` takes nothing more)."""
        self._check_order(rows)
        if self.features is not None and len(rows):
            self.features.update(rows)

    def _take_until(self, ts: int) -> DepthBatch | None:
        parts: list[DepthBatch] = []
        while True:
            if self._pending is None or len(self._pending) == 0:
                if self._done:
                    break
                assert self._depth is not None  # _done from the start without one
                try:
                    self._pending = next(self._depth)
                except StopIteration:
                    self._done = True
                    break
                self._check_order(self._pending)
                continue
            p = self._pending
            cut = int(np.searchsorted(p.ts_event, ts, side="right"))
            if cut:
                parts.append(p.slice(0, cut))
                self._pending = p.slice(cut, len(p))
            if cut < len(p):
                break
        if not parts:
            return None
        return DepthBatch.concat(parts)

    def asof(self, batch: TickBatch) -> npt.NDArray[np.float64]:
        n = len(batch)
        self.last_rows = None
        if self.features is None:
            if n:
                self.last_rows = self._take_until(int(batch.ts_event[-1]))
            return np.empty((n, 0))
        before = self.features.values.copy()
        res = np.ascontiguousarray(before[batch.instrument]) if n else before[:0].copy()
        if n == 0:
            return res
        rows = self.last_rows = self._take_until(int(batch.ts_event[-1]))
        if rows is None:
            return res
        out = self.features.update(rows)
        ends = np.flatnonzero(rows.flags & F_END)
        if ends.shape[0] == 0:
            return res
        e_ts, e_inst, e_val = rows.ts_event[ends], rows.instrument[ends], out[ends]
        for i in np.unique(e_inst):
            mine = e_inst == i
            ticks = np.flatnonzero(batch.instrument == i)
            if ticks.shape[0] == 0:
                continue
            at = np.searchsorted(e_ts[mine], batch.ts_event[ticks], side="right") - 1
            ok = at >= 0
            res[ticks[ok]] = e_val[mine][at[ok]]
        return res
