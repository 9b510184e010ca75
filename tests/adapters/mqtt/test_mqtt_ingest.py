"""Decoding of inbound MQTT messages (no broker): micro-batches, order, checks, signatures."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import msgspec
import numpy as np
import pytest

from adapters.mqtt.auth import sign_command
from adapters.mqtt.command_guard import CommandGuard
from adapters.mqtt.ingest import CommandIn, Ingest, MarketData, RawMessage, ReportIn
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.status import Status, decode_status, encode_status, offline_payload
from adapters.mqtt.topics import Topics
from engine.codec import EventCodec, Format
from engine.errors import ConfigError
from engine.events import (
    CancelRejected,
    Command,
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Quote,
    Trade,
)
from engine.instruments import Instrument, InstrumentTable
from engine.ticks import QUOTE, TRADE

KEY = b"operator-key"
S = 1_000_000_000
T = 1_700_000_000 * S  # every stamp here is T + a few ns: in range and fresh
TOPICS = Topics(prefix="t/", node="n1", account="a1")
INSTRUMENTS = InstrumentTable(
    [Instrument(symbol="BTC-USD", venue="X"), Instrument(symbol="ETH-USD", venue="X")]
)
FORMATS: list[Format] = ["json", "msgpack"]


def _ingest(fmt: Format, *, key: bytes | None = KEY, max_payload: int = 65536) -> Ingest:
    return Ingest(
        TOPICS,
        INSTRUMENTS,
        fmt=fmt,
        max_payload_bytes=max_payload,
        command_key=key,
        counters=Counter(),
    )


def _quote(ts: int = T, symbol: str = "BTC-USD", **kw: Any) -> Quote:
    values: dict[str, Any] = {"bid": 100.0, "ask": 100.5, "bid_size": 1.0, "ask_size": 2.0}
    values.update(kw)
    return Quote(ts_event=ts, ts_recv=0, instrument=symbol, **values)


def _trade(ts: int = T, symbol: str = "BTC-USD", **kw: Any) -> Trade:
    values: dict[str, Any] = {"price": 100.25, "size": 0.5, "side": "sell"}
    values.update(kw)
    return Trade(ts_event=ts, ts_recv=0, instrument=symbol, **values)


REPORTS: list[Event] = [
    OrderAccepted(ts_event=T + 5, ts_recv=0, client_order_id="S1-1", venue_order_id="V1"),
    OrderRejected(ts_event=T + 5, ts_recv=0, client_order_id="S1-2", reason="no funds"),
    Fill(
        ts_event=T + 6,
        ts_recv=0,
        client_order_id="S1-1",
        fill_id="F1",
        instrument="BTC-USD",
        side="buy",
        qty=0.1,
        price=100.5,
        fee=0.01,
        liquidity="taker",
    ),
    OrderCancelled(ts_event=T + 7, ts_recv=0, client_order_id="S1-3", reason="user"),
    CancelRejected(ts_event=T + 7, ts_recv=0, client_order_id="S1-4", reason="unknown order"),
]


def _md(event: Quote | Trade, codec: EventCodec, venue: str = "X") -> RawMessage:
    kind = "quote" if isinstance(event, Quote) else "trade"
    return (f"t/md/{venue}/{event.instrument}/{kind}", codec.encode(event), None, False)


def _report(event: Event, codec: EventCodec) -> RawMessage:
    return (TOPICS.reports, codec.encode(event), None, False)


def _command(command: Command, codec: EventCodec, key: bytes | None = KEY) -> RawMessage:
    payload = codec.encode(command)
    signature = None if key is None else sign_command(payload, key, TOPICS)
    return (TOPICS.command, payload, signature, False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_quotes_and_trades_one_batch_in_arrival_order(fmt: Format) -> None:
    codec = EventCodec(fmt)
    ingest = _ingest(fmt)
    events: list[Quote | Trade] = [
        _quote(T + 10),
        _trade(T + 12, symbol="ETH-USD", side="buy"),
        _quote(T + 11, symbol="ETH-USD", bid=20.0, ask=20.1),  # ts_event going back: kept
    ]
    items = ingest.decode([_md(e, codec) for e in events], ts_recv=T + 99)
    assert len(items) == 1
    item = items[0]
    assert isinstance(item, MarketData)
    assert item.messages == 3 and item.ts_recv == T + 99
    b = item.batch
    assert b.ts_event.tolist() == [T + 10, T + 12, T + 11]
    assert b.ts_recv.tolist() == [T + 99] * 3
    assert b.instrument.tolist() == [0, 1, 1]
    assert b.kind.tolist() == [QUOTE, TRADE, QUOTE]
    assert b.side.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(b.bid, [100.0, np.nan, 20.0])
    np.testing.assert_array_equal(b.ask, [100.5, np.nan, 20.1])
    np.testing.assert_array_equal(b.bid_size, [1.0, np.nan, 1.0])
    np.testing.assert_array_equal(b.ask_size, [2.0, np.nan, 2.0])
    np.testing.assert_array_equal(b.price, [np.nan, 100.25, np.nan])
    np.testing.assert_array_equal(b.size, [np.nan, 0.5, np.nan])
    assert [str(c.dtype) for c in (b.ts_event, b.instrument, b.kind)] == ["int64", "int32", "int8"]
    assert ingest.counters["messages_in_quote"] == 2
    assert ingest.counters["messages_in_trade"] == 1
    assert ingest.counters["bad_messages"] == 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("report", REPORTS, ids=lambda r: type(r).__name__)
def test_ingest_each_report_type_round_trips(fmt: Format, report: Event) -> None:
    codec = EventCodec(fmt)
    items = _ingest(fmt).decode([_report(report, codec)], ts_recv=T + 5)
    assert items == [ReportIn(report=report, ts_recv=T + 5)]  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("action", ["kill", "reduce_only", "resume", "flatten", "reload_model"])
def test_ingest_signed_command_round_trips(fmt: Format, action: Any) -> None:
    codec = EventCodec(fmt)
    command = Command(ts_event=T + 1, ts_recv=0, action=action, reason="test", issuer="ops")
    items = _ingest(fmt).decode([_command(command, codec)], ts_recv=T + 3)
    assert items == [CommandIn(command=command, ts_recv=T + 3)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_reports_and_commands_split_batches_in_arrival_order(fmt: Format) -> None:
    codec = EventCodec(fmt)
    command = Command(ts_event=T + 1, ts_recv=0, action="kill")
    messages = [
        _md(_quote(T + 1), codec),
        _md(_quote(T + 2), codec),
        _report(REPORTS[0], codec),
        _md(_trade(T + 3), codec),
        _command(command, codec),
        _report(REPORTS[2], codec),
        _md(_quote(T + 4), codec),
    ]
    items = _ingest(fmt).decode(messages, ts_recv=T + 7)
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["MarketData", "ReportIn", "MarketData", "CommandIn", "ReportIn", "MarketData"]
    batches = [i.batch.ts_event.tolist() for i in items if isinstance(i, MarketData)]
    assert batches == [[T + 1, T + 2], [T + 3], [T + 4]]


def _bad_cases(codec: EventCodec) -> list[tuple[str, RawMessage]]:
    quote_topic = "t/md/X/BTC-USD/quote"
    order = OrderRequest(
        ts_event=T, ts_recv=0, client_order_id="c", instrument="BTC-USD", side="buy", qty=1.0
    )
    cases: list[tuple[str, tuple[str, bytes, None]]] = [
        ("bad_undecodable", (quote_topic, b"{not json", None)),
        ("bad_undecodable", (quote_topic, b"\xc1\xff", None)),
        ("bad_wrong_type", (quote_topic, codec.encode(order), None)),
        ("bad_wrong_type", (quote_topic, codec.encode(_trade()), None)),
        ("bad_wrong_type", ("t/md/X/BTC-USD/trade", codec.encode(_quote()), None)),
        ("bad_wrong_type", (TOPICS.reports, codec.encode(_quote()), None)),
        ("bad_wrong_type", (TOPICS.reports, codec.encode(order), None)),
        ("bad_unknown_symbol", (quote_topic, codec.encode(_quote(symbol="DOGE")), None)),
        ("bad_instrument_mismatch", (quote_topic, codec.encode(_quote(symbol="ETH-USD")), None)),
        ("bad_crossed", (quote_topic, codec.encode(_quote(bid=101.0, ask=100.0)), None)),
        ("bad_crossed", (quote_topic, codec.encode(_quote(bid=100.0, ask=100.0)), None)),
        ("bad_non_positive", (quote_topic, codec.encode(_quote(bid_size=0.0)), None)),
        ("bad_non_positive", (quote_topic, codec.encode(_quote(bid=-1.0)), None)),
        ("bad_non_positive", ("t/md/X/BTC-USD/trade", codec.encode(_trade(size=0.0)), None)),
        ("bad_unknown_topic", ("t/md/X/BTC-USD/book", codec.encode(_quote()), None)),
        ("bad_unknown_topic", ("t/md/X/DOGE/quote", codec.encode(_quote()), None)),
    ]
    return [(reason, (*message, False)) for reason, message in cases]


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_bad_messages_counted_by_reason_nothing_enqueued(fmt: Format) -> None:
    codec = EventCodec(fmt)
    ingest = _ingest(fmt)
    cases = _bad_cases(codec)
    assert ingest.decode([m for _, m in cases], ts_recv=T) == []
    expected = Counter(reason for reason, _ in cases)
    for reason, count in expected.items():
        assert ingest.counters[reason] == count, reason
    assert ingest.counters["bad_messages"] == len(cases)


def test_ingest_bad_message_logged_with_raw_bytes(caplog: pytest.LogCaptureFixture) -> None:
    ingest = _ingest("json")
    raw = b"{garbage" + b"x" * 1000
    ingest.decode([("t/md/X/BTC-USD/quote", raw, None, False)], ts_recv=T)
    [record] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "undecodable" in record.getMessage()
    assert repr(raw[:200]) in record.getMessage()
    assert repr(raw[:201]) not in record.getMessage()


def test_ingest_non_finite_values_counted() -> None:
    # JSON has no NaN; MessagePack carries it, and a huge JSON exponent is out of range
    codec = EventCodec("msgpack")
    ingest = _ingest("msgpack")
    messages = [
        _md(_quote(bid=math.nan), codec),
        _md(_quote(ask_size=math.inf), codec),
        _md(_trade(price=math.nan), codec),
        _report(msgspec.structs.replace(REPORTS[2], price=math.inf), codec),
    ]
    assert ingest.decode(messages, ts_recv=T) == []
    assert ingest.counters["bad_non_finite"] == 4
    huge = b'{"type":"quote","ts_event":1,"ts_recv":0,"instrument":"BTC-USD","bid":1e999}'
    json_ingest = _ingest("json")
    assert json_ingest.decode([("t/md/X/BTC-USD/quote", huge, None, False)], ts_recv=T) == []
    assert json_ingest.counters["bad_undecodable"] == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_oversized_payload_refused_unread(fmt: Format) -> None:
    codec = EventCodec(fmt)
    ingest = _ingest(fmt, max_payload=64)
    big = _quote(symbol="BTC-USD")
    payload = codec.encode(big)
    assert len(payload) > 64
    assert ingest.decode([("t/md/X/BTC-USD/quote", payload, None, False)], ts_recv=T) == []
    assert ingest.counters["oversized"] == 1
    assert ingest.counters["bad_messages"] == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_unsigned_or_wrongly_signed_commands_ignored_and_counted(fmt: Format) -> None:
    codec = EventCodec(fmt)
    command = Command(ts_event=T, ts_recv=0, action="resume")
    payload = codec.encode(command)
    ingest = _ingest(fmt)
    messages: list[RawMessage] = [
        (TOPICS.command, payload, None, False),
        (TOPICS.command, payload, "", False),
        (TOPICS.command, payload, sign_command(payload, b"other-key", TOPICS), False),
        # the payload altered after signing
        (TOPICS.command, payload + b" ", sign_command(payload, KEY, TOPICS), False),
    ]
    assert ingest.decode(messages, ts_recv=T) == []
    assert ingest.counters["commands_unauthenticated"] == 4
    assert ingest.counters["bad_messages"] == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_signed_command_redelivered_applied_once_counted_duplicate(fmt: Format) -> None:
    codec = EventCodec(fmt)
    s = 1_000_000_000
    t = 1_700_000_000 * s
    kill = Command(ts_event=t, ts_recv=t, action="kill", issuer="ops")
    ingest = _ingest(fmt)
    # a QoS 1 redelivery in the same drain, then a replay a little later
    assert ingest.decode([_command(kill, codec), _command(kill, codec)], ts_recv=t) == [
        CommandIn(command=kill, ts_recv=t)
    ]
    assert ingest.decode([_command(kill, codec)], ts_recv=t + 5 * s) == []
    assert ingest.counters["bad_command_duplicate"] == 2
    # a new stamp is a new command
    again = Command(ts_event=t + 6 * s, ts_recv=0, action="kill", issuer="ops")
    assert ingest.decode([_command(again, codec)], ts_recv=t + 6 * s) == [
        CommandIn(command=again, ts_recv=t + 6 * s)
    ]
    assert ingest.counters["commands_unauthenticated"] == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_signed_command_stale_or_future_refused_and_counted(fmt: Format) -> None:
    codec = EventCodec(fmt)
    s = 1_000_000_000
    t = 1_700_000_000 * s
    ingest = Ingest(
        TOPICS,
        INSTRUMENTS,
        fmt=fmt,
        max_payload_bytes=65536,
        command_key=KEY,
        counters=Counter(),
        command_guard=CommandGuard(10 * s),
    )
    stale = Command(ts_event=t - 11 * s, ts_recv=0, action="resume", issuer="ops")
    future = Command(ts_event=t + 11 * s, ts_recv=0, action="rollback", issuer="ops")
    quote = _quote(t)
    items = ingest.decode(
        [_command(stale, codec), _command(future, codec), _md(quote, codec)], ts_recv=t
    )
    assert [type(item) for item in items] == [MarketData]  # the feed goes on
    assert ingest.counters["bad_command_stale"] == 1
    assert ingest.counters["bad_command_future"] == 1
    assert len(ingest.command_guard) == 0


def test_ingest_without_command_key_refuses_every_command() -> None:
    codec = EventCodec("json")
    ingest = _ingest("json", key=None)
    command = Command(ts_event=T, ts_recv=0, action="kill")
    assert ingest.decode([_command(command, codec, key=KEY)], ts_recv=T) == []
    assert ingest.counters["commands_unauthenticated"] == 1


def test_status_round_trips_and_will_is_offline() -> None:
    status = Status(
        node="n1",
        mode="live",
        state="ACTIVE",
        online=True,
        ts_ns=5,
        positions={"BTC-USD": 0.25},
        pnl=-1.5,
        heartbeat_seq=7,
    )
    assert decode_status(encode_status(status)) == status
    will = decode_status(offline_payload("n1"))
    assert (will.node, will.online, will.state) == ("n1", False, "offline")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("format", "xml"),
        ("market_data_qos", 3),
        ("inbox_size", 0),
        ("outbox_size", 0),
        ("reconnect_max_s", 0.01),
        ("cert_file", "c.pem"),
        ("command_key", b""),
    ],
)
def test_settings_out_of_range_field_is_config_error(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"mqtt.{field}"):
        MqttSettings(**{field: value})
