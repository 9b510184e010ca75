"""The checks of a tick file's rows, one chunk at a time: the reasons a row is bad, the
typed columns of rows not yet released (``_Rows``, each row's first failed check in
``code``), and the vectorised conversions and checks of timestamps (integers in a unit,
arrow timestamps, ISO-8601 text) and of prices and sizes. ``TickFileReader``
(``replay/files/readers.py``) puts them in the order a row is judged by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from replay.files.formats import UNIT_WORDS, UNITS_NS
from replay.files.plausibility import PRICE_MAX, PRICE_MIN, SIZE_MAX, TS_MAX_NS, TS_MIN_NS, WINDOW
from replay.files.raw_files import TypeClass

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
