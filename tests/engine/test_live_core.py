"""The engine's live contracts: arrival order, the sending port, orders without an answer."""

from __future__ import annotations

import numpy as np

from engine.clock import ReplayClock
from engine.engine import Engine
from engine.events import (
    Alarm,
    CancelRequest,
    Event,
    Fill,
    OrderAccepted,
    OrderRequest,
    TradingState,
)
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument, InstrumentTable
from engine.orders import OrderStatus
from engine.ports import SendOnly
from engine.risk import RiskConfig, RiskEngine
from engine.ticks import TickBatch
from tests.support import Scripted

T = 1_700_000_000_000_000_000
MS = 1_000_000


class Outbox:
    def __init__(self) -> None:
        self.sent: list[OrderRequest | CancelRequest] = []

    def submit(self, order: OrderRequest) -> None:
        self.sent.append(order)

    def cancel(self, request: CancelRequest) -> None:
        self.sent.append(request)


def _engine(outbox: Outbox, timeout_ns: int | None = None) -> tuple[Engine, list[Event]]:
    inst = InstrumentTable([Instrument(symbol=s, tick_size=0.5, lot_size=0.1) for s in "XY"])
    engine = Engine(
        instruments=inst,
        clock=ReplayClock(),
        router=SendOnly(outbox),
        features=FeatureSet([FeatureSpec(name="mid", kind="mid")]),
        model=None,
        strategy=Scripted(),
        risk=RiskEngine(RiskConfig(warmup=False), inst.symbols),
        equity_interval_ns=0,
        arrival_order=True,
        order_timeout_ns=timeout_ns,
    )
    events: list[Event] = []
    engine.sinks.append(events.append)
    return engine, events


def _quotes(rows: list[tuple[int, int, int]]) -> TickBatch:
    """(ts_event, ts_recv, instrument) quoted 99 / 101."""
    n = len(rows)
    ev = np.array([r[0] for r in rows], np.int64)
    recv = np.array([r[1] for r in rows], np.int64)
    inst = np.array([r[2] for r in rows], np.int32)
    full = np.full(n, 1.0)
    return TickBatch.quotes(ev, recv, inst, full * 99, full * 101, full, full)


def test_arrival_order_counts_a_backwards_ts_event_and_runs_on_receive_time() -> None:
    engine, _ = _engine(Outbox())
    # venue Y's clock is 5 ms behind venue X's: its quote arrives later, stamped earlier
    engine.process_batch(_quotes([(T + 10 * MS, T + 11 * MS, 0), (T + 5 * MS, T + 12 * MS, 1)]))
    engine.process_batch(_quotes([(T + 4 * MS, T + 13 * MS, 1)]))
    assert engine.counters["ts_event_backwards"] == 2
    assert engine.clock.now_ns() == T + 13 * MS
    assert engine.market.quote_ts.tolist() == [T + 11 * MS, T + 13 * MS]


def test_send_only_router_hands_orders_and_cancels_to_the_sender() -> None:
    outbox = Outbox()
    engine, _ = _engine(outbox)
    engine.process_batch(_quotes([(T, T, 0)]))
    cid = engine._context.submit_limit("X", "buy", 1.0, 99.0)
    engine._context.cancel(cid)
    assert [type(m).__name__ for m in outbox.sent] == ["OrderRequest", "CancelRequest"]


def test_order_without_an_answer_becomes_unknown_and_reduces_only_until_answered() -> None:
    outbox = Outbox()
    engine, events = _engine(outbox, timeout_ns=500 * MS)
    engine.process_batch(_quotes([(T, T, 0)]))
    cid = engine._context.submit_limit("X", "buy", 1.0, 99.0)
    engine.advance_to(T + 499 * MS)
    assert engine.orders.get(cid).status is OrderStatus.NEW
    engine.advance_to(T + 500 * MS)
    assert engine.orders.get(cid).status is OrderStatus.UNKNOWN
    assert engine.risk.state == "REDUCE_ONLY"
    assert any(isinstance(e, Alarm) and cid in e.message for e in events)
    assert engine._context.submit_limit("X", "buy", 0.1, 99.0) not in [
        m.client_order_id for m in outbox.sent if isinstance(m, OrderRequest)
    ]  # refused while reducing only
    engine.on_report(OrderAccepted(ts_event=T, ts_recv=T, client_order_id=cid, venue_order_id="V"))
    assert engine.orders.get(cid).status is OrderStatus.ACCEPTED
    assert engine.risk.state == "ACTIVE"
    states = [e for e in events if isinstance(e, TradingState)]
    assert [s.state for s in states] == ["REDUCE_ONLY", "ACTIVE"]


def test_an_answer_in_time_is_no_timeout_and_a_fill_answers_too() -> None:
    engine, _ = _engine(Outbox(), timeout_ns=500 * MS)
    engine.process_batch(_quotes([(T, T, 0)]))
    cid = engine._context.submit_market("X", "buy", 1.0)
    engine.on_report(
        Fill(
            ts_event=T,
            ts_recv=T,
            client_order_id=cid,
            fill_id="F1",
            instrument="X",
            side="buy",
            qty=1.0,
            price=101.0,
            fee=0.0,
            liquidity="taker",
        )
    )
    engine.advance_to(T + 2_000 * MS)
    assert engine.counters["orders_unknown"] == 0 and engine.risk.state == "ACTIVE"


def test_a_sticky_automatic_halt_outlives_the_answer_to_an_unknown_order() -> None:
    engine, _ = _engine(Outbox(), timeout_ns=500 * MS)
    engine.process_batch(_quotes([(T, T, 0)]))
    cid = engine._context.submit_limit("X", "buy", 1.0, 99.0)
    engine.advance_to(T + 600 * MS)
    engine.on_report(
        Fill(
            ts_event=T,
            ts_recv=T,
            client_order_id="ELSEWHERE",
            fill_id="F9",
            instrument="Z",
            side="buy",
            qty=1.0,
            price=1.0,
            fee=0.0,
            liquidity="taker",
        )
    )
    assert engine.risk.state == "HALTED"
    engine.on_report(OrderAccepted(ts_event=T, ts_recv=T, client_order_id=cid, venue_order_id="V"))
    assert engine.risk.state == "HALTED"
