"""Tick files (parquet, CSV) read in chunks with polars, validated row by row.

Schema (see README): quotes ``ts_event, symbol, bid, ask, bid_size, ask_size``; trades
``ts_event, symbol, price, size, side``; ``ts_recv`` is optional (defaults to
``ts_event``); ``ts_event`` is int ns since the epoch (UTC) or an ISO-8601 string.

Bad rows (missing or non-numeric values, NaN prices, crossed quotes, negative sizes,
unknown symbols, timestamps going backwards) raise ``DataError`` naming file, row and
column, or, with ``on_bad_row="skip"``, are dropped and counted by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.errors import DataError
from engine.instruments import InstrumentTable
from engine.ticks import TickBatch

Kind = Literal["quotes", "trades"]
BadRowPolicy = Literal["raise", "skip"]

QUOTE_COLUMNS = ("ts_event", "symbol", "bid", "ask", "bid_size", "ask_size")
TRADE_COLUMNS = ("ts_event", "symbol", "price", "size", "side")
_ROW = "__row"


@dataclass
class BadRowCounts:
    """Rows dropped under ``on_bad_row="skip"``, by reason."""

    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def file_kind(path: Path) -> Kind | None:
    name = path.name.lower()
    if path.suffix.lower() not in (".parquet", ".csv"):
        return None
    if "quote" in name:
        return "quotes"
    if "trade" in name:
        return "trades"
    return None


def discover(data: str | Path) -> tuple[list[Path], list[Path]]:
    """Quote and trade files under ``data`` (a folder, or one file), sorted by name.

    Raises:
        DataError: nothing readable found.
    """
    root = Path(data)
    if not root.exists():
        raise DataError(str(root), "no such file or folder")
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file())
    quotes = [p for p in files if file_kind(p) == "quotes"]
    trades = [p for p in files if file_kind(p) == "trades"]
    if not quotes and not trades:
        raise DataError(str(root), "no tick files found: expected *quotes*.parquet|csv "
                                   "and/or *trades*.parquet|csv")  # fmt: skip
    return quotes, trades


def total_rows(paths: list[Path]) -> int | None:
    """Rows in all files without reading them (parquet metadata), for progress bars;
    None when any file is CSV (its length is unknown until read)."""
    import pyarrow.parquet as pq

    if any(p.suffix.lower() != ".parquet" for p in paths):
        return None
    return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in paths)


def _raw_chunks(path: Path, chunk_rows: int) -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
    """The file's schema and an iterator of raw chunks, read lazily by pyarrow so at most
    one chunk (one parquet row group or CSV block) is in memory; polars' own streaming
    collect reads ahead without bound."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            # one row group at a time, no read-ahead: pyarrow's default pre-buffering
            # held ~400 MiB on a 15 M-row file; this holds one row group (measured)
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
            schema = pl.Schema(pl.from_arrow(pf.schema_arrow.empty_table()).schema)  # type: ignore[union-attr]
            batches = (rb for k in range(pf.num_row_groups)
                       for rb in pf.iter_batches(batch_size=chunk_rows, row_groups=[k]))  # fmt: skip
        else:
            with path.open("r", newline="") as f:
                header = f.readline().strip().split(",")
            # every CSV column as text, converted with strict=False later, so a bad cell
            # becomes a reported bad row instead of a parser exception
            names = [h.strip().strip('"') for h in header]
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=max(1 << 20, chunk_rows * 64)),
                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                     strings_can_be_null=True),
            )  # fmt: skip
            schema = pl.Schema({n: pl.String for n in names})
            batches = iter(reader)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(str(path), f"cannot open: {exc}") from exc

    def frames() -> Iterator[pl.DataFrame]:
        try:
            for rb in batches:
                frame = pl.from_arrow(rb)
                assert isinstance(frame, pl.DataFrame)
                yield frame
        except (OSError, pa.ArrowException) as exc:
            raise DataError(str(path), f"cannot read: {exc}") from exc

    return schema, frames()


def _ts_expr(schema: pl.Schema, name: str) -> pl.Expr:
    col = pl.col(name)
    dtype = schema[name]
    if dtype.is_integer():
        return col.cast(pl.Int64)
    if isinstance(dtype, pl.Datetime):
        return col.dt.epoch("ns")
    text = col.cast(pl.String)
    return (
        pl.when(text.str.contains(r"^\s*-?\d+\s*$"))
        .then(text.str.strip_chars().cast(pl.Int64, strict=False))
        .otherwise(
            text.str.to_datetime(time_unit="ns", time_zone="UTC", strict=False).dt.epoch("ns")
        )
    )


