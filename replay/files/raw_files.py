"""The file boundary of tick files: parquet and CSV opened with pyarrow, read in chunks.

Every error pyarrow or polars raises on a file (a broken footer, a corrupt page, a
header that is not UTF-8, duplicated column names, a row with the wrong number of
fields) is translated here, where it enters, into ``DataError`` naming the file and,
where one exists, the row. What comes out is plain: the needed columns under tradeloop's
names (a file's own names are renamed here), with a known type class, 0-based data row
numbers, and for CSV the cells that are not UTF-8 text. CSV may be gzip-compressed
(``.csv.gz``) and may have no header line (the caller names the columns).
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

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
TABULAR_SUFFIXES = (".parquet", ".csv", ".csv.gz")
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

    ``names`` are the file's own column names, ``types`` (and the chunks' columns) use
    tradeloop's names: ``rename`` maps a file's name to tradeloop's; a column renamed
    onto a name the file also has hides the file's own column of that name.

    Args:
        path: parquet or CSV file (``.csv.gz`` is decompressed).
        wanted: the columns to read (tradeloop's names), if present (others are never
            decoded).
        chunk_rows: rows per chunk.
        on_ragged: called once per ragged CSV row, in file order, before the chunk that
            follows it; the row is left out of the chunks.
        rename: the file's column name -> tradeloop's.
        header: the column names of a CSV without a header line (its first line is data).
        ts_range: ``(column, start_ns, end_ns, ns_per_integer)``: parquet row groups
            whose statistics show every value of ``column`` (tradeloop's name) outside
            ``[start_ns, end_ns)`` are not read (an integer column counts in
            ``ns_per_integer``, an arrow timestamp in its own unit).

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
        *,
        rename: dict[str, str] | None = None,
        header: tuple[str, ...] | None = None,
        ts_range: tuple[str, int | None, int | None, int] | None = None,
    ) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self._on_ragged = on_ragged
        self._header = header
        self._ts_range = ts_range
        self.types: dict[str, TypeClass] = {}
        self.ts_unit_ns: dict[str, int] = {}
        self.is_csv = not path.name.lower().endswith(".parquet")
        self.groups_skipped = 0
        if not self.is_csv:
            self.names = self._open_parquet()
        else:
            self.names = self._open_csv_header()
        # tradeloop name -> the file's column; an explicit rename wins over a same name
        self.source: dict[str, str] = {}
        renamed = rename or {}
        for name in self.names:
            target = renamed.get(name, name)
            if target not in self.source or name in renamed:
                self.source[target] = name
        own = dict(self.types)
        self.types = {t: own[n] for t, n in self.source.items()}
        self.ts_unit_ns = {
            t: self.ts_unit_ns[n] for t, n in self.source.items() if n in self.ts_unit_ns
        }
        self._read = [c for c in wanted if c in self.types]
        self._read_source = [self.source[c] for c in self._read]

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

    def _outside(self, k: int) -> bool:
        """Row group ``k``'s statistics show no value of the range's column inside it."""
        if self._ts_range is None:
            return False
        name, start_ns, end_ns, per = self._ts_range
        column = self.source.get(name)
        if column is None:
            return False
        per = self.ts_unit_ns.get(name, per)
        low = -(2**63) if start_ns is None else start_ns // per
        high = 2**63 - 1 if end_ns is None else -(-end_ns // per)
        meta = self._pf.metadata.row_group(k)
        for j in range(meta.num_columns):
            chunk = meta.column(j)
            if chunk.path_in_schema != column:
                continue
            stats = chunk.statistics
            if stats is None or not stats.has_min_max or stats.physical_type != "INT64":
                return False
            return bool(int(stats.max_raw) < low or int(stats.min_raw) >= high)
        return False

    def _parquet_chunks(self) -> Iterator[RawChunk]:
        offset = 0
        for k in range(self._pf.num_row_groups):
            if self._outside(k):
                # row numbers stay the file's own: the skipped rows still count
                offset += self._pf.metadata.row_group(k).num_rows
                self.groups_skipped += 1
                continue
            batches = self._pf.iter_batches(
                batch_size=self.chunk_rows, row_groups=[k], columns=self._read_source
            )
            while True:
                try:
                    rb = next(batches, None)
                    if rb is None:
                        break
                    # full validation refuses invalid UTF-8 and bad offsets that polars
                    # would otherwise panic on
                    rb.validate(full=True)
                    frame = _to_polars(_normalise(rb)).rename(
                        dict(zip(self._read_source, self._read, strict=True))
                    )
                except (Exception, _PANIC) as exc:
                    raise self._error(f"cannot read row group {k}", exc) from exc
                rows = np.arange(offset, offset + frame.height, dtype=np.int64)
                offset += frame.height
                yield RawChunk(frame, rows, {})

    def _open_csv_header(self) -> list[str]:
        try:
            with _open_text_bytes(self.path) as f:
                head = f.readline()
                rest = f.read(_HEADER_PEEK_BYTES)
        except (OSError, EOFError) as exc:  # gzip: a truncated or not-gzip file
            raise self._error("cannot open", exc) from exc
        if self._header is not None:
            self._csv_names = list(self._header)
            self._csv_has_rows = bool(head.strip() or rest.strip())
            for n in self._csv_names:
                self.types[n] = "text"
            return list(self._header)
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

        # pyarrow numbers records from 1 with the header as record 1 (blank lines are not
        # records), so the 0-based data row is number - 2 (number - 1 without a header)
        first_record = 1 if self._header is not None else 2

        def invalid_row(row: pacsv.InvalidRow) -> str:
            data_row = None if row.number is None else int(row.number) - first_record
            if data_row is not None:
                skipped.append(data_row - len(skipped))
            self._on_ragged(RaggedRow(data_row, int(row.actual_columns), expected))
            return "skip"

        try:
            reader = pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(
                    column_names=self._csv_names,
                    skip_rows=0 if self._header is not None else 1,
                    use_threads=False,  # the ragged-row callback needs record numbers
                    block_size=max(1 << 20, self.chunk_rows * 64),
                    encoding=_LENIENT_UTF8,
                ),
                parse_options=pacsv.ParseOptions(invalid_row_handler=invalid_row),
                # every cell as text, numbers parsed per cell later, so a bad cell is a
                # reported bad row instead of a parser exception
                convert_options=pacsv.ConvertOptions(
                    include_columns=self._read_source,
                    column_types={n: pa.string() for n in self._read_source},
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
                frame = _to_polars(rb).select(self._read_source)
                frame = frame.rename(dict(zip(self._read_source, self._read, strict=True)))
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
    if any(not p.name.lower().endswith(".parquet") for p in paths):
        return None
    total = 0
    for p in paths:
        try:
            total += int(pq.ParquetFile(p).metadata.num_rows)
        except (Exception, _PANIC) as exc:  # see RawFile._open_parquet
            detail = " ".join(str(exc).split())
            raise DataError(str(p), f"not a readable parquet file: {detail}") from exc
    return total


def _open_text_bytes(path: Path) -> gzip.GzipFile | BinaryIO:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def is_tabular(path: Path) -> bool:
    """A file tick data may be in: parquet, CSV or gzip-compressed CSV (by name)."""
    return path.name.lower().endswith(TABULAR_SUFFIXES)


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
