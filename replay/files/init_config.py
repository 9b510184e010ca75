"""Configs from data: instruments inferred from tick files, a config written for the user
to edit (``tradeloop init``), and the config that actually ran, as TOML and as a hash.

An instrument's tick size is the largest power of ten (at most 1) that every price of
the symbol in the data is a multiple of, within float noise; its lot size likewise from
the sizes (zero sizes of empty quote sides excluded). A short sample can only make the
grid finer than the venue's (a price on a 0.01 grid may happen to end in 0 for a while),
never coarser, so the steps are capped at 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl

from engine.config import Config
from engine.errors import DataError
from engine.instruments import Instrument
from replay.files.discovery import DataSource, Discovery, discover_files
from replay.files.formats import FileLayout
from replay.files.raw_files import RaggedRow, RawFile

__all__ = [
    "InferredInstrument",
    "config_toml",
    "effective_config_hash",
    "grid_step",
    "infer_instruments",
    "init_config_text",
    "with_data_instruments",
]

# unique values kept per symbol for the grid: plenty for a grid, bounded memory
_MAX_VALUES = 200_000
_MAX_STEP_EXP = 0  # 1
_MIN_STEP_EXP = -12
# as ``engine.instruments``: a fraction of one step that absorbs decimal -> binary noise
_GRID_TOLERANCE = 1e-6
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def grid_step(values: npt.NDArray[np.float64]) -> float | None:
    """The largest power of ten in [1e-12, 1] that every value is a multiple of (within
    float noise); None when no value is given or none fits."""
    v = np.unique(values[np.isfinite(values) & (values > 0)])
    if v.shape[0] == 0:
        return None
    for exp in range(_MAX_STEP_EXP, _MIN_STEP_EXP - 1, -1):
        step = 10.0**exp
        steps = v / step
        # float noise grows with the number of steps: 1e5 / 1e-8 carries ~1e-3 of it
        noise = np.maximum(_GRID_TOLERANCE, np.abs(steps) * 8 * np.finfo(np.float64).eps)
        if np.all(np.abs(steps - np.round(steps)) <= noise):
            return step
    return None


@dataclass(frozen=True)
class InferredInstrument:
    """An instrument inferred from data, with what it was inferred from."""

    instrument: Instrument
    prices: int
    sizes: int
    fallback: bool = False

    @property
    def note(self) -> str:
        i = self.instrument
        text = (
            f"{i.symbol}: not in the config; tick_size {i.tick_size:g} from {self.prices:,} "
            f"distinct prices, lot_size {i.lot_size:g} from {self.sizes:,} distinct sizes "
            f"(venue {i.venue})"
        )
        if self.fallback:
            text += "; some values fit no power-of-ten grid, check these"
        return text


@dataclass
class _Samples:
    prices: list[npt.NDArray[np.float64]] = field(default_factory=list)
    sizes: list[npt.NDArray[np.float64]] = field(default_factory=list)
    n_prices: int = 0
    n_sizes: int = 0
    venue: str = "SIM"


def _ignore(_row: RaggedRow) -> None:
    pass  # the reader reports ragged rows when the data is replayed


def _number(frame: pl.DataFrame, column: str) -> pl.Expr:
    col = pl.col(column)
    if frame[column].dtype == pl.String:
        col = col.str.strip_chars()
    return col.cast(pl.Float64, strict=False)


def _scan(layout: FileLayout, skip: set[str], samples: dict[str, _Samples]) -> None:
    """Collect distinct prices and sizes per symbol not in ``skip`` from one file."""
    if layout.symbol is not None and layout.symbol in skip:
        return
    if layout.kind == "quotes":
        prices, sizes = ("bid", "ask"), ("bid_size", "ask_size")
    else:
        prices, sizes = ("price",), ("size",)
    raw = RawFile(
        layout.path,
        ("symbol", *prices, *sizes),
        262_144,
        _ignore,
        rename=dict(layout.rename),
        header=layout.header,
    )
    if any(c not in raw.types for c in (*prices, *sizes)):
        return  # the reader names the missing column when the data is replayed
    for chunk in raw.chunks():
        frame = chunk.frame
        if layout.symbol is not None:
            symbol = pl.lit(layout.symbol)
        elif "symbol" in frame.columns:
            symbol = pl.col("symbol").cast(pl.String).str.strip_chars()
        else:
            return
        try:
            df = frame.select(
                symbol.alias("__symbol"),
                *(_number(frame, c).alias(c) for c in (*prices, *sizes)),
            )
        except pl.exceptions.PolarsError:
            continue  # values the reader refuses row by row when the data is replayed
        df = df.filter(pl.col("__symbol").is_not_null() & (pl.col("__symbol") != ""))
        for (name,), group in df.group_by("__symbol"):
            sym = str(name)
            if sym in skip:
                continue
            s = samples.setdefault(sym, _Samples(venue=layout.venue))
            for columns, kept, attr in (
                (prices, s.prices, "n_prices"),
                (sizes, s.sizes, "n_sizes"),
            ):
                if getattr(s, attr) >= _MAX_VALUES:
                    continue
                values = np.unique(
                    np.concatenate([group[c].to_numpy().astype(np.float64) for c in columns])
                )
                values = values[np.isfinite(values) & (values > 0)]
                kept.append(values)
                setattr(s, attr, getattr(s, attr) + values.shape[0])


def infer_instruments(found: Discovery, known: Iterable[str] = ()) -> list[InferredInstrument]:
    """Instruments for the symbols of the data not in ``known``, in symbol order.

    Raises:
        DataError: a file cannot be read.
    """
    skip = set(known)
    samples: dict[str, _Samples] = {}
    for layout in found.files:
        _scan(layout, skip, samples)
    out = []
    for sym in sorted(samples):
        s = samples[sym]
        prices = np.unique(np.concatenate(s.prices)) if s.prices else np.empty(0)
        sizes = np.unique(np.concatenate(s.sizes)) if s.sizes else np.empty(0)
        if prices.shape[0] == 0:
            continue  # no valid price: its rows are bad rows of an unknown symbol
        tick = grid_step(prices)
        lot = grid_step(sizes)
        fallback = tick is None or lot is None
        # no power of ten fits: a fine grid that refuses nothing the data shows
        tick = tick if tick is not None else _fallback_step(prices)
        lot = lot if lot is not None else (_fallback_step(sizes) if sizes.shape[0] else 1e-8)
        instrument = Instrument(symbol=sym, venue=s.venue, tick_size=tick, lot_size=lot)
        out.append(
            InferredInstrument(instrument, int(prices.shape[0]), int(sizes.shape[0]), fallback)
        )
    return out


def _fallback_step(values: npt.NDArray[np.float64]) -> float:
    return float(10.0 ** (math.floor(math.log10(float(np.median(values)))) - 8))


def with_data_instruments(
    config: Config, data: str | Path | DataSource
) -> tuple[Config, Discovery, list[str]]:
    """``config`` plus an inferred instrument for every symbol of the data it lacks.

    Returns:
        The config that will run, the data's files, and notes (how files are read, the
        inferred instruments) for the user.

    Raises:
        DataError: no tick file, or a file cannot be read.
    """
    found = discover_files(data)
    known = {i.symbol for i in config.instruments}
    inferred = infer_instruments(found, known)
    notes = [*found.notes, *(i.note for i in inferred)]
    if inferred:
        config = msgspec.structs.replace(
            config, instruments=[*config.instruments, *(i.instrument for i in inferred)]
        )
    return config, found, notes


def effective_config_hash(config: Config) -> str:
    """sha256 of the validated config as canonical JSON (msgspec, keys sorted): the same
    for every file that says the same thing, and different whenever what ran differs
    (defaults, ``--strategy``, inferred instruments included)."""
    return hashlib.sha256(msgspec.json.encode(config, order="sorted")).hexdigest()


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        items = [f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None]
        return "{" + ", ".join(items) + "}" if items else "{}"
    raise TypeError(f"no TOML for {type(v).__name__}")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _table(prefix: str, d: dict[str, Any], lines: list[str]) -> None:
    for k, v in d.items():
        if v is None or (isinstance(v, dict) and v) or _is_table_array(v):
            continue
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in d.items():
        path = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict) and v:
            lines.append("")
            lines.append(f"[{path}]")
            _table(path, v, lines)
        elif _is_table_array(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{path}]]")
                _table(path, item, lines)


def config_toml(config: Config | dict[str, Any], header: str = "") -> str:
    """The config as TOML that ``engine.config.load_config`` reads back to the same config
    (keys left at None are left out: TOML has no null)."""
    data = msgspec.to_builtins(config) if isinstance(config, Config) else config
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _table("", data, lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def init_config_text(base: Config, data: str | Path | DataSource) -> tuple[str, list[str]]:
    """A config for the data: every symbol's instrument inferred from it, the rest of
    ``base`` (features, model, strategy, risk, venue, replay) as it is.

    Returns:
        The TOML text and notes for the user.

    Raises:
        DataError: no tick file, or no symbol with a valid price.
    """
    found = discover_files(data)
    inferred = infer_instruments(found)
    if not inferred:
        raise DataError(str(data), "no symbol with a valid price found to make an instrument of")
    symbols = {i.instrument.symbol for i in inferred}
    values = msgspec.to_builtins(base)
    values["instruments"] = [msgspec.to_builtins(i.instrument) for i in inferred]
    risk = values.get("risk", {})
    risk["instruments"] = {s: v for s, v in risk.get("instruments", {}).items() if s in symbols}
    files = ", ".join(f.path.name for f in found.files)
    header = (
        "tradeloop config written by `tradeloop init` from the data's files:\n"
        f"{files}\n"
        "Instruments are inferred (tick size from the price grid, lot size from the sizes):\n"
        "check them against the venue. Everything else is the bundled default: edit freely;\n"
        "every key is validated at start-up (README: Config)."
    )
    notes = [*found.notes, *(i.note.replace("not in the config; ", "") for i in inferred)]
    return config_toml(values, header), notes
