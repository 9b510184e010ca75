"""The one validation path (no broker): every inbound message parsed, range-checked, then
committed; a refusal counted by reason, never an exception, never a half-built row left
behind for the next message (issue 19, items 2, 4, 6 and 7)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from adapters.mqtt.auth import sign_command
from adapters.mqtt.ingest import CommandIn, Ingest, MarketData, RawMessage, ReportIn
from adapters.mqtt.topics import Topics
from adapters.mqtt.validation import (
    PRICE_MAX,
    PRICE_MIN,
    SIZE_MAX,
    TS_MAX_NS,
    TS_MIN_NS,
    MessageLimits,
    fill_problem,
    position_problem,
    timestamp_problem,
)
from engine.codec import EventCodec, Format
from engine.config import LiveConfig
from engine.events import Command, Fill, OrderAccepted, Quote, Trade
from engine.instruments import Instrument, InstrumentTable
from replay.files import plausibility

S = 1_000_000_000
T = 1_700_000_000 * S  # 2023-11-14, the receipt time of every test here
KEY = b"operator-key"
TOPICS = Topics(prefix="t/", node="n1", account="a1")
INSTRUMENTS = InstrumentTable(
    [Instrument(symbol="BTC-USD", venue="X"), Instrument(symbol="ETH-USD", venue="X")]
)
QUOTE_TOPIC = TOPICS.quote("X", "BTC-USD")
TRADE_TOPIC = TOPICS.trade("X", "BTC-USD")
FORMATS: list[Format] = ["json", "msgpack"]
LIMITS = MessageLimits(max_tick_age_ns=5 * S, max_tick_future_ns=1 * S, max_fee_bps=100.0)


def _ingest(fmt: Format = "json", limits: MessageLimits = LIMITS) -> Ingest:
    return Ingest(
        TOPICS,
        INSTRUMENTS,
        fmt=fmt,
        max_payload_bytes=65536,
        command_key=KEY,
        counters=Counter(),
        limits=limits,
    )


def _quote(ts: int = T, **kw: Any) -> Quote:
    values: dict[str, Any] = {"bid": 100.0, "ask": 100.5, "bid_size": 1.0, "ask_size": 2.0}
    values.update(kw)
    return Quote(ts_event=ts, ts_recv=0, instrument="BTC-USD", **values)


def _fill(fill_id: str = "F1", **kw: Any) -> Fill:
    values: dict[str, Any] = {
        "ts_event": T,
        "ts_recv": 0,
        "client_order_id": "S1-1",
        "fill_id": fill_id,
        "instrument": "BTC-USD",
        "side": "buy",
        "qty": 0.1,
        "price": 100.5,
        "fee": 0.01,
        "liquidity": "taker",
    }
    values.update(kw)
    return Fill(**values)


def _raw_quote(ts_event: int, bid: str = "100.0") -> bytes:
    # built by hand: the encoder would refuse an int beyond int64 on our side
    return (
        b'{"type":"quote","ts_event":%d,"ts_recv":0,"instrument":"BTC-USD","bid":%s,'
        b'"ask":100.5,"bid_size":1.0,"ask_size":2.0}' % (ts_event, bid.encode())
    )


def _raw_fill(ts_event: int) -> bytes:
    return (
        b'{"type":"fill","ts_event":%d,"ts_recv":0,"client_order_id":"S1-1","fill_id":"F9",'
        b'"instrument":"BTC-USD","side":"buy","qty":0.1,"price":100.5,"fee":0.0,'
        b'"liquidity":"taker"}' % ts_event
    )


def _md(payload: bytes, topic: str = QUOTE_TOPIC, retained: bool = False) -> RawMessage:
    return (topic, payload, None, retained)


def _report(payload: bytes) -> RawMessage:
    return (TOPICS.reports, payload, None, False)


def _command(command: Command, codec: EventCodec) -> RawMessage:
    payload = codec.encode(command)
    return (TOPICS.command, payload, sign_command(payload, KEY, TOPICS), False)


# item 2: a timestamp beyond int64 poisoned the shared columns


@pytest.mark.parametrize("ts_event", [2**63, 2**64 - 1, -1, -(2**63)])
def test_ingest_quote_ts_outside_int64_refused_later_messages_decoded(ts_event: int) -> None:
    codec = EventCodec("json")
    ingest = _ingest()
    good = codec.encode(_quote())
    fill = codec.encode(_fill())
    kill = Command(ts_event=T, ts_recv=0, action="kill", issuer="ops")
    # the bad quote between good ones, then every later call still decodes
    items = ingest.decode([_md(good), _md(_raw_quote(ts_event)), _md(good)], ts_recv=T)
    assert [type(i) for i in items] == [MarketData]
    assert isinstance(items[0], MarketData) and items[0].messages == 2
    for _ in range(30):  # about 30 such quotes killed the daemon
        assert ingest.decode([_md(_raw_quote(ts_event))], ts_recv=T) == []
    later = ingest.decode([_md(good), _report(fill), _command(kill, codec)], ts_recv=T)
    assert [type(i) for i in later] == [MarketData, ReportIn, CommandIn]
    assert ingest.counters["bad_ts_range"] == 31
    assert ingest.counters["bad_messages"] == 31


@pytest.mark.parametrize("ts_event", [2**63, 2**64 - 1, -1])
def test_ingest_report_ts_outside_int64_refused_counted(ts_event: int) -> None:
    ingest = _ingest()
    assert ingest.decode([_report(_raw_fill(ts_event))], ts_recv=T) == []
    assert ingest.counters["bad_ts_range"] == 1
    good = EventCodec("json").encode(_fill())
    assert [type(i) for i in ingest.decode([_report(good)], ts_recv=T)] == [ReportIn]


def test_ingest_exception_in_one_message_counted_never_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a bug of ours in one message's handling is that message's refusal, nothing more
    codec = EventCodec("json")
    ingest = _ingest()
    poison = codec.encode(_quote(bid=99.0))
    real = ingest._codec.decode

    def decode(raw: bytes) -> object:
        if raw == poison:
            raise RuntimeError("a bug")
        return real(raw)

    monkeypatch.setattr(ingest._codec, "decode", decode)
    good = codec.encode(_quote())
    items = ingest.decode([_md(good), _md(poison), _md(good)], ts_recv=T)
    assert [type(i) for i in items] == [MarketData]
    assert isinstance(items[0], MarketData) and items[0].messages == 2
    assert ingest.counters["bad_internal"] == 1
    assert any("a bug" in r.getMessage() or r.exc_info for r in caplog.records)


def test_ingest_batch_conversion_failure_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # even a row that passed every check and still fails its conversion goes, counted
    codec = EventCodec("json")
    ingest = _ingest()
    good = codec.encode(_quote())
    ingest._columns.rows.append((2**63,) + (0,) * 9)  # type: ignore[arg-type]
    assert ingest.decode([_md(good)], ts_recv=T) == []
    assert ingest.counters["bad_internal"] == 2
    assert len(ingest.decode([_md(good)], ts_recv=T)) == 1


# item 4: staleness by event time, range and unit, bounds


@pytest.mark.parametrize(
    ("ts_event", "reason"),
    [
        (T - 3600 * S, "stale"),  # the retained quote an hour old
        (T - 5 * S - 1, "stale"),
        (T + 1 * S + 1, "future"),
        (T + 3600 * S, "future"),
        (T // 10**9, "ts_unit"),  # seconds
        (T // 10**6, "ts_unit"),  # milliseconds
        (T // 10**3, "ts_unit"),  # microseconds
        (0, "ts_range"),
        (TS_MIN_NS - 1, "ts_range"),
        (TS_MAX_NS, "ts_range"),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_quote_timestamp_refused_by_reason(fmt: Format, ts_event: int, reason: str) -> None:
    ingest = _ingest(fmt)
    codec = EventCodec(fmt)
    assert ingest.decode([_md(codec.encode(_quote(ts_event)))], ts_recv=T) == []
    assert ingest.counters[f"bad_{reason}"] == 1
    assert ingest.counters["bad_messages"] == 1


@pytest.mark.parametrize("ts_event", [T - 5 * S, T, T + 1 * S])
def test_ingest_quote_within_age_and_skew_accepted(ts_event: int) -> None:
    ingest = _ingest()
    (item,) = ingest.decode([_md(EventCodec("json").encode(_quote(ts_event)))], ts_recv=T)
    assert isinstance(item, MarketData) and item.batch.ts_event.tolist() == [ts_event]


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"bid": 1e-320}, "price_bounds"),  # a denormal
        ({"bid": PRICE_MIN / 2}, "price_bounds"),
        ({"ask": PRICE_MAX * 2}, "price_bounds"),
        ({"bid_size": SIZE_MAX * 2}, "size_bounds"),
        ({"ask_size": 1e300}, "size_bounds"),
        ({"ask_size": 1e-300}, "size_bounds"),  # found by the live fuzz suite
        ({"bid": math.nan}, "non_finite"),
        ({"bid_size": math.inf}, "non_finite"),
        ({"bid": -1.0}, "non_positive"),
        ({"ask_size": 0.0}, "non_positive"),
        ({"bid": 101.0}, "crossed"),
    ],
)
def test_ingest_quote_values_out_of_bounds_refused(values: dict[str, float], reason: str) -> None:
    ingest = _ingest("msgpack")  # MessagePack carries NaN and inf
    codec = EventCodec("msgpack")
    assert ingest.decode([_md(codec.encode(_quote(T, **values)))], ts_recv=T) == []
    assert ingest.counters[f"bad_{reason}"] == 1


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"price": 1e-320}, "price_bounds"),
        ({"size": 2e18}, "size_bounds"),
        ({"size": 1e-300}, "size_bounds"),  # found by the live fuzz suite
        ({"ts_event": T - 60 * S}, "stale"),
        ({"ts_event": T // 1000}, "ts_unit"),
    ],
)
def test_ingest_trade_out_of_bounds_refused(values: dict[str, Any], reason: str) -> None:
    trade: dict[str, Any] = {"ts_event": T, "price": 100.0, "size": 1.0, "side": "buy"}
    trade.update(values)
    payload = EventCodec("json").encode(Trade(ts_recv=0, instrument="BTC-USD", **trade))
    ingest = _ingest()
    assert ingest.decode([_md(payload, TRADE_TOPIC)], ts_recv=T) == []
    assert ingest.counters[f"bad_{reason}"] == 1


def test_ingest_limits_follow_live_config() -> None:
    live = LiveConfig(max_tick_age="1h", max_tick_future="1ms", max_fee_bps=5.0)
    limits = MessageLimits.from_config(live)
    assert limits == MessageLimits(3600 * S, 1_000_000, 5.0)
    ingest = _ingest(limits=limits)
    codec = EventCodec("json")
    old = codec.encode(_quote(T - 3000 * S))
    early = codec.encode(_quote(T + 2_000_000))
    assert len(ingest.decode([_md(old)], ts_recv=T)) == 1
    assert ingest.decode([_md(early)], ts_recv=T) == []
    assert ingest.counters["bad_future"] == 1


# retained market data


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_retained_market_data_dropped_and_counted(fmt: Format) -> None:
    codec = EventCodec(fmt)
    ingest = _ingest(fmt)
    fresh = codec.encode(_quote())
    assert ingest.decode([_md(fresh, retained=True)], ts_recv=T) == []
    assert ingest.counters["bad_retained"] == 1
    assert ingest.counters["messages_in_quote"] == 1
    assert len(ingest.decode([_md(fresh)], ts_recv=T)) == 1


# item 6: deeply nested JSON is undecodable, not an exception


@pytest.mark.parametrize("depth", [1_000, 30_000])  # 60 kB: within max_payload_bytes
@pytest.mark.parametrize(
    "shape", [b'{"type":"quote","x":%s}', b'{"type":"fill","x":%s}', b"%s"], ids=str
)
def test_ingest_deeply_nested_json_refused_as_undecodable(shape: bytes, depth: int) -> None:
    ingest = _ingest()
    nested = b"[" * depth + b"]" * depth
    payload = shape % nested
    assert ingest.decode([_md(payload), _report(payload)], ts_recv=T) == []
    assert ingest.counters["bad_undecodable"] == 2


def test_ingest_deeply_nested_msgpack_refused_as_undecodable() -> None:
    ingest = _ingest("msgpack")
    payload = b"\x82\xa4type\xa5quote\xa1x" + b"\x91" * 60_000 + b"\x90"
    assert ingest.decode([_md(payload)], ts_recv=T) == []
    assert ingest.counters["bad_undecodable"] == 1


# item 7 (payload half): the fill checks, one place for live and reconciled fills


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"qty": -1.0}, "non_positive"),
        ({"qty": 0.0}, "non_positive"),
        ({"price": 0.0}, "non_positive"),
        ({"qty": 1e308}, "size_bounds"),
        ({"price": 1e-320}, "price_bounds"),
        ({"fee": -1e6}, "fee_bounds"),
        ({"fee": 1e308}, "fee_bounds"),
        ({"fee": 0.1006}, "fee_bounds"),  # 100.5 * 0.1 * 100 bps = 0.1005
        ({"fee": math.nan}, "non_finite"),
        ({"qty": math.inf}, "non_finite"),
        ({"ts_event": 2**63}, "ts_range"),
        ({"ts_event": T // 10**6}, "ts_unit"),
        ({"ts_recv": -5}, "ts_range"),
        # found by the live fuzz suite: a fill stamped a day ahead was booked on a peer's
        # clock; a fill on an instrument the daemon does not trade halted trading
        ({"ts_event": T + 86_400 * S}, "future"),
        ({"instrument": "DOGE"}, "unknown_symbol"),
        ({"qty": 1e-300}, "size_bounds"),
    ],
)
def test_ingest_fill_out_of_bounds_refused(values: dict[str, Any], reason: str) -> None:
    fill = _fill(**values)
    assert fill_problem(fill, T, LIMITS, {"BTC-USD"}) == reason
    ingest = _ingest("msgpack")
    if values.get("ts_event", 0) < 2**63:
        payload = EventCodec("msgpack").encode(fill)
        assert ingest.decode([_report(payload)], ts_recv=T) == []
        assert ingest.counters[f"bad_{reason}"] == 1


@pytest.mark.parametrize("fee", [0.0, 0.1005, -0.1005, -0.05])
def test_fill_fee_within_bounds_either_sign_accepted(fee: float) -> None:
    assert fill_problem(_fill(fee=fee), T, LIMITS, {"BTC-USD"}) is None
    ingest = _ingest()
    payload = EventCodec("json").encode(_fill(fee=fee))
    assert [type(i) for i in ingest.decode([_report(payload)], ts_recv=T)] == [ReportIn]


def test_ingest_report_any_type_ts_out_of_range_refused() -> None:
    codec = EventCodec("json")
    ingest = _ingest()
    old = OrderAccepted(ts_event=5, ts_recv=0, client_order_id="S1-1", venue_order_id="V")
    assert ingest.decode([_report(codec.encode(old))], ts_recv=T) == []
    assert ingest.counters["bad_ts_range"] == 1


def test_ingest_command_ts_outside_int64_refused() -> None:
    ingest = _ingest()
    payload = b'{"type":"command","ts_event":%d,"ts_recv":0,"action":"kill","issuer":"ops"}' % 2**63
    assert (
        ingest.decode([(TOPICS.command, payload, sign_command(payload, KEY, TOPICS), False)], T)
        == []
    )
    assert ingest.counters["bad_ts_range"] == 1


# the numbers are the tick files' numbers


def test_validation_bounds_equal_tick_file_plausibility() -> None:
    assert (TS_MIN_NS, TS_MAX_NS) == (plausibility.TS_MIN_NS, plausibility.TS_MAX_NS)
    assert (PRICE_MIN, PRICE_MAX, SIZE_MAX) == (
        plausibility.PRICE_MIN,
        plausibility.PRICE_MAX,
        plausibility.SIZE_MAX,
    )


@pytest.mark.parametrize(
    ("ts", "problem"),
    [
        (TS_MIN_NS, None),
        (TS_MAX_NS - 1, None),
        (TS_MAX_NS, "ts_range"),
        (1_700_000_000, "ts_unit"),
        (1_700_000_000_000, "ts_unit"),
        (1_700_000_000_000_000, "ts_unit"),
        (-1_700_000_000, "ts_range"),
        (2**64, "ts_range"),
    ],
)
def test_timestamp_problem_range_and_unit(ts: int, problem: str | None) -> None:
    assert timestamp_problem(ts) == problem


@pytest.mark.parametrize(
    ("qty", "problem"),
    [(0.0, None), (-2.5, None), (math.nan, "non_finite"), (math.inf, "non_finite"),
     (1e19, "size_bounds"), (-1e308, "size_bounds")],
)  # fmt: skip
def test_position_problem_finite_and_bounded(qty: float, problem: str | None) -> None:
    assert position_problem(qty) == problem


def test_ingest_integer_beyond_uint64_refused() -> None:
    # an integer msgspec cannot hold at all is undecodable, not an exception
    ingest = _ingest()
    assert ingest.decode([_md(_raw_quote(2**70))], ts_recv=T) == []
    assert ingest.counters["bad_undecodable"] + ingest.counters["bad_ts_range"] == 1
