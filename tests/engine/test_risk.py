"""Each pre-trade check at, just under and just over its limit; trading states; kill switch."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine.engine import Engine
from engine.events import Command, Event, OrderCancelled, RiskRejected, TradingState
from engine.features import FeatureSpec
from engine.risk import RiskConfig
from tests.support import Scripted, make_engine, quotes

T = 1_000_000_000_000_000_000
S = 1_000_000_000


class Desk:
    """An engine with one or two instruments quoted 99 / 101 (mid 100) at time T."""

    def __init__(self, risk: dict[str, Any], *, symbols: tuple[str, ...] = ("X", "Y"), latency: int = 0,
                 features: list[FeatureSpec] | None = None, needs: tuple[str, ...] = (),
                 quote_y: bool = True) -> None:  # fmt: skip
        self.strategy = Scripted(needs=needs)
        self.engine: Engine = make_engine(self.strategy, risk=msgspec.convert(risk, RiskConfig), symbols=symbols,
                                          latency=latency, features=features)  # fmt: skip
        self.events: list[Event] = []
        self.engine.sinks.append(self.events.append)
        self.engine.process_batch(quotes([(T, 99.0, 101.0, 100.0, 100.0)], 0))
        if quote_y and len(symbols) > 1:
            self.engine.process_batch(quotes([(T, 99.0, 101.0, 100.0, 100.0)], 1))
        self.now = T

    def tick(self, dt: int, bid: float = 99.0, ask: float = 101.0, instrument: int = 0) -> None:
        self.now += dt
        self.engine.process_batch(quotes([(self.now, bid, ask, 100.0, 100.0)], instrument))

    def order(self, side: str, qty: float, price: float | None = None, symbol: str = "X",
              reduce_only: bool = False) -> str | None:  # fmt: skip
        """Submit; return the refusing check's name, or None if it passed."""
        ctx = self.engine._context
        if price is None:
            cid = ctx.submit_market(symbol, side, qty, reduce_only=reduce_only)  # type: ignore[arg-type]
        else:
            cid = ctx.submit_limit(symbol, side, qty, price, reduce_only=reduce_only)  # type: ignore[arg-type]
        rej = [e for e in self.events if isinstance(e, RiskRejected) and e.client_order_id == cid]
        return rej[0].check if rej else None

    def fill_pending(self) -> None:
        self.tick(1)

    def position(self, symbol: str = "X") -> float:
        return self.engine._context.position(symbol)


def test_max_order_qty_at_under_over() -> None:
    d = Desk({"max_order_qty": 1.0})
    assert d.order("buy", 0.9, 99.0) is None
    assert d.order("buy", 1.0, 99.0) is None
    assert d.order("buy", 1.1, 99.0) == "max_order_qty"


def test_per_instrument_limit_overrides_default() -> None:
    d = Desk({"max_order_qty": 1.0, "instruments": {"Y": {"max_order_qty": 5.0}}})
    assert d.order("buy", 3.0, 99.0, symbol="Y") is None
    assert d.order("buy", 3.0, 99.0, symbol="X") == "max_order_qty"


def test_max_order_notional_limit_price_and_touch() -> None:
    d = Desk({"max_order_notional": 200.0})
    assert d.order("buy", 1.9, 100.0) is None
    assert d.order("buy", 2.0, 100.0) is None
    assert d.order("buy", 2.1, 100.0) == "max_order_notional"
    assert d.order("buy", 2.0) == "max_order_notional"  # market: priced at the ask, 202
    rej = [e for e in d.events if isinstance(e, RiskRejected)][-1]
    assert (rej.limit, rej.value) == (200.0, pytest.approx(202.0))


def test_max_position_counts_open_orders_on_the_same_side() -> None:
    d = Desk({"max_position": 1.0})
    assert d.order("buy", 0.6, 99.0) is None  # rests
    assert d.order("buy", 0.4, 99.0) is None  # 1.0 in all: at the limit
    assert d.order("buy", 0.1, 99.0) == "max_position"
    assert d.order("sell", 1.0, 101.0) is None  # the other side: -1.0 worst case
    assert d.order("sell", 0.1, 101.0) == "max_position"


