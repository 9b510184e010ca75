"""Tick files (parquet, CSV) read in chunks and validated row by row: ``TickFileReader``.

Schema (see README): quotes ``ts_event, symbol, bid, ask, bid_size, ask_size``; trades
``ts_event, symbol, price, size, side``; ``ts_recv`` is optional (defaults to
``ts_event``). A file's own column names are mapped to these by ``replay.files.formats``
(public formats, a user's mapping), which also gives a symbol to files without a
symbol column and the unit of integer timestamps. Column types: timestamps integers
since the epoch (UTC) in the unit found for the file, an arrow timestamp or ISO-8601
text; prices and sizes float or int (never bool or text, except in CSV, where every
cell is text: surrounding spaces are ignored); symbol text; side text or int, or
``is_buyer_maker`` (true: the aggressor sold) as bool or text. A wrong type, a missing
or repeated column, an empty file or one with no valid row is a ``DataError`` for the
whole file.

Rows are checked against the plausibility policy of ``replay.files.plausibility``. A bad row
raises ``DataError`` naming file, row and column, or, with ``on_bad_row="skip"``, is
dropped and counted once, by the first reason it fails in this order: text encoding,
timestamps, symbol, prices, sizes, crossed quote, side, price band, time order. A CSV
row whose field count differs from the header's is a bad row like any other.

The tick files of a source: ``replay/files/discovery.py``; the bad-row reasons and the
checks of a chunk's columns: ``replay/files/row_checks.py``; readers merged in time order,
re-cut and prefetched: ``replay/files/streams.py``.
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
from replay.files.formats import QUOTE_COLUMNS, TRADE_COLUMNS, FileLayout, Kind, inspect_file
from replay.files.plausibility import PRICE_MAX, PRICE_MIN, SIZE_MAX, PriceBand, TimeOrder
from replay.files.raw_files import RaggedRow, RawChunk, RawFile, TypeClass
from replay.files.row_checks import (
    _TS_COLUMNS,
    BACKWARDS,
    CROSSED,
    JUMPS,
    MAKER_BAD,
    NOT_UTF8,
    PRICE_BAD,
    PRICE_BAND,
    PRICE_RANGE,
    QUOTE_SIZE_BAD,
    RAGGED,
    SIDE_BAD,
    SIZE_RANGE,
    TRADE_SIZE_BAD,
    UNKNOWN_SYMBOL,
    _Check,
    _number_masks,
    _Rows,
    _status_masks,
    _timestamps,
    _ts_exprs,
    _ts_reasons,
)

__all__ = ["BadRowCounts", "BadRowPolicy", "TickFileReader"]


BadRowPolicy = Literal["raise", "skip"]


@dataclass
class BadRowCounts:
    """Rows dropped under ``on_bad_row="skip"``, by reason (each row once)."""

    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


class TickFileReader:
    """Streams one tick file as validated ``TickBatch`` chunks (one kind per file).

    Args:
        path: parquet or CSV file.
        kind: ``"quotes"`` or ``"trades"``.
        instruments: symbols to accept; their dense index goes into the batch.
        on_bad_row: ``"raise"`` (default) or ``"skip"`` (drop and count).
        chunk_rows: rows per chunk read from disk (bounds memory; results do not
            depend on it).
        bad_rows: where skipped rows are counted (shared by the readers of a run).
        layout: how to read the file (``replay.files.formats.inspect_file``); by default
            inspected here for ``kind``.
        start_ns: rows with a valid ``ts_event`` before it are left out.
        end_ns: rows with a valid ``ts_event`` at or after it are left out, and reading
            stops at the first chunk (or parquet row group) that lies wholly after it.

    Raises:
        DataError: when iterated: the file cannot be read, a column is missing, repeated
            or of the wrong type, the file has no (valid) data row, or a row is bad under
            ``on_bad_row="raise"`` (names file, row and column).
    """

    def __init__(
        self,
        path: str | Path,
        kind: Kind,
        instruments: InstrumentTable,
        *,
        on_bad_row: BadRowPolicy = "raise",
        chunk_rows: int = 262_144,
        bad_rows: BadRowCounts | None = None,
        layout: FileLayout | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind: Kind = kind
        self._layout = layout
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.instruments = instruments
        self.on_bad_row: BadRowPolicy = on_bad_row
        self.chunk_rows = chunk_rows
        self.bad_rows = bad_rows if bad_rows is not None else BadRowCounts()
        self._counts: Counter[str] = Counter()
        self._first_ragged: RaggedRow | None = None
        self._ragged = 0

    def _needed(self) -> tuple[str, ...]:
        """The columns the file must have (tradeloop's names)."""
        needed = QUOTE_COLUMNS if self.kind == "quotes" else TRADE_COLUMNS
        drop = set()
        if self.layout.symbol is not None:
            drop.add("symbol")
        if self.kind == "trades" and self._maker:
            drop.add("side")
        return tuple(c for c in needed if c not in drop) + (
            ("is_buyer_maker",) if self._maker else ()
        )

    def _checks(self) -> list[_Check]:
        checks = [_Check(c, NOT_UTF8) for c in (*self._needed(), "ts_recv")]
        checks += [
            _Check(c, r) for c in _TS_COLUMNS for r in _ts_reasons(self.layout.ts_unit.get(c, "ns"))
        ]
        checks.append(_Check("symbol", UNKNOWN_SYMBOL))
        if self.kind == "quotes":
            checks += [_Check(c, r) for c in ("bid", "ask") for r in (PRICE_BAD, PRICE_RANGE)]
            checks += [
                _Check(c, r) for c in ("bid_size", "ask_size") for r in (QUOTE_SIZE_BAD, SIZE_RANGE)
            ]
            checks.append(_Check("ask", CROSSED))
            checks += [_Check("bid", PRICE_BAND), _Check("ask", PRICE_BAND)]
        else:
            checks += [_Check("price", PRICE_BAD), _Check("price", PRICE_RANGE)]
            checks += [_Check("size", TRADE_SIZE_BAD), _Check("size", SIZE_RANGE)]
            side = _Check("is_buyer_maker", MAKER_BAD) if self._maker else _Check("side", SIDE_BAD)
            checks += [side, _Check("price", PRICE_BAND)]
        checks += [_Check("ts_event", BACKWARDS), _Check("ts_event", JUMPS)]
        return checks

    def _code(self, column: str, reason: str) -> int:
        return self._table.index(_Check(column, reason)) + 1

    def _open(self) -> RawFile:
        needed = self._needed()
        layout = self.layout
        ts_range = None
        if self._ranged:
            ts_range = ("ts_event", self.start_ns, self.end_ns, layout.ts_factor("ts_event"))
        raw = RawFile(
            self.path,
            (*needed, "ts_recv"),
            self.chunk_rows,
            self._on_ragged,
            rename=dict(layout.rename),
            header=layout.header,
            ts_range=ts_range,
        )
        for col in needed:
            if col not in raw.types:
                raise DataError(str(self.path), f"missing column (has {raw.names})", column=col)
        for col in (*needed, "ts_recv"):
            if col in raw.types:
                self._check_type(col, raw.types[col], csv=raw.is_csv)
        self._types = raw.types
        self._csv = raw.is_csv
        self._unit_ns = raw.ts_unit_ns
        return raw

    def _check_type(self, col: str, cls: TypeClass, *, csv: bool) -> None:
        if col in _TS_COLUMNS:
            allowed: tuple[TypeClass, ...] = ("int64", "int", "timestamp", "text")
            rule = "timestamps must be integers since the epoch, a timestamp or ISO-8601 text"
        elif col == "symbol":
            allowed, rule = ("text",), "symbols must be text"
        elif col == "is_buyer_maker":
            allowed, rule = ("bool", "text", "int64", "int"), "is_buyer_maker must be true/false"
        elif col == "side":
            allowed, rule = ("text", "int64", "int"), "side must be text (buy/sell) or int (1/-1)"
        else:
            allowed = ("int64", "int", "float", "text") if csv else ("int64", "int", "float")
            rule = "prices and sizes must be float or int"
        if cls not in allowed:
            raise DataError(str(self.path), f"column is {cls}: {rule}", column=col)

    def _on_ragged(self, ragged: RaggedRow) -> None:
        self._ragged += 1
        if self.on_bad_row == "skip":
            self._counts[RAGGED] += 1
        elif self._first_ragged is None:
            self._first_ragged = ragged

    def _ragged_error(self, ragged: RaggedRow) -> DataError:
        return DataError(
            str(self.path),
            f"{RAGGED}: {ragged.fields} fields, the header has {ragged.expected}",
            row=ragged.row,
        )

    @property
    def layout(self) -> FileLayout:
        if self._layout is None:
            found = inspect_file(self.path, kind=self.kind)
            assert isinstance(found, FileLayout)
            self._layout = found
        return self._layout

    @property
    def _maker(self) -> bool:
        """Trades whose side comes from ``is_buyer_maker`` (no ``side`` column)."""
        return self.kind == "trades" and self.layout.maker_side

    def __iter__(self) -> Iterator[TickBatch]:
        self._table = self._checks()
        raw = self._open()
        self._exprs = self._conversions()
        band = PriceBand(len(self.instruments))
        band_columns = ("bid", "ask") if self.kind == "quotes" else ("price", "price")
        band_codes = [self._code(c, PRICE_BAND) for c in band_columns]
        order = TimeOrder()
        order_codes = [self._code("ts_event", r) for r in (BACKWARDS, JUMPS)]
        pending: _Rows | None = None
        band_done = 0
        seen = 0
        released = 0
        chunks = raw.chunks()
        eof = False
        while not eof:
            chunk = next(chunks, None)
            if chunk is None:
                eof = True
            else:
                seen += chunk.frame.height
                rows, after_end = self._convert(chunk)
                pending = rows if pending is None else pending.append(rows)
                if after_end:
                    # every valid row of the chunk lies after the range: a file's rows do
                    # not go back in time, so nothing after it is needed
                    eof = True
            if pending is None:
                continue
            n = len(pending)
            band_done = band.run(
                pending.inst,
                pending.a,
                pending.b,
                pending.code,
                band_done,
                eof,
                *band_codes,
            )
            decided = order.run(
                pending.ts, pending.code, 0, band_done, eof and band_done == n, *order_codes
            )
            batch = self._release(pending.slice(0, decided), eof and decided == n)
            pending = pending.slice(decided)
            band_done -= decided
            if batch is not None and len(batch):
                released += len(batch)
                yield batch
        if self._first_ragged is not None:
            raise self._ragged_error(self._first_ragged)
        self.bad_rows.by_reason.update(self._counts)
        if seen + self._ragged == 0 and raw.groups_skipped == 0:
            raise DataError(str(self.path), "no data rows")
        if released == 0 and self._counts.total() == 0 and self._ranged:
            return  # nothing in the time range
        if released == 0:
            top = ", ".join(f"{n} x {r}" for r, n in self._counts.most_common(3))
            raise DataError(
                str(self.path),
                f"no valid rows: all {seen + self._ragged} data rows are bad ({top})",
            )

    def _release(self, rows: _Rows, last: bool) -> TickBatch | None:
        """The good ones of decided rows; under "raise" the first bad row (or ragged CSV
        row) before or among them raises."""
        ragged = self._first_ragged
        if self.on_bad_row == "raise":
            bad = np.flatnonzero(rows.code)
            first_row = int(rows.row[bad[0]]) if bad.shape[0] else None
            if (
                ragged is not None
                and ragged.row is not None
                and (
                    (first_row is not None and ragged.row < first_row)
                    or (len(rows) and ragged.row < int(rows.row[-1]))
                    or last
                )
            ):
                raise self._ragged_error(ragged)
            if first_row is not None:
                check = self._table[int(rows.code[bad[0]]) - 1]
                raise DataError(str(self.path), check.reason, row=first_row, column=check.column)
        if len(rows) == 0:
            return None
        counts = np.bincount(rows.code, minlength=len(self._table) + 1)
        if counts[0] < len(rows):
            for k in np.flatnonzero(counts[1:]):
                self._counts[self._table[int(k)].reason] += int(counts[k + 1])
            rows = rows.keep(rows.code == 0)
        if self.kind == "quotes":
            return TickBatch.quotes(
                rows.ts, rows.ts_recv, rows.inst, rows.a, rows.b, rows.c, rows.d
            )
        return TickBatch.trades(rows.ts, rows.ts_recv, rows.inst, rows.a, rows.c, rows.side)

    def _conversions(self) -> list[pl.Expr]:
        exprs: list[pl.Expr] = []
        for name in _TS_COLUMNS:
            if name in self._types:
                exprs += _ts_exprs(name, self._types[name])
        constant = self.layout.symbol
        if constant is not None:
            index = self.instruments.index.get(constant, -1)
            exprs.append(pl.lit(index, dtype=pl.Int32).alias("symbol"))
        else:
            text = pl.col("symbol").cast(pl.String)
            if self._types["symbol"] == "text" and self._csv:
                text = text.str.strip_chars()
            exprs.append(
                text.replace_strict(self.instruments.index, default=-1, return_dtype=pl.Int32)
                .fill_null(-1)
                .alias("symbol")
            )
        numbers = (
            ("bid", "ask", "bid_size", "ask_size") if self.kind == "quotes" else ("price", "size")
        )
        for c in numbers:
            col = pl.col(c)
            if self._types[c] == "text":  # CSV: spaces around a number are not an error
                col = col.str.strip_chars()
            exprs.append(col.cast(pl.Float64, strict=False).fill_null(np.nan).alias(c))
        if self._maker:
            maker = pl.col("is_buyer_maker").cast(pl.String).str.strip_chars().str.to_lowercase()
            # the buyer's order rested: the aggressor was the seller
            exprs.append(
                pl.when(maker.is_in(["true", "1"]))
                .then(-1)
                .when(maker.is_in(["false", "0"]))
                .then(1)
                .otherwise(0)
                .cast(pl.Int8)
                .alias("side")
            )
        elif self.kind == "trades":
            side = pl.col("side").cast(pl.String).str.strip_chars().str.to_lowercase()
            exprs.append(
                pl.when(side.is_in(["buy", "b", "1"]))
                .then(1)
                .when(side.is_in(["sell", "s", "-1"]))
                .then(-1)
                .otherwise(0)
                .cast(pl.Int8)
                .alias("side")
            )
        return exprs

    @property
    def _ranged(self) -> bool:
        return self.start_ns is not None or self.end_ns is not None

    def _convert(self, chunk: RawChunk) -> tuple[_Rows, bool]:
        """The chunk's rows in the time range, and whether every valid row lies after it."""
        try:
            df = chunk.frame.select(self._exprs)
        except pl.exceptions.PolarsError as exc:  # a value polars cannot convert at all
            detail = " ".join(str(exc).split())
            raise DataError(str(self.path), f"cannot read: {detail}") from exc
        n = df.height
        masks: dict[_Check, npt.NDArray[np.bool_]] = {}
        for col, bad in chunk.not_utf8.items():
            masks[_Check(col, NOT_UTF8)] = bad
        units = self.layout.ts_unit
        ts, status = _timestamps(
            df, "ts_event", self._types["ts_event"], self._unit_ns, units.get("ts_event", "ns")
        )
        ts_status = status
        _status_masks(masks, "ts_event", status, units.get("ts_event", "ns"))
        if "ts_recv" in self._types:
            unit = units.get("ts_recv", "ns")
            ts_recv, status = _timestamps(
                df, "ts_recv", self._types["ts_recv"], self._unit_ns, unit
            )
            absent = df["ts_recv__absent"].to_numpy()
            ts_recv = np.where(absent, ts, ts_recv)
            _status_masks(masks, "ts_recv", np.where(absent, 0, status), unit)
        else:
            ts_recv = ts
        inst = df["symbol"].to_numpy().astype(np.int32, copy=False)
        masks[_Check("symbol", UNKNOWN_SYMBOL)] = inst < 0
        cols = {
            c: df[c].to_numpy()
            for c in df.columns
            if c not in ("symbol", "side") and not c.startswith("ts_")
        }
        if self.kind == "quotes":
            a, b, c, d = cols["bid"], cols["ask"], cols["bid_size"], cols["ask_size"]
            for name, v in (("bid", a), ("ask", b)):
                _number_masks(masks, name, v, PRICE_BAD, PRICE_RANGE, PRICE_MIN, PRICE_MAX)
            for name, v in (("bid_size", c), ("ask_size", d)):
                _number_masks(
                    masks, name, v, QUOTE_SIZE_BAD, SIZE_RANGE, 0.0, SIZE_MAX, zero_ok=True
                )
            masks[_Check("ask", CROSSED)] = a >= b
            side = np.zeros(n, np.int8)
        else:
            a = b = cols["price"]
            c = d = cols["size"]
            _number_masks(masks, "price", a, PRICE_BAD, PRICE_RANGE, PRICE_MIN, PRICE_MAX)
            _number_masks(masks, "size", c, TRADE_SIZE_BAD, SIZE_RANGE, 0.0, SIZE_MAX)
            side = df["side"].to_numpy()
            masks[
                _Check("is_buyer_maker", MAKER_BAD) if self._maker else _Check("side", SIDE_BAD)
            ] = side == 0
        code = np.zeros(n, np.int8)
        for k, check in enumerate(self._table, start=1):
            mask = masks.get(check)
            if mask is not None and mask.any():
                code[(code == 0) & mask] = k
        rows = _Rows(chunk.rows, ts, ts_recv, inst, a, b, c, d, side, code)
        if not self._ranged:
            return rows, False
        valid = ts_status == 0
        before = valid & (ts < self.start_ns) if self.start_ns is not None else np.zeros(n, bool)
        after = valid & (ts >= self.end_ns) if self.end_ns is not None else np.zeros(n, bool)
        after_end = bool(valid.any()) and bool(after[valid].all())
        outside = before | after
        return (rows.keep(~outside) if outside.any() else rows), after_end
