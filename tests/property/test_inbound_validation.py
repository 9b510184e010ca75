"""The one validation path as properties (issue 19, items 2, 4, 6, 7).

1. Any mix of good and hostile messages, cut into any sequence of drains: ``decode``
   never raises, and what it commits is exactly what the good messages alone give, in
   order (a bad message leaves nothing behind for the next one); every refusal is
   counted; every committed tick is in range and fresh at its receipt.
   Wrong change that breaks it: the quote's time check dropped from the fast path (the
   ``earliest <= q.ts_event <= latest`` comparison, ``tick_time_problem`` not called), or
   a row appended before its checks (``add_quote`` first, as before the fix).
2. A quote on or just beyond any bound: the fast path accepts exactly what
   ``validation.quote_problem`` accepts, and that is the stated policy.
   Wrong change: the fast path's ``SIZE_MIN <= q.bid_size <= SIZE_MAX`` without its upper
   bound (a size of 1e18 and a bit, or inf, goes through).
3. Booking any run of fills the fill check accepts keeps positions and PnL finite, and
   the PnL within what was traded plus ``max_fee_bps`` of it.
   Wrong change: the fee bound dropped from ``fill_problem`` (a fee of 1e10 on a fill of
   notional 100 is booked; two of 1e308 book an infinite loss).
4. The feed's frame parser, fed any stream of publishes (some larger than it keeps,
   some retained) in any cuts, returns exactly the publishes it keeps, in order, with
   their retain flags, and never gives up on the stream.
   Wrong change: the rest of a skipped frame miscounted (``self._skip = end - n - 1``), or
   an oversized publish failing the stream as before the fix.
"""

from __future__ import annotations

import collections
import math
import os
from collections import Counter
from typing import Any

import hypothesis.strategies as st
import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings

from adapters.mqtt.feed_protocol import MAX_TOPIC_BYTES, FrameParser
from adapters.mqtt.ingest import Ingest, MarketData, RawMessage, ReportIn
from adapters.mqtt.topics import Topics
from adapters.mqtt.validation import (
    PRICE_MAX,
    PRICE_MIN,
    SIZE_MAX,
    SIZE_MIN,
    TS_MAX_NS,
    TS_MIN_NS,
    MessageLimits,
    fill_problem,
    quote_problem,
)
from engine.codec import EventCodec
from engine.events import Fill, Quote, Trade
from engine.instruments import Instrument, InstrumentTable
from engine.portfolio import Portfolio

EXAMPLES = int(os.environ.get("TRADELOOP_FUZZ_EXAMPLES", "200"))
S = 1_000_000_000
T = 1_700_000_000 * S
LIMITS = MessageLimits(max_tick_age_ns=5 * S, max_tick_future_ns=1 * S, max_fee_bps=100.0)
TOPICS = Topics(prefix="", node="n1", account="a1")
INSTRUMENTS = InstrumentTable(
    [Instrument(symbol="BTC", venue="X"), Instrument(symbol="ETH", venue="X")]
)
CODEC = EventCodec("msgpack")  # carries NaN and inf, and ints up to 2**64 - 1

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _ingest() -> Ingest:
    return Ingest(
        TOPICS,
        INSTRUMENTS,
        fmt="msgpack",
        max_payload_bytes=4096,
        command_key=None,
        counters=Counter(),
        limits=LIMITS,
    )


# values a hostile peer sends, and the good ones

