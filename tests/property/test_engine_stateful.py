"""The engine's safety rules as invariants over arbitrary sequences of inputs.

Two hypothesis state machines drive a real ``Engine`` (real risk engine, order book,
portfolio, trading state):

* ``OmsMachine`` puts a scripted OMS behind the order router that answers the way a real
  one over MQTT QoS 1 does: reports duplicated and reordered, an ack after a fill, a fill
  after the cancel confirmation, partial fills, fills for orders nobody here sent;
* ``VenueMachine`` puts the simulated venue behind it, with quotes and trades (gaps and
  equal timestamps), and at the end replays the same inputs split into other batches.

Both take strategy orders (market, limit, ioc, cancel), operator commands (kill,
reduce_only, resume, flatten), data loss and price moves that trip the loss limit. After
every step the invariants below are checked; each says why it matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from adapters.sim_venue import SimulatedVenue
from engine.clock import ReplayClock
from engine.engine import Engine
from engine.events import (
    CancelRejected,
    CancelRequest,
    Command,
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    RiskRejected,
    TradingState,
    TradingStateName,
    side_sign,
)
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument, InstrumentTable
from engine.market import MarketState
from engine.order_desk import FLATTEN
from engine.orders import OPEN_STATUSES, OrderStatus
from engine.ports import ExecutionReport
from engine.risk import RiskConfig, RiskEngine
from engine.ticks import TickBatch
from tests.support import Scripted

T0 = 1_700_000_000_000_000_000
LOT = 0.1
TICK = 0.5
EPS = 1e-9
SEVERITY: dict[TradingStateName, int] = {"ACTIVE": 0, "REDUCE_ONLY": 1, "HALTED": 2}
_BY_SEVERITY: dict[int, TradingStateName] = {v: k for k, v in SEVERITY.items()}

qtys = st.integers(1, 30).map(lambda n: round(n * LOT, 10))
# equal stamps, sub-microsecond steps, and gaps of seconds
steps_ns = st.sampled_from([0, 1, 1_000, 1_000_000, 250_000_000, 5_000_000_000])


@dataclass
class Sent:
    """What the router saw when an order left the engine, with the state it left in."""

    order: OrderRequest
    state: TradingStateName
    position: float
    side_open: float  # open quantity on the order's side, this order included


@dataclass
class CheckingRouter:
    """Wraps the real router port and notes every order at the moment it is sent."""

    inner: Any
    engine: Engine | None = None
    sent: list[Sent] = field(default_factory=list)

    def bind(self, market: MarketState, instruments: InstrumentTable) -> None:
        self.inner.bind(market, instruments)

    def submit(self, order: OrderRequest) -> None:
        e = self.engine
        assert e is not None
        i = e.instruments.index[order.instrument]
        side_open = e.orders.open_buy_qty[i] if order.side == "buy" else e.orders.open_sell_qty[i]
        self.sent.append(Sent(order, e.risk.state, float(e.portfolio.positions[i]), side_open))
        self.inner.submit(order)

    def cancel(self, request: CancelRequest) -> None:
        self.inner.cancel(request)

    def next_event_ns(self) -> int | None:
        return self.inner.next_event_ns()  # type: ignore[no-any-return]

    def advance_to(self, ts_ns: int) -> None:
        self.inner.advance_to(ts_ns)

    def match(self, batch: TickBatch, start: int, stop: int) -> int:
        return self.inner.match(batch, start, stop)  # type: ignore[no-any-return]

    def commit(self) -> None:
        self.inner.commit()

    def drain_reports(self) -> list[ExecutionReport]:
        return self.inner.drain_reports()  # type: ignore[no-any-return]


@dataclass
class VenueOrder:
    side: str
    qty: float
    status: OrderStatus = OrderStatus.NEW
    filled: float = 0.0


class ScriptedOms:
    """An OMS whose answers the test chooses; it knows the truth about every order."""

    def __init__(self) -> None:
        self.orders: dict[str, VenueOrder] = {}
        self.requests: dict[str, OrderRequest] = {}
        self.cancels: list[CancelRequest] = []
        self.outbox: list[ExecutionReport] = []
        self._fill_seq = 0

    def bind(self, market: MarketState, instruments: InstrumentTable) -> None:
        pass

    def submit(self, order: OrderRequest) -> None:
        self.orders[order.client_order_id] = VenueOrder(order.side, order.qty)
        self.requests[order.client_order_id] = order

    def cancel(self, request: CancelRequest) -> None:
        self.cancels.append(request)

    def next_event_ns(self) -> int | None:
        return None

    def advance_to(self, ts_ns: int) -> None:
        pass

    def match(self, batch: TickBatch, start: int, stop: int) -> int:
        return stop

    def commit(self) -> None:
        pass

    def drain_reports(self) -> list[ExecutionReport]:
        return []

    def new_fill_id(self) -> str:
        self._fill_seq += 1
        return f"VF-{self._fill_seq}"


def _independent_books(fills: list[Fill]) -> tuple[float, float, float, float]:
    """Position, cash change, realized PnL (net of fees) and fees from the fill list
    alone, by average cost, written apart from the portfolio's code."""
    position = 0.0
    cost = 0.0  # |position| x average price
    realized = 0.0
    cash = 0.0
    fees = 0.0
    for f in fills:
        q = side_sign(f.side) * f.qty
        cash -= q * f.price + f.fee
        fees += f.fee
        realized -= f.fee
        if position == 0.0 or (position > 0) == (q > 0):
            cost += abs(q) * f.price
            position = round(position + q, 10)
            continue
        avg = cost / abs(position)
        closed = min(abs(q), abs(position))
        realized += (f.price - avg) * closed * (1 if position > 0 else -1)
        rest = round(position + q, 10)
        if rest == 0.0:
            cost = 0.0
        elif (rest > 0) != (position > 0):
            cost = abs(rest) * f.price
        else:
            cost = abs(rest) * avg
        position = rest
    return position, cash, realized, fees