class TickFileReader:
    """Streams one tick file as validated ``TickBatch`` chunks (one kind per file).

    Args:
        path: parquet or CSV file.
        kind: ``"quotes"`` or ``"trades"``.
        instruments: symbols to accept; their dense index goes into the batch.
        on_bad_row: ``"raise"`` (default) or ``"skip"`` (drop and count).
        chunk_rows: rows per chunk read from disk (bounds memory).
    """

    def __init__(self, path: str | Path, kind: Kind, instruments: InstrumentTable, *,
                 on_bad_row: BadRowPolicy = "raise", chunk_rows: int = 262_144,
                 bad_rows: BadRowCounts | None = None) -> None:  # fmt: skip
        self.path = Path(path)
        self.kind: Kind = kind
        self.instruments = instruments
        self.on_bad_row: BadRowPolicy = on_bad_row
        self.chunk_rows = chunk_rows
        self.bad_rows = bad_rows if bad_rows is not None else BadRowCounts()
        self._last_ts = np.iinfo(np.int64).min

    def _exprs(self, schema: pl.Schema) -> list[pl.Expr]:
        needed = QUOTE_COLUMNS if self.kind == "quotes" else TRADE_COLUMNS
        for col in needed:
            if col not in schema:
                raise DataError(str(self.path), f"missing column (has {list(schema.names())})",
                                column=col)  # fmt: skip
        exprs = [pl.col(_ROW), _ts_expr(schema, "ts_event").alias("ts_event")]
        exprs.append(_ts_expr(schema, "ts_recv").alias("ts_recv") if "ts_recv" in schema
                     else _ts_expr(schema, "ts_event").alias("ts_recv"))  # fmt: skip
        exprs.append(pl.col("symbol").cast(pl.String))
        if self.kind == "quotes":
            exprs += [
                pl.col(c).cast(pl.Float64, strict=False)
                for c in ("bid", "ask", "bid_size", "ask_size")
            ]
        else:
            exprs += [pl.col(c).cast(pl.Float64, strict=False) for c in ("price", "size")]
            side = pl.col("side").cast(pl.String).str.to_lowercase().str.strip_chars()
            exprs.append(
                pl.when(side.is_in(["buy", "b", "1"])).then(1)
                .when(side.is_in(["sell", "s", "-1"])).then(-1)
                .otherwise(0).cast(pl.Int8).alias("side")
            )  # fmt: skip
        return exprs

    def __iter__(self) -> Iterator[TickBatch]:
        schema, frames = _raw_chunks(self.path, self.chunk_rows)
        exprs = self._exprs(schema)
        offset = 0
        try:
            for raw in frames:
                chunk = raw.with_row_index(_ROW, offset=offset).select(exprs)
                offset += raw.height
                batch = self._validate(chunk)
                if len(batch):
                    yield batch
        except pl.exceptions.PolarsError as exc:
            raise DataError(str(self.path), f"cannot read: {exc}") from exc

    def _validate(self, df: pl.DataFrame) -> TickBatch:
        rows = df[_ROW].to_numpy()
        ts = df["ts_event"].to_numpy(allow_copy=True)
        ts_null = df["ts_event"].is_null().to_numpy()
        ts = np.where(ts_null, 0, ts).astype(np.int64)
        ts_recv_s = df["ts_recv"]
        ts_recv = np.where(
            ts_recv_s.is_null().to_numpy(), ts, ts_recv_s.fill_null(0).to_numpy()
        ).astype(np.int64)
        sym_codes = df["symbol"].replace_strict(
            self.instruments.index, default=-1, return_dtype=pl.Int32
        )
        inst = sym_codes.to_numpy()
        checks: list[tuple[str, str, npt.NDArray[np.bool_]]] = [
            ("ts_event", "timestamp missing or not int ns / ISO-8601", ts_null),
            ("symbol", "unknown symbol (not in [[instruments]])", inst < 0),
        ]
        cols: dict[str, npt.NDArray[np.float64]] = {}
        if self.kind == "quotes":
            for c in ("bid", "ask", "bid_size", "ask_size"):
                cols[c] = df[c].fill_null(np.nan).to_numpy().astype(np.float64)
            for c in ("bid", "ask"):
                checks.append(
                    (c, "price is NaN, missing or not > 0", ~(cols[c] > 0) | ~np.isfinite(cols[c]))
                )
            for c in ("bid_size", "ask_size"):
                checks.append(
                    (c, "size is negative, NaN or missing", ~(cols[c] >= 0) | ~np.isfinite(cols[c]))
                )
            checks.append(
                ("ask", "crossed or locked quote (bid >= ask)", cols["bid"] >= cols["ask"])
            )
        else:
            for c in ("price", "size"):
                cols[c] = df[c].fill_null(np.nan).to_numpy().astype(np.float64)
            checks.append(("price", "price is NaN, missing or not > 0",
                           ~(cols["price"] > 0) | ~np.isfinite(cols["price"])))  # fmt: skip
            checks.append(("size", "size is not > 0, NaN or missing",
                           ~(cols["size"] > 0) | ~np.isfinite(cols["size"])))  # fmt: skip
            side = df["side"].to_numpy()
            checks.append(("side", "side is not buy/sell", side == 0))
        bad = np.zeros(len(df), np.bool_)
        for _, _, mask in checks:
            bad |= mask
        # order check on rows that are otherwise valid: a row earlier than any valid row
        # before it (in this file) is out of order
        valid_ts = np.where(bad, np.iinfo(np.int64).min, ts)
        running = np.maximum.accumulate(np.concatenate([[self._last_ts], valid_ts]))
        backwards = ~bad & (ts < running[:-1])
        checks.append(("ts_event", "timestamp goes backwards", backwards))
        bad |= backwards
        self._last_ts = int(running[-1])
        if bad.any():
            first = int(np.argmax(bad))
            if self.on_bad_row == "raise":
                for column, reason, mask in checks:
                    if mask[first]:
                        raise DataError(str(self.path), reason, row=int(rows[first]), column=column)
            for _, reason, mask in checks:
                n_bad = int(mask.sum())
                if n_bad:
                    self.bad_rows.by_reason[reason] += n_bad
            keep = ~bad
            ts, ts_recv, inst = ts[keep], ts_recv[keep], inst[keep]
            cols = {c: v[keep] for c, v in cols.items()}
            if self.kind == "trades":
                side = side[keep]
        if self.kind == "quotes":
            return TickBatch.quotes(
                ts, ts_recv, inst, cols["bid"], cols["ask"], cols["bid_size"], cols["ask_size"]
            )
        return TickBatch.trades(ts, ts_recv, inst, cols["price"], cols["size"], side)


