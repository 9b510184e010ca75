"""``DepthBatch``: a micro-batch of depth rows as numpy columns, the unit the book applies.

Same rows as the parquet schema (``engine.book.schema``), with the instrument as the dense
index of ``InstrumentTable`` and the three flags packed into one ``int8``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from engine.book.schema import ASK, BID, MARKER
from engine.events import DepthUpdate

F_SNAPSHOT: Final = 1
F_RESET: Final = 2
F_END: Final = 4

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

_COLUMNS = (
    "ts_event",
    "ts_recv",
    "instrument",
    "side",
    "price",
    "qty",
    "flags",
    "first_update_id",
    "last_update_id",
    "prev_update_id",
)


@dataclass(frozen=True, slots=True)
class DepthBatch:
    """Columns of depth rows in arrival order; all arrays have the same length.

    ``side`` is ``BID`` (1), ``ASK`` (-1) or ``MARKER`` (0); ``flags`` ORs ``F_SNAPSHOT``,
    ``F_RESET`` and ``F_END`` (the last row of its update).
    """

    ts_event: I64
    ts_recv: I64
    instrument: I32
    side: I8
    price: F64
    qty: F64
    flags: I8
    first_update_id: I64
    last_update_id: I64
    prev_update_id: I64

    def __len__(self) -> int:
        return int(self.ts_event.shape[0])

    def slice(self, start: int, stop: int) -> DepthBatch:
        return DepthBatch(*(getattr(self, c)[start:stop] for c in _COLUMNS))

    @staticmethod
    def concat(batches: Sequence[DepthBatch]) -> DepthBatch:
        if len(batches) == 1:
            return batches[0]
        return DepthBatch(*(np.concatenate([getattr(b, c) for b in batches]) for c in _COLUMNS))

    @staticmethod
    def empty() -> DepthBatch:
        return DepthBatch.from_updates([], {})

    @staticmethod
    def from_columns(
        *,
        ts_event: npt.ArrayLike,
        ts_recv: npt.ArrayLike,
        instrument: npt.ArrayLike,
        side: npt.ArrayLike,
        price: npt.ArrayLike,
        qty: npt.ArrayLike,
        snapshot: npt.ArrayLike,
        reset: npt.ArrayLike,
        end: npt.ArrayLike,
        first_update_id: npt.ArrayLike,
        last_update_id: npt.ArrayLike,
        prev_update_id: npt.ArrayLike,
    ) -> DepthBatch:
        flags = (
            np.asarray(snapshot, np.int8) * F_SNAPSHOT
            + np.asarray(reset, np.int8) * F_RESET
            + np.asarray(end, np.int8) * F_END
        ).astype(np.int8)
        return DepthBatch(
            np.ascontiguousarray(ts_event, np.int64),
            np.ascontiguousarray(ts_recv, np.int64),
            np.ascontiguousarray(instrument, np.int32),
            np.ascontiguousarray(side, np.int8),
            np.ascontiguousarray(price, np.float64),
            np.ascontiguousarray(qty, np.float64),
            np.ascontiguousarray(flags, np.int8),
            np.ascontiguousarray(first_update_id, np.int64),
            np.ascontiguousarray(last_update_id, np.int64),
            np.ascontiguousarray(prev_update_id, np.int64),
        )

    @staticmethod
    def from_updates(updates: Sequence[DepthUpdate], index: Mapping[str, int]) -> DepthBatch:
        """Rows of ``DepthUpdate`` messages (the live path); ``index`` maps an instrument to
        its dense index (an unknown instrument raises ``KeyError``: check before)."""
        cols: dict[str, list[float]] = {c: [] for c in _COLUMNS}
        for u in updates:
            flags = (F_SNAPSHOT if u.snapshot else 0) | (F_RESET if u.reset else 0)
            levels = [(BID, p, q) for p, q in u.bids] + [(ASK, p, q) for p, q in u.asks]
            if not levels:
                levels = [(MARKER, float("nan"), float("nan"))]
            last = len(levels) - 1
            for k, (s, p, q) in enumerate(levels):
                for name, value in (
                    ("ts_event", u.ts_event),
                    ("ts_recv", u.ts_recv),
                    ("instrument", index[u.instrument]),
                    ("side", s),
                    ("price", p),
                    ("qty", q),
                    ("flags", flags | (F_END if k == last else 0)),
                    ("first_update_id", u.first_update_id),
                    ("last_update_id", u.last_update_id),
                    ("prev_update_id", u.prev_update_id),
                ):
                    cols[name].append(value)
        return DepthBatch(
            np.asarray(cols["ts_event"], np.int64),
            np.asarray(cols["ts_recv"], np.int64),
            np.asarray(cols["instrument"], np.int32),
            np.asarray(cols["side"], np.int8),
            np.asarray(cols["price"], np.float64),
            np.asarray(cols["qty"], np.float64),
            np.asarray(cols["flags"], np.int8),
            np.asarray(cols["first_update_id"], np.int64),
            np.asarray(cols["last_update_id"], np.int64),
            np.asarray(cols["prev_update_id"], np.int64),
        )
