"""``DepthTable``: depth rows collected column by column, written as the tradeloop depth
parquet; the converters fill one, the readers stream the file back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.book.schema import ASK, BID, DEPTH_COLUMNS, MARKER, NO_ID
from engine.errors import AdapterError

__all__ = ["DepthTable"]

_ARROW = {
    "ts_event": pa.int64(),
    "ts_recv": pa.int64(),
    "symbol": pa.string(),
    "side": pa.int8(),
    "price": pa.float64(),
    "qty": pa.float64(),
    "snapshot": pa.bool_(),
    "reset": pa.bool_(),
    "first_update_id": pa.int64(),
    "last_update_id": pa.int64(),
    "prev_update_id": pa.int64(),
    "end": pa.bool_(),
}
SCHEMA = pa.schema([(c, _ARROW[c]) for c in DEPTH_COLUMNS])


@dataclass
class DepthTable:
    """Depth rows of one or more updates, appended one update at a time."""

    columns: dict[str, list[object]] = field(default_factory=lambda: {c: [] for c in DEPTH_COLUMNS})
    updates: int = 0

    def __len__(self) -> int:
        return len(self.columns["ts_event"])

    def add_update(
        self,
        *,
        ts_event: int,
        ts_recv: int,
        symbol: str,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
        first_update_id: int,
        last_update_id: int,
        prev_update_id: int = NO_ID,
        snapshot: bool = False,
        reset: bool = False,
    ) -> None:
        """Append one update: bids then asks, ``end`` on its last row, one marker row when
        it has no level (its ids still count for continuity)."""
        levels = [(BID, p, q) for p, q in bids] + [(ASK, p, q) for p, q in asks]
        if not levels:
            levels = [(MARKER, float("nan"), float("nan"))]
        c = self.columns
        last = len(levels) - 1
        for k, (side, price, qty) in enumerate(levels):
            c["ts_event"].append(ts_event)
            c["ts_recv"].append(ts_recv)
            c["symbol"].append(symbol)
            c["side"].append(side)
            c["price"].append(price)
            c["qty"].append(qty)
            c["snapshot"].append(snapshot)
            c["reset"].append(reset)
            c["first_update_id"].append(first_update_id)
            c["last_update_id"].append(last_update_id)
            c["prev_update_id"].append(prev_update_id)
            c["end"].append(k == last)
        self.updates += 1

    def to_arrow(self) -> pa.Table:
        return pa.table(
            {name: pa.array(values, _ARROW[name]) for name, values in self.columns.items()},
            schema=SCHEMA,
        )

    def write(self, path: Path, *, row_group_rows: int = 131_072) -> None:
        """Write the rows as parquet (zstd), in time order (stable: arrival order within).

        Raises:
            AdapterError: the file cannot be written.
        """
        try:
            pq.write_table(self.to_arrow(), path, compression="zstd", row_group_size=row_group_rows)
        except OSError as exc:
            raise AdapterError(f"cannot write {path}: {exc}") from exc

    def numpy(self, name: str) -> np.ndarray:  # type: ignore[type-arg]
        return np.asarray(self.columns[name])
