"""The file boundary of tick files: parquet and CSV opened with pyarrow, read in chunks.

Every error pyarrow or polars raises on a file (a broken footer, a corrupt page, a
header that is not UTF-8, duplicated column names, a row with the wrong number of
fields) is translated here, where it enters, into ``DataError`` naming the file and,
where one exists, the row. What comes out is plain: the needed columns with a known
type class, 0-based data row numbers, and for CSV the cells that are not UTF-8 text.
"""

from __future__ import annotations

import codecs
import csv
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import DataError

TypeClass = Literal["int64", "int", "float", "timestamp", "text", "bool", "other"]
"""How a column is stored: ``int64`` (64-bit integers), ``int`` (narrower integers),
``float`` (floats and decimals), ``timestamp`` (an arrow timestamp, read as int64 in its
unit), ``text``, ``bool``, or ``other`` (anything else; never read)."""

# polars panics (a BaseException) instead of raising on some malformed arrow input
_PANIC = pl.exceptions.PanicException
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_HEADER_PEEK_BYTES = 1 << 16
# CSV bytes that are not UTF-8 become U+FFFD on the way into pyarrow: its ragged-row
# callback decodes the row text strictly and, on such a row, prints an "Exception ignored"
# traceback and aborts the file instead of calling us
_LENIENT_UTF8 = "tradeloop_utf8_replace"
_REPLACEMENT = "\ufffd"


def _find_codec(name: str) -> codecs.CodecInfo | None:
    if name != _LENIENT_UTF8:
        return None
    utf8 = codecs.lookup("utf-8")
    lenient = functools.partial(utf8.incrementaldecoder, errors="replace")
    return codecs.CodecInfo(
        utf8.encode, utf8.decode, name=_LENIENT_UTF8, incrementaldecoder=lenient
    )


codecs.register(_find_codec)


@dataclass(frozen=True)
class RawChunk:
    """Needed columns of up to ``chunk_rows`` consecutive data rows.

    ``rows`` is the 0-based data row of each frame row (CSV rows dropped as ragged are
    skipped in it); ``not_utf8`` marks, per CSV column, cells whose bytes are not UTF-8
    (they are null in ``frame``).
    """

    frame: pl.DataFrame
    rows: npt.NDArray[np.int64]
    not_utf8: dict[str, npt.NDArray[np.bool_]]


@dataclass(frozen=True)
class RaggedRow:
    """A CSV row whose field count differs from the header's."""

    row: int | None
    fields: int
    expected: int


