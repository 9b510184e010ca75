"""The journal format: framing, every record type, torn tails versus corruption, sequence."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import TimerFired
from engine.errors import DataError, JournalError
from engine.events import (
    CancelRejected,
    Command,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    Quote,
)
from engine.journal import (
    FORMAT_VERSION,
    MAGIC,
    AnyRecord,
    ClockRecord,
    CommandRecord,
    FeedRecord,
    FeedStatus,
    JournalDecoder,
    JournalHeader,
    MarketDataRecord,
    ReportRecord,
    TickColumns,
    TimerRecord,
    encode_header,
    encode_record,
    make_record,
)
from engine.ticks import TickBatch

T = 1_723_161_254_087_891_268
HEADER = JournalHeader(session_id="s-1", created_ns=T, first_seq=1)
HEAD = encode_header(HEADER)


def mixed_batch(n: int, seed: int = 0) -> TickBatch:
    """Quotes and trades of three instruments: every column holds real values and NaNs."""
    rng = np.random.default_rng(seed)
    ts = T + np.sort(rng.integers(0, 10**9, n)).astype(np.int64)
    nq = n - n // 3
    quotes = TickBatch.quotes(
        ts[:nq],
        ts[:nq] + 1000,
        rng.integers(0, 3, nq).astype(np.int32),
        rng.normal(100, 1, nq),
        rng.normal(101, 1, nq),
        rng.random(nq),
        rng.random(nq),
    )
    nt = n - nq
    trades = TickBatch.trades(
        ts[nq:],
        ts[nq:] + 2000,
        rng.integers(0, 3, nt).astype(np.int32),
        rng.normal(100, 1, nt),
        rng.random(nt),
        rng.choice(np.array([-1, 1], np.int8), nt),
    )
    return TickBatch.merge(quotes, trades)


REPORTS = [
    OrderAccepted(ts_event=T, ts_recv=T + 1, client_order_id="s-1-7", venue_order_id="V9"),
    OrderRejected(ts_event=T, ts_recv=T + 1, client_order_id="s-1-8", reason="no margin"),
    Fill(
        ts_event=T,
        ts_recv=T + 1,
        client_order_id="s-1-7",
        fill_id="F1",
        instrument="BTCUSDT",
        side="sell",
        qty=0.25,
        price=61837.63,
        fee=0.01,
        liquidity="taker",
    ),
    OrderCancelled(ts_event=T, ts_recv=T + 1, client_order_id="s-1-7", reason="user"),
    CancelRejected(ts_event=T, ts_recv=T + 1, client_order_id="s-1-9", reason="unknown"),
]
BODIES = [
    mixed_batch(50),
    *REPORTS,
    Command(ts_event=T, ts_recv=T + 2, action="kill", reason="drill", issuer="ops"),
    TimerFired(name="bar_close", ts_event=T + 60, interval_ns=60_000_000_000),
    TimerFired(name="once", ts_event=T + 61),
    FeedStatus(status="lost", reason="broker gone"),
    FeedStatus(status="overflow", dropped=17),
]


def sample_records() -> list[AnyRecord]:
    records: list[AnyRecord] = [
        make_record(seq, T + seq, body) for seq, body in enumerate(BODIES, start=1)
    ]
    records.append(ClockRecord(seq=len(records) + 1, ts_recv=T + 99))
    return records


def journal_bytes(records: list[AnyRecord], header: JournalHeader = HEADER) -> bytes:
    return encode_header(header) + b"".join(encode_record(r) for r in records)


def decode_all(data: bytes, chunk: int | None = None) -> tuple[list[AnyRecord], object]:
    decoder = JournalDecoder("test.tlj")
    chunk = chunk or max(len(data), 1)
    out: list[AnyRecord] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    return out, decoder.finish()


def frame_offsets(records: list[AnyRecord]) -> list[int]:
    offsets = [len(HEAD)]
    for r in records:
        offsets.append(offsets[-1] + len(encode_record(r)))
    return offsets


def assert_batches_identical(a: TickBatch, b: TickBatch) -> None:
    for name in TickBatch.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.tobytes() == y.tobytes(), name  # bit for bit, NaNs included


def test_journal_every_record_type_round_trips() -> None:
    records = sample_records()
    assert {type(r) for r in records} == {
        MarketDataRecord,
        ReportRecord,
        CommandRecord,
        TimerRecord,
        ClockRecord,
        FeedRecord,
    }
    decoded, torn = decode_all(journal_bytes(records))
    assert torn is None
    assert decoded == records
    assert [type(r.report) for r in decoded if isinstance(r, ReportRecord)] == [
        type(r) for r in REPORTS
    ]


def test_journal_tick_batch_round_trips_every_column_exactly() -> None:
    batch = mixed_batch(1000, seed=3)
    (record,), torn = decode_all(journal_bytes([make_record(1, T, batch)]))
    assert torn is None
    assert isinstance(record, MarketDataRecord)
    back = record.ticks.to_batch()
    assert_batches_identical(back, batch)
    assert all(getattr(back, c).flags.writeable for c in TickBatch.__slots__)


@pytest.mark.parametrize("n", [0, 1])
def test_journal_tiny_tick_batches_round_trip(n: int) -> None:
    batch = mixed_batch(n)
    (record,), _ = decode_all(journal_bytes([make_record(1, T, batch)]))
    assert isinstance(record, MarketDataRecord)
    assert_batches_identical(record.ticks.to_batch(), batch)


def test_journal_tick_columns_of_a_sliced_batch_are_its_rows() -> None:
    batch = mixed_batch(100)
    part = batch.slice(10, 20)
    assert_batches_identical(TickColumns.from_batch(part).to_batch(), part)


def test_journal_tick_columns_refuse_a_column_of_the_wrong_dtype() -> None:
    batch = mixed_batch(5)
    wrong = dataclasses.replace(batch, instrument=batch.instrument.astype(np.int64))
    with pytest.raises(TypeError, match="instrument int32"):
        TickColumns.from_batch(wrong)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_journal_decoder_any_split_of_the_bytes_gives_the_same_records(chunk: int) -> None:
    records = sample_records()
    decoded, torn = decode_all(journal_bytes(records), chunk)
    assert torn is None
    assert decoded == records


def test_journal_make_record_refuses_an_output_event() -> None:
    quote = Quote(ts_event=T, ts_recv=T, instrument="X", bid=1, ask=2, bid_size=1, ask_size=1)
    with pytest.raises(TypeError, match="Quote"):
        make_record(1, T, quote)  # type: ignore[arg-type]


def test_journal_frame_layout_is_length_crc_payload() -> None:
    record = ClockRecord(seq=5, ts_recv=T)
    frame = encode_record(record)
    length, crc = struct.unpack_from("<II", frame)
    payload = frame[8:]
    assert length == len(payload)
    assert crc == zlib.crc32(payload)
    assert msgspec.msgpack.decode(payload) == {"record": "clock", "seq": 5, "ts_recv": T}
    assert HEAD[:8] == MAGIC
    assert struct.unpack_from("<I", HEAD, 8)[0] == FORMAT_VERSION


def test_journal_torn_at_every_byte_of_the_last_record_returns_the_rest() -> None:
    records = sample_records()
    data = journal_bytes(records)
    last_start = frame_offsets(records)[-2]
    for cut in range(last_start + 1, len(data)):
        decoded, torn = decode_all(data[:cut])
        assert decoded == records[:-1], cut
        assert torn is not None
        assert (torn.offset, torn.length) == (last_start, cut - last_start)  # type: ignore[attr-defined]


def test_journal_torn_inside_a_large_tick_record_returns_the_rest() -> None:
    records = [make_record(1, T, REPORTS[2]), make_record(2, T, mixed_batch(2000))]
    data = journal_bytes(records)
    last_start = frame_offsets(records)[1]
    cuts = {*range(last_start + 1, last_start + 64), *range(len(data) - 64, len(data))}
    for cut in sorted(cuts | set(range(last_start + 1, len(data), 499))):
        decoded, torn = decode_all(data[:cut], chunk=4096)
        assert decoded == records[:1]
        assert torn is not None


def test_journal_zero_filled_tail_is_torn_not_corrupt() -> None:
    records = sample_records()
    decoded, torn = decode_all(journal_bytes(records) + bytes(4096))
    assert decoded == records
    assert torn is not None
    assert torn.length == 4096  # type: ignore[attr-defined]


def test_journal_bad_crc_on_the_last_record_is_torn() -> None:
    records = sample_records()
    data = bytearray(journal_bytes(records))
    data[-1] ^= 0xFF
    decoded, torn = decode_all(bytes(data))
    assert decoded == records[:-1]
    assert torn is not None
    assert "CRC" in torn.reason  # type: ignore[attr-defined]


@pytest.mark.parametrize("middle", [2, 0])  # a Fill report, a 50-tick batch
def test_journal_flipped_byte_in_a_middle_record_raises_naming_its_offset(middle: int) -> None:
    records = sample_records()
    data = journal_bytes(records)
    offsets = frame_offsets(records)
    start, stop = offsets[middle], offsets[middle + 1]
    step = 1 if stop - start < 400 else 7
    for at in range(start, stop, step):
        damaged = bytearray(data)
        damaged[at] ^= 0x5A
        with pytest.raises(JournalError) as info:
            decode_all(bytes(damaged), chunk=1000)
        assert info.value.offset == start, at
        assert f"byte {start}" in str(info.value)
        assert isinstance(info.value, DataError)


def test_journal_crc_valid_but_undecodable_record_raises() -> None:
    payload = msgspec.msgpack.encode({"record": "nope", "seq": 1, "ts_recv": T})
    frame = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    with pytest.raises(JournalError, match="passes its CRC"):
        decode_all(HEAD + frame)


def test_journal_tick_columns_of_the_wrong_length_raise() -> None:
    record = make_record(1, T, mixed_batch(4))
    assert isinstance(record, MarketDataRecord)
    ticks = msgspec.structs.asdict(record.ticks)
    ticks["bid"] = ticks["bid"][:-1]
    payload = msgspec.msgpack.encode(
        {"record": "market_data", "seq": 1, "ts_recv": T, "ticks": ticks}
    )
    frame = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    with pytest.raises(JournalError, match="column 'bid'"):
        decode_all(HEAD + frame)


@pytest.mark.parametrize("seqs", [[1, 2, 4], [1, 2, 2], [2], [1, 3, 2]])
def test_journal_sequence_gap_or_repeat_raises(seqs: list[int]) -> None:
    data = HEAD + b"".join(encode_record(ClockRecord(seq=s, ts_recv=T)) for s in seqs)
    with pytest.raises(JournalError, match="sequence"):
        decode_all(data)


def test_journal_expected_seq_differs_from_the_header_raises() -> None:
    decoder = JournalDecoder("day2.tlj", expected_seq=7)
    with pytest.raises(JournalError, match="first_seq 1, expected 7"):
        decoder.feed(HEAD)


def test_journal_bad_magic_or_version_raises() -> None:
    with pytest.raises(JournalError, match="magic"):
        JournalDecoder().feed(b"PAR1" + HEAD[4:])
    wrong_version = HEAD[:8] + struct.pack("<I", FORMAT_VERSION + 1) + HEAD[12:]
    with pytest.raises(JournalError, match="format version"):
        JournalDecoder().feed(wrong_version)


def test_journal_file_ending_inside_the_header_raises() -> None:
    for cut in (0, 5, 12, len(HEAD) - 1):
        decoder = JournalDecoder("t.tlj")
        decoder.feed(HEAD[:cut])
        with pytest.raises(JournalError, match="header"):
            decoder.finish()


def test_journal_header_only_file_is_empty_and_knows_its_next_seq() -> None:
    decoder = JournalDecoder()
    assert (
        decoder.feed(encode_header(JournalHeader(session_id="s", created_ns=T, first_seq=42))) == []
    )
    assert decoder.finish() is None
    assert decoder.next_seq == 42


def test_journal_skim_checks_like_feed_and_counts() -> None:
    records = sample_records()
    decoder = JournalDecoder()
    assert decoder.skim(journal_bytes(records)[:-3]) == len(records) - 1
    torn = decoder.finish()
    assert torn is not None
    assert decoder.next_seq == len(records)
    assert decoder.good_offset == frame_offsets(records)[-2]


# -- property: written then read equals the input; any truncation reads a prefix --------------

tick_batches = st.builds(mixed_batch, st.integers(0, 40), st.integers(0, 5))
bodies = st.one_of(
    tick_batches,
    st.sampled_from(REPORTS),
    st.builds(
        Command,
        ts_event=st.integers(0, 2**62),
        ts_recv=st.integers(0, 2**62),
        action=st.sampled_from(["kill", "reduce_only", "resume", "reload_model"]),
        reason=st.text(max_size=20),
    ),
    st.builds(
        TimerFired,
        name=st.text(max_size=10),
        ts_event=st.integers(0, 2**62),
        interval_ns=st.integers(0, 10**12),
    ),
    st.none(),  # a clock reading
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.tuples(bodies, st.integers(0, 2**62)), max_size=12),
    cuts=st.lists(st.floats(0, 1), min_size=1, max_size=8),
)
def test_journal_property_read_equals_written_and_truncation_reads_a_prefix(
    items: list[tuple[object, int]], cuts: list[float]
) -> None:
    records: list[AnyRecord] = [
        ClockRecord(seq=seq, ts_recv=ts) if body is None else make_record(seq, ts, body)  # type: ignore[arg-type]
        for seq, (body, ts) in enumerate(items, start=1)
    ]
    data = journal_bytes(records)
    decoded, torn = decode_all(data, chunk=333)
    assert decoded == records
    assert torn is None
    boundaries = frame_offsets(records)
    for fraction in cuts:
        cut = len(HEAD) + int(fraction * (len(data) - len(HEAD)))
        prefix, torn = decode_all(data[:cut])
        assert prefix == records[: len(prefix)]
        assert (torn is None) == (cut in boundaries)
        assert boundaries[len(prefix)] <= cut
