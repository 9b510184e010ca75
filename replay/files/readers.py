"""Tick files (parquet, CSV) read in chunks, validated row by row, merged in time order.

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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.errors import DataError
from engine.instruments import InstrumentTable
from engine.ticks import TickBatch
from replay.files.formats import (
    QUOTE_COLUMNS,
    TRADE_COLUMNS,
    UNIT_WORDS,
    UNITS_NS,
    FileLayout,
    Kind,
    inspect_file,
)
from replay.files.plausibility import (
    PRICE_MAX,
    PRICE_MIN,
    SIZE_MAX,
    TS_MAX_NS,
    TS_MIN_NS,
    WINDOW,
    PriceBand,
    TimeOrder,
)
from replay.files.raw_files import RaggedRow, RawChunk, RawFile, TypeClass, is_tabular, total_rows

__all__ = [
    "BadRowCounts",
    "DataSource",
    "Discovery",
    "TickFileReader",
    "discover",
    "discover_files",
    "file_kind",
    "merge_streams",
    "prefetch",
    "rebatch",
    "total_rows",
]

BadRowPolicy = Literal["raise", "skip"]

_TS_COLUMNS = ("ts_event", "ts_recv")

NOT_UTF8 = "not UTF-8 text"
TS_MISSING = "timestamp missing or not int ns / ISO-8601"
TS_RANGE = "timestamp outside 2000-01-01 .. 2100-01-01"
TS_UNIT = "timestamp looks like {unit}, unlike the column's first rows ({expected})"
UNKNOWN_SYMBOL = "unknown symbol (not in [[instruments]])"
PRICE_BAD = "price is NaN, missing or not > 0"
PRICE_RANGE = f"price outside {PRICE_MIN:g} .. {PRICE_MAX:g}"
QUOTE_SIZE_BAD = "size is negative, NaN or missing"
TRADE_SIZE_BAD = "size is not > 0, NaN or missing"
SIZE_RANGE = f"size above {SIZE_MAX:g}"
CROSSED = "crossed or locked quote (bid >= ask)"
SIDE_BAD = "side is not buy/sell"
MAKER_BAD = "is_buyer_maker is not true/false"
PRICE_BAND = f"price more than 50% away from the median of the symbol's last {WINDOW} prices"
BACKWARDS = "timestamp goes backwards"
JUMPS = "timestamp jumps forward (the rows after it are earlier)"
RAGGED = "ragged row (field count differs from the header)"


def _ts_reasons(expected: str) -> tuple[str, ...]:
    """Timestamp status from ``_timestamps`` - 1 -> reason, for a column in ``expected``."""
    return (
        TS_MISSING,
        TS_RANGE,
        *(
            TS_UNIT.format(unit=UNIT_WORDS[u], expected=UNIT_WORDS[expected])
            for u in _guesses(expected)
        ),
    )


def _guesses(expected: str) -> list[str]:
    return [u for u in UNITS_NS if u != expected]


@dataclass
class BadRowCounts:
    """Rows dropped under ``on_bad_row="skip"``, by reason (each row once)."""

    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def file_kind(path: Path) -> Kind | None:
    """The kind a file's name suggests (``quote``/``trade`` in it): only a hint, used to
    name what is missing when its columns make no tick file."""
    name = path.name.lower()
    if not is_tabular(path):
        return None
    if "quote" in name:
        return "quotes"
    if "trade" in name:
        return "trades"
    return None


@dataclass(frozen=True)
class DataSource:
    """Where ticks come from, beyond a folder: files named with their kind, a column
    mapping and a time range.

    Attributes:
        path: a folder (every tick file in it, by its columns) or one file; may be None
            when files are named.
        quotes: files read as quotes (``--quotes``).
        trades: files read as trades (``--trades``).
        columns: tradeloop column name -> the files' name (``--columns``).
        start_ns: first ``ts_event`` kept (inclusive), ns since the epoch.
        end_ns: end of the range (exclusive).
    """

    path: Path | None = None
    quotes: tuple[Path, ...] = ()
    trades: tuple[Path, ...] = ()
    columns: Mapping[str, str] = field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None

    def __str__(self) -> str:
        parts = [str(p) for p in (self.path, *self.quotes, *self.trades) if p is not None]
        return ", ".join(parts)


@dataclass(frozen=True)
class Discovery:
    """The tick files of a source: each with its layout, the files skipped with the
    reason, and notes on how files are read."""

    files: list[FileLayout]
    skipped: list[tuple[Path, str]]

    @property
    def notes(self) -> list[str]:
        return [n for f in self.files for n in f.notes]

    @property
    def warnings(self) -> list[str]:
        return [f"skipped {p}: {reason}" for p, reason in self.skipped]

    def of_kind(self, kind: Kind) -> list[FileLayout]:
        return [f for f in self.files if f.kind == kind]


def _has_target(kind: str, target: str) -> bool:
    """Whether files of ``kind`` have tradeloop column ``target``."""
    if target in ("ts_recv", "symbol", "ts_event"):
        return True
    return target in (QUOTE_COLUMNS if kind == "quotes" else (*TRADE_COLUMNS, "is_buyer_maker"))


def as_source(data: str | Path | DataSource) -> DataSource:
    return data if isinstance(data, DataSource) else DataSource(path=Path(data))


def discover_files(data: str | Path | DataSource) -> Discovery:
    """The tick files of ``data``: files of a folder by their columns (files named with
    their kind as such), in name order.

    A file of a folder that is no tick file (another suffix, or columns that make
    neither quotes nor trades) is skipped and named in ``skipped``; a file whose name
    says quotes or trades but whose columns do not fit is an error naming what is
    missing.

    Raises:
        DataError: a path does not exist, a file cannot be read, or no tick file is found.
    """
    source = as_source(data)
    layouts: list[FileLayout] = []
    skipped: list[tuple[Path, str]] = []
    for kind, named in (("quotes", source.quotes), ("trades", source.trades)):
        for p in named:
            if not Path(p).is_file():
                raise DataError(str(p), "no such file")
            found = inspect_file(Path(p), kind=kind, columns=source.columns)  # type: ignore[arg-type]
            assert isinstance(found, FileLayout)
            layouts.append(found)
    root = source.path
    if root is not None:
        if not root.exists():
            raise DataError(str(root), "no such file or folder")
        files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file())
        named_files = {Path(p).resolve() for p in (*source.quotes, *source.trades)}
        for p in files:
            if p.resolve() in named_files:
                continue
            if not is_tabular(p):
                skipped.append((p, "not a .parquet, .csv or .csv.gz file"))
                continue
            found = inspect_file(p, columns=source.columns)
            if isinstance(found, str):
                hint = file_kind(p)
                if hint is None:
                    skipped.append((p, found))
                    continue
                # the name says what it should be: the reader names the missing column
                found = inspect_file(p, kind=hint, columns=source.columns)
                assert isinstance(found, FileLayout)
            layouts.append(found)
    if not layouts:
        where = str(root) if root is not None else str(source)
        detail = "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
        raise DataError(
            where,
            "no tick files found (parquet or CSV with quote or trade columns)"
            + (f": {detail}" if detail else ""),
        )
    # a mapping that names a column no file has is a typo, not a no-op: without this the
    # replay ran on the files' own columns and said nothing
    # (checked against the files of the kinds that have that column: a config's mapping
    # for trade columns is no typo on a folder of quotes)
    unused = [
        f"{target}={column}"
        for target, column in source.columns.items()
        if any(_has_target(layout.kind, target) for layout in layouts)
        and not any(layout.rename.get(column) == target for layout in layouts)
    ]
    if unused:
        raise DataError(
            "--columns/[columns]",
            f"{', '.join(unused)}: no tick file has such a column",
        )
    return Discovery(layouts, skipped)


def discover(data: str | Path | DataSource) -> tuple[list[Path], list[Path]]:
    """Quote and trade files under ``data`` (a folder, or one file), sorted by name.

    Raises:
        DataError: nothing readable found.
    """
    found = discover_files(data)
    return [f.path for f in found.of_kind("quotes")], [f.path for f in found.of_kind("trades")]


@dataclass(frozen=True)
class _Check:
    column: str
    reason: str


@dataclass(frozen=True)
class _Rows:
    """Typed columns of rows not yet released, with each row's first failed check in
    ``code`` (0: none so far). Quotes: a, b, c, d = bid, ask, bid_size, ask_size;
    trades: a = b = price, c = d = size."""

    row: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    ts_recv: npt.NDArray[np.int64]
    inst: npt.NDArray[np.int32]
    a: npt.NDArray[np.float64]
    b: npt.NDArray[np.float64]
    c: npt.NDArray[np.float64]
    d: npt.NDArray[np.float64]
    side: npt.NDArray[np.int8]
    code: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def _map(self, fn: Callable[[npt.NDArray[Any]], npt.NDArray[Any]]) -> _Rows:
        return _Rows(*(fn(getattr(self, f.name)) for f in fields(self)))

    def slice(self, start: int, stop: int | None = None) -> _Rows:
        return self._map(lambda v: v[start:stop])

    def keep(self, mask: npt.NDArray[np.bool_]) -> _Rows:
        return self._map(lambda v: v[mask])

    def append(self, other: _Rows) -> _Rows:
        if len(self) == 0:
            return other
        return _Rows(
            *(np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self))
        )


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


def _status_masks(
    masks: dict[_Check, npt.NDArray[np.bool_]],
    column: str,
    status: npt.NDArray[np.int8],
    unit: str,
) -> None:
    if status.any():
        for k, reason in enumerate(_ts_reasons(unit), start=1):
            masks[_Check(column, reason)] = status == k


def _number_masks(
    masks: dict[_Check, npt.NDArray[np.bool_]],
    column: str,
    v: npt.NDArray[np.float64],
    bad: str,
    out_of_range: str,
    low: float,
    high: float,
    *,
    zero_ok: bool = False,
) -> None:
    """``bad``: NaN, missing, not > 0 (or < 0 with ``zero_ok``); ``out_of_range``: outside
    [low, high]. One pass when every value is fine (the common case)."""
    sign_ok = (v >= 0) if zero_ok else (v > 0)
    fine = sign_ok & (v >= low) & (v <= high)  # NaN and inf fail it too
    if fine.all():
        return
    masks[_Check(column, bad)] = ~sign_ok | ~np.isfinite(v)
    masks[_Check(column, out_of_range)] = ~fine


def _ts_exprs(name: str, cls: TypeClass) -> list[pl.Expr]:
    """Columns ``name`` (Int64: ns for ISO text, else the stored value), for text
    ``name__iso`` (parsed as ISO-8601) and ``name__us`` (the same instant in us, whose
    range shows an ISO date that ns overflow wrapped), and for ``ts_recv``
    ``name__absent`` (no value: it defaults to ``ts_event``)."""
    col = pl.col(name)
    if cls != "text":
        exprs = [col.cast(pl.Int64, strict=False).alias(name)]
        absent = col.is_null()
    else:
        text = col.str.strip_chars()
        is_int = text.str.contains(r"^-?\d+$")
        iso_ns = text.str.to_datetime(time_unit="ns", time_zone="UTC", strict=False)
        iso_us = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        exprs = [
            pl.when(is_int)
            .then(text.cast(pl.Int64, strict=False))
            .otherwise(iso_ns.dt.epoch("ns"))
            .alias(name),
            (~is_int & text.is_not_null()).alias(f"{name}__iso"),
            pl.when(is_int).then(None).otherwise(iso_us.dt.epoch("us")).alias(f"{name}__us"),
        ]
        absent = text.is_null() | (text == "")
    if name == "ts_recv":
        exprs.append(absent.alias(f"{name}__absent"))
    return exprs


def _timestamps(
    df: pl.DataFrame, name: str, cls: TypeClass, unit_ns: dict[str, int], unit: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    """ns values and a status per row: 0 ok, then the index in ``_ts_reasons(unit)`` + 1.

    Integers count in ``unit`` (found by magnitude for the file), an arrow timestamp in
    its declared unit; ISO text is ns already."""
    s = df[name]
    missing = s.is_null().to_numpy()
    v = s.fill_null(0).to_numpy().astype(np.int64, copy=False)
    status = np.where(missing, 1, 0).astype(np.int8)
    factor = unit_ns.get(name, 1) if cls == "timestamp" else UNITS_NS[unit]
    lo, hi = -(-TS_MIN_NS // factor), -(-TS_MAX_NS // factor)
    ok = ~missing & (v >= lo) & (v < hi)
    scaled = ok
    if cls == "text":
        iso = df[f"{name}__iso"].to_numpy()
        if iso.any():
            us = df[f"{name}__us"].fill_null(0).to_numpy()
            iso_ok = ~missing & (us >= TS_MIN_NS // 1000) & (us < TS_MAX_NS // 1000)
            ok = np.where(iso, iso_ok, ok)
            scaled = ok & ~iso
    out_of_range = ~missing & ~ok
    if out_of_range.any():
        status[out_of_range] = 2
        if cls != "timestamp":  # a declared unit needs no guess
            guessable = out_of_range
            if cls == "text":
                guessable = guessable & ~df[f"{name}__iso"].to_numpy()
            for k, other in enumerate(_guesses(unit), start=3):
                per = UNITS_NS[other]
                looks = guessable & (v >= -(-TS_MIN_NS // per)) & (v < -(-TS_MAX_NS // per))
                status[looks] = k
    if factor != 1:
        # zero the rows out of range first: scaling them could overflow int64
        v = np.where(ok, v, 0)
        v = np.where(scaled, v * factor, v)
    return v, status


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