class EngineMachine(RuleBasedStateMachine):
    """Inputs and invariants shared by both routers."""

    def make_router(self) -> Any:
        raise NotImplementedError

    @initialize(
        on_loss=st.sampled_from(["reduce_only", "halted"]),
        on_data_loss=st.sampled_from(["reduce_only", "halted"]),
        max_position=st.sampled_from([None, 0.5, 1.0, 2.0]),
        loss_limit=st.sampled_from([None, 2.0, 5.0]),
    )
    def start(
        self, on_loss: str, on_data_loss: str, max_position: float | None, loss_limit: float | None
    ) -> None:
        self.risk_config = msgspec.convert(
            {
                "on_loss": on_loss,
                "on_data_loss": on_data_loss,
                "max_position": max_position,
                "daily_loss_limit": loss_limit,
                "warmup": False,
            },
            RiskConfig,
        )
        self.inputs: list[tuple[str, Any]] = []
        self.engine, self.router, self.events = self._build()
        self.now = T0
        self.mid = 100.0
        self.claims: dict[str, TradingStateName] = dict.fromkeys(
            ("operator", "loss_limit", "data_loss", "automatic"), "ACTIVE"
        )
        self.seen_counters: dict[str, int] = {}
        self._quote(0, 1.0, 1.0)

    def _build(self) -> tuple[Engine, CheckingRouter, list[Event]]:
        instruments = InstrumentTable([Instrument(symbol="X", tick_size=TICK, lot_size=LOT)])
        router = CheckingRouter(self.make_router())
        engine = Engine(
            instruments=instruments,
            clock=ReplayClock(),
            router=router,
            features=FeatureSet([FeatureSpec(name="mid", kind="mid")]),
            model=None,
            strategy=Scripted(),
            risk=RiskEngine(self.risk_config, instruments.symbols),
            equity_interval_ns=0,
            initial_cash=1_000.0,
        )
        router.engine = engine
        events: list[Event] = []
        engine.sinks.append(events.append)
        return engine, router, events

    # inputs

    def _quote(self, dt: int, bid_size: float, ask_size: float) -> None:
        self.now += dt
        row = (self.now, self.mid - TICK, self.mid + TICK, bid_size, ask_size)
        self._apply(self.engine, ("quotes", [row]))
        self.inputs.append(("quotes", [row]))
        self._after()

    @staticmethod
    def _apply(engine: Engine, item: tuple[str, Any]) -> None:
        kind, payload = item
        if kind == "quotes":
            a = np.array(payload, float)
            ts = np.array([r[0] for r in payload], np.int64)
            batch = TickBatch.quotes(
                ts, ts, np.zeros(len(payload), np.int32), a[:, 1], a[:, 2], a[:, 3], a[:, 4]
            )
            engine.process_batch(batch)
        elif kind == "trades":
            a = np.array(payload, float)
            ts = np.array([r[0] for r in payload], np.int64)
            batch = TickBatch.trades(
                ts, ts, np.zeros(len(payload), np.int32), a[:, 1], a[:, 2], a[:, 3].astype(np.int8)
            )
            engine.process_batch(batch)
        elif kind == "order":
            ctx = engine._context
            order_type, side, qty, price, tif = payload
            if order_type == "market":
                ctx.submit_market("X", side, qty)
            else:
                ctx.submit_limit("X", side, qty, price, time_in_force=tif)
        elif kind == "cancel":
            order = engine.orders.find(payload)
            if order is not None:
                ctx = engine._context
                ctx.cancel(payload)
        elif kind == "command":
            ts = engine.clock.now_ns()
            engine.on_command(Command(ts_event=ts, ts_recv=ts, action=payload, reason="harness"))
        elif kind == "data_lost":
            engine.market_data_lost("harness")
        elif kind == "data_restored":
            engine.market_data_restored("harness")
        elif kind == "report":
            engine.on_report(payload)
        elif kind == "limit":
            # what ``Engine.switch_model`` does with a lower stage's limits
            engine.risk.limits[0] = msgspec.structs.replace(
                engine.risk.limits[0], max_position=payload
            )
            engine.desk.enforce_position_limits()

    def _input(self, item: tuple[str, Any]) -> None:
        self.inputs.append(item)
        self._apply(self.engine, item)
        self._after()

    def _after(self) -> None:
        """Update the claims model from what the engine observed."""
        c = self.engine.counters
        grew = {k: c[k] - self.seen_counters.get(k, 0) for k in c}
        self.seen_counters = dict(c)
        if grew.get("loss_limit_breaches", 0) > 0:
            self.claims["loss_limit"] = (
                "HALTED" if self.risk_config.on_loss == "halted" else "REDUCE_ONLY"
            )
        if any(
            grew.get(k, 0) > 0
            for k in ("fills_unknown_order", "fills_overfill", "fills_mismatch", "reports_illegal")
        ):
            self._raise_claim("automatic", "REDUCE_ONLY")

    def _raise_claim(self, source: str, state: TradingStateName) -> None:
        if SEVERITY[state] > SEVERITY[self.claims[source]]:
            self.claims[source] = state

    @rule(dt=steps_ns, bid_size=qtys, ask_size=qtys, move=st.integers(-2, 2))
    def quote(self, dt: int, bid_size: float, ask_size: float, move: int) -> None:
        self.mid = min(max(self.mid + move * TICK, 80.0), 120.0)
        self._quote(dt, bid_size, ask_size)

    @rule(dt=steps_ns, factor=st.sampled_from([0.5, 1.2, 3.0]))
    def loss_move(self, dt: int, factor: float) -> None:
        """An adverse move costing ``factor`` x the loss limit on the position held."""
        position = self.position
        limit = self.risk_config.daily_loss_limit or 5.0
        if abs(position) < EPS:
            return
        # at least ``factor`` x the limit: rounding down could leave it just under
        ticks = max(1, math.ceil(factor * limit / abs(position) / TICK - 1e-9))
        move = ticks * TICK * (-1 if position > 0 else 1)
        self.mid = min(max(self.mid + move, 5.0), 400.0)
        self._quote(dt, 1.0, 1.0)

    @rule(
        order_type=st.sampled_from(["market", "limit", "limit"]),
        side=st.sampled_from(["buy", "sell"]),
        qty=qtys,
        offset=st.integers(-4, 4),
        tif=st.sampled_from(["gtc", "ioc"]),
    )
    def strategy_order(self, order_type: str, side: str, qty: float, offset: int, tif: str) -> None:
        price = self.mid + offset * TICK
        self._input(("order", (order_type, side, qty, price, tif)))

    @precondition(lambda self: abs(self.position) > EPS)
    @rule(beyond=st.booleans(), order_type=st.sampled_from(["market", "limit"]))
    def probe_the_edges(self, beyond: bool, order_type: str) -> None:
        """Orders aimed at the rules' edges, which random sizes seldom hit: one that
        closes the position exactly (passes unless HALTED), and one that flips it to one
        lot beyond ``max_position`` (never passes)."""
        side = "sell" if self.position > 0 else "buy"
        qty = abs(self.position)
        limit = self.risk_config.max_position
        if beyond and limit is not None:
            qty += limit + LOT
        self._input(("order", (order_type, side, round(qty, 10), self.mid, "gtc")))

    @precondition(lambda self: len(self.engine.orders.open_orders()) > 0)
    @rule(k=st.integers(0, 50))
    def strategy_cancel(self, k: int) -> None:
        opened = self.engine.orders.open_orders()
        self._input(("cancel", opened[k % len(opened)].client_order_id))

    @rule(action=st.sampled_from(["kill", "reduce_only", "resume", "flatten"]))
    def command(self, action: str) -> None:
        killed = self.claims["operator"] == "HALTED"
        tripped = self.claims["loss_limit"] != "ACTIVE"
        if action == "kill":
            self.claims["operator"] = "HALTED"
        elif action in ("reduce_only", "flatten") and not killed:
            self.claims["operator"] = "REDUCE_ONLY"
        elif action == "resume":
            self.claims = dict.fromkeys(self.claims, "ACTIVE")
        self._input(("command", action))
        if action == "resume" and tripped:
            self._same_quote_after_resume()

    @rule(to=st.sampled_from([0.0, 0.5, 1.0]))
    def lower_max_position(self, to: float) -> None:
        """A model switched to a lower stage lowers ``max_position`` while orders work:
        right after, no order that was not cancelled can, with the older ones of its
        side, take the position beyond the new limit (an order that only reduces stays).
        Mutation-checked: with ``enforce_position_limits`` a no-op this fails."""
        current = self.engine.risk.limits[0].max_position
        limit = to if current is None else min(current, to)
        self._input(("limit", limit))
        kept = [o for o in self.engine.orders.open_orders(0) if not o.cancel_sent]
        buys = sum(o.remaining_qty for o in kept if o.request.side == "buy")
        sells = sum(o.remaining_qty for o in kept if o.request.side == "sell")
        assert buys <= EPS or self.position + buys <= limit + EPS, (self.position, buys)
        assert sells <= EPS or self.position - sells >= -limit - EPS, (self.position, sells)

    @rule()
    def data_lost(self) -> None:
        self.claims["data_loss"] = (
            "HALTED" if self.risk_config.on_data_loss == "halted" else "REDUCE_ONLY"
        )
        self._input(("data_lost", None))

    @rule()
    def data_restored(self) -> None:
        self.claims["data_loss"] = "ACTIVE"
        self._input(("data_restored", None))

    def _same_quote_after_resume(self) -> None:
        """After a loss trip, a quote at the resume's prices must not trip the loss limit
        again: the resume re-armed the monitor from the equity it accepted. (Orders the simulated venue
        would fill at that quote change equity, so then there is nothing to check.)"""
        venue = self.router.inner
        if isinstance(venue, SimulatedVenue) and (
            self.engine.orders.open_orders() or venue.next_event_ns() is not None
        ):
            return
        before = self.engine.counters["loss_limit_breaches"]
        self._quote(1, 1.0, 1.0)
        assert self.engine.counters["loss_limit_breaches"] == before
        assert self.engine.risk.state == "ACTIVE"
        limit = self.risk_config.daily_loss_limit
        if limit is not None and abs(self.position) > EPS and self.mid > 40.0:
            # ...and it is armed: a fresh loss beyond the limit trips it again
            self.loss_move(1, 1.2)
            assert self.engine.counters["loss_limit_breaches"] == before + 1
            self._after()

    @property
    def position(self) -> float:
        return float(self.engine.portfolio.positions[0])

    # invariants

    @invariant()
    def state_follows_precedence(self) -> None:
        """Sources rank operator > loss limits > data loss > automatic. The effective
        state is the most severe claim, so no source can lower what another set, and
        only an operator resume leaves a kill. (A kill lowered by a loss breach let a
        desk's emergency stop be undone by the very loss it was meant to contain.)"""
        expected = _BY_SEVERITY[max(SEVERITY[s] for s in self.claims.values())]
        assert self.engine.risk.state == expected, (self.claims, self.engine.risk.trading.claims())
        if self.claims["operator"] == "HALTED":
            assert self.engine.risk.state == "HALTED"

    @invariant()
    def restricted_orders_only_reduce(self) -> None:
        """REDUCE_ONLY and HALTED (flatten): an order that left while trading was
        restricted could not, with every open order on its side, grow |position| or flip
        it. max_position: the same worst case stays within the limit unless it reduces.
        HALTED: only an operator's flatten sends anything."""
        limit = self.risk_config.max_position
        for s in self.router.sent:
            signed = s.side_open if s.order.side == "buy" else -s.side_open
            worst = s.position + signed
            reduces = abs(worst) <= abs(s.position) + EPS and s.position * worst >= -EPS
            if s.state != "ACTIVE" or s.order.reduce_only:
                assert reduces, s
            if s.state == "HALTED":
                assert s.order.strategy == FLATTEN, s
            if limit is not None:
                assert abs(worst) <= limit + EPS or reduces, s

    @invariant()
    def restricted_state_leaves_no_risk_adding_order_working(self) -> None:
        """Entering REDUCE_ONLY cancels open orders that add risk; under HALTED every
        order is being cancelled except a flatten's reducing ones. What is still working
        (open, no cancel sent) on each side could not grow |position| or flip it."""
        e = self.engine
        if e.risk.state == "ACTIVE":
            return
        position = self.position
        for side in ("buy", "sell"):
            working = [
                o for o in e.orders.open_orders(0) if not o.cancel_sent and o.request.side == side
            ]
            if e.risk.state == "HALTED":
                assert all(o.request.strategy == FLATTEN for o in working)
            qty = sum(o.remaining_qty for o in working)
            worst = position + (qty if side == "buy" else -qty)
            assert abs(worst) <= abs(position) + EPS and position * worst >= -EPS

    @invariant()
    def books_equal_the_fills(self) -> None:
        """Each fill is applied once (by fill_id), and cash, position, realized PnL and
        fees equal an independent average-cost recomputation from the fills the engine
        was told about; equity is cash + position x mark."""
        e = self.engine
        unique: dict[str, Fill] = {}
        for ev in self.events:
            if isinstance(ev, Fill) and ev.fill_id not in unique:
                unique[ev.fill_id] = ev
        position, cash, realized, fees = _independent_books(list(unique.values()))
        p = e.portfolio
        assert abs(p.positions[0] - position) < EPS
        assert abs(p.cash[0] - (1_000.0 + cash)) < 1e-6
        assert abs(p.realized[0] - realized) < 1e-6
        assert abs(p.fees[0] - fees) < 1e-9
        mid = float(e.market.mids()[0])
        assert abs(p.equity(e.market.mids()) - (p.cash[0] + p.positions[0] * mid)) < 1e-6


