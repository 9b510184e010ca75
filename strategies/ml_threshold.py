"""ML threshold strategy: long above an upper score threshold, short below a lower one,
flat in between. It acts on ``Signal`` events (threshold crossings), not on ticks."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from engine.events import Signal
from engine.signals import Thresholds
from engine.strategy import Strategy


class MlThresholdParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``upper``/``lower``: score thresholds (probabilities for a binary model).
    ``exit`` (optional, between them): hysteresis; a long is held until the score falls
    below ``exit`` (a short until it rises to ``exit``) instead of going flat as soon as
    the score leaves the outer zone. ``qty`` or ``notional``: position size per
    instrument (exactly one). ``dead_band`` (score units, >= 0): a zone is left only once
    the score is half of it past the threshold, so a score hovering on a threshold does
    not flip the position at every tick (0: every crossing signals)."""

    upper: float = 0.55
    lower: float = 0.45
    exit: float | None = None
    qty: float | None = None
    notional: float | None = None
    allow_short: bool = True
    dead_band: float = 0.0


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
        self.thresholds()  # a bad dead band is refused here, at start-up

    def thresholds(self) -> Sequence[float]:
        p = self.p
        levels = (p.lower, p.upper) if p.exit is None else (p.lower, p.exit, p.upper)
        return Thresholds(levels, p.dead_band)

    def on_signal(self, signal: Signal) -> None:
        p = self.p
        symbol = signal.instrument
        # the position is read only where the target depends on it (the exit zones):
        # a signal is the replay's hot path, and sizing needs only the mid
        if signal.zone == (2 if p.exit is None else 3):  # at or above upper
            target = self.size_for(symbol, qty=p.qty, notional=p.notional)
        elif signal.zone == 0:  # below lower
            target = (
                -self.size_for(symbol, qty=p.qty, notional=p.notional) if p.allow_short else 0.0
            )
        elif p.exit is None:
            target = 0.0
        elif signal.zone == 1:  # between lower and exit: a long exits, a short holds
            target = min(self.ctx.exposure(symbol), 0.0)
        else:  # between exit and upper: a short exits, a long holds
            target = max(self.ctx.exposure(symbol), 0.0)
        self.trade_to(symbol, target)
