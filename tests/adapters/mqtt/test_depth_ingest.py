"""Depth on the bus (no broker): each field checked and refused on its own, counted by
reason, never raising; arrival order kept across ticks and depth; the journal's depth record
round-trips; an out-of-sync book is lost data for the feed monitor.

Mutation checks (tried once by hand): dropping the duplicate-price check in
``adapters.mqtt.validation._levels_problem`` fails ``test_depth_each_bad_field_refused``
(``depth_duplicate``); flushing the tick batch only at the end of ``Ingest.decode`` (not
when a depth message arrives) fails ``test_depth_cuts_tick_batches_in_arrival_order``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.daemon.core import FeedMonitor
from adapters.mqtt.ingest import DepthData, Ingest, MarketData, RawMessage
from adapters.mqtt.topics import Topics
from engine.book.batch import F_END, F_SNAPSHOT, DepthBatch
from engine.codec import EventCodec, Format
from engine.events import DepthUpdate, Quote
from engine.instruments import Instrument, InstrumentTable
from engine.journal import (
    DepthRecord,
    JournalDecoder,
    JournalHeader,
    encode_header,
    encode_record,
    make_record,
)
from engine.ticks import TickBatch

S = 1_000_000_000
T = 1_700_000_000 * S
TOPICS = Topics(prefix="t/", node="n1", account="a1")
INSTRUMENTS = InstrumentTable(
    [Instrument(symbol="BTC-USD", venue="X"), Instrument(symbol="ETH-USD", venue="X")]
)
DEPTH = TOPICS.depth("X", "BTC-USD")
FORMATS: list[Format] = ["json", "msgpack"]


def _ingest(fmt: Format = "json") -> Ingest:
    return Ingest(TOPICS, INSTRUMENTS, fmt=fmt, max_payload_bytes=1 << 20, command_key=None,
                  counters=Counter())  # fmt: skip


def _update(**kw: Any) -> DepthUpdate:
    values: dict[str, Any] = {
        "ts_event": T, "ts_recv": 0, "instrument": "BTC-USD", "first_update_id": 10,
        "last_update_id": 12, "bids": ((100.0, 1.0), (99.5, 0.0)), "asks": ((100.5, 2.0),),
    }  # fmt: skip
    values.update(kw)
    return DepthUpdate(**values)


def _msg(codec: EventCodec, event: Any, topic: str = DEPTH) -> RawMessage:
    return (topic, codec.encode(event), None, False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_depth_good_update_becomes_rows_stamped_with_receipt(fmt: Format) -> None:
    ingest, codec = _ingest(fmt), EventCodec(fmt)
    (item,) = ingest.decode([_msg(codec, _update())], T + 5)
    assert isinstance(item, DepthData) and item.messages == 1
    b = item.batch
    assert b.side.tolist() == [1, 1, -1]
    assert b.price.tolist() == [100.0, 99.5, 100.5] and b.qty.tolist() == [1.0, 0.0, 2.0]
    assert b.ts_recv.tolist() == [T + 5] * 3 and b.ts_event.tolist() == [T] * 3
    assert b.flags.tolist() == [0, 0, F_END] and b.first_update_id.tolist() == [10] * 3
    assert ingest.counters["messages_in_depth"] == 1


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"ts_event": T // 1000}, "bad_ts_unit"),
    ({"ts_event": 5}, "bad_ts_range"),
    ({"ts_event": T - 60 * S}, "bad_stale"),
    ({"ts_event": T + 60 * S}, "bad_future"),
    ({"instrument": "DOGE"}, "bad_unknown_symbol"),
    ({"instrument": "ETH-USD"}, "bad_instrument_mismatch"),
    ({"first_update_id": -1}, "bad_depth_ids"),
    ({"first_update_id": 13}, "bad_depth_ids"),
    ({"prev_update_id": 11}, "bad_depth_ids"),
    ({"prev_update_id": -2}, "bad_depth_ids"),
    ({"reset": True}, "bad_depth_reset_levels"),
    ({"bids": ((math.nan, 1.0),)}, "bad_non_finite"),
    ({"bids": ((-1.0, 1.0),)}, "bad_non_positive"),
    ({"asks": ((1e13, 1.0),)}, "bad_price_bounds"),
    ({"asks": ((100.5, math.inf),)}, "bad_non_finite"),
    ({"asks": ((100.5, -1.0),)}, "bad_negative_size"),
    ({"asks": ((100.5, 1e19),)}, "bad_size_bounds"),
    ({"asks": ((100.5, 1e-300),)}, "bad_size_bounds"),
    ({"bids": ((100.0, 1.0), (100.0, 2.0))}, "bad_depth_duplicate"),
    ({"bids": tuple((100.0 - k * 0.01, 1.0) for k in range(5001))}, "bad_depth_levels"),
]


@pytest.mark.parametrize(("fields", "reason"), BAD_FIELDS)
def test_depth_each_bad_field_refused(fields: dict[str, Any], reason: str) -> None:
    # MessagePack: JSON has no NaN or infinity to carry
    ingest, codec = _ingest("msgpack"), EventCodec("msgpack")
    good = _msg(codec, _update(first_update_id=1, last_update_id=1))
    items = ingest.decode([_msg(codec, _update(**fields)), good], T)
    # the bad one is counted under its reason, the good one after it still goes through
    assert ingest.counters[reason] == 1 and ingest.counters["bad_messages"] == 1
    (item,) = items
    assert isinstance(item, DepthData) and item.messages == 1


def test_depth_wrong_type_retained_and_garbage_refused() -> None:
    ingest, codec = _ingest(), EventCodec("json")
    quote = Quote(ts_event=T, ts_recv=0, instrument="BTC-USD", bid=1.0, ask=2.0, bid_size=1.0,
                  ask_size=1.0)  # fmt: skip
    items = ingest.decode(
        [(DEPTH, codec.encode(quote), None, False), (DEPTH, b"{not json", None, False),
         (DEPTH, codec.encode(_update()), None, True)],
        T,
    )  # fmt: skip
    assert items == []
    c = ingest.counters
    assert (c["bad_wrong_type"], c["bad_undecodable"], c["bad_retained"]) == (1, 1, 1)


def test_depth_cuts_tick_batches_in_arrival_order() -> None:
    ingest, codec = _ingest(), EventCodec("json")
    quote = Quote(ts_event=T, ts_recv=0, instrument="BTC-USD", bid=100.0, ask=100.5,
                  bid_size=1.0, ask_size=1.0)  # fmt: skip
    qt = (TOPICS.quote("X", "BTC-USD"), codec.encode(quote), None, False)
    d1 = _msg(codec, _update())
    d2 = _msg(codec, _update(first_update_id=13, last_update_id=14))
    items = ingest.decode([qt, d1, d2, qt, qt, d1], T)
    kinds = [(type(i).__name__, i.messages) for i in items]  # type: ignore[union-attr]
    assert kinds == [("MarketData", 1), ("DepthData", 2), ("MarketData", 2), ("DepthData", 1)]
    assert isinstance(items[2], MarketData) and len(items[2].batch) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.builds(
                lambda u, b, a: msgspec.json.encode({**u, "bids": b, "asks": a}),
                st.fixed_dictionaries({
                    "type": st.just("depth"), "ts_event": st.integers(-(2**70), 2**70),
                    "ts_recv": st.integers(0, 2**63 - 1),
                    "instrument": st.sampled_from(["BTC-USD", "ETH-USD", "", "x" * 300]),
                    "first_update_id": st.integers(-(2**64), 2**64),
                    "last_update_id": st.integers(-(2**64), 2**64),
                }),
                st.lists(st.tuples(st.floats(), st.floats()), max_size=4),
                st.lists(st.one_of(st.tuples(st.floats(), st.floats()), st.text(max_size=3)),
                         max_size=3),
            ),
        ),
        max_size=6,
    )
)  # fmt: skip
def test_depth_hostile_payloads_never_raise_and_refusals_add_up(payloads: list[bytes]) -> None:
    ingest = _ingest()
    items = ingest.decode([(DEPTH, p, None, False) for p in payloads], T)
    accepted = sum(i.messages for i in items if isinstance(i, DepthData))
    assert accepted + ingest.counters["bad_messages"] == len(payloads)
    for item in items:
        assert isinstance(item, DepthData)
        b = item.batch
        levels = b.side != 0
        assert np.all(np.isfinite(b.price[levels])) and np.all(b.qty[levels] >= 0.0)


def _depth_batch(first: int, last: int, *, snapshot: bool = False) -> DepthBatch:
    update = _update(first_update_id=first, last_update_id=last, snapshot=snapshot,
                     prev_update_id=first if snapshot else -1)  # fmt: skip
    return DepthBatch.from_updates([update], INSTRUMENTS.index)


def test_depth_record_round_trips_through_the_journal() -> None:
    batch = _depth_batch(10, 12)
    record = make_record(7, T + 1, batch)
    assert isinstance(record, DepthRecord)
    decoder = JournalDecoder()
    header = JournalHeader(session_id="s", first_seq=7, created_ns=T)
    (back,) = decoder.feed(encode_header(header) + encode_record(record))
    assert isinstance(back, DepthRecord) and back.seq == 7
    again = back.depth.to_batch()
    for name in DepthBatch.__slots__:
        assert np.array_equal(getattr(again, name), getattr(batch, name), equal_nan=True), name


def test_depth_gap_is_data_loss_until_resync_and_fresh_quotes() -> None:
    monitor = FeedMonitor(INSTRUMENTS.symbols, [None, None], T)
    assert monitor.on_depth(_depth_batch(10, 12)) is None
    assert monitor.on_depth(_depth_batch(13, 15)) is None
    lost = monitor.on_depth(_depth_batch(20, 21))  # 16..19 missing
    assert lost is not None and lost.status == "lost" and "BTC-USD" in lost.reason
    assert monitor.on_depth(_depth_batch(22, 23)) is None  # still out of sync: nothing new
    quotes = TickBatch.quotes(
        np.array([T, T], np.int64), np.array([T, T], np.int64), np.array([0, 1], np.int32),
        np.array([1.0, 1.0]), np.array([2.0, 2.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0]),
    )  # fmt: skip
    assert monitor.on_market_data(quotes) is None  # quotes alone do not resync a book
    restored = monitor.on_depth(_depth_batch(30, 30, snapshot=True))
    assert restored is not None and restored.status == "restored"
    assert (_depth_batch(30, 30, snapshot=True).flags & F_SNAPSHOT).all()
