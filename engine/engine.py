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
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from engine.book.batch import DepthBatch
from engine.book.source import BookSource
from engine.clock import Clock
from engine.context import EngineContext
from engine.errors import ConfigError, DataError, StrategyError
from engine.events import (
    Alarm,
    Command,
    Event,
    Quote,
    RiskRejected,
    Signal,
    Trade,
    TradingState,
    TradingStateName,
)
from engine.features import FeatureSet
from engine.instruments import InstrumentTable
from engine.market import L_BREACH, MarketState
from engine.order_desk import OrderDesk
from engine.orders import OrderBook
from engine.portfolio import Portfolio
from engine.ports import DepthConsumer, ExecutionReport, OrderRouter
from engine.risk import RiskConfig, RiskEngine
from engine.signals import SignalModel, ZoneTracker, select_columns
from engine.signals.manifest import check_against_features
from engine.strategy import Strategy
from engine.ticks import QUOTE, TRADE, TickBatch
from engine.trading_state import SEVERITY, Source, command_source

log = logging.getLogger("tradeloop.engine")

EventSink = Callable[[Event], None]


class ScoreObserver(Protocol):
    """Sees each batch's model inputs and scores before the batch is walked (the model
    monitor). ``observe`` returns the sorted batch indices at which it must act; the
    engine calls ``act(index)`` once that tick is handled, before its signal reaches
    the strategy, so what an observer does lands on the same tick in any batching."""

    def observe(
        self, batch: TickBatch, features: npt.NDArray[np.float64], scores: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.int64]: ...

    def act(self, index: int) -> None: ...


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
        strict: re-raise strategy errors (replay, tests) instead of halting and carrying
            on (live).
        order_id_prefix: prefix of client order ids (unique per session in live).
        arrival_order: live (and a journal's replay): receive time (``ts_recv``) is the
            time axis of every stage; a ``ts_event`` going backwards (venues disagree on
            clocks) is counted in ``ts_event_backwards``, not refused.
        order_timeout_ns: an order with no answer from the venue this long after it was
            sent becomes UNKNOWN, with an Alarm, and the engine reduces only until the
            venue answers (None: no timeout, as with the simulated venue).
        cancel_retry_ns: a cancel sent for an order is not sent again before this, then
            again with the wait doubling up to ``cancel_retry_max_ns``, while the order is
            open (None: once per order, again only after the venue rejected it, as the
            simulated venue needs; see ``OrderDesk``).
        cancel_retry_max_ns: the longest wait between two cancels of one order.
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
        arrival_order: bool = False,
        order_timeout_ns: int | None = None,
        cancel_retry_ns: int | None = None,
        cancel_retry_max_ns: int | None = None,
    ) -> None:
        n = len(instruments)
        self.instruments = instruments
        self.clock = clock
        self.router = router
        self.features = features
        # where depth rows come from (``engine.book.source``): set by the replay runner
        # (depth files) or the live daemon (the depth topic) when the set has L2 features
        # or the router fills on depth; the rows go on to a router that is a DepthConsumer
        self.book_source: BookSource | None = None
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
        self.observers: list[ScoreObserver] = []
        self.desk = OrderDesk(
            self, order_id_prefix, order_timeout_ns, cancel_retry_ns, cancel_retry_max_ns
        )
        self.arrival_order = arrival_order
        self._max_event_ts = 0
        self._automatic_sticky: TradingStateName = "ACTIVE"
        self._last_ts = 0
        self._notify: deque[Event] = deque()
        self._model_columns: npt.NDArray[np.int64] | None = None
        self._zones: ZoneTracker | None = None
        # which registry version ``model`` is ("" for a model folder): state, so a
        # snapshot says which model its state was built with
        self.model_version = ""
        # set only while a batch is walked / a champion Signal is emitted (see
        # ``batch_features`` and ``signal_inputs``): None between batches, so a snapshot
        # never holds them
        self._batch_features: npt.NDArray[np.float64] | None = None
        self._signal_row: npt.NDArray[np.float64] | None = None
        # the batch being walked, for ``features_now``: its feature rows, the feature
        # values before it, how many of its ticks the walk has passed, and per instrument
        # the index of its latest tick so far (built on the first read); None between batches
        self._walk: _Walk | None = None
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

    def switch_model(
        self, model: SignalModel, *, version: str, risk: RiskConfig | None = None
    ) -> SignalModel | None:
        """Score with ``model`` from the next tick on (a journaled switch point: the
        caller applies it between inputs). The zones carry over, so a score of the new
        model in another zone than the old one's last is a Signal at the next tick.

        Args:
            model: the new model; checked against the feature set before anything changes.
            version: its registry version (``model_version``).
            risk: the ``[risk]`` to apply from now on (the stage's ``max_position``), or
                None to keep the current limits.

        Returns:
            The model replaced.

        Raises:
            ModelError, PluginLoadError: the model's features differ from the set (the
                engine is unchanged).
        """
        manifest = getattr(model, "manifest", None)
        if manifest is not None:
            check_against_features(manifest, self.features.names, self.features.fingerprint)
        columns = select_columns(model.name, model.feature_names, self.features.names)
        old = self.model
        self.model = model
        self.model_version = version
        self._model_columns = columns
        thresholds = self.strategy.thresholds()
        if self._zones is None and thresholds:
            self._zones = ZoneTracker(thresholds, len(self.instruments))
        if risk is not None:
            # only max_position differs between stages; the rate buckets keep their state
            self.risk.config = risk
            self.risk.limits = [risk.limits_for(s) for s in self.instruments.symbols]
            # a lower stage's limit binds the orders already working too, not only new ones
            self.desk.enforce_position_limits()
        self._warm_columns = self._warmup_columns()
        self.counters["model_switches"] += 1
        return old

    def batch_features(self) -> npt.NDArray[np.float64]:
        """Every feature column of the batch being walked (float64[n, features]): what a
        ``ScoreObserver`` scoring a second model (the challenger) takes its columns from.

        Raises:
            RuntimeError: called outside ``ScoreObserver.observe``.
        """
        if self._batch_features is None:
            raise RuntimeError("batch_features is only defined while a batch is observed")
        return self._batch_features

    def signal_inputs(self) -> npt.NDArray[np.float64] | None:
        """The model's input row (float64[k], the model's feature order) of the champion
        ``Signal`` being emitted, for a sink that explains it; None at any other time."""
        return self._signal_row

    def features_now(self, instrument: int) -> dict[str, float]:
        """Every feature of ``instrument`` as of the latest tick the loop has passed: inside
        a batch, its row at the newest of its ticks up to there (the values before the
        batch if it has none yet), not the batch's last row, which is the future for a
        hook called at an earlier tick; between batches, the latest values."""
        walk = self._walk
        if walk is None:
            return self.features.current(self.feature_state, instrument)
        row = walk.latest_row(instrument)
        if row < 0:
            return self.features.values_of(walk.before[instrument])
        return self.features.named(walk.features[row])

    def start(self) -> None:
        """Bind and start the strategy. Replay calls this on its first tick, with the
        clock already at that tick's time, so ``on_start`` sees a real time."""
        self.strategy.bind(self._context)
        self._started = True
        self.call_strategy(self.strategy.on_start, None)

    def finish(self) -> None:
        """End of data: handle what is due at the last tick's time, stop the strategy."""
        if not self._started:
            self.start()
        self._advance_external(self._last_ts)
        self.call_strategy(self.strategy.on_stop, None)
        self.counters["orders_open_at_end"] = len(self.orders.open_orders())

    def process_batch(self, batch: TickBatch) -> None:
        """Run one micro-batch through every stage.

        Raises:
            DataError: the batch's timestamps go backwards (sources sort and validate).
        """
        n = len(batch)
        if n == 0:
            return
        if self.arrival_order:
            batch = self._on_receive_time(batch)
        ts = batch.ts_event
        if ts[0] < self._last_ts or (n > 1 and bool(np.any(ts[1:] < ts[:-1]))):
            raise DataError("<batch>", "timestamps go backwards inside the engine's input")
        if not self._started:
            if self.features.book_specs and self.book_source is None:
                # NaN book features would still be scored: refuse rather than trade on them
                raise ConfigError(
                    "features",
                    f"L2 book features {[b.name for b in self.features.book_specs]} need "
                    "depth data (depth parquet next to the tick files in replay)",
                )
            self.clock.advance(int(ts[0]))
            self.start()
        self.counters["ticks"] += n
        self.market.begin_batch(n)
        book = None
        if self.book_source is not None:
            # the depth rows up to the batch's last tick go to a router filling on depth
            # before anything else (an order reaching it before the first tick must see the
            # rows stamped before it); it applies them in time order with the ticks itself.
            # Only the book source's own state moves here: the hooks below still read the
            # features as they were before the batch.
            book = self.book_source.asof(batch)
            rows = self.book_source.last_rows
            # checked where rows exist, not kept: no engine attribute a snapshot lacks
            if rows is not None and isinstance(self.router, DepthConsumer):
                self.router.on_depth(rows)
            if not self.features.book_specs:
                book = None
        # what is due before the batch's first tick (timers, orders reaching the venue)
        # runs before the batch's features are computed, so its hooks read the state
        # before the batch; a one-tick batch then needs no record of the walk (every later
        # read is at or after its tick), a longer one keeps the values before it
        self._advance_external(int(ts[0]) - 1)
        before = self.feature_state.values.copy() if n > 1 else None
        feats = self.features.update(batch, self.feature_state, book=book)
        walk = self._walk = None if before is None else _Walk(batch.instrument, feats, before)
        sig_idx = sig_zone = sig_prev = observed = _EMPTY
        scores = None
        if self.model is not None and self._model_columns is not None:
            inputs = np.ascontiguousarray(feats[:, self._model_columns])
            scores = self.model.predict(inputs)
            if self._zones is not None:
                sig_idx, sig_zone, sig_prev = self._zones.changes(batch, scores)
            if self.observers:
                self._batch_features = feats
                try:
                    marks = [ob.observe(batch, inputs, scores) for ob in self.observers]
                finally:
                    self._batch_features = None
                observed = np.unique(np.concatenate(marks))
        events = np.union1d(sig_idx, observed) if observed.shape[0] else sig_idx
        if self._wants_quotes or self._wants_trades:
            mask = np.zeros(n, np.bool_)
            if self._wants_quotes:
                mask |= batch.kind == QUOTE
            if self._wants_trades:
                mask |= batch.kind == TRADE
            events = np.union1d(events, np.flatnonzero(mask))
        positions, cash = self.portfolio.positions, self.portfolio.cash
        loss = self.market.loss
        e = 0  # next entry of ``events``
        s = 0  # next entry of ``sig_idx``
        o = 0  # next entry of ``observed``
        n_events = events.shape[0]
        pos = 0
        while pos < n:
            if pos:  # what was due before the first tick ran before the features
                if walk is not None:
                    walk.passed = pos
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
            if walk is not None:
                walk.passed = k
            self.desk.handle_reports()
            if loss[L_BREACH] != 0.0:
                self._check_loss_breach()
            j = k
            if e < n_events and events[e] == j - 1:
                t = j - 1
                if o < observed.shape[0] and observed[o] == t:
                    o += 1
                    for observer in self.observers:
                        observer.act(t)
                if s < sig_idx.shape[0] and sig_idx[s] == t:
                    assert scores is not None
                    sig = Signal(
                        ts_event=int(ts[t]),
                        ts_recv=int(batch.ts_recv[t]),
                        instrument=self.instruments.instruments[batch.instrument[t]].symbol,
                        model=self.model.name if self.model else "",
                        score=float(scores[t]),
                        zone=int(sig_zone[s]),
                        previous_zone=int(sig_prev[s]),
                    )
                    s += 1
                    self.counters["signals"] += 1
                    self._signal_row = inputs[t]
                    try:
                        self.emit(sig)
                    finally:
                        self._signal_row = None
                    self.call_strategy(self.strategy.on_signal, sig)
                if batch.kind[t] == QUOTE and self._wants_quotes:
                    self.call_strategy(
                        self.strategy.on_quote, _quote_at(batch, t, self.instruments)
                    )
                elif batch.kind[t] == TRADE and self._wants_trades:
                    self.call_strategy(
                        self.strategy.on_trade, _trade_at(batch, t, self.instruments)
                    )
                e += 1
            pos = j
        self._walk = None
        self.market.end_batch()
        if self.desk.flattening:
            self.desk.flatten_step()

    def process_depth(self, batch: DepthBatch) -> None:
        """Apply depth rows received live (the daemon, and the replay of its journal): what
        is due before them runs first, then the book source (L2 features of the ticks that
        follow) and a router filling on depth take them, and the clock moves to the last.

        Rows, like ticks live, are placed on the receive-time axis under ``arrival_order``.
        An out-of-sync book is not the engine's to judge: the daemon journals it as lost
        data before the rows (``FeedMonitor.on_depth``).

        Raises:
            DataError: the rows' times go backwards (the daemon clamps receive times).
        """
        n = len(batch)
        if n == 0:
            return
        if self.arrival_order:
            b = batch
            batch = DepthBatch(b.ts_recv, b.ts_recv, b.instrument, b.side, b.price, b.qty,
                               b.flags, b.first_update_id, b.last_update_id,
                               b.prev_update_id)  # fmt: skip
        ts = batch.ts_event
        if int(ts[0]) < self._last_ts or (n > 1 and bool(np.any(ts[1:] < ts[:-1]))):
            raise DataError("<depth>", "timestamps go backwards inside the engine's input")
        if self._started:
            self._advance_external(int(ts[0]) - 1)
        self.counters["depth_rows"] += n
        if self.book_source is not None:
            self.book_source.push(batch)
        if isinstance(self.router, DepthConsumer):
            self.router.on_depth(batch)
        last = int(ts[-1])
        self.clock.advance(max(last, self.clock.now_ns()))
        self._last_ts = max(self._last_ts, last)

    def _on_receive_time(self, batch: TickBatch) -> TickBatch:
        event = batch.ts_event
        if event.shape[0] == 1:  # the live loop's usual batch: no numpy call for one tick
            newest = int(event[0])
            backwards = int(newest < self._max_event_ts)
        else:
            running = np.maximum.accumulate(event)
            backwards = int(np.count_nonzero(event < np.maximum(running, self._max_event_ts)))
            newest = int(running[-1])
        if backwards:
            self.counters["ts_event_backwards"] += backwards
        self._max_event_ts = max(self._max_event_ts, newest)
        # built directly: dataclasses.replace walks the fields (5-13 us a batch here)
        b = batch
        return TickBatch(
            ts_event=b.ts_recv,
            ts_recv=b.ts_recv,
            instrument=b.instrument,
            kind=b.kind,
            bid=b.bid,
            ask=b.ask,
            bid_size=b.bid_size,
            ask_size=b.ask_size,
            price=b.price,
            size=b.size,
            side=b.side,
        )

    def _check_loss_breach(self) -> None:
        breach = self.market.take_breach()
        if breach is None:
            return
        code, equity = breach
        start, peak = self.market.day_figures()
        cfg = self.risk.config
        if code == 1:
            reason = (
                f"daily loss limit {cfg.daily_loss_limit:g} reached: equity {equity:.2f}, "
                f"day start {start:.2f}"
            )
        else:
            reason = (
                f"max drawdown {cfg.max_drawdown:g} from the day's peak reached: equity "
                f"{equity:.2f}, peak {peak:.2f}"
            )
        self.counters["loss_limit_breaches"] += 1
        self.request_state(
            "loss_limit", "HALTED" if cfg.on_loss == "halted" else "REDUCE_ONLY", reason
        )

    def market_data_lost(self, reason: str) -> None:
        """The source lost market data (broker drop, stale feed): stop adding risk."""
        self.counters["market_data_lost"] += 1
        state: TradingStateName = (
            "HALTED" if self.risk.config.on_data_loss == "halted" else "REDUCE_ONLY"
        )
        self.request_state("data_loss", state, f"market data lost: {reason}")

    def market_data_restored(self, reason: str) -> None:
        """Market data is back (fresh quotes for every instrument): lift the data-loss
        claim; other claims (an operator's kill, a loss limit) stay."""
        self.request_state("data_loss", "ACTIVE", f"market data restored: {reason}")

    def _warmup_columns(self) -> tuple[list[int], list[int]]:
        """Where the features that must be warm sit: in a ``FeatureState.values`` row, and
        in a row of a batch's features (the set's order)."""
        wanted = list(self.strategy.required_features())
        if not wanted and self.model is not None:
            wanted = list(self.model.feature_names)
        in_state = [int(c) for c in self.features.state_columns(wanted)]
        return in_state, [self.features.names.index(name) for name in wanted]

    def _is_warm(self, instrument: int) -> bool:
        # as of the tick the loop is at, as ``features_now``: the state after the whole
        # batch would let an order through on features warmed by ticks of its future
        in_state, in_batch = self._warm_columns
        walk = self._walk
        row = -1 if walk is None else walk.latest_row(instrument)
        if row >= 0:
            assert walk is not None
            values, columns = walk.features[row], in_batch
        else:
            before = self.feature_state.values if walk is None else walk.before
            values, columns = before[instrument], in_state
        return all(values[c] == values[c] for c in columns)  # NaN != NaN

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
        """Move time to ``ts_ns`` (a clock reading of the live stream): handle timers and
        venue events due by then and orders that waited too long for an answer."""
        if not self._started:
            self.clock.advance(max(ts_ns, self.clock.now_ns()))
            self.start()
        self._advance_external(ts_ns)
        self.clock.advance(max(ts_ns, self.clock.now_ns()))
        self._last_ts = max(self._last_ts, ts_ns)
        self.desk.check_timeouts(self.clock.now_ns())

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
                self.market.sample_before(t_router, self.portfolio.positions, self.portfolio.cash)
                self.router.advance_to(t_router)
                self.desk.handle_reports()
            elif t_timer is not None and t_timer <= until_ns:
                self.clock.advance(max(t_timer, self.clock.now_ns()))
                self.market.sample_before(t_timer, self.portfolio.positions, self.portfolio.cash)
                for fired in self.clock.pop_due(t_timer):
                    self.counters["timers"] += 1
                    self.call_strategy(self.strategy.on_timer, fired)
            else:
                return

    def on_report(self, report: ExecutionReport) -> None:
        """Apply one execution report (from the simulated venue or the OMS)."""
        self.desk.on_report(report)

    def on_command(self, command: Command) -> None:
        """Apply an operator command: kill, reduce_only, resume, flatten.

        The command's issuer holds the claim it sets (``command_source``: the operator,
        the daemon's shutdown, reconciliation, the daemon). A kill is left only by a
        ``resume`` that clears it; ``reduce_only`` during the same holder's kill is refused
        with an Alarm. The operator's ``resume`` clears every claim; another holder's only
        its own. ``flatten`` cancels every open order and closes every position with
        reducing orders (also while HALTED), and keeps the state at least REDUCE_ONLY.
        """
        self.emit(command)
        reason = f"command {command.action} from {command.issuer or 'operator'}: {command.reason}"
        source = command_source(command.issuer, command.reason)
        killed = self.risk.trading.is_killed(source)
        match command.action:
            case "kill":
                self.desk.stop_flatten()
                self.request_state(source, "HALTED", reason)
                self.desk.enforce_state()  # also a flatten's orders still working
            case "reduce_only":
                if killed:
                    self._refuse(command, "a kill is in force; only resume leaves it")
                else:
                    self.request_state(source, "REDUCE_ONLY", reason)
            case "resume" if source != "operator":
                now = self.clock.now_ns()
                self._state_changed(self.risk.trading.resume(reason, now, by=source))
            case "resume":
                self.desk.stop_flatten()
                self._automatic_sticky = "ACTIVE"
                self._state_changed(self.risk.trading.resume(reason, self.clock.now_ns()))
                if not self.market.is_loss_monitor_armed():
                    self.market.rearm_loss_monitor(
                        self.portfolio.equity(self.market.mids()), self.clock.now_ns()
                    )
            case "flatten":
                if not killed:
                    self.request_state(source, "REDUCE_ONLY", reason)
                self.desk.start_flatten()
            case "reload_model":
                self._refuse(command, "model reload is handled by the daemon, not the engine")
            case "promote" | "rollback":
                # the daemon carries these out (registry write, load and check off the
                # loop) and journals a ModelSwitched where the model changes
                pass

    def _refuse(self, command: Command, why: str) -> None:
        self.counters["commands_refused"] += 1
        self.emit(
            Alarm(
                ts_event=command.ts_event,
                ts_recv=command.ts_recv,
                source="engine",
                severity="warning",
                message=f"command {command.action} refused: {why}",
            )
        )

    def request_state(self, source: Source, state: TradingStateName, reason: str) -> None:
        """Set ``source``'s claim on the trading state (see ``engine.trading_state``)."""
        self._state_changed(self.risk.trading.request(source, state, reason, self.clock.now_ns()))

    def raise_automatic(self, state: TradingStateName, reason: str, *, sticky: bool) -> None:
        """The engine's own claim: ``sticky`` conditions (a strategy that raised, a fill
        nobody can explain) hold until an operator resumes; others (orders waiting for
        an answer) until ``lower_automatic``."""
        if sticky and SEVERITY[state] > SEVERITY[self._automatic_sticky]:
            self._automatic_sticky = state
        held = self.risk.trading.claim("automatic")
        if SEVERITY[state] > SEVERITY[held]:
            self.request_state("automatic", state, reason)

    def lower_automatic(self, reason: str) -> None:
        """A passing condition ended: the engine's claim falls back to its sticky part."""
        self.request_state("automatic", self._automatic_sticky, reason)

    def _state_changed(self, event: TradingState | None) -> None:
        if event is None:
            return
        self.counters["state_changes"] += 1
        self.emit(event)
        self.desk.enforce_state()
        if self._started:
            self.call_strategy(self.strategy.on_state, event)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def notify(self, rejected: RiskRejected) -> None:
        """Tell the strategy about a refusal once its current hook has returned."""
        self._notify.append(rejected)

    def call_strategy(self, hook: Callable[[Any], None] | Callable[[], None], event: Any) -> None:
        """Run a strategy hook; a raise halts trading (and is re-raised under ``strict``)."""
        try:
            if event is None:
                hook()  # type: ignore[call-arg]
            else:
                hook(event)  # type: ignore[call-arg]
        except Exception as exc:
            self.counters["strategy_errors"] += 1
            log.exception("strategy %s raised on %r; trading halted", self.strategy.name, event)
            self.request_state(
                "automatic", "HALTED", f"strategy raised {type(exc).__name__}: {exc}"
            )
            if self.strict:
                raise StrategyError(self.strategy.name, event, exc) from exc
        while self._notify:
            note = self._notify.popleft()
            if isinstance(note, RiskRejected):
                self.call_strategy(self.strategy.on_reject, note)


