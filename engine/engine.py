"""The one loop: source -> features -> signals -> strategy -> risk -> router.

Market data arrives in micro-batches. Features and model scores of a whole batch are
computed in numba first (they depend on market data only); then the batch is walked in
segments cut at every point where Python must act: a signal, a fill, a timer, an order
reaching the venue. Each segment is scanned in numba. Ordering rule, identical in every
batching: an external event (timer, order arrival) due at ``T`` is handled after every
tick stamped ``<= T`` and before the first tick stamped ``> T``; at one tick, the venue
matches first, then the strategy sees the tick's signal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.clock import Clock, TimerFired
from engine.errors import DataError, OrderStateError, StrategyError
from engine.events import (
    Alarm,
    CancelRejected,
    CancelRequest,
    Command,
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Quote,
    RiskRejected,
    Side,
    Signal,
    TimeInForce,
    Trade,
    TradingState,
    TradingStateName,
    side_sign,
)
from engine.features import FeatureSet
from engine.instruments import Instrument, InstrumentTable
from engine.market import ASK, ASK_SIZE, BID, BID_SIZE, L_BREACH, MarketState
from engine.orders import OrderBook, OrderStatus
from engine.portfolio import Portfolio
from engine.ports import ExecutionReport, OrderRouter
from engine.risk import RiskEngine
from engine.signals import SignalModel, ZoneTracker, select_columns
from engine.signals.manifest import check_against_features
from engine.strategy import Strategy
from engine.ticks import QUOTE, TRADE, TickBatch

log = logging.getLogger("tradeloop.engine")

EventSink = Callable[[Event], None]


class Engine:
    """The trading loop, identical for replay and live.

    Args:
        instruments: tradable instruments.
        clock: ``ReplayClock`` or ``LiveClock``.
        router: where orders go (simulated venue or OMS).
        features: the fused feature set.
        model: signal model scoring the features, or None (no signals).
        strategy: the strategy plugin instance.
        risk: pre-trade checks and trading state.
        equity_interval_ns: event-time grid of the equity curve (0: off).
        initial_cash: starting cash.
        strict: re-raise strategy and order-state errors (replay, tests) instead of
            halting and carrying on (live).
        order_id_prefix: prefix of client order ids (unique per session in live).
    """

    def __init__(
        self,
        *,
        instruments: InstrumentTable,
        clock: Clock,
        router: OrderRouter,
        features: FeatureSet,
        model: SignalModel | None,
        strategy: Strategy,
        risk: RiskEngine,
        equity_interval_ns: int = 1_000_000_000,
        initial_cash: float = 0.0,
        strict: bool = True,
        order_id_prefix: str = "O",
    ) -> None:
        n = len(instruments)
        self.instruments = instruments
        self.clock = clock
        self.router = router
        self.features = features
        self.model = model
        self.strategy = strategy
        self.risk = risk
        self.strict = strict
        self.market = MarketState(n, equity_interval_ns)
        self.portfolio = Portfolio(n, initial_cash)
        self.orders = OrderBook(n)
        self.feature_state = features.new_state(n)
        self.counters: Counter[str] = Counter()
        self.sinks: list[EventSink] = []
        self._order_seq = 0
        self._id_prefix = order_id_prefix
        self._last_ts = 0
        self._notify: deque[Event] = deque()
        self._model_columns: npt.NDArray[np.int64] | None = None
        self._zones: ZoneTracker | None = None
        thresholds = strategy.thresholds()
        if model is not None:
            manifest = getattr(model, "manifest", None)
            if manifest is not None:
                check_against_features(manifest, features.names, features.fingerprint)
            self._model_columns = select_columns(model.name, model.feature_names, features.names)
            if thresholds:
                self._zones = ZoneTracker(thresholds, n)
        self._wants_quotes = strategy.wants_quotes()
        self._wants_trades = strategy.wants_trades()
        self._context = EngineContext(self)
        self._warm_columns = self._warmup_columns()
        risk.bind(instruments, self.market, self.portfolio, self.orders, self._is_warm)
        self.market.arm_loss_monitor(risk.config.daily_loss_limit, risk.config.max_drawdown)
        router.bind(self.market, instruments)
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Bind and start the strategy. Replay calls this on its first tick, with the
        clock already at that tick's time, so ``on_start`` sees a real time."""
        self.strategy.bind(self._context)
        self._started = True
        self._call(self.strategy.on_start, None)

    def finish(self) -> None:
        """End of data: handle what is due at the last tick's time, stop the strategy."""
        if not self._started:
            self.start()
        self._advance_external(self._last_ts)
        self._call(self.strategy.on_stop, None)
        self.counters["orders_open_at_end"] = len(self.orders.open_orders())

    # ---- the loop --------------------------------------------------------------------

    def process_batch(self, batch: TickBatch) -> None:
        """Run one micro-batch through every stage.

        Raises:
            DataError: the batch's timestamps go backwards (sources sort and validate).
        """
        n = len(batch)
        if n == 0:
            return
        ts = batch.ts_event
        if ts[0] < self._last_ts or (n > 1 and bool(np.any(ts[1:] < ts[:-1]))):
            raise DataError("<batch>", "timestamps go backwards inside the engine's input")
        if not self._started:
            self.clock.advance(int(ts[0]))
            self.start()
        self.counters["ticks"] += n
        feats = self.features.update(batch, self.feature_state)
        sig_idx = sig_zone = sig_prev = _EMPTY
        scores = None
        if self.model is not None and self._model_columns is not None:
            scores = self.model.predict(np.ascontiguousarray(feats[:, self._model_columns]))
            if self._zones is not None:
                sig_idx, sig_zone, sig_prev = self._zones.changes(batch, scores)
        events = sig_idx
        if self._wants_quotes or self._wants_trades:
            mask = np.zeros(n, np.bool_)
            if self._wants_quotes:
                mask |= batch.kind == QUOTE
            if self._wants_trades:
                mask |= batch.kind == TRADE
            events = np.union1d(sig_idx, np.flatnonzero(mask))
        self.market.begin_batch(n)
        positions, cash = self.portfolio.positions, self.portfolio.cash
        loss = self.market.loss
        e = 0  # next entry of ``events``
        s = 0  # next entry of ``sig_idx``
        n_events = events.shape[0]
        pos = 0
        while pos < n:
            self._advance_external(int(ts[pos]) - 1)
            nxt = self._next_external_ns()
            end = n if nxt is None else int(np.searchsorted(ts, nxt, side="right"))
            stop = end
            if e < n_events and events[e] < end:
                stop = int(events[e]) + 1
            j = self.router.match(batch, pos, stop)
            k = self.market.update(batch, pos, j, positions, cash)
            if k == j:
                self.router.commit()  # else a loss limit tripped before the fill tick
            self.clock.advance(int(ts[k - 1]))
            self._last_ts = int(ts[k - 1])
            self._handle_reports()
            if loss[L_BREACH] != 0.0:
                self._check_loss_breach()
            j = k
            if e < n_events and events[e] == j - 1:
                t = j - 1
                if s < sig_idx.shape[0] and sig_idx[s] == t:
                    assert scores is not None
                    sig = Signal(ts_event=int(ts[t]), ts_recv=int(batch.ts_recv[t]),
                                 instrument=self.instruments.instruments[batch.instrument[t]].symbol,
                                 model=self.model.name if self.model else "", score=float(scores[t]),
                                 zone=int(sig_zone[s]), previous_zone=int(sig_prev[s]))  # fmt: skip
                    s += 1
                    self.counters["signals"] += 1
                    self._emit(sig)
                    self._call(self.strategy.on_signal, sig)
                if batch.kind[t] == QUOTE and self._wants_quotes:
                    self._call(self.strategy.on_quote, _quote_at(batch, t, self.instruments))
                elif batch.kind[t] == TRADE and self._wants_trades:
                    self._call(self.strategy.on_trade, _trade_at(batch, t, self.instruments))
                e += 1
            pos = j
        self.market.end_batch()

    def _check_loss_breach(self) -> None:
        breach = self.market.take_breach()
        if breach is None:
            return
        code, equity = breach
        start, peak = self.market.day_figures()
        cfg = self.risk.config
        if code == 1:
            reason = (f"daily loss limit {cfg.daily_loss_limit:g} reached: equity {equity:.2f}, "
                      f"day start {start:.2f}")  # fmt: skip
        else:
            reason = (f"max drawdown {cfg.max_drawdown:g} from the day's peak reached: equity "
                      f"{equity:.2f}, peak {peak:.2f}")  # fmt: skip
        self.counters["loss_limit_breaches"] += 1
        self.set_trading_state("HALTED" if cfg.on_loss == "halted" else "REDUCE_ONLY", reason)

    def market_data_lost(self, reason: str) -> None:
        """The source lost market data (broker drop, feed gap): stop adding risk."""
        self.counters["market_data_lost"] += 1
        state: TradingStateName = (
            "HALTED" if self.risk.config.on_data_loss == "halted" else "REDUCE_ONLY"
        )
        self.set_trading_state(state, f"market data lost: {reason}")

    def _warmup_columns(self) -> list[int]:
        wanted = list(self.strategy.required_features())
        if not wanted and self.model is not None:
            wanted = list(self.model.feature_names)
        return [int(c) for c in self.features.state_columns(wanted)]

    def _is_warm(self, instrument: int) -> bool:
        row = self.feature_state.values[instrument]
        return all(row[c] == row[c] for c in self._warm_columns)  # NaN != NaN

    async def run(self, source: AsyncIterable[TickBatch] | Iterable[TickBatch]) -> None:
        """The loop: feed every batch of ``source`` through the stages, then finish.

        Runs on the caller's asyncio loop (uvloop where the entry point installed it) and
        yields to it after every batch, so a live driver's other tasks (broker I/O,
        heartbeats, commands) interleave with market data; a replay drives the very same
        coroutine with a file source.
        """
        if isinstance(source, AsyncIterable):
            async for batch in source:
                self.process_batch(batch)
                await asyncio.sleep(0)
        else:
            for batch in source:
                self.process_batch(batch)
                await asyncio.sleep(0)
        self.finish()

    def advance_to(self, ts_ns: int) -> None:
        """Handle timers and venue events due at or before ``ts_ns`` (live heartbeat)."""
        self._advance_external(ts_ns)

    def _next_external_ns(self) -> int | None:
        a = self.clock.next_timer_ns()
        b = self.router.next_event_ns()
        if a is None:
            return b
        return a if b is None else min(a, b)

    def _advance_external(self, until_ns: int) -> None:
        while True:
            t_timer = self.clock.next_timer_ns()
            t_router = self.router.next_event_ns()
            if (
                t_router is not None
                and t_router <= until_ns
                and (t_timer is None or t_router <= t_timer)
            ):
                self.clock.advance(max(t_router, self.clock.now_ns()))
                self.router.advance_to(t_router)
                self._handle_reports()
            elif t_timer is not None and t_timer <= until_ns:
                self.clock.advance(max(t_timer, self.clock.now_ns()))
                for fired in self.clock.pop_due(t_timer):
                    self.counters["timers"] += 1
                    self._call(self.strategy.on_timer, fired)
            else:
                return

    # ---- execution reports -------------------------------------------------------------

    def _handle_reports(self) -> None:
        for report in self.router.drain_reports():
            self.on_report(report)

    def on_report(self, report: ExecutionReport) -> None:
        """Apply one execution report (from the simulated venue or the OMS).

        A report the order state machine refuses (unknown id, overfill) is counted,
        logged and turned into an ``Alarm``; under ``strict`` it is re-raised.
        """
        self._emit(report)
        try:
            match report:
                case Fill():
                    order = self.orders.fill(report)
                    signed = side_sign(report.side) * report.qty
                    self.portfolio.apply_fill(
                        order.instrument_index, signed, report.price, report.fee
                    )
                    self.counters["fills"] += 1
                    self._call(self.strategy.on_fill, report)
                case OrderAccepted():
                    self.orders.update(
                        self.orders.get(report.client_order_id), OrderStatus.ACCEPTED
                    )
                    self._call(self.strategy.on_order, report)
                case OrderRejected():
                    self.orders.update(
                        self.orders.get(report.client_order_id), OrderStatus.REJECTED
                    )
                    self.counters["orders_rejected"] += 1
                    self._call(self.strategy.on_order, report)
                case OrderCancelled():
                    self.orders.update(
                        self.orders.get(report.client_order_id), OrderStatus.CANCELLED
                    )
                    self.counters["orders_cancelled"] += 1
                    self._call(self.strategy.on_order, report)
                case CancelRejected():
                    self.counters["cancels_rejected"] += 1
                    self._call(self.strategy.on_order, report)
        except OrderStateError as exc:
            self.counters["bad_reports"] += 1
            log.error("execution report refused: %s (%r)", exc, report)
            self._emit(Alarm(ts_event=self.clock.now_ns(), ts_recv=self.clock.now_ns(),
                             source="orders", severity="critical", message=str(exc)))  # fmt: skip
            if self.strict:
                raise

    # ---- commands and trading state ----------------------------------------------------

    def on_command(self, command: Command) -> None:
        """Apply an operator command: kill switch, reduce-only, resume."""
        self._emit(command)
        reason = f"command {command.action} from {command.issuer or 'operator'}: {command.reason}"
        match command.action:
            case "kill":
                self.set_trading_state("HALTED", reason)
            case "reduce_only":
                self.set_trading_state("REDUCE_ONLY", reason)
            case "resume":
                self.set_trading_state("ACTIVE", reason)
            case "reload_model":
                self._emit(Alarm(ts_event=command.ts_event, ts_recv=command.ts_recv,
                                 source="engine", severity="warning",
                                 message="model reload is handled by the daemon, not the engine"))  # fmt: skip

    def set_trading_state(self, state: TradingStateName, reason: str) -> None:
        """Change the trading state; HALTED also cancels every open order."""
        now = self.clock.now_ns()
        event = self.risk.set_state(state, reason, now)
        if event is None:
            return
        self._emit(event)
        if state == "ACTIVE":
            self.market.arm_loss_monitor(
                self.risk.config.daily_loss_limit, self.risk.config.max_drawdown
            )
        if state == "HALTED":
            for order in self.orders.open_orders():
                self._send_cancel(order.client_order_id, order.request.instrument, "halted")
        if self._started:
            self._call(self.strategy.on_state, event)

    # ---- orders (called through the strategy context) ---------------------------------

    def submit(self, symbol: str, side: Side, qty: float, order_type: OrderType,
               limit_price: float | None, time_in_force: TimeInForce, reduce_only: bool) -> str:  # fmt: skip
        index = self.instruments.index.get(symbol)
        if index is None:
            raise KeyError(f"unknown instrument {symbol!r}")
        inst = self.instruments.instruments[index]
        if self.risk.config.round_to_grid:
            qty = inst.round_qty(qty)
            if limit_price is not None:
                limit_price = inst.round_price(limit_price)
        self._order_seq += 1
        now = self.clock.now_ns()
        req = OrderRequest(ts_event=now, ts_recv=now,
                           client_order_id=f"{self._id_prefix}-{self._order_seq:08d}",
                           instrument=symbol, side=side, qty=float(qty), order_type=order_type,
                           limit_price=limit_price, time_in_force=time_in_force,
                           reduce_only=reduce_only, strategy=self.strategy.name)  # fmt: skip
        self._emit(req)
        self.counters["orders_requested"] += 1
        rejected = self.risk.check(req, index, now)
        if rejected is not None:
            self.counters["risk_rejected"] += 1
            self._emit(rejected)
            self._notify.append(rejected)
            return req.client_order_id
        self.orders.add(req, index)
        self.counters["orders_sent"] += 1
        self.router.submit(req)
        return req.client_order_id

    def cancel(self, client_order_id: str) -> None:
        order = self.orders.get(client_order_id)
        if order.is_open:
            self._send_cancel(client_order_id, order.request.instrument, "strategy")

    def _send_cancel(self, client_order_id: str, symbol: str, reason: str) -> None:
        now = self.clock.now_ns()
        req = CancelRequest(ts_event=now, ts_recv=now, client_order_id=client_order_id,
                            instrument=symbol, reason=reason)  # fmt: skip
        self._emit(req)
        self.router.cancel(req)

    # ---- plumbing ---------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def _call(self, hook: Callable[[Any], None] | Callable[[], None], event: Any) -> None:
        try:
            if event is None:
                hook()  # type: ignore[call-arg]
            else:
                hook(event)  # type: ignore[call-arg]
        except Exception as exc:
            self.counters["strategy_errors"] += 1
            log.exception("strategy %s raised on %r; trading halted", self.strategy.name, event)
            self.set_trading_state("HALTED", f"strategy raised {type(exc).__name__}: {exc}")
            if self.strict:
                raise StrategyError(self.strategy.name, event, exc) from exc
        while self._notify:
            note = self._notify.popleft()
            if isinstance(note, RiskRejected):
                self._call(self.strategy.on_reject, note)


