"""Instruments: what can be traded, with the price and quantity grids the venue enforces."""

from __future__ import annotations

import math

import msgspec

# Prices and sizes arrive as binary floats; a value counts as on-grid when it is within
# this fraction of one grid step of a multiple, which absorbs decimal->binary noise
# (61837.63 / 0.01 = 6183762.999999999) without admitting a real off-grid price.
_GRID_TOLERANCE = 1e-6


class Instrument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tradable instrument.

    Attributes:
        symbol: the venue's symbol, as it appears in tick files and market data topics.
        venue: venue name.
        tick_size: price grid step.
        lot_size: quantity grid step.
    """

    symbol: str
    venue: str = "SIM"
    tick_size: float = 0.01
    lot_size: float = 1e-5

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("instrument symbol is empty")
        if not (self.tick_size > 0 and math.isfinite(self.tick_size)):
            raise ValueError(f"{self.symbol}: tick_size must be > 0, got {self.tick_size}")
        if not (self.lot_size > 0 and math.isfinite(self.lot_size)):
            raise ValueError(f"{self.symbol}: lot_size must be > 0, got {self.lot_size}")

    def is_on_tick(self, price: float) -> bool:
        steps = price / self.tick_size
        return abs(steps - round(steps)) <= _GRID_TOLERANCE

    def is_on_lot(self, qty: float) -> bool:
        steps = qty / self.lot_size
        return abs(steps - round(steps)) <= _GRID_TOLERANCE

    def round_price(self, price: float) -> float:
        return round(round(price / self.tick_size) * self.tick_size, 12)

    def round_qty(self, qty: float) -> float:
        return round(round(qty / self.lot_size) * self.lot_size, 12)

    def floor_qty(self, qty: float) -> float:
        """``qty`` rounded down to whole lots (never more than asked, e.g. to close)."""
        return round(math.floor(qty / self.lot_size + _GRID_TOLERANCE) * self.lot_size, 12)


class InstrumentTable:
    """Instruments by symbol and by dense index (the index is what numba kernels see)."""

    def __init__(self, instruments: list[Instrument]) -> None:
        symbols = [i.symbol for i in instruments]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate instrument symbols in {symbols}")
        self.instruments: tuple[Instrument, ...] = tuple(instruments)
        self.index: dict[str, int] = {s: k for k, s in enumerate(symbols)}

    def __len__(self) -> int:
        return len(self.instruments)

    def by_symbol(self, symbol: str) -> Instrument:
        return self.instruments[self.index[symbol]]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(i.symbol for i in self.instruments)