_EMPTY = np.empty(0, np.int64)


def _quote_at(batch: TickBatch, t: int, instruments: InstrumentTable) -> Quote:
    return Quote(
        ts_event=int(batch.ts_event[t]),
        ts_recv=int(batch.ts_recv[t]),
        instrument=instruments.instruments[batch.instrument[t]].symbol,
        bid=float(batch.bid[t]),
        ask=float(batch.ask[t]),
        bid_size=float(batch.bid_size[t]),
        ask_size=float(batch.ask_size[t]),
    )


def _trade_at(batch: TickBatch, t: int, instruments: InstrumentTable) -> Trade:
    return Trade(
        ts_event=int(batch.ts_event[t]),
        ts_recv=int(batch.ts_recv[t]),
        instrument=instruments.instruments[batch.instrument[t]].symbol,
        price=float(batch.price[t]),
        size=float(batch.size[t]),
        side="buy" if batch.side[t] > 0 else "sell",
    )


__all__ = ["Engine", "EngineContext", "EventSink", "ScoreObserver"]


class _Walk:
    """Where the loop is in the batch it walks (``Engine.features_now``)."""

    __slots__ = ("_latest", "before", "features", "instrument", "passed")

    def __init__(
        self,
        instrument: npt.NDArray[np.int32],
        features: npt.NDArray[np.float64],
        before: npt.NDArray[np.float64],
    ) -> None:
        self.instrument = instrument
        self.features = features
        self.before = before
        self.passed = 0
        self._latest: dict[int, npt.NDArray[np.int64]] = {}

    def latest_row(self, instrument: int) -> int:
        """The index of ``instrument``'s newest tick among the ticks passed, or -1."""
        if self.passed == 0:
            return -1
        latest = self._latest.get(instrument)
        if latest is None:
            index = np.arange(self.instrument.shape[0], dtype=np.int64)
            latest = np.maximum.accumulate(np.where(self.instrument == instrument, index, -1))
            self._latest[instrument] = latest
        return int(latest[self.passed - 1])