bad_ints = st.sampled_from(
    [2**63, 2**64 - 1, -1, -(2**63), 0, T // S, T // 10**6, T // 10**3, TS_MAX_NS, TS_MIN_NS - 1]
)
_NOT_NUMBERS = [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-320, 5e-324, 1e308]
bad_prices = st.sampled_from([*_NOT_NUMBERS, 1e-13, 1e13])
bad_sizes = st.sampled_from([*_NOT_NUMBERS, 1e19])
bad_floats = st.one_of(bad_prices, bad_sizes)
good_prices = st.floats(min_value=1.0, max_value=1e6)
good_sizes = st.floats(min_value=1e-6, max_value=1e9)
# receipt minus ts_event within the limits, or beyond them
good_ages = st.integers(min_value=-1 * S, max_value=5 * S)
bad_ages = st.one_of(
    st.integers(min_value=5 * S + 1, max_value=10**6 * S),
    st.integers(min_value=-(10**6) * S, max_value=-1 * S - 1),
)


@st.composite
def good_quote(draw: st.DrawFn, ts_recv: int) -> tuple[str, Quote]:
    index = draw(st.integers(0, 1))
    inst = INSTRUMENTS.instruments[index]
    bid = draw(good_prices)
    ask = bid * (1.0 + draw(st.floats(min_value=1e-6, max_value=0.1)))
    quote = Quote(ts_event=ts_recv - draw(good_ages), ts_recv=0, instrument=inst.symbol,
                  bid=bid, ask=ask, bid_size=draw(good_sizes), ask_size=draw(good_sizes))  # fmt: skip
    return TOPICS.quote(inst.venue, inst.symbol), quote


@st.composite
def good_trade(draw: st.DrawFn, ts_recv: int) -> tuple[str, Trade]:
    inst = INSTRUMENTS.instruments[draw(st.integers(0, 1))]
    trade = Trade(ts_event=ts_recv - draw(good_ages), ts_recv=0, instrument=inst.symbol,
                  price=draw(good_prices), size=draw(good_sizes),
                  side=draw(st.sampled_from(["buy", "sell"])))  # fmt: skip
    return TOPICS.trade(inst.venue, inst.symbol), trade


@st.composite
def good_fill(draw: st.DrawFn, ts_recv: int) -> Fill:
    qty, price = draw(good_sizes), draw(good_prices)
    fee = draw(st.floats(min_value=-0.99, max_value=0.99)) * qty * price * 0.01  # < 100 bps
    return Fill(ts_event=ts_recv - draw(st.integers(0, 10**6 * S)), ts_recv=0,
                client_order_id="c", fill_id=f"f{draw(st.integers(0, 10**9))}",
                instrument="BTC", side=draw(st.sampled_from(["buy", "sell"])), qty=qty,
                price=price, fee=fee, liquidity="taker")  # fmt: skip


def _spoil(draw: st.DrawFn, event: Any, ts_recv: int) -> Any:
    """One hostile change to a good event."""
    floats = [f for f in ("bid", "ask", "bid_size", "ask_size", "price", "size", "qty", "fee")
              if hasattr(event, f)]  # fmt: skip
    kind = draw(st.sampled_from(["ts", "age", "float", "crossed", "symbol"]))
    if kind == "ts":
        return _replace(event, ts_event=draw(bad_ints))
    if kind == "age" and not isinstance(event, Fill):
        return _replace(event, ts_event=ts_recv - draw(bad_ages))
    if kind == "crossed" and isinstance(event, Quote):
        return _replace(event, bid=event.ask, ask=event.bid)
    if kind == "symbol" and not isinstance(event, Fill):
        other = [x for x in ("DOGE", "", "ETH", "BTC", "BTC ") if x != event.instrument]
        return _replace(event, instrument=draw(st.sampled_from(other)))
    field = draw(st.sampled_from(floats))
    if field == "fee":
        return _replace(event, fee=draw(st.sampled_from([math.nan, math.inf, 1e308, -1e308])))
    bad = bad_prices if field in ("bid", "ask", "price") else bad_sizes
    return _replace(event, **{field: draw(bad)})


def _replace(event: Any, **changes: Any) -> Any:
    values = {f: getattr(event, f) for f in event.__struct_fields__}
    values.update(changes)
    if "bid" in changes and "ask" in values and values["bid"] == values["ask"]:
        values["ask"] = math.nan  # a "changed" value that happens to be legal stays bad
    return type(event)(**values)


def _encode(event: Any) -> bytes:
    try:
        return CODEC.encode(event)
    except OverflowError:  # beyond what our encoder writes: the peer writes it by hand
        fields = {f: getattr(event, f) for f in event.__struct_fields__}
        fields["ts_event"] = 2**63 - 1  # then patched into the bytes below
        raw = CODEC.encode(type(event)(**fields))
        doc = msgspec.msgpack.decode(raw)
        doc["ts_event"] = event.ts_event
        return msgspec.msgpack.encode(doc)


@st.composite
def traffic(draw: st.DrawFn) -> tuple[list[tuple[RawMessage, bool]], list[int]]:
    """Messages (each with whether it is good) and the sizes of the drains they come in."""
    ts_recv = T
    messages: list[tuple[RawMessage, bool]] = []
    for _ in range(draw(st.integers(0, 40))):
        what = draw(st.sampled_from(["quote", "trade", "fill", "garbage", "retained"]))
        good = draw(st.booleans())
        event: Quote | Trade | Fill
        if what == "quote":
            topic, event = draw(good_quote(ts_recv))
        elif what == "trade":
            topic, event = draw(good_trade(ts_recv))
        elif what == "fill":
            topic, event = TOPICS.reports, draw(good_fill(ts_recv))
        elif what == "garbage":
            payload = draw(
                st.sampled_from([b"", b"\xc1", b"[" * 3000 + b"]" * 3000, b"\x91" * 4000])
            )
            messages.append(((TOPICS.quote("X", "BTC"), payload, None, False), False))
            continue
        else:
            topic, event = draw(good_quote(ts_recv))
            messages.append(((topic, _encode(event), None, True), False))
            continue
        if not good:
            event = _spoil(draw, event, ts_recv)
        messages.append(((topic, _encode(event), None, False), good))
    cuts = draw(st.lists(st.integers(1, 8), max_size=len(messages)))
    return messages, cuts


def _drain(ingest: Ingest, messages: list[RawMessage], cuts: list[int]) -> list[Any]:
    items: list[Any] = []
    at = 0
    for size in [*cuts, len(messages)]:
        items += ingest.decode(messages[at : at + size], ts_recv=T)
        at += size
        if at >= len(messages):
            break
    return items


_COLUMNS = ("ts_event", "instrument", "kind", "bid", "ask", "bid_size", "ask_size", "price", "size")


def _committed(items: list[Any]) -> tuple[list[tuple[float | None, ...]], list[Any]]:
    ticks: list[tuple[float | None, ...]] = []
    reports: list[Any] = []
    for item in items:
        if isinstance(item, MarketData):
            b = item.batch
            for k in range(len(b)):
                row = [float(getattr(b, c)[k]) for c in _COLUMNS]
                ticks.append(tuple(None if math.isnan(v) else v for v in row))
                age = int(b.ts_recv[k]) - int(b.ts_event[k])
                assert -LIMITS.max_tick_future_ns <= age <= LIMITS.max_tick_age_ns
                prices = [float(b.bid[k]), float(b.ask[k]), float(b.price[k])]
                assert all(PRICE_MIN <= p <= PRICE_MAX for p in prices if not math.isnan(p))
                sizes = [float(b.bid_size[k]), float(b.ask_size[k]), float(b.size[k])]
                assert all(SIZE_MIN <= s <= SIZE_MAX for s in sizes if not math.isnan(s))
        elif isinstance(item, ReportIn):
            reports.append(item.report)
    return ticks, reports


@SETTINGS
@given(traffic())
def test_ingest_any_traffic_commits_exactly_the_good_messages(
    case: tuple[list[tuple[RawMessage, bool]], list[int]],
) -> None:
    messages, cuts = case
    ingest = _ingest()
    items = _drain(ingest, [m for m, _ in messages], cuts)  # never raises
    good = [m for m, ok in messages if ok]
    alone = _ingest()
    want = _drain(alone, good, [len(good) or 1])
    assert _committed(items) == _committed(want)
    bad = len(messages) - len(good)
    assert ingest.counters["bad_messages"] == bad
    assert alone.counters["bad_messages"] == 0
    assert ingest.counters["bad_internal"] == 0
    assert len(ingest._columns) == 0  # nothing left behind between drains


_PRICE_EDGES = [
    PRICE_MIN,
    math.nextafter(PRICE_MIN, 0.0),
    PRICE_MAX,
    math.nextafter(PRICE_MAX, math.inf),
    1e-320,
    0.0,
    -0.0,
    math.inf,
    math.nan,
]
_SIZE_EDGES = [
    SIZE_MIN,
    math.nextafter(SIZE_MIN, 0.0),
    SIZE_MAX,
    math.nextafter(SIZE_MAX, math.inf),
    1e-320,
    0.0,
    -1.0,
    math.inf,
    math.nan,
]
_AGE_EDGES = [5 * S, 5 * S + 1, -1 * S, -1 * S - 1, 10**6 * S]  # fmt: skip


@st.composite
def good_values(draw: st.DrawFn) -> tuple[dict[str, float], int]:
    bid = draw(good_prices)
    values: dict[str, float] = {
        "bid": bid,
        "ask": bid * (1.0 + draw(st.floats(min_value=1e-6, max_value=0.1))),
        "bid_size": draw(good_sizes),
        "ask_size": draw(good_sizes),
    }
    return values, draw(good_ages)


def _edges(values: dict[str, float], age: int) -> list[tuple[dict[str, float], int]]:
    """The good quote, and each variant with one field on or just beyond a bound."""
    out = [(values, age)]
    for field, edges in (("bid", _PRICE_EDGES), ("ask", _PRICE_EDGES),
                         ("bid_size", _SIZE_EDGES), ("ask_size", _SIZE_EDGES)):  # fmt: skip
        out += [({**values, field: edge}, age) for edge in edges]
    out += [(values, edge) for edge in _AGE_EDGES]
    out.append(({**values, "ask": values["bid"]}, age))
    out.append(({**values, "bid": PRICE_MAX, "ask": math.nextafter(PRICE_MAX, math.inf)}, age))
    return out


@SETTINGS
@given(good_values())
def test_ingest_quote_fast_path_accepts_exactly_what_quote_problem_accepts(
    case: tuple[dict[str, float], int],
) -> None:
    for values, age in _edges(*case):
        quote = Quote(ts_event=T - age, ts_recv=0, instrument="BTC", **values)
        ingest = _ingest()
        items = ingest.decode([(TOPICS.quote("X", "BTC"), CODEC.encode(quote), None, False)], T)
        assert (len(items) == 1) == (quote_problem(quote, T, LIMITS) is None), quote
        # and that is the policy: prices in [PRICE_MIN, PRICE_MAX], bid < ask, sizes normal
        # and at most SIZE_MAX, age within the limits
        q = quote
        policy = (
            PRICE_MIN <= q.bid < q.ask <= PRICE_MAX
            and SIZE_MIN <= q.bid_size <= SIZE_MAX
            and SIZE_MIN <= q.ask_size <= SIZE_MAX
            and -LIMITS.max_tick_future_ns <= T - q.ts_event <= LIMITS.max_tick_age_ns
        )
        assert (len(items) == 1) == policy, quote


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.one_of(good_sizes, bad_sizes, st.just(SIZE_MAX)),
            st.one_of(good_prices, bad_prices, st.just(PRICE_MAX)),
            st.one_of(st.floats(min_value=-1e15, max_value=1e15), bad_floats),
            st.booleans(),
        ),
        max_size=30,
    )
)
def test_accepted_fills_book_finite_pnl_within_their_notional_and_fees(
    fills: list[tuple[float, float, float, bool]],
) -> None:
    portfolio = Portfolio(1)
    notional = 0.0
    for k, (qty, price, fee, buy) in enumerate(fills):
        fill = Fill(ts_event=T, ts_recv=T, client_order_id="c", fill_id=f"f{k}",
                    instrument="BTC", side="buy" if buy else "sell", qty=qty, price=price,
                    fee=fee, liquidity="taker")  # fmt: skip
        if fill_problem(fill, T, LIMITS, {"BTC"}) is None:
            portfolio.apply_fill(0, qty if buy else -qty, price, fee)
            notional += qty * price
    assert np.isfinite(portfolio.positions).all() and np.isfinite(portfolio.realized).all()
    # a round trip loses at most what was traded, and the fees at most max_fee_bps of it
    bound = notional * (1.0 + LIMITS.max_fee_bps * 1e-4)
    assert abs(float(portfolio.realized.sum())) <= bound * (1.0 + 1e-9) + 1e-9


