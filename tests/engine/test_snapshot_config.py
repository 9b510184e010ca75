"""Config values come from the config, never from a snapshot: an engine built from a
config with lower risk limits keeps them after a restore of a snapshot taken under
higher ones. A strategy's state goes through its hook (``Strategy.snapshot_state``):
the default takes its plain attributes (not its params), anything else refuses the
snapshot; a strategy of its own hook keeps what it likes. The payload runs no code."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from engine.clock import ReplayClock
from engine.engine import Engine
from engine.errors import JournalError
from engine.events import Quote
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument, InstrumentTable
from engine.market import L_DAILY_LIMIT, L_DRAWDOWN_LIMIT
from engine.ports import SendOnly
from engine.risk import RiskConfig, RiskEngine
from engine.snapshot import capture_state, restore_state
from engine.strategy import NoParams, Strategy
from tests.engine.test_snapshot import STREAM, Outbox, Trader, run, state_differences

HIGH = RiskConfig(warmup=True, orders_per_second=3, max_position=3.0, daily_loss_limit=50.0)
LOW = RiskConfig(
    warmup=True, orders_per_second=1, max_position=1.0, daily_loss_limit=10.0, max_drawdown=5.0
)


def _engine(risk: RiskConfig, strategy: Strategy | None = None) -> Engine:
    inst = InstrumentTable([Instrument(symbol=s, tick_size=0.01, lot_size=0.1) for s in "XY"])
    return Engine(
        instruments=inst,
        clock=ReplayClock(),
        router=SendOnly(Outbox()),
        features=FeatureSet(
            [
                FeatureSpec(name="mid", kind="mid"),
                FeatureSpec(name="z", kind="zscore", input="mid", window="2s"),
            ]
        ),
        model=None,
        strategy=strategy or Trader(),
        risk=RiskEngine(risk, inst.symbols),
        equity_interval_ns=100_000_000,
        strict=False,
        arrival_order=True,
        order_timeout_ns=2_000_000_000,
    )


def test_snapshot_never_changes_risk_limits_the_config_with_lower_limits_wins() -> None:
    taken = run(STREAM[:150], _engine(HIGH))
    payload = capture_state(taken)
    lower = _engine(LOW)
    restore_state(lower, payload)
    assert lower.risk.config == LOW
    assert [lim.max_position for lim in lower.risk.limits] == [1.0, 1.0]
    assert [b.rate for b in lower.risk._buckets if b is not None] == [1.0, 1.0]
    assert lower.market.loss[L_DAILY_LIMIT] == 10.0
    assert lower.market.loss[L_DRAWDOWN_LIMIT] == 5.0
    # the trading state (positions, orders, claims) is the snapshot's
    assert lower.portfolio.positions.tolist() == taken.portfolio.positions.tolist()
    run(STREAM[150:], lower)  # and it trades on under the lower limits
    assert lower.risk.config == LOW


def test_snapshot_restored_into_the_same_config_keeps_its_limits() -> None:
    payload = capture_state(run(STREAM[:150], _engine(HIGH)))
    same = _engine(HIGH)
    restore_state(same, payload)
    assert same.risk.config == HIGH and same.market.loss[L_DAILY_LIMIT] == 50.0
    assert state_differences(run(STREAM[150:], same), run(STREAM, _engine(HIGH))) == []


class Keeper(Trader):
    """Plain state of every kind the default hook takes."""

    name = "keeper"

    def __init__(self) -> None:
        super().__init__()
        self.p = self.params  # a second name for the params: config, not state
        self.seen: dict[str, list[float]] = {}
        self.flags = {"a": True}
        self.marks = np.zeros(3)
        self.pair = (1, "x")
        self.names: set[str] = set()

    def on_quote(self, quote: Quote) -> None:
        super().on_quote(quote)
        self.seen.setdefault(quote.instrument, []).append(quote.bid)
        self.marks[self.quotes % 3] += quote.ask
        self.names.add(quote.instrument)


def test_default_hook_captures_plain_attributes_and_equals_a_full_run() -> None:
    full = run(STREAM, _engine(HIGH, Keeper()))
    before = run(STREAM[:100], _engine(HIGH, Keeper()))
    fresh = _engine(HIGH, Keeper())
    restore_state(fresh, capture_state(before))
    after = run(STREAM[100:], fresh)
    assert state_differences(after, full) == []
    strategy = after.strategy
    assert isinstance(strategy, Keeper) and isinstance(full.strategy, Keeper)
    assert strategy.seen == full.strategy.seen and strategy.names == full.strategy.names
    assert np.array_equal(strategy.marks, full.strategy.marks)
    assert strategy.p is strategy.params  # the fresh instance's, from the config


class _Opaque:
    def __init__(self) -> None:
        self.n = 0


class Hooked(Trader):
    """Keeps an object the default refuses, and says how to snapshot it."""

    name = "hooked"

    def __init__(self) -> None:
        super().__init__()
        self.box = _Opaque()
        self.recent: deque[float] = deque(maxlen=4)

    def on_quote(self, quote: Quote) -> None:
        super().on_quote(quote)
        self.box.n += 1
        self.recent.append(quote.bid)

    def snapshot_state(self) -> object:
        return {"quotes": self.quotes, "ticks": self.ticks_of_timer, "resting": self.resting,
                "box": self.box.n, "recent": list(self.recent)}  # fmt: skip

    def restore_state(self, state: object) -> None:
        assert isinstance(state, dict)
        self.quotes, self.ticks_of_timer = state["quotes"], state["ticks"]
        self.resting, self.box.n = state["resting"], state["box"]
        self.recent.extend(state["recent"])


def test_strategy_with_its_own_hook_is_restored_through_it() -> None:
    refused = run(STREAM[:60], _engine(HIGH, HookedByDefault()))
    with pytest.raises(JournalError, match="box"):  # the default refuses ``box``
        capture_state(refused)
    full = run(STREAM, _engine(HIGH, Hooked()))
    fresh = _engine(HIGH, Hooked())
    restore_state(fresh, capture_state(run(STREAM[:90], _engine(HIGH, Hooked()))))
    after = run(STREAM[90:], fresh)
    assert state_differences(after, full) == []
    assert isinstance(after.strategy, Hooked) and isinstance(full.strategy, Hooked)
    assert after.strategy.box.n == full.strategy.box.n
    assert list(after.strategy.recent) == list(full.strategy.recent)


class HookedByDefault(Hooked):
    """The same state, without the hook: the default's."""

    snapshot_state = Strategy.snapshot_state
    restore_state = Strategy.restore_state


