"""The strategy plugin base class and the context through which it acts.

A strategy never talks to the router: it asks its context for orders, which go through
the risk gates first. It cannot tell whether it runs live or in replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final, Protocol

import msgspec

from engine.clock import TimerFired
from engine.events import (
    CancelRejected,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    Quote,
    RiskRejected,
    Side,
    Signal,
    TimeInForce,
    Trade,
    TradingState,
)
from engine.instruments import Instrument


class NoParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class StrategyContext(Protocol):
    """What a strategy may see and do. Implemented by the engine."""

    def now_ns(self) -> int: ...
    def instrument(self, symbol: str) -> Instrument: ...
    def position(self, symbol: str) -> float: ...
    def open_qty(self, symbol: str) -> float: ...
    def last_quote(self, symbol: str) -> Quote | None: ...
    def mid(self, symbol: str) -> float | None: ...
    def exposure(self, symbol: str) -> float: ...
    def features(self, symbol: str) -> dict[str, float]: ...
    def submit_market(
        self, symbol: str, side: Side, qty: float, *, reduce_only: bool = False
    ) -> str: ...
    def submit_limit(self, symbol: str, side: Side, qty: float, price: float, *,
                     time_in_force: TimeInForce = "gtc", reduce_only: bool = False) -> str: ...  # fmt: skip
    def cancel(self, client_order_id: str) -> None: ...
    def set_timer(self, name: str, ts_ns: int, interval_ns: int = 0) -> None: ...
    def cancel_timer(self, name: str) -> None: ...
    @property
    def trading_state(self) -> str: ...


# a strategy's attributes that are not its state (the config's params, the wiring)
_NOT_STATE: Final = frozenset({"params", "_ctx"})


class Strategy:
    """Base class of strategy plugins.

    Subclasses set ``Params`` to their own ``msgspec.Struct`` (with
    ``forbid_unknown_fields=True``); the config's ``[strategy].params`` is validated into
    it at start-up. Orders go out through ``self.ctx``.

    Hooks, all optional: ``on_start``, ``on_signal`` (the fast path), ``on_quote`` and
    ``on_trade`` (per tick: the slow path, only called when overridden), ``on_fill``,
    ``on_order`` (accepted, cancelled, rejected), ``on_reject`` (risk refusals),
    ``on_state`` (trading state changes), ``on_timer``, ``on_stop``; ``snapshot_state``
    and ``restore_state`` for a snapshot of its own state (the default: its plain
    attributes).
    """

    name: ClassVar[str] = "strategy"
    Params: ClassVar[type[msgspec.Struct]] = NoParams

    def __init__(self, params: msgspec.Struct) -> None:
        self.params = params
        self._ctx: StrategyContext | None = None

    @property
    def ctx(self) -> StrategyContext:
        if self._ctx is None:
            raise RuntimeError("strategy is not bound to an engine yet")
        return self._ctx

    def bind(self, ctx: StrategyContext) -> None:
        self._ctx = ctx

    def snapshot_state(self) -> object:
        """The strategy's own state for a snapshot (``engine.snapshot``): data only
        (numbers, strings, bools, None, lists, tuples, dicts and sets of them, numpy
        arrays), given back to ``restore_state`` after a restart.

        The default is every attribute of the instance but ``params`` (from the config,
        also under another name, ``self.p = params``) and the context (wiring). A
        strategy that keeps anything else (an object, a function, a file) overrides both
        hooks; otherwise a snapshot is refused (counted and logged; the restart then
        replays the journal in full, never silently wrong).
        """
        params = self.params
        return {k: v for k, v in vars(self).items() if k not in _NOT_STATE and v is not params}

    def restore_state(self, state: object) -> None:
        """Take back what ``snapshot_state`` returned (on a fresh instance, built from the
        same config and bound)."""
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__name__}: a state of type {type(state).__name__}")
        for key, value in state.items():
            if not isinstance(key, str) or key in _NOT_STATE or key.startswith("__"):
                raise TypeError(f"{type(self).__name__}: a state attribute {key!r}")
            setattr(self, key, value)

    def thresholds(self) -> Sequence[float]:
        """Score levels whose crossing emits a ``Signal``; none means no signals."""
        return ()

    def required_features(self) -> Sequence[str]:
        """Features that must be warm before this strategy may trade (risk warm-up gate)."""
        return ()

    def on_start(self) -> None: ...
    def on_signal(self, signal: Signal) -> None: ...
    def on_quote(self, quote: Quote) -> None: ...
    def on_trade(self, trade: Trade) -> None: ...
    def on_fill(self, fill: Fill) -> None: ...
    def on_order(
        self, event: OrderAccepted | OrderCancelled | OrderRejected | CancelRejected
    ) -> None: ...
    def on_reject(self, rejected: RiskRejected) -> None: ...
    def on_state(self, state: TradingState) -> None: ...
    def on_timer(self, timer: TimerFired) -> None: ...
    def on_stop(self) -> None: ...

    # ---- helpers shared by position-targeting strategies -----------------------------

    def size_for(
        self, symbol: str, *, qty: float | None = None, notional: float | None = None
    ) -> float:
        """A position size: ``qty`` as given, or ``notional`` at the last mid, rounded
        down to the lot. 0.0 when sizing by notional before the first quote."""
        if qty is not None:
            return qty
        if notional is None:
            return 0.0
        mid = self.ctx.mid(symbol)  # a float, not a Quote built per signal
        if mid is None:
            return 0.0
        inst = self.ctx.instrument(symbol)
        lots = int(notional / mid / inst.lot_size)
        return inst.round_qty(lots * inst.lot_size)

    def trade_to(self, symbol: str, target: float) -> str | None:
        """Send the market order that takes position plus open orders to ``target``;
        returns its client order id, or None when there is nothing to do.

        Honours the trading state: under REDUCE_ONLY the target is clamped between the
        current exposure and flat (a flip becomes a close), under HALTED nothing is sent.
        """
        state = self.ctx.trading_state
        if state == "HALTED":
            return None
        have = self.ctx.exposure(symbol)
        if state == "REDUCE_ONLY":
            target = min(max(target, 0.0), have) if have >= 0 else max(min(target, 0.0), have)
        delta = round(target - have, 10)
        if delta > 0:
            return self.ctx.submit_market(symbol, "buy", delta)
        if delta < 0:
            return self.ctx.submit_market(symbol, "sell", -delta)
        return None

    def wants_quotes(self) -> bool:
        return type(self).on_quote is not Strategy.on_quote

    def wants_trades(self) -> bool:
        return type(self).on_trade is not Strategy.on_trade
