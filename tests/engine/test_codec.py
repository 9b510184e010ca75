import msgspec
import pytest

from engine.codec import EventCodec
from engine.errors import BadMessage
from engine.events import (
    EVENT_TYPES,
    Alarm,
    Bar,
    CancelRejected,
    CancelRequest,
    ChallengerSignal,
    Command,
    DepthUpdate,
    Fill,
    ModelSwitched,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Quote,
    RiskRejected,
    Signal,
    Trade,
    TradingState,
)

T = {"ts_event": 1_723_161_254_087_891_268, "ts_recv": 1_723_161_254_087_991_268}
EXAMPLES = [
    Quote(
        **T, instrument="BTCUSDT", bid=61837.63, ask=61837.64, bid_size=3.78826, ask_size=1.54698
    ),
    Trade(**T, instrument="BTCUSDT", price=61837.63, size=0.02, side="sell"),
    DepthUpdate(
        **T,
        instrument="BTCUSDT",
        first_update_id=50093239189,
        last_update_id=50093239202,
        bids=((61737.63, 0.0),),
        asks=((61837.64, 1.54698), (61839.85, 0.0)),
    ),
    Bar(
        **T,
        instrument="X",
        interval_ns=60_000_000_000,
        open=1,
        high=2,
        low=0.5,
        close=1.5,
        volume=10,
    ),
    Signal(**T, instrument="X", model="m", score=0.61, zone=2, previous_zone=1),
    OrderRequest(
        **T,
        client_order_id="O-1",
        instrument="X",
        side="buy",
        qty=0.5,
        order_type="limit",
        limit_price=100.25,
        time_in_force="ioc",
        reduce_only=True,
        strategy="s",
    ),
    CancelRequest(**T, client_order_id="O-1", instrument="X", reason="r"),
    OrderAccepted(**T, client_order_id="O-1", venue_order_id="V-1"),
    OrderRejected(**T, client_order_id="O-1", reason="no"),
    Fill(
        **T,
        client_order_id="O-1",
        fill_id="F-1",
        instrument="X",
        side="buy",
        qty=0.5,
        price=100.25,
        fee=0.01,
        liquidity="maker",
    ),
    OrderCancelled(**T, client_order_id="O-1", reason="halted"),
    CancelRejected(**T, client_order_id="O-1", reason="closed"),
    RiskRejected(
        **T,
        client_order_id="O-1",
        instrument="X",
        check="max_order_qty",
        limit=1.0,
        value=2.0,
        reason="too big",
    ),
    TradingState(**T, state="HALTED", previous="ACTIVE", reason="kill"),
    Command(**T, action="kill", reason="test", issuer="ops"),
    Alarm(**T, source="feed", severity="critical", message="stale"),
    Command(
        **T, action="promote", reason="better IC", issuer="ana", target="challenger", stage="paper"
    ),
    ChallengerSignal(
        **T, instrument="X", model="m", version="ab" * 32, score=0.4, zone=0, previous_zone=1
    ),
    ModelSwitched(
        **T,
        model="m",
        alias="champion",
        version="ab" * 32,
        stage="paper",
        from_version="cd" * 32,
        audit_entry_sha256="ef" * 32,
        issuer="ana",
        reason="better IC",
    ),
]


def test_examples_cover_every_event_type() -> None:
    assert {type(e) for e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_codec_every_event_round_trips_exactly(fmt: str, event: object) -> None:
    codec = EventCodec(fmt)  # type: ignore[arg-type]
    decoded = codec.decode(codec.encode(event))  # type: ignore[arg-type]
    assert decoded == event
    assert type(decoded) is type(event)


def test_codec_json_carries_type_tag() -> None:
    raw = EventCodec("json").encode(EXAMPLES[0])
    assert msgspec.json.decode(raw)["type"] == "quote"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"type":"quote"}',
        b'{"type":"nope","ts_event":1,"ts_recv":1}',
        b'{"type":"trade","ts_event":1,"ts_recv":1,"instrument":"X","price":1,"size":1,"side":"up"}',
    ],
)
def test_codec_bad_bytes_raise_bad_message_with_raw_and_source(raw: bytes) -> None:
    codec = EventCodec("json", source="md/SIM/X/quote")
    with pytest.raises(BadMessage) as info:
        codec.decode(raw)
    assert info.value.raw == raw
    assert info.value.source == "md/SIM/X/quote"


def test_codec_msgpack_rejects_json_bytes() -> None:
    with pytest.raises(BadMessage):
        EventCodec("msgpack").decode(b"\xc1")
