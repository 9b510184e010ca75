"""Failures inside the loop: a raising strategy, unknown order ids, out-of-order batches."""

from __future__ import annotations

import pytest

from engine.errors import DataError, StrategyError
from engine.events import Alarm, Event, Fill, TradingState
from tests.support import Scripted, make_engine, quotes

T = 1_700_000_000_000_000_000


def _boom(_: Scripted) -> None:
    raise RuntimeError("strategy bug")


def test_raising_strategy_is_re_raised_in_strict_mode_with_the_event() -> None:
    engine = make_engine(Scripted({T + 5: _boom}))
    engine.process_batch(quotes([(T, 99.0, 101.0, 1.0, 1.0)]))
    with pytest.raises(StrategyError, match="strategy bug") as info:
        engine.process_batch(quotes([(T + 10, 99.0, 101.0, 1.0, 1.0)]))
    assert info.value.event.name == f"t{T + 5}"
    assert engine.risk.state == "HALTED"


def test_raising_strategy_halts_trading_and_the_loop_keeps_running_in_live_mode() -> None:
    engine = make_engine(Scripted({T + 5: _boom}))
    engine.strict = False
    events: list[Event] = []
    engine.sinks.append(events.append)
    engine.process_batch(quotes([(T, 99.0, 101.0, 1.0, 1.0)]))
    engine.process_batch(quotes([(T + 10, 99.0, 101.0, 1.0, 1.0), (T + 20, 99.0, 101.0, 1.0, 1.0)]))
    assert engine.counters["ticks"] == 3 and engine.counters["strategy_errors"] == 1
    state = [e for e in events if isinstance(e, TradingState)][-1]
    assert state.state == "HALTED" and "RuntimeError: strategy bug" in state.reason


def test_fill_on_unknown_order_is_booked_once_alarmed_and_reduces_only() -> None:
    """The venue's fills are the truth: a fill on an order we do not know happened."""
    engine = make_engine(Scripted())
    events: list[Event] = []
    engine.sinks.append(events.append)
    bogus = Fill(ts_event=T, ts_recv=T, client_order_id="NOPE", fill_id="F", instrument="X",
                 side="buy", qty=1.0, price=100.0, fee=0.0, liquidity="taker")  # fmt: skip
    engine.on_report(bogus)
    engine.on_report(bogus)  # QoS 1 redelivery
    assert engine.counters["fills_unknown_order"] == 1
    assert engine.counters["fills_duplicate"] == 1
    assert engine.portfolio.positions[0] == 1.0
    assert any(isinstance(e, Alarm) and "NOPE" in e.message for e in events)
    assert engine.risk.state == "REDUCE_ONLY"
    assert engine.risk.trading.source == "automatic"


def test_batch_going_back_in_time_is_refused() -> None:
    engine = make_engine(Scripted())
    engine.process_batch(quotes([(T + 10, 99.0, 101.0, 1.0, 1.0)]))
    with pytest.raises(DataError, match="backwards"):
        engine.process_batch(quotes([(T + 5, 99.0, 101.0, 1.0, 1.0)]))
    with pytest.raises(DataError, match="backwards"):
        engine.process_batch(
            quotes([(T + 30, 99.0, 101.0, 1.0, 1.0), (T + 20, 99.0, 101.0, 1.0, 1.0)])
        )