_EMPTY = np.empty(0, np.int64)


def _quote_at(batch: TickBatch, t: int, instruments: InstrumentTable) -> Quote:
    return Quote(ts_event=int(batch.ts_event[t]), ts_recv=int(batch.ts_recv[t]),
                 instrument=instruments.instruments[batch.instrument[t]].symbol,
                 bid=float(batch.bid[t]), ask=float(batch.ask[t]),
                 bid_size=float(batch.bid_size[t]), ask_size=float(batch.ask_size[t]))  # fmt: skip


def _trade_at(batch: TickBatch, t: int, instruments: InstrumentTable) -> Trade:
    return Trade(ts_event=int(batch.ts_event[t]), ts_recv=int(batch.ts_recv[t]),
                 instrument=instruments.instruments[batch.instrument[t]].symbol,
                 price=float(batch.price[t]), size=float(batch.size[t]),
                 side="buy" if batch.side[t] > 0 else "sell")  # fmt: skip


class EngineContext:
    """The ``StrategyContext`` the engine hands to its strategy."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine

    def now_ns(self) -> int:
        return self._e.clock.now_ns()

    def instrument(self, symbol: str) -> Instrument:
        return self._e.instruments.by_symbol(symbol)

    def position(self, symbol: str) -> float:
        return float(self._e.portfolio.positions[self._e.instruments.index[symbol]])

    def open_qty(self, symbol: str) -> float:
        return self._e.orders.open_qty(self._e.instruments.index[symbol])

    def last_quote(self, symbol: str) -> Quote | None:
        i = self._e.instruments.index[symbol]
        ts = int(self._e.market.quote_ts[i])
        if ts == 0:
            return None
        b = self._e.market.book[i]
        return Quote(ts_event=ts, ts_recv=ts, instrument=symbol, bid=float(b[BID]),
                     ask=float(b[ASK]), bid_size=float(b[BID_SIZE]), ask_size=float(b[ASK_SIZE]))  # fmt: skip

    def features(self, symbol: str) -> dict[str, float]:
        i = self._e.instruments.index[symbol]
        return self._e.features.current(self._e.feature_state, i)

    def submit_market(
        self, symbol: str, side: Side, qty: float, *, reduce_only: bool = False
    ) -> str:
        return self._e.submit(symbol, side, qty, "market", None, "gtc", reduce_only)

    def submit_limit(self, symbol: str, side: Side, qty: float, price: float, *,
                     time_in_force: TimeInForce = "gtc", reduce_only: bool = False) -> str:  # fmt: skip
        return self._e.submit(symbol, side, qty, "limit", price, time_in_force, reduce_only)

    def cancel(self, client_order_id: str) -> None:
        self._e.cancel(client_order_id)

    def set_timer(self, name: str, ts_ns: int, interval_ns: int = 0) -> None:
        self._e.clock.set_timer(name, ts_ns, interval_ns)

    def cancel_timer(self, name: str) -> None:
        self._e.clock.cancel_timer(name)

    @property
    def trading_state(self) -> str:
        return self._e.risk.state


__all__ = ["Engine", "EngineContext", "EventSink", "TimerFired", "TradingState"]