def test_max_position_lets_a_reducing_order_through_when_over_limit() -> None:
    d = Desk({"max_position": 2.0})
    assert d.order("buy", 2.0) is None
    d.fill_pending()
    assert d.position() == 2.0
    d.engine.risk.limits[0] = msgspec.structs.replace(d.engine.risk.limits[0], max_position=1.0)
    assert d.order("sell", 0.5) is None
    assert d.order("buy", 0.1, 99.0) == "max_position"


def test_max_position_zero_refuses_every_order_that_adds_risk() -> None:
    d = Desk({"max_position": 2.0})
    assert d.order("buy", 1.0) is None
    d.fill_pending()
    d.engine.risk.limits[0] = msgspec.structs.replace(d.engine.risk.limits[0], max_position=0.0)
    assert d.order("buy", 0.5, 99.0) == "max_position"
    assert d.order("sell", 1.5, 101.0) == "max_position"  # would flip to short 0.5
    assert d.order("sell", 1.0, 101.0) is None  # back to flat: allowed


def test_lowered_max_position_cancels_working_orders_beyond_it_keeps_reducing_ones() -> None:
    """A model switched to a lower stage lowers ``max_position`` while orders work: the
    orders that would take the position beyond the new limit are cancelled, oldest kept
    first, and reducing orders stay (``Engine.switch_model`` calls this when it applies a
    stage's limits). Mutation-checked: with the method a no-op (the reviewed code had
    none) every order kept working and this test failed."""
    d = Desk({"max_position": 5.0})
    assert d.order("buy", 1.0) is None
    d.fill_pending()  # long 1
    assert d.order("buy", 1.0, 99.0) is None  # rests: worst case long 2
    assert d.order("buy", 2.0, 99.0) is None  # rests: worst case long 4
    assert d.order("sell", 3.0, 101.0) is None  # rests: worst case short 2
    d.engine.risk.limits[0] = msgspec.structs.replace(d.engine.risk.limits[0], max_position=2.0)
    d.engine.desk.enforce_position_limits()
    working = {
        (o.request.side, o.request.qty): o.cancel_sent for o in d.engine.orders.open_orders(0)
    }
    # long 1 + 1 = 2 fits; + 2 more would be 4 > 2; selling 3 from long 1 is short 2: fits
    assert working == {("buy", 1.0): False, ("buy", 2.0): True, ("sell", 3.0): False}
    d.engine.risk.limits[0] = msgspec.structs.replace(d.engine.risk.limits[0], max_position=0.0)
    d.engine.desk.enforce_position_limits()
    working = {
        (o.request.side, o.request.qty): o.cancel_sent for o in d.engine.orders.open_orders(0)
    }
    # a shadow stage's 0: the buy adds risk; the sell of 3 from long 1 flips to short 2
    assert working[("buy", 1.0)] and working[("sell", 3.0)]


def test_max_gross_exposure_across_instruments() -> None:
    d = Desk({"max_gross_exposure": 250.0})
    assert d.order("buy", 1.0) is None
    d.fill_pending()  # X: 1.0 at mid 100 -> gross 100
    assert d.order("buy", 1.4, 99.0, symbol="Y") is None  # 240
    assert d.order("sell", 1.5, 101.0, symbol="Y") is None  # worst -1.5 -> 250, at the limit
    assert d.order("sell", 1.6, 101.0, symbol="Y") == "max_gross_exposure"


def test_price_collar_bps_through_the_mid() -> None:
    d = Desk({"price_collar_bps": 50.0})
    assert d.order("buy", 0.1, 100.0) is None  # at the mid
    assert d.order("buy", 0.1, 100.5) is None  # 50 bps through: at the limit
    assert d.order("buy", 0.1, 101.0) == "price_collar"  # 100 bps
    assert d.order("sell", 0.1, 99.5) is None
    assert d.order("sell", 0.1, 99.0) == "price_collar"
    assert d.order("sell", 0.1, 150.0) is None  # far away on the passive side is fine


