"""The mid price of each instrument sampled on a time grid, for the report's price panels.

A day of quotes is millions of rows; the report needs the price path, not every quote.
The sampler keeps, per instrument, the last mid of each grid bucket (the equity grid's
interval, 1 s by default): bounded by the span, not the tick count. The page then thins
these to an envelope (``replay.backtest.charts.thin``) before drawing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from engine.ticks import QUOTE, TickBatch

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

DEFAULT_INTERVAL_NS = 1_000_000_000


class MidSampler:
    """Last mid per instrument per ``interval_ns`` bucket, stamped at the quote's time."""

    def __init__(self, symbols: Sequence[str], interval_ns: int = DEFAULT_INTERVAL_NS) -> None:
        self.symbols = tuple(symbols)
        self.interval_ns = interval_ns if interval_ns > 0 else DEFAULT_INTERVAL_NS
        self._ts: list[list[I64]] = [[] for _ in self.symbols]
        self._mid: list[list[F64]] = [[] for _ in self.symbols]
        self._last_bucket = np.full(len(self.symbols), -1, np.int64)
        self._seen = np.zeros(len(self.symbols), np.bool_)

    def seen(self) -> set[str]:
        """The symbols of every tick (quote or trade) sampled."""
        return {s for s, hit in zip(self.symbols, self._seen.tolist(), strict=True) if hit}

    def add_batch(self, batch: TickBatch) -> None:
        """Sample the quotes of a micro-batch (vectorised: one pass per instrument in it)."""
        self._seen[np.unique(batch.instrument)] = True
        quotes = batch.kind == QUOTE
        if not quotes.any():
            return
        ts = batch.ts_event[quotes]
        inst = batch.instrument[quotes]
        mid = (batch.bid[quotes] + batch.ask[quotes]) * 0.5
        bucket = ts // self.interval_ns
        for i in np.unique(inst).tolist():
            sel = inst == i
            b = bucket[sel]
            # the last row of each run of equal buckets (rows are in time order)
            last = np.flatnonzero(np.append(b[1:] != b[:-1], True))
            self._ts[i].append(ts[sel][last])
            self._mid[i].append(mid[sel][last])

    def add_point(self, ts_ns: int, mids: F64) -> None:
        """Sample every instrument's current mid at ``ts_ns`` once per bucket (a journal
        replay, which applies records one at a time rather than in batches)."""
        bucket = ts_ns // self.interval_ns
        for i, mid in enumerate(mids.tolist()):
            if bucket != self._last_bucket[i] and np.isfinite(mid) and mid > 0:
                self._seen[i] = True
                self._last_bucket[i] = bucket
                self._ts[i].append(np.array([ts_ns], np.int64))
                self._mid[i].append(np.array([mid]))

    def series(self) -> dict[str, tuple[I64, F64]]:
        """Per instrument with quotes: times (ns) and mids, one per bucket (the last)."""
        out: dict[str, tuple[I64, F64]] = {}
        for i, symbol in enumerate(self.symbols):
            if not self._ts[i]:
                continue
            ts = np.concatenate(self._ts[i])
            mid = np.concatenate(self._mid[i])
            # a bucket split across two batches appears twice: keep its last sample
            b = ts // self.interval_ns
            last = np.flatnonzero(np.append(b[1:] != b[:-1], True))
            out[symbol] = (ts[last], mid[last])
        return out
