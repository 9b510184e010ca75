"""EMA-crossover baseline: long when the fast EMA is at or above the slow one, short below.

It expects a model scoring ``ema_fast - ema_slow`` (the bundled config declares it as a
linear model) and acts on the sign change of that score: one ``Signal`` per crossing,
not per tick.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from engine.events import Signal
from engine.strategy import Strategy


class EmaCrossParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``qty``: position size per instrument in units; ``notional``: size in quote currency
    instead (rounded down to the lot). Exactly one must be given."""

    qty: float | None = None
    notional: float | None = None
    allow_short: bool = True


class EmaCross(Strategy):
    name = "ema_cross"
    Params = EmaCrossParams

    def __init__(self, params: EmaCrossParams) -> None:  # type: ignore[override]
        if (params.qty is None) == (params.notional is None):
            raise ValueError("give exactly one of qty or notional")
        size = params.qty if params.qty is not None else params.notional
        assert size is not None
        if size <= 0:
            raise ValueError("qty/notional must be > 0")
        super().__init__(params)
        self.p = params

    def thresholds(self) -> Sequence[float]:
        return (0.0,)

    def on_signal(self, signal: Signal) -> None:
        size = self.size_for(signal.instrument, qty=self.p.qty, notional=self.p.notional)
        if signal.zone == 1:
            target = size
        else:
            target = -size if self.p.allow_short else 0.0
        self.trade_to(signal.instrument, target)