class OmsMachine(EngineMachine):
    """A scripted OMS: reports in any order, duplicated, late, or for unknown orders."""

    def make_router(self) -> ScriptedOms:
        return ScriptedOms()

    @property
    def oms(self) -> ScriptedOms:
        return self.router.inner  # type: ignore[no-any-return]

    def _open_venue(self) -> list[str]:
        return [cid for cid, o in self.oms.orders.items() if o.status in OPEN_STATUSES]

    def _emit(self, report: ExecutionReport) -> None:
        self.oms.outbox.append(report)

    @precondition(lambda self: any(o.status is OrderStatus.NEW for o in self.oms.orders.values()))
    @rule(k=st.integers(0, 50), reject=st.booleans())
    def venue_answers(self, k: int, reject: bool) -> None:
        new = [cid for cid, o in self.oms.orders.items() if o.status is OrderStatus.NEW]
        cid = new[k % len(new)]
        order = self.oms.orders[cid]
        if reject and order.filled == 0.0:
            order.status = OrderStatus.REJECTED
            self._emit(
                OrderRejected(
                    ts_event=self.now, ts_recv=self.now, client_order_id=cid, reason="venue says no"
                )
            )
        else:
            order.status = OrderStatus.ACCEPTED
            self._emit(
                OrderAccepted(
                    ts_event=self.now,
                    ts_recv=self.now,
                    client_order_id=cid,
                    venue_order_id=f"V{cid}",
                )
            )

    @precondition(lambda self: bool(self._open_venue()))
    @rule(k=st.integers(0, 50), lots=st.integers(1, 30), price_offset=st.integers(-2, 2))
    def venue_fills(self, k: int, lots: int, price_offset: int) -> None:
        cid = self._open_venue()[k % len(self._open_venue())]
        order = self.oms.orders[cid]
        qty = round(min(lots * LOT, order.qty - order.filled), 10)
        order.filled = round(order.filled + qty, 10)
        order.status = (
            OrderStatus.FILLED if order.filled >= order.qty - EPS else OrderStatus.PARTIALLY_FILLED
        )
        self._emit(
            Fill(
                ts_event=self.now,
                ts_recv=self.now,
                client_order_id=cid,
                fill_id=self.oms.new_fill_id(),
                instrument="X",
                side=order.side,  # type: ignore[arg-type]
                qty=qty,
                price=self.mid + price_offset * TICK,
                fee=0.01,
                liquidity="taker",
            )
        )

    @precondition(lambda self: bool(self.oms.cancels))
    @rule()
    def venue_handles_a_cancel(self) -> None:
        req = self.oms.cancels.pop(0)
        order = self.oms.orders.get(req.client_order_id)
        if order is not None and order.status in OPEN_STATUSES:
            order.status = OrderStatus.CANCELLED
            self._emit(
                OrderCancelled(
                    ts_event=self.now, ts_recv=self.now, client_order_id=req.client_order_id
                )
            )
        else:
            self._emit(
                CancelRejected(
                    ts_event=self.now,
                    ts_recv=self.now,
                    client_order_id=req.client_order_id,
                    reason="too late",
                )
            )

    @precondition(lambda self: bool(self._open_venue()))
    @rule()
    def venue_fills_everything_now(self) -> None:
        """Ack and fill every open order at the mid and deliver at once (reaches
        positions, and with them reducing-only situations, in few steps)."""
        for cid in self._open_venue():
            order = self.oms.orders[cid]
            qty = round(order.qty - order.filled, 10)
            order.filled, order.status = order.qty, OrderStatus.FILLED
            self._input(
                (
                    "report",
                    Fill(
                        ts_event=self.now,
                        ts_recv=self.now,
                        client_order_id=cid,
                        fill_id=self.oms.new_fill_id(),
                        instrument="X",
                        side=order.side,
                        qty=qty,
                        price=self.mid,
                        fee=0.0,  # type: ignore[arg-type]
                        liquidity="taker",
                    ),
                )
            )

    @rule(side=st.sampled_from(["buy", "sell"]), lots=st.integers(5, 30))
    def position_from_elsewhere_then_resume(self, side: str, lots: int) -> None:
        """A fill nobody here sent (booked, REDUCE_ONLY), then the operator resumes:
        trading is ACTIVE with a position that may be beyond ``max_position``."""
        self._input(
            (
                "report",
                Fill(
                    ts_event=self.now,
                    ts_recv=self.now,
                    client_order_id="EXTERNAL",
                    fill_id=self.oms.new_fill_id(),
                    instrument="X",
                    side=side,
                    qty=lots * LOT,  # type: ignore[arg-type]
                    price=self.mid,
                    fee=0.0,
                    liquidity="taker",
                ),
            )
        )
        self.command("resume")

    @precondition(lambda self: bool(self._open_venue()))
    @rule(k=st.integers(0, 50), lots=st.integers(1, 30))
    def venue_cancel_overtakes_its_fill(self, k: int, lots: int) -> None:
        """The venue fills part of an order, then cancels the rest (IOC expiry, its own
        risk); the cancel confirmation arrives before the fill."""
        cid = self._open_venue()[k % len(self._open_venue())]
        order = self.oms.orders[cid]
        qty = round(min(lots * LOT, order.qty - order.filled), 10)
        if order.qty - order.filled - qty < EPS:
            return  # that would fill it: nothing left to cancel
        order.filled = round(order.filled + qty, 10)
        order.status = OrderStatus.CANCELLED
        fill = Fill(
            ts_event=self.now,
            ts_recv=self.now,
            client_order_id=cid,
            fill_id=self.oms.new_fill_id(),
            instrument="X",
            side=order.side,  # type: ignore[arg-type]
            qty=qty,
            price=self.mid,
            fee=0.01,
            liquidity="maker",
        )
        self._input(
            (
                "report",
                OrderCancelled(
                    ts_event=self.now, ts_recv=self.now, client_order_id=cid, reason="venue"
                ),
            )
        )
        self._input(("report", fill))

    @rule(side=st.sampled_from(["buy", "sell"]), lots=st.integers(1, 10))
    def fill_for_an_order_nobody_here_sent(self, side: str, lots: int) -> None:
        self._emit(
            Fill(
                ts_event=self.now,
                ts_recv=self.now,
                client_order_id="EXTERNAL",
                fill_id=self.oms.new_fill_id(),
                instrument="X",
                side=side,  # type: ignore[arg-type]
                qty=lots * LOT,
                price=self.mid,
                fee=0.0,
                liquidity="taker",
            )
        )

    @precondition(lambda self: bool(self.oms.outbox))
    @rule(k=st.integers(0, 50), again=st.booleans())
    def deliver(self, k: int, again: bool) -> None:
        """Deliver any waiting report (reordering); ``again`` keeps it for a second
        delivery (QoS 1 duplicates)."""
        outbox = self.oms.outbox
        report = outbox[k % len(outbox)] if again else outbox.pop(k % len(outbox))
        self._input(("report", report))

    @precondition(lambda self: bool(self.oms.outbox))
    @rule(order=st.randoms(use_true_random=False))
    def deliver_everything_then_agree_with_the_venue(self, order: Any) -> None:
        """Any arrival order of legal reports ends in the state the venue says."""
        outbox = self.oms.outbox
        order.shuffle(outbox)
        while outbox:
            self._input(("report", outbox.pop()))
        for cid, truth in self.oms.orders.items():
            mine = self.engine.orders.get(cid)
            assert abs(mine.filled_qty - truth.filled) < EPS, (cid, mine, truth)
            if truth.status is not OrderStatus.NEW:
                assert mine.status is truth.status, (cid, mine, truth)


