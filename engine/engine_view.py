"""What the order desk and the strategy context need from the engine, as protocols.

``Engine`` builds an ``OrderDesk`` and an ``EngineContext`` and hands itself to them; they
depend on these narrow views, not on ``Engine``, so the three modules import one way
(``engine.engine`` -> ``engine.order_desk``, ``engine.context`` -> ``engine.engine_view``).
A test can drive the desk or the context with any object that has these members.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from engine.clock import Clock
from engine.events import Event, OrderType, RiskRejected, Side, TimeInForce, TradingStateName
from engine.instruments import InstrumentTable
from engine.market import MarketState
from engine.orders import OrderBook
from engine.portfolio import Portfolio
from engine.ports import OrderRouter
from engine.risk import RiskEngine
from engine.strategy import Strategy


class DeskHost(Protocol):
    """The engine as its order desk sees it: state to read and update, events to emit,
    the strategy's hooks to call, the automatic trading-state claim to raise and lower."""

    clock: Clock
    instruments: InstrumentTable
    portfolio: Portfolio
    orders: OrderBook
    risk: RiskEngine
    router: OrderRouter
    strategy: Strategy
    counters: Counter[str]

    def emit(self, event: Event) -> None: ...
    def notify(self, rejected: RiskRejected) -> None: ...
    def call_strategy(
        self, hook: Callable[[Any], None] | Callable[[], None], event: Any
    ) -> None: ...
    def raise_automatic(self, state: TradingStateName, reason: str, *, sticky: bool) -> None: ...
    def lower_automatic(self, reason: str) -> None: ...


class OrderEntry(Protocol):
    """The order desk as the strategy context uses it."""

    def submit(
        self,
        symbol: str,
        side: Side,
        qty: float,
        order_type: OrderType,
        limit_price: float | None,
        time_in_force: TimeInForce,
        reduce_only: bool,
    ) -> str: ...
    def cancel(self, client_order_id: str) -> None: ...


class ContextHost(Protocol):
    """The engine as the strategy's context sees it: read-only state, the order desk,
    the clock's timers."""

    clock: Clock
    instruments: InstrumentTable
    portfolio: Portfolio
    orders: OrderBook
    market: MarketState
    risk: RiskEngine

    @property
    def desk(self) -> OrderEntry: ...
    def features_now(self, instrument: int) -> dict[str, float]: ...
