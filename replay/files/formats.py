"""What a tick file holds, told from its columns: tradeloop's own schema, the public
formats users already have, or the user's own names through a column mapping.

A file's kind (quotes or trades) comes from its columns, never from its name. The
public formats are read by their documented columns:

- Binance (data.binance.vision) ``bookTicker`` CSV: quotes; ``aggTrades`` and
  ``trades`` CSV: trades, with or without a header line (older dumps and spot files
  have none; spot files add ``is_best_match``). These files carry no symbol: it is
  the file name's first part (``BTCUSDT-bookTicker-2024-01-01.csv``).
  ``is_buyer_maker = true`` means the buyer's order rested, so the aggressor SOLD.
- Tardis.dev ``quotes`` and ``trades`` CSV (µs timestamps): ``timestamp`` (the
  exchange's) is ``ts_event``, ``local_timestamp`` (Tardis's arrival) is ``ts_recv``.

Integer timestamps in seconds, milliseconds, microseconds or nanoseconds are told
apart by magnitude (the four ranges of 2000..2100 do not overlap) from the file's
first rows and converted to ns; a row in another unit is then a bad row naming it.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.errors import ConfigError, DataError
from replay.files.plausibility import TS_MAX_NS, TS_MIN_NS
from replay.files.raw_files import RaggedRow, RawFile

__all__ = [
    "FORMATS",
    "QUOTE_COLUMNS",
    "TRADE_COLUMNS",
    "FileLayout",
    "TickFormat",
    "detect_unit",
    "inspect_file",
    "parse_column_mapping",
    "parse_time_ns",
    "symbol_from_name",
]

Kind = Literal["quotes", "trades"]

QUOTE_COLUMNS = ("ts_event", "symbol", "bid", "ask", "bid_size", "ask_size")
TRADE_COLUMNS = ("ts_event", "symbol", "price", "size", "side")
TS_COLUMNS = ("ts_event", "ts_recv")
# tradeloop names a mapping may target
TARGETS = frozenset({*QUOTE_COLUMNS, *TRADE_COLUMNS, "ts_recv", "is_buyer_maker"})

UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
UNIT_WORDS = {"ns": "nanoseconds", "us": "microseconds", "ms": "milliseconds", "s": "seconds"}
# rows read from a file's start to tell the timestamp unit
_UNIT_SAMPLE_ROWS = 4096
_SYMBOL_IN_NAME = re.compile(r"^([A-Za-z0-9]+)-")


@dataclass(frozen=True)
class TickFormat:
    """A public tick-file format, by its documented columns.

    Attributes:
        name: how notes and errors call it.
        kind: ``quotes`` or ``trades``.
        columns: the documented header, in order (a file without a header gets these
            names, or these plus ``headerless_extra``).
        rename: documented column -> tradeloop column.
        symbol_in_name: the file has no symbol column: it is the file name's first part.
        venue: the venue of instruments inferred from such files.
        headerless_extra: trailing columns of the header-less variant (spot dumps).
    """

    name: str
    kind: Kind
    columns: tuple[str, ...]
    rename: Mapping[str, str]
    symbol_in_name: bool = False
    venue: str = "SIM"
    headerless_extra: tuple[str, ...] = ()


FORMATS: tuple[TickFormat, ...] = (
    TickFormat(
        "Binance bookTicker",
        "quotes",
        (
            "update_id",
            "best_bid_price",
            "best_bid_qty",
            "best_ask_price",
            "best_ask_qty",
            "transaction_time",
            "event_time",
        ),
        {
            "best_bid_price": "bid",
            "best_bid_qty": "bid_size",
            "best_ask_price": "ask",
            "best_ask_qty": "ask_size",
            "transaction_time": "ts_event",
            "event_time": "ts_recv",
        },
        symbol_in_name=True,
        venue="BINANCE",
    ),
    TickFormat(
        "Binance aggTrades",
        "trades",
        (
            "agg_trade_id",
            "price",
            "quantity",
            "first_trade_id",
            "last_trade_id",
            "transact_time",
            "is_buyer_maker",
        ),
        {"quantity": "size", "transact_time": "ts_event"},
        symbol_in_name=True,
        venue="BINANCE",
        headerless_extra=("is_best_match",),
    ),
    TickFormat(
        "Binance trades",
        "trades",
        ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker"),
        {"qty": "size", "time": "ts_event"},
        symbol_in_name=True,
        venue="BINANCE",
        headerless_extra=("is_best_match",),
    ),
    TickFormat(
        "Tardis quotes",
        "quotes",
        (
            "exchange",
            "symbol",
            "timestamp",
            "local_timestamp",
            "ask_amount",
            "ask_price",
            "bid_price",
            "bid_amount",
        ),
        {
            "timestamp": "ts_event",
            "local_timestamp": "ts_recv",
            "ask_amount": "ask_size",
            "ask_price": "ask",
            "bid_price": "bid",
            "bid_amount": "bid_size",
        },
    ),
    TickFormat(
        "Tardis trades",
        "trades",
        ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"),
        {"timestamp": "ts_event", "local_timestamp": "ts_recv", "amount": "size"},
    ),
)

_BOOL_COLUMNS = frozenset({"is_buyer_maker", "is_best_match"})


@dataclass(frozen=True)
class FileLayout:
    """How to read one tick file.

    Attributes:
        path: the file.
        kind: ``quotes`` or ``trades``.
        format: ``tradeloop`` or a public format's name.
        rename: the file's column -> tradeloop's.
        header: the column names of a CSV without a header line.
        symbol: the symbol of every row when the file has no symbol column.
        venue: venue of instruments inferred from the file.
        ts_unit: per timestamp column (tradeloop's name), the unit of its integers
            (``s``, ``ms``, ``us``, ``ns``), found by magnitude.
        maker_side: trades whose aggressor side comes from ``is_buyer_maker``.
        notes: what a user should know about how the file is read.
    """

    path: Path
    kind: Kind
    format: str = "tradeloop"
    rename: Mapping[str, str] = field(default_factory=dict)
    header: tuple[str, ...] | None = None
    symbol: str | None = None
    venue: str = "SIM"
    ts_unit: Mapping[str, str] = field(default_factory=dict)
    maker_side: bool = False
    notes: tuple[str, ...] = ()

    def ts_factor(self, column: str) -> int:
        """ns per stored integer of timestamp ``column``."""
        return UNITS_NS[self.ts_unit.get(column, "ns")]


def parse_column_mapping(text: str) -> dict[str, str]:
    """``"ts_event=time,bid=best_bid"`` -> ``{"ts_event": "time", "bid": "best_bid"}``
    (tradeloop's name = the file's name).

    Raises:
        DataError: an entry without ``=``, an unknown tradeloop name, or a name mapped twice.
    """
    mapping: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        target, sep, source = (part.strip() for part in entry.partition("="))
        if not sep or not target or not source:
            raise DataError("--columns", f"{entry!r} is not NAME=COLUMN")
        if target not in TARGETS:
            raise DataError(
                "--columns", f"{target!r} is not a tick column ({', '.join(sorted(TARGETS))})"
            )
        if target in mapping:
            raise DataError("--columns", f"{target!r} is mapped twice")
        mapping[target] = source
    return mapping


def config_column_mapping(columns: Mapping[str, str]) -> dict[str, str]:
    """A config's ``[columns]`` table (tradeloop name -> the files' name), checked as
    ``--columns`` is.

    Raises:
        ConfigError: a key that is not a tick column, named ``columns.KEY``.
    """
    for target in columns:
        if target not in TARGETS:
            raise ConfigError(
                f"columns.{target}",
                f"{target!r} is not a tick column ({', '.join(sorted(TARGETS))})",
            )
    return dict(columns)


def symbol_from_name(path: Path) -> str | None:
    """``BTCUSDT-bookTicker-2024-01-01.csv`` -> ``BTCUSDT``; None for other names."""
    m = _SYMBOL_IN_NAME.match(path.name)
    return m.group(1) if m else None


def detect_unit(values: npt.NDArray[np.int64]) -> str | None:
    """The unit most of ``values`` are plausible in (2000..2100), or None if none is."""
    best, best_count = None, 0
    for unit, per in UNITS_NS.items():
        count = int(
            np.count_nonzero((values >= -(-TS_MIN_NS // per)) & (values < TS_MAX_NS // per))
        )
        if count > best_count:
            best, best_count = unit, count
    return best


def _kind_of(names: set[str]) -> tuple[Kind | None, str]:
    """The kind tradeloop's column names make, or None with what is missing."""
    trades_ok = {"ts_event", "price", "size"} <= names and bool(names & {"side", "is_buyer_maker"})
    quotes_ok = {"ts_event", "bid", "ask", "bid_size", "ask_size"} <= names
    if quotes_ok and trades_ok:
        return None, "has both quote and trade columns: name it with --quotes or --trades"
    if quotes_ok:
        return "quotes", ""
    if trades_ok:
        return "trades", ""
    missing_q = [c for c in QUOTE_COLUMNS if c != "symbol" and c not in names]
    missing_t = [c for c in TRADE_COLUMNS if c != "symbol" and c not in names]
    return None, (
        f"columns {sorted(names)} are neither quotes (missing {missing_q}) nor trades "
        f"(missing {missing_t}); map them with --columns"
    )


