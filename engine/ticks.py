"""Micro-batches of market data as numpy columns.

A ``TickBatch`` holds quotes and trades of several instruments interleaved in time order.
Quotes leave the trade columns NaN and trades leave the quote columns NaN. This is the
unit the loop hands to numba: Python touches a batch, never a single tick, on the fast path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

QUOTE = 0
TRADE = 1

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

_COLUMNS = (
    "ts_event",
    "ts_recv",
    "instrument",
    "kind",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "price",
    "size",
    "side",
)


@dataclass(frozen=True, slots=True)
class TickBatch:
    """Columns of one micro-batch; all arrays have the same length.

    ``instrument`` is the dense index from ``InstrumentTable``; ``kind`` is ``QUOTE`` or
    ``TRADE``; ``side`` is the trade aggressor (+1 buy, -1 sell, 0 for quotes).
    """

    ts_event: I64
    ts_recv: I64
    instrument: I32
    kind: I8
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64
    price: F64
    size: F64
    side: I8

    def __len__(self) -> int:
        return int(self.ts_event.shape[0])

    def slice(self, start: int, stop: int) -> TickBatch:
        return TickBatch(*(getattr(self, c)[start:stop] for c in _COLUMNS))

    def take(self, index: npt.NDArray[np.int64]) -> TickBatch:
        return TickBatch(*(np.ascontiguousarray(getattr(self, c)[index]) for c in _COLUMNS))

    @staticmethod
    def concat(batches: Sequence[TickBatch]) -> TickBatch:
        if len(batches) == 1:
            return batches[0]
        return TickBatch(*(np.concatenate([getattr(b, c) for b in batches]) for c in _COLUMNS))

    @staticmethod
    def quotes(
        ts_event: I64,
        ts_recv: I64,
        instrument: I32,
        bid: F64,
        ask: F64,
        bid_size: F64,
        ask_size: F64,
    ) -> TickBatch:
        n = ts_event.shape[0]
        nan = np.full(n, np.nan)
        return TickBatch(
            np.ascontiguousarray(ts_event, np.int64),
            np.ascontiguousarray(ts_recv, np.int64),
            np.ascontiguousarray(instrument, np.int32),
            np.zeros(n, np.int8),
            np.ascontiguousarray(bid, np.float64),
            np.ascontiguousarray(ask, np.float64),
            np.ascontiguousarray(bid_size, np.float64),
            np.ascontiguousarray(ask_size, np.float64),
            nan,
            nan.copy(),
            np.zeros(n, np.int8),
        )

    @staticmethod
    def trades(
        ts_event: I64,
        ts_recv: I64,
        instrument: I32,
        price: F64,
        size: F64,
        side: I8,
    ) -> TickBatch:
        n = ts_event.shape[0]
        nan = np.full(n, np.nan)
        return TickBatch(
            np.ascontiguousarray(ts_event, np.int64),
            np.ascontiguousarray(ts_recv, np.int64),
            np.ascontiguousarray(instrument, np.int32),
            np.ones(n, np.int8),
            nan,
            nan.copy(),
            nan.copy(),
            nan.copy(),
            np.ascontiguousarray(price, np.float64),
            np.ascontiguousarray(size, np.float64),
            np.ascontiguousarray(side, np.int8),
        )

    @staticmethod
    def merge(*batches: TickBatch) -> TickBatch:
        """Interleave by ``ts_event``; on equal stamps quotes come first, then the order of
        ``batches``, then row order (the sort is stable)."""
        both = TickBatch.concat(batches)
        order = np.lexsort((both.kind, both.ts_event)).astype(np.int64)
        return both.take(order)
