"""The ``StrategyContext`` the engine hands to its strategy: what it may see and do."""

from __future__ import annotations

from engine.engine_view import ContextHost
from engine.events import Quote, Side, TimeInForce
from engine.instruments import Instrument
from engine.market import ASK, ASK_SIZE, BID, BID_SIZE


class EngineContext:
    """Reads the engine's state and sends orders through its risk gates."""

    def __init__(self, engine: ContextHost) -> None:
        self._e = engine

    def now_ns(self) -> int:
        return self._e.clock.now_ns()

    def instrument(self, symbol: str) -> Instrument:
        return self._e.instruments.by_symbol(symbol)

    def position(self, symbol: str) -> float:
        return float(self._e.portfolio.positions[self._e.instruments.index[symbol]])

    def open_qty(self, symbol: str) -> float:
        return self._e.orders.open_qty(self._e.instruments.index[symbol])

    def exposure(self, symbol: str) -> float:
        """Position plus the signed quantity still to fill on open orders: what a
        position-targeting strategy trades to (one lookup instead of two calls)."""
        i = self._e.instruments.index[symbol]
        return float(self._e.portfolio.positions[i]) + self._e.orders.open_qty(i)

    def mid(self, symbol: str) -> float | None:
        """The last quote's mid, None before the first quote (sizing reads this per
        signal: no ``Quote`` is built for it)."""
        i = self._e.instruments.index[symbol]
        if self._e.market.quote_ts[i] == 0:
            return None
        b = self._e.market.book[i]
        return 0.5 * (float(b[BID]) + float(b[ASK]))

    def last_quote(self, symbol: str) -> Quote | None:
        i = self._e.instruments.index[symbol]
        ts = int(self._e.market.quote_ts[i])
        if ts == 0:
            return None
        b = self._e.market.book[i]
        return Quote(
            ts_event=ts,
            ts_recv=ts,
            instrument=symbol,
            bid=float(b[BID]),
            ask=float(b[ASK]),
            bid_size=float(b[BID_SIZE]),
            ask_size=float(b[ASK_SIZE]),
        )

    def features(self, symbol: str) -> dict[str, float]:
        return self._e.features_now(self._e.instruments.index[symbol])

    def submit_market(
        self, symbol: str, side: Side, qty: float, *, reduce_only: bool = False
    ) -> str:
        return self._e.desk.submit(symbol, side, qty, "market", None, "gtc", reduce_only)

    def submit_limit(
        self,
        symbol: str,
        side: Side,
        qty: float,
        price: float,
        *,
        time_in_force: TimeInForce = "gtc",
        reduce_only: bool = False,
    ) -> str:
        return self._e.desk.submit(symbol, side, qty, "limit", price, time_in_force, reduce_only)

    def cancel(self, client_order_id: str) -> None:
        self._e.desk.cancel(client_order_id)

    def set_timer(self, name: str, ts_ns: int, interval_ns: int = 0) -> None:
        self._e.clock.set_timer(name, ts_ns, interval_ns)

    def cancel_timer(self, name: str) -> None:
        self._e.clock.cancel_timer(name)

    @property
    def trading_state(self) -> str:
        return self._e.risk.state
