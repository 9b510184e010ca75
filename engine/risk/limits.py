"""Risk limits as configured in ``[risk]``: account-wide settings and per-instrument
defaults, with per-instrument overrides under ``[risk.instruments.SYMBOL]``.

Every number is bounded in the schema, so a value that is NaN, infinite, zero, negative
or absurd is refused when the config is loaded; leaving a key out is the only way to
turn a check off. ``max_quote_age`` is a duration, checked by the config loader.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from engine.units import MAX_AMOUNT, Duration, parse_duration_ns

# NaN fails every bound, so each of these also means "a finite number".
Amount = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_AMOUNT)]
# A collar 100 % through the mid no longer bounds a sell price at all.
CollarBps = Annotated[float, msgspec.Meta(gt=0.0, le=10_000.0)]
# A million orders a second is beyond any venue's rate limit.
OrderRate = Annotated[float, msgspec.Meta(gt=0.0, le=1_000_000.0)]
OrderCount = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
# 0 is a limit, not a typo: no position may be opened (a shadow-stage registry model's
# scaled limit, written into its run's config.toml, must load again)
PositionLimit = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_AMOUNT)]


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-instrument limits; ``None`` means the check is off.

    Attributes:
        max_order_qty: largest quantity of one order.
        max_order_notional: largest qty x price of one order (limit price, or the touch).
        min_order_notional: smallest qty x price of one order (as ``max_order_notional``),
            so a strategy sends no dust; an operator's ``flatten`` is exempt.
        max_position: largest absolute position after the order, counting open orders on
            the order's side; 0 lets only reducing orders through.
        price_collar_bps: a limit price more than this many bps through the last mid is
            refused.
        max_quote_age: no order when the instrument's last quote is older (duration).
        orders_per_second: token-bucket rate (burst = one second's worth).
        max_open_orders: open orders on the instrument.
    """

    max_order_qty: Amount | None = None
    max_order_notional: Amount | None = None
    min_order_notional: Amount | None = None
    max_position: PositionLimit | None = None
    price_collar_bps: CollarBps | None = None
    max_quote_age: Duration | None = None
    orders_per_second: OrderRate | None = None
    max_open_orders: OrderCount | None = None

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

    max_gross_exposure: Amount | None = None
    account_orders_per_second: OrderRate | None = None
    account_max_open_orders: OrderCount | None = None
    daily_loss_limit: Amount | None = None
    max_drawdown: Amount | None = None
    on_loss: Literal["reduce_only", "halted"] = "reduce_only"
    on_data_loss: Literal["reduce_only", "halted"] = "halted"
    warmup: bool = True
    round_to_grid: bool = False
    instruments: dict[str, RiskLimits] = {}

    def limits_for(self, symbol: str) -> RiskLimits:
        """The instrument's limits: its own where set, the defaults elsewhere."""
        own = self.instruments.get(symbol)
        values = {f: getattr(self, f) for f in _LIMIT_FIELDS}
        if own is not None:
            values |= {f: getattr(own, f) for f in _LIMIT_FIELDS if getattr(own, f) is not None}
        return RiskLimits(**values)
