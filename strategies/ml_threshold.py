"""ML threshold strategy: long above an upper score threshold, short below a lower one,
flat in between. It acts on ``Signal`` events (threshold crossings), not on ticks."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from engine.events import Signal
from engine.strategy import Strategy


class MlThresholdParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``upper``/``lower``: score thresholds (probabilities for a binary model).
    ``exit`` (optional, between them): hysteresis; a long is held until the score falls
    below ``exit`` (a short until it rises to ``exit``) instead of going flat as soon as
    the score leaves the outer zone. ``qty`` or ``notional``: position size per
    instrument (exactly one)."""

    upper: float = 0.55
    lower: float = 0.45
    exit: float | None = None
    qty: float | None = None
    notional: float | None = None
    allow_short: bool = True


class MlThreshold(Strategy):
    name = "ml_threshold"
    Params = MlThresholdParams

    def __init__(self, params: MlThresholdParams) -> None:  # type: ignore[override]
        if not params.lower < params.upper:
            raise ValueError("lower must be below upper")
        if params.exit is not None and not params.lower < params.exit < params.upper:
            raise ValueError("exit must lie strictly between lower and upper")
        if (params.qty is None) == (params.notional is None):
            raise ValueError("give exactly one of qty or notional")
        super().__init__(params)
        self.p = params

    def thresholds(self) -> Sequence[float]:
        if self.p.exit is None:
            return (self.p.lower, self.p.upper)
        return (self.p.lower, self.p.exit, self.p.upper)

    def on_signal(self, signal: Signal) -> None:
        have = self.ctx.position(signal.instrument) + self.ctx.open_qty(signal.instrument)
        size = self.size_for(signal.instrument, qty=self.p.qty, notional=self.p.notional)
        top = len(self.thresholds())
        if signal.zone == top:  # at or above upper
            target = size
        elif signal.zone == 0:  # below lower
            target = -size if self.p.allow_short else 0.0
        elif self.p.exit is None:
            target = 0.0
        elif signal.zone == 1:  # between lower and exit: a long exits, a short holds
            target = min(have, 0.0)
        else:  # between exit and upper: a short exits, a long holds
            target = max(have, 0.0)
        self.trade_to(signal.instrument, target)