def test_stale_data_by_the_engine_clock() -> None:
    d = Desk({"max_quote_age": "1s"})
    d.tick(S, instrument=1)  # time moves on Y's quotes; X's quote is now 1 s old
    assert d.order("buy", 0.1, 99.0) is None
    d.tick(1, instrument=1)
    assert d.order("buy", 0.1, 99.0) == "stale_data"
    d.tick(1, instrument=0)
    assert d.order("buy", 0.1, 99.0) is None


def test_market_order_without_quote_is_refused() -> None:
    d = Desk({}, quote_y=False)
    assert d.order("buy", 0.1, symbol="Y") == "no_quote"
    assert d.order("buy", 0.1, symbol="X") is None


def test_order_rate_token_bucket_per_instrument_and_account() -> None:
    d = Desk({"orders_per_second": 2.0, "account_orders_per_second": 3.0})
    assert d.order("buy", 0.1, 90.0) is None
    assert d.order("buy", 0.1, 90.0) is None
    assert d.order("buy", 0.1, 90.0) == "orders_per_second"
    assert d.order("buy", 0.1, 90.0, symbol="Y") is None
    assert d.order("buy", 0.1, 90.0, symbol="Y") == "account_orders_per_second"
    d.tick(S // 2 - 1, instrument=1)
    assert d.order("buy", 0.1, 90.0) == "orders_per_second"  # 0.999.. tokens
    d.tick(1, instrument=1)
    assert d.order("buy", 0.1, 90.0) is None  # one token back after 0.5 s


def test_max_open_orders_instrument_and_account() -> None:
    d = Desk({"max_open_orders": 2, "account_max_open_orders": 3})
    assert d.order("buy", 0.1, 90.0) is None
    assert d.order("buy", 0.1, 90.0) is None
    assert d.order("buy", 0.1, 90.0) == "max_open_orders"
    assert d.order("buy", 0.1, 90.0, symbol="Y") is None
    assert d.order("buy", 0.1, 90.0, symbol="Y") == "account_max_open_orders"


def test_lot_and_tick_grid_refused_unless_rounding_is_configured() -> None:
    d = Desk({})
    assert d.order("buy", 0.15, 99.0) == "lot_size"
    assert d.order("buy", 0.1, 99.3) == "tick_size"
    d = Desk({"round_to_grid": True})
    assert d.order("buy", 0.17, 99.3) is None
    sent = d.engine.orders.open_orders()[-1].request
    assert (sent.qty, sent.limit_price) == (0.2, 99.5)


def test_warmup_refuses_orders_while_a_needed_feature_is_nan() -> None:
    feats = [
        FeatureSpec(name="mid", kind="mid"),
        FeatureSpec(name="ema", kind="ema", input="mid", span=3),
    ]
    d = Desk({}, symbols=("X",), features=feats, needs=("ema",))
    assert d.order("buy", 0.1, 99.0) == "warmup"
    d.tick(1)
    assert d.order("buy", 0.1, 99.0) == "warmup"
    d.tick(1)
    assert d.order("buy", 0.1, 99.0) is None
    d = Desk({"warmup": False}, symbols=("X",), features=feats, needs=("ema",))
    assert d.order("buy", 0.1, 99.0) is None


def test_reduce_only_passes_closing_refuses_opening_and_flipping() -> None:
    d = Desk({})
    assert d.order("buy", 1.0) is None
    d.fill_pending()
    d.engine.on_command(Command(ts_event=d.now, ts_recv=d.now, action="reduce_only", reason="test"))
    assert d.engine.risk.state == "REDUCE_ONLY"
    assert d.order("buy", 0.1, 99.0) == "trading_state"
    assert d.order("sell", 1.5, 101.0) == "trading_state"  # would flip to short
    assert d.order("sell", 1.0, 101.0) is None  # closes exactly
    assert d.order("sell", 0.1, 101.0) == "trading_state"  # the open order already closes it
    assert d.order("buy", 0.1, 99.0, symbol="Y") == "trading_state"  # flat: anything opens


def test_reduce_only_flag_on_the_order_itself() -> None:
    d = Desk({})
    assert d.order("buy", 0.5, 99.0, reduce_only=True) == "reduce_only_order"


def test_halted_refuses_everything() -> None:
    d = Desk({})
    d.engine.on_command(Command(ts_event=d.now, ts_recv=d.now, action="kill", reason="t"))
    assert d.order("sell", 0.1, 101.0) == "trading_state"


def test_kill_switch_halts_and_cancels_open_orders_in_the_same_turn() -> None:
    d = Desk({}, latency=1000)
    d.order("buy", 0.1, 90.0)
    d.order("sell", 0.1, 110.0)
    d.tick(2000)
    assert len(d.engine.orders.open_orders()) == 2
    d.engine.on_command(
        Command(ts_event=d.now, ts_recv=d.now, action="kill", reason="desk", issuer="ops")
    )
    states = [e for e in d.events if isinstance(e, TradingState)]
    assert (
        states[-1].state == "HALTED" and "kill" in states[-1].reason and "ops" in states[-1].reason
    )
    # both cancels left in the same call: the venue holds them, due after the latency
    assert d.engine.router.next_event_ns() == d.now + 1000
    d.tick(1001)  # due at now + 1000: handled once a later tick shows nothing else is stamped then
    assert {e.client_order_id for e in d.strategy.seen if isinstance(e, OrderCancelled)} == {
        "O-00000001",
        "O-00000002",
    }
    assert d.engine.orders.open_orders() == []
    d.engine.on_command(Command(ts_event=d.now, ts_recv=d.now, action="resume"))
    assert d.order("buy", 0.1, 90.0) is None


def test_market_data_lost_moves_to_the_configured_state() -> None:
    d = Desk({"on_data_loss": "reduce_only"})
    d.engine.market_data_lost("broker disconnected")
    assert d.engine.risk.state == "REDUCE_ONLY"
    assert "broker disconnected" in [e for e in d.events if isinstance(e, TradingState)][-1].reason


def test_daily_loss_limit_trips_at_the_tick_that_breaches_it() -> None:
    d = Desk({"daily_loss_limit": 5.0, "on_loss": "halted"}, symbols=("X",))
    assert d.order("buy", 1.0) is None
    d.fill_pending()  # bought 1 at 101; equity at mid 100 = -1 vs day start 0
    for mid in (99.0, 97.0, 96.5):
        d.tick(S, mid - 1, mid + 1)
        assert d.engine.risk.state == "ACTIVE"
    d.tick(S, 95.0, 97.0)  # mid 96: equity -5
    state = [e for e in d.events if isinstance(e, TradingState)][-1]
    assert (state.state, state.ts_event) == ("HALTED", d.now)
    assert "daily loss limit 5" in state.reason
    assert d.order("sell", 1.0, 95.0) == "trading_state"


def test_drawdown_from_the_days_peak_switches_to_reduce_only() -> None:
    d = Desk({"max_drawdown": 3.0}, symbols=("X",))
    d.order("buy", 1.0)
    d.fill_pending()
    d.tick(S, 109.0, 111.0)  # peak: mid 110 -> equity 9
    d.tick(S, 106.5, 108.5)  # 6.5: drawdown 2.5
    assert d.engine.risk.state == "ACTIVE"
    d.tick(S, 106.0, 108.0)  # 6: drawdown 3
    assert d.engine.risk.state == "REDUCE_ONLY"
    assert d.order("buy", 0.1, 100.0) == "trading_state"
    assert d.order("sell", 1.0, 107.0) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"max_order_qty": -1},
        {"max_quote_age": "soon"},
        {"on_loss": "panic"},
        {"instruments": {"X": {"max_position": -1}}},
        {"max_open_orders": 1.5},
    ],
)
def test_bad_risk_config_is_refused(bad: dict[str, Any]) -> None:
    from engine.errors import ConfigError
    from tests.conftest import make_config

    with pytest.raises(ConfigError, match="risk"):
        make_config(risk=bad)