@pytest.mark.parametrize(
    "value",
    [lambda: None, open, ReplayClock(), object(), np.array([object()]), {"k": ReplayClock()}],
)
def test_strategy_attribute_that_is_not_plain_data_refuses_the_snapshot(value: object) -> None:
    engine = run(STREAM[:10], _engine(HIGH))
    engine.strategy.extra = value  # type: ignore[attr-defined]
    with pytest.raises(JournalError, match="cannot be captured"):
        capture_state(engine)


def test_strategy_state_with_params_or_context_is_refused_on_restore() -> None:
    strategy = Trader()
    with pytest.raises(TypeError):
        strategy.restore_state({"params": NoParams()})
    with pytest.raises(TypeError):
        strategy.restore_state({"_ctx": None})
    with pytest.raises(TypeError):
        strategy.restore_state(["not", "a", "map"])


def _paper(latency_ns: int = 3_000_000, fee_bps: float = 1.0) -> Engine:
    from adapters.sim_venue import SimulatedVenue

    engine = _engine(HIGH)
    fresh = Engine(
        instruments=engine.instruments,
        clock=ReplayClock(),
        router=SimulatedVenue(latency_ns, fee_bps),
        features=engine.features,
        model=None,
        strategy=Trader(),
        risk=RiskEngine(HIGH, engine.instruments.symbols),
        equity_interval_ns=100_000_000,
        strict=False,
        arrival_order=True,
        order_timeout_ns=2_000_000_000,
    )
    return fresh


QUOTES = [(ts, body) for ts, body in STREAM if body is None or type(body).__name__ == "TickBatch"]


@pytest.mark.parametrize("k", [1, 40, 150, len(QUOTES) - 1])
def test_paper_venue_state_restored_then_tail_equals_full_run(k: int) -> None:
    full = run(QUOTES, _paper())
    assert full.counters["fills"] > 5
    fresh = _paper()
    restore_state(fresh, capture_state(run(QUOTES[:k], _paper())))
    assert state_differences(run(QUOTES[k:], fresh), full) == []


def test_paper_venue_fees_and_latency_come_from_the_config() -> None:
    payload = capture_state(run(QUOTES[:150], _paper(latency_ns=3_000_000, fee_bps=1.0)))
    fresh = _paper(latency_ns=9_000_000, fee_bps=4.0)
    restore_state(fresh, payload)
    assert fresh.router.latency_ns == 9_000_000  # type: ignore[attr-defined]
    assert fresh.router.fee_bps == 4.0  # type: ignore[attr-defined]