def merge_streams(streams: list[Iterator[TickBatch]]) -> Iterator[TickBatch]:
    """K-way merge of time-ordered chunk streams into time-ordered chunks.

    Rows are released only below the smallest ``last ts`` of the streams still open, so
    the output order (by ts, quotes before trades, then stream order, then file order)
    does not depend on how the files were chunked.
    """
    buffers: list[TickBatch | None] = [None] * len(streams)
    open_ = [True] * len(streams)

    def refill(k: int) -> None:
        try:
            nxt = next(streams[k])
        except StopIteration:
            open_[k] = False
            return
        buf = buffers[k]
        buffers[k] = nxt if buf is None or len(buf) == 0 else TickBatch.concat([buf, nxt])

    while True:
        for k in range(len(streams)):
            while open_[k] and (buffers[k] is None or len(buffers[k]) == 0):  # type: ignore[arg-type]
                refill(k)
        if not any(open_):
            rest = [b for b in buffers if b is not None and len(b)]
            if rest:
                yield TickBatch.merge(*rest)
            return
        watermark = min(
            int(b.ts_event[-1]) for k, b in enumerate(buffers) if open_[k] and b is not None
        )
        out: list[TickBatch] = []
        for k, buf in enumerate(buffers):
            if buf is None or len(buf) == 0:
                continue
            cut = int(np.searchsorted(buf.ts_event, watermark, side="left"))
            if cut:
                out.append(buf.slice(0, cut))
                buffers[k] = buf.slice(cut, len(buf))
        if out:
            yield TickBatch.merge(*out)
        else:
            # every open stream's buffer starts at the watermark: read further in those
            for k, buf in enumerate(buffers):
                if open_[k] and buf is not None and int(buf.ts_event[-1]) == watermark:
                    refill(k)


def rebatch(chunks: Iterator[TickBatch], size: int) -> Iterator[TickBatch]:
    """Re-cut a chunk stream into batches of exactly ``size`` rows (the last may be short)."""
    pending: list[TickBatch] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            joined = TickBatch.concat(pending)
            start = 0
            while held - start >= size:
                yield joined.slice(start, start + size)
                start += size
            pending = [joined.slice(start, len(joined))] if start < len(joined) else []
            held = len(joined) - start
    if held:
        yield TickBatch.concat(pending)


def prefetch(source: Iterator[TickBatch], depth: int = 2) -> Iterator[TickBatch]:
    """Produce ``source`` on a background thread, at most ``depth`` batches ahead.

    File decoding and validation (pyarrow, polars, numpy: they release the GIL) overlap
    with the engine's numba kernels (compiled ``nogil``) on another core, while memory
    stays bounded by the queue. An exception in the producer is re-raised here.
    """
    import queue
    import threading

    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(("error", exc))

    worker = threading.Thread(target=produce, name="tick-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value  # type: ignore[misc]
            elif kind == "error":
                raise value  # type: ignore[misc]
            else:
                return
    finally:
        stop.set()
        worker.join(timeout=5)