class VenueMachine(EngineMachine):
    """The simulated venue behind the router; at the end the same inputs are replayed in
    other batch splits and must give the same decisions."""

    def make_router(self) -> SimulatedVenue:
        return SimulatedVenue(1_000, 1.0, None)

    @rule(
        dt=steps_ns,
        lots=st.integers(1, 20),
        aggressor=st.sampled_from([1, -1]),
        offset=st.integers(-2, 2),
    )
    def trade(self, dt: int, lots: int, aggressor: int, offset: int) -> None:
        self.now += dt
        row = (self.now, self.mid + offset * TICK, lots * LOT, aggressor)
        self._input(("trades", [row]))

    def teardown(self) -> None:
        """Batch invariance: ticks between two actions merged into one batch give the
        same decisions as ticks one batch each."""
        if not hasattr(self, "inputs"):
            return
        merged: list[tuple[str, Any]] = []
        for kind, payload in self.inputs:
            if merged and kind == "quotes" and merged[-1][0] == "quotes":
                merged[-1] = ("quotes", merged[-1][1] + payload)
            else:
                merged.append((kind, payload))
        engine, _router, events = self._build()
        for item in merged:
            self._apply(engine, item)
        assert _decisions(events) == _decisions(self.events)


def _decisions(events: list[Event]) -> list[Event]:
    kinds = (OrderRequest, CancelRequest, RiskRejected, Fill, TradingState)
    return [e for e in events if isinstance(e, kinds)]


_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestEngineWithScriptedOms = OmsMachine.TestCase
TestEngineWithScriptedOms.settings = _SETTINGS
TestEngineWithSimulatedVenue = VenueMachine.TestCase
TestEngineWithSimulatedVenue.settings = _SETTINGS
