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

    def _size(self, symbol: str) -> float:
        if self.p.qty is not None:
            return self.p.qty
        quote = self.ctx.last_quote(symbol)
        if quote is None:
            return 0.0
        inst = self.ctx.instrument(symbol)
        assert self.p.notional is not None
        lots = int(self.p.notional / (0.5 * (quote.bid + quote.ask)) / inst.lot_size)
        return inst.round_qty(lots * inst.lot_size)

    def on_signal(self, signal: Signal) -> None:
        symbol = signal.instrument
        size = self._size(symbol)
        if signal.zone == 1:
            target = size
        else:
            target = -size if self.p.allow_short else 0.0
        have = self.ctx.position(symbol) + self.ctx.open_qty(symbol)
        delta = round(target - have, 10)
        if delta > 0:
            self.ctx.submit_market(symbol, "buy", delta)
        elif delta < 0:
            self.ctx.submit_market(symbol, "sell", -delta)
