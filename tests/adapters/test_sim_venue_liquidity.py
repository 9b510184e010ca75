"""Liquidity rules of the simulated venue over arbitrary ticks and orders.

Ticks are stamped ``1000 * (k + 1)``; the orders of gap ``k`` are sent 100 ns after tick
``k`` and arrive before tick ``k + 1``. A fill stamped on a tick came from that tick; any
other fill came from an order's arrival, against the quote in force then.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import Fill, Side, TimeInForce
from engine.ticks import TickBatch
from tests.support import Scripted, make_engine, quotes, trades

GAP_NS = 1000
SEND_NS = 100


@dataclass(frozen=True)
class Tick:
    is_quote: bool
    bid: float = 0.0
    ask: float = 0.0
    bid_size: float = 0.0
    ask_size: float = 0.0
    price: float = 0.0
    size: float = 0.0
    aggressor: int = 0


@dataclass(frozen=True)
class Order:
    kind: str  # market | limit | ioc (an ioc limit)
    side: Side
    qty: float
    limit: float | None


half_ticks = st.integers(194, 206).map(lambda n: n * 0.5)  # tick size 0.5, around 100
sizes = st.integers(0, 3).map(float)


def _quote(bid: float, spread: int, bid_size: float, ask_size: float) -> Tick:
    return Tick(True, bid, bid + 0.5 * spread, bid_size, ask_size)


def _trade(price: float, size: float, aggressor: int) -> Tick:
    return Tick(False, price=price, size=size, aggressor=aggressor)


def _order(kind: str, side: Side, qty: float, limit: float) -> Order:
    return Order(kind, side, qty, None if kind == "market" else limit)


quote_ticks = st.builds(_quote, half_ticks, st.integers(1, 3), sizes, sizes)
trade_ticks = st.builds(_trade, half_ticks, st.integers(1, 3).map(float), st.sampled_from([1, -1]))
order_specs = st.builds(
    _order,
    st.sampled_from(["market", "limit", "ioc"]),
    st.sampled_from(["buy", "sell"]),
    st.integers(1, 4).map(float),
    half_ticks,
)
scenarios = st.tuples(
    quote_ticks,  # the first tick is a quote: market orders are not refused for want of one
    st.lists(st.one_of(quote_ticks, trade_ticks), max_size=10),
    st.lists(st.lists(order_specs, max_size=3), min_size=1, max_size=11),
    st.sampled_from([0, 150, 400]),
)


def _batch(ticks: list[Tick]) -> TickBatch:
    q = [
        ((k + 1) * GAP_NS, t.bid, t.ask, t.bid_size, t.ask_size)
        for k, t in enumerate(ticks)
        if t.is_quote
    ]
    tr = [
        ((k + 1) * GAP_NS, t.price, t.size, t.aggressor)
        for k, t in enumerate(ticks)
        if not t.is_quote
    ]
    return TickBatch.merge(quotes(q), trades(tr)) if tr else quotes(q)


def _run(
    ticks: list[Tick], gaps: list[list[Order]], latency: int, batch_size: int
) -> tuple[list[Fill], dict[str, Order]]:
    placed: dict[str, Order] = {}

    def sender(orders: list[Order]) -> Callable[[Scripted], None]:
        def send(s: Scripted) -> None:
            for o in orders:
                if o.kind == "market":
                    cid = s.ctx.submit_market("X", o.side, o.qty)
                else:
                    assert o.limit is not None
                    tif: TimeInForce = "ioc" if o.kind == "ioc" else "gtc"
                    cid = s.ctx.submit_limit("X", o.side, o.qty, o.limit, time_in_force=tif)
                placed[cid] = o

        return send

    at = {(k + 1) * GAP_NS + SEND_NS: sender(g) for k, g in enumerate(gaps[: len(ticks)]) if g}
    strat = Scripted(at)
    engine = make_engine(strat, latency=latency)
    engine.start()
    batch = _batch(ticks)
    for start in range(0, len(batch), batch_size):
        engine.process_batch(batch.slice(start, start + batch_size))
    engine.finish()
    return [f for f in strat.seen if isinstance(f, Fill)], placed


def _check(ticks: list[Tick], fills: list[Fill], placed: dict[str, Order]) -> None:
    quote_at = [k for k, t in enumerate(ticks) if t.is_quote]
    drawn: dict[tuple[int, str], float] = defaultdict(float)  # (tick, side) -> qty
    filled: dict[str, float] = defaultdict(float)
    for f in fills:
        o = placed[f.client_order_id]
        buy = f.side == "buy"
        assert f.side == o.side
        filled[f.client_order_id] += f.qty
        if o.limit is not None:  # (b) never through the limit
            assert f.price <= o.limit if buy else f.price >= o.limit
        k, offset = divmod(f.ts_event - GAP_NS, GAP_NS)
        if offset != 0:
            # at arrival, against the quote in force: taking at its touch
            q = max(m for m in quote_at if m <= k)
            t = ticks[q]
            assert f.liquidity == "taker"  # (c)
            assert f.price == (t.ask if buy else t.bid)  # (b)
            drawn[q, f.side] += f.qty
            continue
        assert o.kind != "ioc"  # an ioc's remainder never rests
        t = ticks[k]
        if t.is_quote:
            touch = t.ask if buy else t.bid
            earlier = [m for m in quote_at if m < k]
            prev = ticks[earlier[-1]] if earlier else None
            prev_touch = None if prev is None else (prev.ask if buy else prev.bid)
            crossing = o.limit is None or (
                prev_touch is not None and (prev_touch <= o.limit if buy else prev_touch >= o.limit)
            )
            if crossing:  # it takes the new quote's size: (c) taker, (b) at the touch
                assert (f.liquidity, f.price) == ("taker", touch)
            else:  # the market came to it: at its limit, never better than the touch
                assert (f.liquidity, f.price) == ("maker", o.limit)
                assert f.price >= touch if buy else f.price <= touch
            drawn[k, f.side] += f.qty
        else:
            # (d) a trade fills only resting limits on the other side of its aggressor
            assert o.limit is not None
            assert t.aggressor == (-1 if buy else 1)
            assert (f.liquidity, f.price) == ("maker", o.limit)
            assert f.price >= t.price if buy else f.price <= t.price
            drawn[k, "trade"] += f.qty
    for (k, side), qty in drawn.items():  # (a) shared, finite liquidity
        t = ticks[k]
        shown = {"buy": t.ask_size, "sell": t.bid_size, "trade": t.size}[side]
        assert qty <= shown + 1e-9, (k, side, qty, shown)
    for cid, qty in filled.items():
        assert qty <= placed[cid].qty + 1e-9


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios)
def test_sim_venue_any_ticks_and_orders_keep_liquidity_rules_in_any_batching(
    scenario: tuple[Tick, list[Tick], list[list[Order]], int],
) -> None:
    first, rest, gaps, latency = scenario
    ticks = [first, *rest]
    fills, placed = _run(ticks, gaps, latency, batch_size=len(ticks))
    _check(ticks, fills, placed)

    def key(fs: list[Fill]) -> list[tuple[object, ...]]:
        return [(f.ts_event, f.client_order_id, f.qty, f.price, f.liquidity) for f in fs]

    for size in (1, 3):
        again, _ = _run(ticks, gaps, latency, batch_size=size)
        assert key(again) == key(fills)
