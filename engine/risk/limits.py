"""Risk limits as configured in ``[risk]``: account-wide settings and per-instrument
defaults, with per-instrument overrides under ``[risk.instruments.SYMBOL]``."""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.units import parse_duration_ns


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-instrument limits; ``None`` means the check is off.

    Attributes:
        max_order_qty: largest quantity of one order.
        max_order_notional: largest qty x price of one order (limit price, or the touch).
        max_position: largest absolute position after the order, counting open orders on
            the order's side.
        price_collar_bps: a limit price more than this many bps through the last mid is
            refused.
        max_quote_age: no order when the instrument's last quote is older (duration).
        orders_per_second: token-bucket rate (burst = one second's worth).
        max_open_orders: open orders on the instrument.
    """

    max_order_qty: float | None = None
    max_order_notional: float | None = None
    max_position: float | None = None
    price_collar_bps: float | None = None
    max_quote_age: str | int | None = None
    orders_per_second: float | None = None
    max_open_orders: int | None = None

    @property
    def max_quote_age_ns(self) -> int | None:
        return None if self.max_quote_age is None else parse_duration_ns(self.max_quote_age)


_LIMIT_FIELDS = RiskLimits.__struct_fields__


class RiskConfig(RiskLimits, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[risk]`` table.

    The inherited ``RiskLimits`` fields are the defaults of every instrument, overridden
    per field by ``[risk.instruments.SYMBOL]``. Account-wide: ``max_gross_exposure`` (sum
    of |position| x mid, after the order), ``account_orders_per_second``,
    ``account_max_open_orders``, ``daily_loss_limit`` and ``max_drawdown`` (currency
    amounts, realized + unrealized, per UTC day) which switch the state to ``on_loss``;
    ``on_data_loss`` is the state when market data is lost; ``warmup`` refuses orders
    while a feature the strategy needs is NaN; ``round_to_grid`` rounds quantities and
    prices to the grid instead of refusing.
    """

    max_gross_exposure: float | None = None
    account_orders_per_second: float | None = None
    account_max_open_orders: int | None = None
    daily_loss_limit: float | None = None
    max_drawdown: float | None = None
    on_loss: Literal["reduce_only", "halted"] = "reduce_only"
    on_data_loss: Literal["reduce_only", "halted"] = "halted"
    warmup: bool = True
    round_to_grid: bool = False
    instruments: dict[str, RiskLimits] = {}

    def __post_init__(self) -> None:
        for name in (*_LIMIT_FIELDS, "max_gross_exposure", "account_orders_per_second",
                     "account_max_open_orders", "daily_loss_limit", "max_drawdown"):  # fmt: skip
            value = getattr(self, name)
            if name == "max_quote_age" or value is None:
                continue
            if value <= 0:
                raise ValueError(f"risk.{name} must be > 0, got {value}")
        for symbol, own in self.instruments.items():
            for name in _LIMIT_FIELDS:
                value = getattr(own, name)
                if value is not None and name != "max_quote_age" and value <= 0:
                    raise ValueError(f"risk.instruments.{symbol}.{name} must be > 0, got {value}")
        for where, value in [("max_quote_age", self.max_quote_age),
                             *((f"instruments.{s}.max_quote_age", o.max_quote_age) for s, o in self.instruments.items())]:  # fmt: skip
            if value is not None:
                try:
                    parse_duration_ns(value)
                except ValueError as exc:
                    raise ValueError(f"risk.{where}: {exc}") from exc

    def limits_for(self, symbol: str) -> RiskLimits:
        """The instrument's limits: its own where set, the defaults elsewhere."""
        own = self.instruments.get(symbol)
        values = {f: getattr(self, f) for f in _LIMIT_FIELDS}
        if own is not None:
            values |= {f: getattr(own, f) for f in _LIMIT_FIELDS if getattr(own, f) is not None}
        return RiskLimits(**values)