def _publish(topic: bytes, payload: bytes, retain: bool) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    length, out = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            break
    return bytes([0x30 | int(retain)]) + bytes(out) + body


MAX_PAYLOAD = 64
LIMIT = 2 + MAX_TOPIC_BYTES + 2 + MAX_PAYLOAD  # remaining lengths beyond it are skipped


@SETTINGS
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from([b"md/X/BTC/quote", b"t"]),
            st.one_of(st.integers(0, 80), st.integers(LIMIT - 10, LIMIT + 3 * 65_536)),
            st.booleans(),
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(1, 70_000), max_size=40),
)
def test_frame_parser_any_cuts_keeps_every_publish_it_can_and_skips_the_rest(
    frames: list[tuple[bytes, int, bool]], cuts: list[int]
) -> None:
    stream = b"".join(_publish(t, b"p" * n, r) for t, n, r in frames)
    counters: collections.Counter[str] = collections.Counter()
    parser = FrameParser(MAX_PAYLOAD, counters)
    out: list[RawMessage] = []
    at = 0
    for size in [*cuts, len(stream)]:
        out += parser.feed(stream[at : at + size])
        at += size
        if at >= len(stream):
            break
    kept = [(t, n, r) for t, n, r in frames if 2 + len(t) + n <= LIMIT]
    assert out == [(t.decode(), b"p" * n, None, r) for t, n, r in kept]
    assert parser.error is None
    assert counters["feed_frames_oversized"] == len(frames) - len(kept)
    assert len(parser._buffer) <= LIMIT + 5  # never more than one kept frame is held
