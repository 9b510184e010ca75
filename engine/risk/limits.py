"""Risk limits as configured in ``[risk]``: account-wide defaults, per-instrument overrides."""

from __future__ import annotations

from typing import Literal

import msgspec


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits for one instrument; ``None`` means the check is off."""

    max_order_qty: float | None = None


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[risk]`` table: defaults for every instrument plus per-symbol overrides."""

    max_order_qty: float | None = None
    round_to_grid: bool = False
    on_loss: Literal["reduce_only", "halted"] = "reduce_only"
    instruments: dict[str, RiskLimits] = {}

    def limits_for(self, symbol: str) -> RiskLimits:
        own = self.instruments.get(symbol)
        if own is None:
            return RiskLimits(max_order_qty=self.max_order_qty)
        return RiskLimits(
            max_order_qty=own.max_order_qty if own.max_order_qty is not None else self.max_order_qty
        )
