"""No sequence of strategy orders can take the position past its limit."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.risk import RiskConfig
from tests.support import Scripted, make_engine, quotes

T = 1_700_000_000_000_000_000
LIMIT = 1.0

orders = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.integers(1, 15).map(lambda n: round(n * 0.1, 1)),  # 0.1 .. 1.5 lots of 0.1
        st.sampled_from([None, -2, -1, 0, 1, 2]),  # market, or limit offset in ticks from mid
        st.integers(-3, 3),  # price move before the next order, in ticks
        st.integers(0, 3),  # ms until the next order (latency is 1 ms)
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=orders, latency=st.sampled_from([0, 1_000_000]))
def test_position_never_exceeds_max_position(seq: list[tuple], latency: int) -> None:  # type: ignore[type-arg]
    strat = Scripted()
    engine = make_engine(
        strat, risk=msgspec.convert({"max_position": LIMIT}, RiskConfig), latency=latency
    )
    now = T
    mid = 100.0
    engine.process_batch(quotes([(now, mid - 0.5, mid + 0.5, 0.7, 0.7)]))
    ctx = engine._context
    for side, qty, offset, move, gap_ms in seq:
        if offset is None:
            ctx.submit_market("X", side, qty)
        else:
            ctx.submit_limit("X", side, qty, mid + offset * 0.5)
        mid += move * 0.5
        now += gap_ms * 1_000_000 + 1
        # displayed size 0.7 makes large orders fill over several quotes
        engine.process_batch(
            quotes(
                [(now, mid - 0.5, mid + 0.5, 0.7, 0.7), (now + 1, mid - 0.5, mid + 0.5, 0.7, 0.7)]
            )
        )
        now += 1
        assert abs(engine.portfolio.positions[0]) <= LIMIT + 1e-9
    engine.finish()
    assert abs(engine.portfolio.positions[0]) <= LIMIT + 1e-9
    assert engine.counters["orders_requested"] == len(seq)