class RawFile:
    """An opened tick file: its column names and type classes, and its chunks.

    Args:
        path: parquet or CSV file.
        wanted: the columns to read, if present (others are never decoded).
        chunk_rows: rows per chunk.
        on_ragged: called once per ragged CSV row, in file order, before the chunk that
            follows it; the row is left out of the chunks.

    Raises:
        DataError: the file cannot be opened, its header is not UTF-8, or column names
            repeat.
    """

    def __init__(
        self,
        path: Path,
        wanted: tuple[str, ...],
        chunk_rows: int,
        on_ragged: Callable[[RaggedRow], None],
    ) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self._on_ragged = on_ragged
        self.types: dict[str, TypeClass] = {}
        self.ts_unit_ns: dict[str, int] = {}
        self.is_csv = path.suffix.lower() != ".parquet"
        if not self.is_csv:
            self.names = self._open_parquet()
        else:
            self.names = self._open_csv_header()
        self._read = [c for c in wanted if c in self.types]

    def _error(self, reason: str, exc: BaseException | None = None) -> DataError:
        # one line, whatever the library put in its message
        detail = ": " + " ".join(str(exc).split()) if exc is not None else ""
        return DataError(str(self.path), f"{reason}{detail}")

    def _open_parquet(self) -> list[str]:
        try:
            # one row group at a time, no read-ahead: pyarrow's default pre-buffering held
            # ~400 MiB on a 15 M-row file; this holds one row group (measured)
            self._pf = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
            schema = self._pf.schema_arrow
        except (Exception, _PANIC) as exc:  # pyarrow raises OSError, ArrowException,
            # UnicodeDecodeError, ... on a broken footer: all mean the same to a user
            raise self._error("not a readable parquet file", exc) from exc
        names = list(schema.names)
        _refuse_duplicates(self.path, names)
        for f in schema:
            self.types[f.name] = _arrow_class(f.type)
            if pa.types.is_timestamp(f.type):
                self.ts_unit_ns[f.name] = _NS_PER_UNIT[f.type.unit]
        return names

    def _parquet_chunks(self) -> Iterator[RawChunk]:
        offset = 0
        for k in range(self._pf.num_row_groups):
            batches = self._pf.iter_batches(
                batch_size=self.chunk_rows, row_groups=[k], columns=self._read
            )
            while True:
                try:
                    rb = next(batches, None)
                    if rb is None:
                        break
                    # full validation refuses invalid UTF-8 and bad offsets that polars
                    # would otherwise panic on
                    rb.validate(full=True)
                    frame = _to_polars(_normalise(rb))
                except (Exception, _PANIC) as exc:
                    raise self._error(f"cannot read row group {k}", exc) from exc
                rows = np.arange(offset, offset + frame.height, dtype=np.int64)
                offset += frame.height
                yield RawChunk(frame, rows, {})

    def _open_csv_header(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                head = f.readline()
                rest = f.read(_HEADER_PEEK_BYTES)
        except OSError as exc:
            raise self._error("cannot open", exc) from exc
        if not head.strip():
            raise self._error("empty file (no header line)")
        try:
            text = head.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
        except UnicodeDecodeError as exc:
            raise self._error(
                f"header line is not UTF-8 text (byte {head[exc.start]:#04x} at offset {exc.start})"
            ) from exc
        names = [n.strip() for n in next(csv.reader([text.rstrip("\r\n")]))]
        _refuse_duplicates(self.path, [n for n in names if n])
        # unnamed columns (trailing commas) get private names; nobody reads them
        self._csv_names = [n or f"__unnamed_{i}" for i, n in enumerate(names)]
        self._csv_has_rows = bool(rest.strip())
        for n in self._csv_names:
            self.types[n] = "text"
        return names

    def _csv_chunks(self) -> Iterator[RawChunk]:
        if not self._csv_has_rows:
            return
        skipped: list[int] = []  # survivor index at which each ragged row was dropped
        expected = len(self._csv_names)

        def invalid_row(row: pacsv.InvalidRow) -> str:
            # pyarrow numbers records from 1 with the header as record 1 (blank lines
            # are not records), so the 0-based data row is number - 2
            data_row = None if row.number is None else int(row.number) - 2
            if data_row is not None:
                skipped.append(data_row - len(skipped))
            self._on_ragged(RaggedRow(data_row, int(row.actual_columns), expected))
            return "skip"

        try:
            reader = pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(
                    column_names=self._csv_names,
                    skip_rows=1,
                    use_threads=False,  # the ragged-row callback needs record numbers
                    block_size=max(1 << 20, self.chunk_rows * 64),
                    encoding=_LENIENT_UTF8,
                ),
                parse_options=pacsv.ParseOptions(invalid_row_handler=invalid_row),
                # every cell as text, numbers parsed per cell later, so a bad cell is a
                # reported bad row instead of a parser exception
                convert_options=pacsv.ConvertOptions(
                    include_columns=self._read,
                    column_types={n: pa.string() for n in self._read},
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
        except (Exception, _PANIC) as exc:
            raise self._error("cannot read", exc) from exc
        survivors = 0
        consumed = 0  # entries of ``skipped`` at or before the current chunk's start
        while True:
            try:
                rb = next(reader, None)
                if rb is None:
                    return
                frame = _to_polars(rb)
            except (Exception, _PANIC) as exc:
                raise self._error("cannot read", exc) from exc
            n = frame.height
            index = np.arange(survivors, survivors + n, dtype=np.int64)
            while consumed < len(skipped) and skipped[consumed] <= survivors:
                consumed += 1
            before = np.searchsorted(np.asarray(skipped[consumed:], np.int64), index, "right")
            rows = index + consumed + before
            survivors += n
            text, not_utf8 = _decode_text(frame)
            yield RawChunk(text, rows, not_utf8)

    def chunks(self) -> Iterator[RawChunk]:
        """The file's chunks, in order.

        Raises:
            DataError: a chunk cannot be read (corrupt page, bad compression, ...).
        """
        return self._csv_chunks() if self.is_csv else self._parquet_chunks()


def total_rows(paths: list[Path]) -> int | None:
    """Rows in all files without reading them (parquet metadata), for progress bars;
    None when any file is CSV (its length is unknown until read).

    Raises:
        DataError: a parquet footer cannot be read (names the file).
    """
    if any(p.suffix.lower() != ".parquet" for p in paths):
        return None
    total = 0
    for p in paths:
        try:
            total += int(pq.ParquetFile(p).metadata.num_rows)
        except (Exception, _PANIC) as exc:  # see RawFile._open_parquet
            detail = " ".join(str(exc).split())
            raise DataError(str(p), f"not a readable parquet file: {detail}") from exc
    return total


def _refuse_duplicates(path: Path, names: list[str]) -> None:
    dup = sorted(n for n, k in Counter(names).items() if k > 1)
    if dup:
        raise DataError(str(path), f"duplicate column names {dup}: each column must be unique")


def _arrow_class(t: pa.DataType) -> TypeClass:
    if pa.types.is_dictionary(t):
        return "text" if _is_text(t.value_type) else "other"
    if pa.types.is_int64(t) or pa.types.is_uint64(t):
        return "int64"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal128(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if _is_text(t):
        return "text"
    if pa.types.is_boolean(t):
        return "bool"
    return "other"


def _is_text(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )


def _normalise(rb: pa.RecordBatch) -> pa.RecordBatch:
    """Arrow columns as types polars takes without surprises: timestamps as their int64
    value in their own unit (polars would rescale and overflow silently), dictionaries
    decoded, half floats widened."""
    columns = []
    for col in rb.columns:
        t = col.type
        if pa.types.is_timestamp(t):
            col = col.view(pa.int64())
        elif pa.types.is_dictionary(t):
            col = col.dictionary_decode()
        elif pa.types.is_float16(t):
            col = col.cast(pa.float32())
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=rb.schema.names)


def _to_polars(rb: pa.RecordBatch) -> pl.DataFrame:
    frame = pl.from_arrow(rb)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _decode_text(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, npt.NDArray[np.bool_]]]:
    """Cells that held bytes that are not UTF-8 (now U+FFFD) become null and are marked."""
    not_utf8: dict[str, npt.NDArray[np.bool_]] = {}
    for s in frame.iter_columns():
        bad = s.str.contains(_REPLACEMENT, literal=True).fill_null(False)
        if bad.any():
            not_utf8[s.name] = bad.to_numpy()
    if not_utf8:
        frame = frame.with_columns(
            pl.when(pl.Series(bad)).then(None).otherwise(pl.col(name)).alias(name)
            for name, bad in not_utf8.items()
        )
    return frame, not_utf8
