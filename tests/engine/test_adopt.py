"""``OrderDesk.adopt``: an order the OMS works that the engine never sent, booked as its
own; nonsense is refused and flagged, never booked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.clock import ReplayClock
from engine.engine import Engine
from engine.events import (
    Alarm,
    CancelRequest,
    Command,
    Event,
    Fill,
    OrderCancelled,
    OrderRequest,
)
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument, InstrumentTable
from engine.orders import OrderStatus
from engine.ports import SendOnly
from engine.risk import RiskConfig, RiskEngine
from engine.ticks import TickBatch
from tests.support import Scripted

T = 1_700_000_000_000_000_000


class Outbox:
    def __init__(self) -> None:
        self.sent: list[OrderRequest | CancelRequest] = []

    def submit(self, order: OrderRequest) -> None:
        self.sent.append(order)

    def cancel(self, request: CancelRequest) -> None:
        self.sent.append(request)


def _engine() -> tuple[Engine, Outbox, list[Event]]:
    inst = InstrumentTable([Instrument(symbol="X", tick_size=0.5, lot_size=0.1)])
    outbox = Outbox()
    engine = Engine(
        instruments=inst,
        clock=ReplayClock(),
        router=SendOnly(outbox),
        features=FeatureSet([FeatureSpec(name="mid", kind="mid")]),
        model=None,
        strategy=Scripted(),
        risk=RiskEngine(RiskConfig(warmup=False, max_open_orders=2), inst.symbols),
        equity_interval_ns=0,
        arrival_order=True,
    )
    events: list[Event] = []
    engine.sinks.append(events.append)
    one = np.array([T], np.int64)
    engine.process_batch(
        TickBatch.quotes(
            one,
            one,
            np.zeros(1, np.int32),
            np.array([100.0]),
            np.array([100.5]),
            np.ones(1),
            np.ones(1),
        )
    )
    return engine, outbox, events


def _external(**changes: object) -> OrderRequest:
    fields: dict[str, object] = dict(
        ts_event=1, ts_recv=1, client_order_id="ext-1", instrument="X", side="sell",
        qty=2.0, order_type="limit", limit_price=500.0,
    )  # fmt: skip
    fields.update(changes)
    return OrderRequest(**fields)  # type: ignore[arg-type]


def _alarms(events: list[Event]) -> list[Alarm]:
    return [e for e in events if isinstance(e, Alarm)]


def test_adopt_books_an_open_order_counted_by_the_checks_with_a_warning() -> None:
    engine, _, events = _engine()
    assert engine.desk.adopt(_external(), 0.5, venue_order_id="v9")
    order = engine.orders.get("ext-1")
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.filled_qty == 0.5
    assert engine.orders.open_count == [1] and engine.orders.open_sell_qty == [1.5]
    assert engine.portfolio.positions.tolist() == [0.0]  # fills book positions, not adopt
    (alarm,) = _alarms(events)
    assert alarm.severity == "warning" and alarm.message.startswith("adopted external order ext-1")
    assert engine.risk.state == "ACTIVE"
    assert engine.counters["orders_adopted"] == 1


def test_adopted_order_takes_its_fills_and_reports_like_our_own() -> None:
    engine, _, events = _engine()
    engine.desk.adopt(_external(), 1.0, fills_follow_qty=1.0)  # its fill comes next
    assert engine.orders.get("ext-1").filled_qty == 0.0
    fill = Fill(ts_event=T, ts_recv=T, client_order_id="ext-1", fill_id="oms-1",
                instrument="X", side="sell", qty=1.0, price=500.0, fee=0.0,
                liquidity="maker")  # fmt: skip
    engine.on_report(fill)
    order = engine.orders.get("ext-1")
    assert order.filled_qty == 1.0 and order.status is OrderStatus.PARTIALLY_FILLED
    assert engine.portfolio.positions.tolist() == [-1.0]
    assert engine.counters["fills_unknown_order"] == 0 and engine.risk.state == "ACTIVE"
    engine.on_report(OrderCancelled(ts_event=T, ts_recv=T, client_order_id="ext-1"))
    assert not order.is_open and engine.orders.open_count == [0]
    assert [a.severity for a in _alarms(events)] == ["warning"]


def test_adopted_order_counts_toward_max_open_orders() -> None:
    engine, outbox, _ = _engine()
    engine.desk.adopt(_external(), 0.0)
    engine.desk.adopt(_external(client_order_id="ext-2"), 0.0)
    engine.desk.submit("X", "buy", 1.0, "limit", 90.0, "gtc", False)
    assert engine.risk.rejections["max_open_orders"] == 1 and outbox.sent == []


def test_kill_cancels_an_adopted_order() -> None:
    engine, outbox, _ = _engine()
    engine.desk.adopt(_external(), 0.0)
    engine.on_command(Command(ts_event=T, ts_recv=T, action="kill", issuer="op"))
    assert [c.client_order_id for c in outbox.sent if isinstance(c, CancelRequest)] == ["ext-1"]


def test_reduce_only_nets_an_adopted_reducing_order() -> None:
    """Long 2, an adopted sell of 2 reduces: it stays; a further sell would flip and is
    refused; an adopted buy would add and is cancelled."""
    engine, outbox, _ = _engine()
    fill = Fill(ts_event=T, ts_recv=T, client_order_id="none", fill_id="f0", instrument="X",
                side="buy", qty=2.0, price=100.0, fee=0.0, liquidity="taker")  # fmt: skip
    engine.on_report(fill)  # an unknown order's fill: booked, REDUCE_ONLY
    assert engine.risk.state == "REDUCE_ONLY"
    engine.desk.adopt(_external(), 0.0)
    engine.desk.adopt(_external(client_order_id="ext-b", side="buy", limit_price=90.0), 0.0)
    cancels = [c.client_order_id for c in outbox.sent if isinstance(c, CancelRequest)]
    assert cancels == ["ext-b"]
    engine.desk.submit("X", "sell", 1.0, "limit", 120.0, "gtc", False)
    assert engine.risk.rejections["trading_state"] == 1


@pytest.mark.parametrize(
    ("changes", "filled", "why"),
    [
        ({"limit_price": math.nan}, 0.0, "price nan"),
        ({"limit_price": math.inf}, 0.0, "price inf"),
        ({"limit_price": -1.0}, 0.0, "price -1.0"),
        ({"instrument": "NOPE"}, 0.0, "unknown instrument 'NOPE'"),
        ({"qty": 0.0}, 0.0, "quantity 0.0"),
        ({"qty": -2.0}, 0.0, "quantity -2.0"),
        ({"qty": math.nan}, 0.0, "quantity nan"),
        ({"order_type": "limit", "limit_price": None}, 0.0, "without a price"),
        ({}, 2.0, "2 of 2 filled"),
        ({}, math.nan, "filled quantity nan"),
        ({}, -1.0, "to follow of -1 filled"),
    ],
)
def test_adopt_with_nonsense_is_refused_flagged_and_not_booked(
    changes: dict[str, object], filled: float, why: str
) -> None:
    engine, outbox, events = _engine()
    assert not engine.desk.adopt(_external(**changes), filled)
    assert engine.orders.find("ext-1") is None and engine.orders.open_count == [0]
    (alarm,) = _alarms(events)[:1]
    assert alarm.severity == "critical" and why in alarm.message, alarm.message
    assert engine.risk.state == "REDUCE_ONLY"
    assert engine.counters["orders_adopt_refused"] == 1 and outbox.sent == []


def test_adopt_refuses_a_client_id_of_ours() -> None:
    engine, _, events = _engine()
    cid = engine.desk.submit("X", "buy", 1.0, "limit", 90.0, "gtc", False)
    assert not engine.desk.adopt(_external(client_order_id=cid), 0.0)
    assert "one of ours" in _alarms(events)[0].message