def _ignore(_row: RaggedRow) -> None:
    pass  # a ragged row is the reader's to report


def _is_bool(text: str) -> bool:
    return text.strip().lower() in ("true", "false")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _headerless(first: list[str]) -> TickFormat | None:
    """The Binance format a header-less CSV's first row fits: by field count and where
    its true/false fields are."""
    for fmt in FORMATS:
        if not fmt.symbol_in_name:
            continue
        for names in (fmt.columns, fmt.columns + fmt.headerless_extra):
            if len(names) != len(first):
                continue
            if all(
                _is_bool(v) if n in _BOOL_COLUMNS else _is_number(v)
                for n, v in zip(names, first, strict=True)
            ):
                return fmt
    return None


def _first_csv_row(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:
            line = f.readline()
    except (OSError, EOFError) as exc:  # gzip: truncated or not gzip at all
        raise DataError(str(path), f"cannot open: {' '.join(str(exc).split())}") from exc
    if not line.strip():
        return []
    return [v.strip() for v in next(csv.reader([line.rstrip("\r\n")]))]


def _match(
    names: list[str], mapping: Mapping[str, str]
) -> tuple[TickFormat | None, dict[str, str]]:
    """The public format whose documented columns a header has, and the file's column ->
    tradeloop's renames (the user's mapping on top)."""
    present = set(names)
    fmt = next((f for f in FORMATS if set(f.columns) <= present), None)
    rename = dict(fmt.rename) if fmt else {}
    for target, source in mapping.items():
        if source in present:
            rename = {s: t for s, t in rename.items() if t != target}
            rename[source] = target
    return fmt, rename


def inspect_file(
    path: Path, *, kind: Kind | None = None, columns: Mapping[str, str] | None = None
) -> FileLayout | str:
    """Tell how to read ``path``: its kind, format, renames, symbol and timestamp units.

    Args:
        path: a parquet or CSV (``.csv.gz``) file.
        kind: the kind the user named the file with (``--quotes``/``--trades``), or None
            to tell it from the columns.
        columns: the user's mapping, tradeloop name -> the file's column name.

    Returns:
        The layout, or (when ``kind`` is None) the reason the file is no tick file.

    Raises:
        DataError: the file cannot be opened or read; a named file has no symbol column
            and no symbol in its name.
    """
    mapping = dict(columns or {})
    named = kind is not None
    notes: list[str] = []
    header: tuple[str, ...] | None = None
    fmt: TickFormat | None = None
    is_csv = not path.name.lower().endswith(".parquet")
    first = _first_csv_row(path) if is_csv else []
    if first and all(_is_number(v) or _is_bool(v) for v in first):
        fmt = _headerless(first)
        if fmt is None:
            reason = (
                f"no header line, and its {len(first)} fields fit no header-less Binance format"
            )
            if kind is None:
                return reason
            raise DataError(str(path), reason)
        header = fmt.columns + (fmt.headerless_extra if len(first) > len(fmt.columns) else ())
        notes.append(f"{path.name}: no header line; read as {fmt.name} ({', '.join(header)})")
    raw = RawFile(path, (), 1, _ignore, header=header)
    names = list(raw.names)
    found_fmt, rename = _match(names, mapping)
    fmt = fmt or found_fmt
    tradeloop_names = {rename.get(n, n) for n in names}
    found, why = _kind_of(tradeloop_names)
    if kind is None:
        if found is None:
            return why
        kind = found
    elif fmt is not None and fmt.kind != kind:
        raise DataError(str(path), f"named as {kind} but its columns are {fmt.name} ({fmt.kind})")
    if fmt is not None and header is None:
        notes.append(f"{path.name}: read as {fmt.name}")
    symbol = None
    if "symbol" not in tradeloop_names:
        symbol = symbol_from_name(path)
        if symbol is None and named:
            pass  # the reader names the missing column, as for any other
        elif symbol is None:
            raise DataError(
                str(path),
                "no symbol column, and the file name does not start with one "
                "(SYMBOL-....csv, as Binance names its files)",
                column="symbol",
            )
        else:
            notes.append(f"{path.name}: no symbol column; symbol {symbol} taken from the file name")
    ts_unit = _ts_units(path, rename, header)
    for column, unit in ts_unit.items():
        if unit != "ns":
            notes.append(
                f"{path.name}: {column} in {UNIT_WORDS[unit]} (by magnitude), converted to ns"
            )
    return FileLayout(
        path=path,
        kind=kind,
        format=fmt.name if fmt else "tradeloop",
        rename=rename,
        header=header,
        symbol=symbol,
        venue=fmt.venue if fmt else "SIM",
        ts_unit=ts_unit,
        maker_side=kind == "trades"
        and "side" not in tradeloop_names
        and "is_buyer_maker" in tradeloop_names,
        notes=tuple(notes),
    )


def _ts_units(
    path: Path, rename: Mapping[str, str], header: tuple[str, ...] | None
) -> dict[str, str]:
    """Units of the integer timestamp columns, from the first rows (ISO text and arrow
    timestamps carry their own unit)."""

    raw = RawFile(path, TS_COLUMNS, _UNIT_SAMPLE_ROWS, _ignore, rename=dict(rename), header=header)
    columns = [c for c in TS_COLUMNS if raw.types.get(c) in ("int64", "int", "text")]
    if not columns:
        return {}
    chunk = next(iter(raw.chunks()), None)
    if chunk is None:
        return {}
    units: dict[str, str] = {}
    for c in columns:
        s = chunk.frame[c]
        if s.dtype == pl.String:
            s = s.str.strip_chars().cast(pl.Int64, strict=False)
        values = s.cast(pl.Int64, strict=False).drop_nulls().to_numpy()
        unit = detect_unit(values) if values.shape[0] else None
        if unit is not None:
            units[c] = unit
    return units


def parse_time_ns(text: str, what: str = "time") -> int:
    """``--start``/``--end``: ISO-8601 (a date, or a date and time; UTC unless it says
    otherwise) or an integer since the epoch in s, ms, µs or ns (by magnitude).

    Raises:
        DataError: neither, or outside 2000-01-01 .. 2100-01-01.
    """
    value = text.strip()
    if re.fullmatch(r"-?\d+", value):
        n = int(value)
        unit = detect_unit(np.array([n], np.int64)) if abs(n) < 2**63 else None
        if unit is None:
            raise DataError(what, f"{value} is no time between 2000 and 2100 in s, ms, us or ns")
        return n * UNITS_NS[unit]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DataError(what, f"{value!r} is neither ISO-8601 nor an integer time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
    if not TS_MIN_NS <= ns < TS_MAX_NS:
        raise DataError(what, f"{value} is outside 2000-01-01 .. 2100-01-01")
    return ns
