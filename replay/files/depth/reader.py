"""Stream a tradeloop depth parquet as validated ``DepthBatch`` chunks.

Bad input never makes a silently wrong book: a row with a bad side, price or size, or a
time that goes backwards, is an error under ``on_bad_row="raise"``; under ``"skip"`` it is
counted and turned into a ``reset`` marker of its instrument, so the book goes out of sync
(its features NaN) until the next snapshot instead of missing one level unseen. Rows of
symbols the run does not trade are left out and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.book.batch import F_END, F_RESET, F_SNAPSHOT, DepthBatch
from engine.book.schema import DEPTH_COLUMNS, MARKER
from engine.errors import DataError

__all__ = ["DepthFileReader", "is_depth_file"]

BadRowPolicy = Literal["raise", "skip"]


def is_depth_file(path: Path) -> bool:
    """A parquet file with every column of the depth schema."""
    if not path.name.lower().endswith(".parquet"):
        return False
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):
        return False
    return set(DEPTH_COLUMNS) <= names


class DepthFileReader:
    """Iterate ``DepthBatch`` chunks of one depth parquet file.

    Args:
        path: the file.
        index: symbol -> dense instrument index (other symbols are counted and left out).
        on_bad_row: ``raise`` or ``skip`` (see the module docstring).
        chunk_rows: rows per chunk (bounds memory; the book does not depend on it).
        start_ns, end_ns: keep rows with ``start_ns <= ts_event < end_ns``; a book that
            starts after the file's first snapshot is partial there, as a capture without
            a snapshot (ids are checked from its first update on).
        restart: begin with a restart marker per instrument of the file: each file is
            its own capture, so the book of one never continues into the next (the ids
            of two captures are not comparable).

    Raises:
        DataError: when iterated: unreadable file, missing column, or a bad row under
            ``raise`` (names the row and column).
    """

    def __init__(
        self,
        path: str | Path,
        index: Mapping[str, int],
        *,
        on_bad_row: BadRowPolicy = "raise",
        chunk_rows: int = 262_144,
        start_ns: int | None = None,
        end_ns: int | None = None,
        restart: bool = True,
    ) -> None:
        self.path = Path(path)
        self.index = dict(index)
        self.on_bad_row: BadRowPolicy = on_bad_row
        self.chunk_rows = chunk_rows
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.restart = restart
        self.counts: Counter[str] = Counter()

    def _restarts(self, pf: pq.ParquetFile, ts: int) -> DepthBatch:
        """A restart marker (``reset`` and ``snapshot``) for each instrument of the file."""
        names = pf.read(columns=["symbol"]).column(0).unique().to_pylist()
        inst = sorted(self.index[s] for s in names if s in self.index)
        n = len(inst)
        return DepthBatch(
            np.full(n, ts, np.int64), np.full(n, ts, np.int64), np.asarray(inst, np.int32),
            np.zeros(n, np.int8), np.full(n, np.nan), np.full(n, np.nan),
            np.full(n, F_RESET | F_SNAPSHOT | F_END, np.int8), np.zeros(n, np.int64),
            np.zeros(n, np.int64), np.full(n, -1, np.int64),
        )  # fmt: skip

    def __iter__(self) -> Iterator[DepthBatch]:
        try:
            pf = pq.ParquetFile(self.path)
            missing = [c for c in DEPTH_COLUMNS if c not in pf.schema_arrow.names]
            if missing:
                raise DataError(str(self.path), f"not a depth file: no columns {missing}")
            batches = pf.iter_batches(batch_size=self.chunk_rows, columns=list(DEPTH_COLUMNS))
            first_row = 0
            last_ts = np.iinfo(np.int64).min
            restart = self.restart
            for rb in batches:
                if restart and rb.num_rows:
                    restart = False
                    yield self._restarts(pf, int(rb.column("ts_event")[0].as_py() or 0))
                out, last_ts = self._convert(rb, first_row, last_ts)
                first_row += rb.num_rows
                if out is not None and len(out):
                    yield out
        except pa.ArrowException as exc:
            raise DataError(str(self.path), f"cannot read: {exc}") from exc
        except OSError as exc:
            raise DataError(str(self.path), f"cannot read: {exc}") from exc

    def _bad(self, row: int, column: str, reason: str) -> None:
        if self.on_bad_row == "raise":
            raise DataError(str(self.path), reason, row=row, column=column)
        self.counts[reason] += 1

    def _convert(
        self, rb: pa.RecordBatch, first_row: int, last_ts: int
    ) -> tuple[DepthBatch | None, int]:
        col = {name: rb.column(name) for name in DEPTH_COLUMNS}
        for name in DEPTH_COLUMNS:
            if col[name].null_count:
                k = int(np.flatnonzero(col[name].is_null().to_numpy(zero_copy_only=False))[0])
                self._bad(first_row + k, name, "missing value")
        ts = np.array(col["ts_event"].fill_null(0).to_numpy(), np.int64)
        symbols = col["symbol"].fill_null("").to_numpy(zero_copy_only=False)
        inst = np.fromiter((self.index.get(s, -1) for s in symbols), np.int64, len(symbols))
        side = np.array(col["side"].fill_null(0).to_numpy(), np.int8)
        price = np.asarray(col["price"].to_numpy(zero_copy_only=False), np.float64)
        qty = np.asarray(col["qty"].to_numpy(zero_copy_only=False), np.float64)
        flags_in = {
            n: np.asarray(col[n].fill_null(False).to_numpy(zero_copy_only=False), np.bool_)
            for n in ("snapshot", "reset", "end")
        }
        bad = np.zeros(len(ts), np.bool_)
        level = side != MARKER
        checks = (
            ("side", (side != 1) & (side != -1) & (side != MARKER), "side not 1, -1 or 0"),
            ("price", level & ~(np.isfinite(price) & (price > 0.0)), "price not finite > 0"),
            ("qty", level & ~(np.isfinite(qty) & (qty >= 0.0)), "qty not finite >= 0"),
        )
        for column, mask, reason in checks:
            for at in np.flatnonzero(mask & ~bad).tolist():
                self._bad(first_row + at, column, reason)
            bad |= mask
        running = np.maximum.accumulate(np.concatenate([[last_ts], ts]))
        back = np.flatnonzero(ts < running[:-1])
        for at in back.tolist():
            self._bad(first_row + at, "ts_event", "ts_event goes backwards")
            bad[at] = True
        keep = inst >= 0
        unknown = int((~keep).sum())
        if unknown:
            self.counts["symbol not traded"] += unknown
        if self.start_ns is not None:
            keep &= ts >= self.start_ns
        if self.end_ns is not None:
            keep &= ts < self.end_ns
        flags = (
            flags_in["snapshot"].astype(np.int8)
            + flags_in["reset"].astype(np.int8) * F_RESET
            + flags_in["end"].astype(np.int8) * F_END
        ).astype(np.int8)
        # a skipped bad row becomes a reset marker (the book goes out of sync at once, the
        # rest of its update dropped); never a restart, so its snapshot flag goes
        flags[bad] = F_RESET | (flags[bad] & F_END)
        side[bad] = MARKER
        if bad.any():
            # a marker keeps the time order: the latest good time before it
            good = np.where(bad, np.iinfo(np.int64).min, ts)
            ts[bad] = np.maximum.accumulate(np.concatenate([[last_ts], good]))[1:][bad]
        new_last = int(running[-1])
        idx = np.flatnonzero(keep)
        if idx.shape[0] == 0:
            return None, new_last
        return (
            DepthBatch(
                np.ascontiguousarray(ts[idx]),
                np.ascontiguousarray(
                    np.asarray(col["ts_recv"].fill_null(0).to_numpy(), np.int64)[idx]
                ),
                inst[idx].astype(np.int32),
                np.ascontiguousarray(side[idx]),
                np.ascontiguousarray(price[idx]),
                np.ascontiguousarray(qty[idx]),
                np.ascontiguousarray(flags[idx]),
                np.ascontiguousarray(
                    np.asarray(col["first_update_id"].fill_null(0).to_numpy(), np.int64)[idx]
                ),
                np.ascontiguousarray(
                    np.asarray(col["last_update_id"].fill_null(0).to_numpy(), np.int64)[idx]
                ),
                np.ascontiguousarray(
                    np.asarray(col["prev_update_id"].fill_null(-1).to_numpy(), np.int64)[idx]
                ),
            ),
            new_last,
        )
