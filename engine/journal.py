"""The format of the sequenced input journal: pure bytes in and out, no file I/O.

Every input that can change a decision (market-data batches, depth batches, execution
reports, operator commands, timer firings, clock readings) becomes one ``Record`` with a sequence number and is
appended before the engine acts on it; a replay of the records feeds the same engine the
same stream. ``adapters/journal_file.py`` owns the files; this module owns the bytes.

A journal file, all integers little-endian::

    magic       8 bytes   b"TLJRNL\\r\\n"
    version     u32       FORMAT_VERSION
    header      frame     payload: JournalHeader (MessagePack)
    record      frame     payload: one Record (MessagePack, tagged union, tag field "record")
    ...

A frame::

    length      u32       payload length, 1 .. MAX_PAYLOAD_BYTES
    crc32       u32       zlib.crc32 (IEEE 802.3) of the payload
    payload     length bytes

Sequence numbers are contiguous within a file and across the files of a journal; the first
record of a file carries ``JournalHeader.first_seq``.

Damage is told apart by what follows it. A frame that is incomplete or fails its CRC with no
valid frame anywhere after it is a torn tail (a write cut short by a crash): the decoder
reports it as ``TornTail`` and the writer cuts it. A bad frame followed by a valid one is
corruption and raises ``JournalError``: it is never skipped.
"""

from __future__ import annotations

import struct
import sys
import zlib
from typing import Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from engine.book.batch import DepthBatch
from engine.clock import TimerFired
from engine.errors import JournalError
from engine.events import (
    CancelRejected,
    Command,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
)
from engine.ports import ExecutionReport
from engine.ticks import TickBatch

MAGIC: Final = b"TLJRNL\r\n"  # the CR LF catches a file mangled by a text-mode copy
FORMAT_VERSION: Final = 1
# A 10k-tick batch is about 0.7 MB; the cap bounds what a corrupt length field can make a
# reader buffer before it decides the frame is bad.
MAX_PAYLOAD_BYTES: Final = 256 * 1024 * 1024
FRAME_HEADER_BYTES: Final = 8

_PREFIX = struct.Struct("<8sI")
_FRAME = struct.Struct("<II")
_SCAN_WINDOW = 1 << 20
_TAG_KEY = msgspec.msgpack.encode("record")


class JournalHeader(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The first frame of every journal file.

    ``created_ns`` is the ``ts_recv`` of the record that opened the file (the writer never
    reads a clock of its own); ``first_seq`` is the sequence number of its first record.
    """

    session_id: str
    created_ns: int
    first_seq: int


class TickColumns(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A ``TickBatch`` stored column by column: each field is the column's little-endian bytes.

    One ``bytes`` per column keeps a 1-tick and a 10k-tick batch at the same number of
    encoded objects: the cost is a memcpy, not a Struct per tick.
    """

    count: int
    ts_event: bytes  # <i8
    ts_recv: bytes  # <i8
    instrument: bytes  # <i4
    kind: bytes  # i1
    bid: bytes  # <f8
    ask: bytes  # <f8
    bid_size: bytes  # <f8
    ask_size: bytes  # <f8
    price: bytes  # <f8
    size: bytes  # <f8
    side: bytes  # i1

    @classmethod
    def from_batch(cls, batch: TickBatch) -> TickColumns:
        """Copy the columns of ``batch`` into bytes.

        Raises:
            TypeError: a column does not have the dtype ``TickBatch`` declares.
        """
        columns: tuple[npt.NDArray[Any], ...] = (
            batch.ts_event,
            batch.ts_recv,
            batch.instrument,
            batch.kind,
            batch.bid,
            batch.ask,
            batch.bid_size,
            batch.ask_size,
            batch.price,
            batch.size,
            batch.side,
        )
        # Written out rather than looped over names: this runs once per live batch, and a
        # 1-tick batch is all overhead.
        if tuple(c.dtype for c in columns) != _NATIVE_DTYPES:
            raise TypeError(
                "TickBatch columns must be "
                + ", ".join(f"{n} {d}" for n, d in zip(_COLUMN_NAMES, _NATIVE_DTYPES))
            )
        if _LITTLE_ENDIAN:
            data = [c.tobytes() for c in columns]
        else:  # pragma: no cover - the stored order is little-endian everywhere
            data = [c.astype(d).tobytes() for c, (_, d) in zip(columns, _COLUMN_DTYPES)]
        return cls(
            count=len(batch),
            ts_event=data[0],
            ts_recv=data[1],
            instrument=data[2],
            kind=data[3],
            bid=data[4],
            ask=data[5],
            bid_size=data[6],
            ask_size=data[7],
            price=data[8],
            size=data[9],
            side=data[10],
        )

    def length_error(self) -> str | None:
        """What is wrong with the column lengths, or ``None`` when each holds ``count`` values."""
        for name, dtype in _COLUMN_DTYPES:
            got = len(getattr(self, name))
            if got != self.count * dtype.itemsize:
                return f"column {name!r} has {got} bytes, expected {self.count} x {dtype.itemsize}"
        return None

    def to_batch(self) -> TickBatch:
        """A ``TickBatch`` of fresh, writable, native-order arrays equal to the stored ones.

        Raises:
            ValueError: the columns do not all hold ``count`` values.
        """
        error = self.length_error()
        if error is not None:
            raise ValueError(error)
        return TickBatch(
            *(
                np.frombuffer(getattr(self, name), dtype).astype(dtype.newbyteorder("="))
                for name, dtype in _COLUMN_DTYPES
            )
        )


_COLUMN_DTYPES: Final = tuple(
    (name, np.dtype(code))
    for name, code in (
        ("ts_event", "<i8"),
        ("ts_recv", "<i8"),
        ("instrument", "<i4"),
        ("kind", "i1"),
        ("bid", "<f8"),
        ("ask", "<f8"),
        ("bid_size", "<f8"),
        ("ask_size", "<f8"),
        ("price", "<f8"),
        ("size", "<f8"),
        ("side", "i1"),
    )
)
_COLUMN_NAMES: Final = tuple(name for name, _ in _COLUMN_DTYPES)
# The canonical dtype objects, so the tuple comparison in from_batch is decided by identity.
_NATIVE_DTYPES: Final = tuple(np.dtype(dtype.type) for _, dtype in _COLUMN_DTYPES)
_LITTLE_ENDIAN: Final = sys.byteorder == "little"


_DEPTH_DTYPES: Final = tuple(
    (name, np.dtype(code))
    for name, code in (
        ("ts_event", "<i8"), ("ts_recv", "<i8"), ("instrument", "<i4"), ("side", "i1"),
        ("price", "<f8"), ("qty", "<f8"), ("flags", "i1"), ("first_update_id", "<i8"),
        ("last_update_id", "<i8"), ("prev_update_id", "<i8"),
    )
)  # fmt: skip


class DepthColumns(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A ``DepthBatch`` stored column by column, as ``TickColumns`` stores ticks: each field
    is the column's little-endian bytes."""

    count: int
    ts_event: bytes  # <i8
    ts_recv: bytes  # <i8
    instrument: bytes  # <i4
    side: bytes  # i1
    price: bytes  # <f8
    qty: bytes  # <f8
    flags: bytes  # i1
    first_update_id: bytes  # <i8
    last_update_id: bytes  # <i8
    prev_update_id: bytes  # <i8

    @classmethod
    def from_batch(cls, batch: DepthBatch) -> DepthColumns:
        """Copy the columns of ``batch`` into bytes (little-endian, the dtypes
        ``DepthBatch`` declares; another dtype is converted, not refused)."""
        data = {n: np.ascontiguousarray(getattr(batch, n), d).tobytes() for n, d in _DEPTH_DTYPES}
        return cls(count=len(batch), **data)

    def to_batch(self) -> DepthBatch:
        """A ``DepthBatch`` of fresh, writable, native-order arrays equal to the stored ones.

        Raises:
            ValueError: the columns do not all hold ``count`` values.
        """
        for name, dtype in _DEPTH_DTYPES:
            got = len(getattr(self, name))
            if got != self.count * dtype.itemsize:
                raise ValueError(f"column {name!r} has {got} bytes, expected {self.count} x "
                                 f"{dtype.itemsize}")  # fmt: skip
        return DepthBatch(
            *(
                np.frombuffer(getattr(self, n), d).astype(d.newbyteorder("="))
                for n, d in _DEPTH_DTYPES
            )
        )


class Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="record"):
    """Base of every journal record.

    ``seq`` orders the input stream; ``ts_recv`` is when the input entered it (receive time
    live), the time the live clock is advanced to when the record is replayed.
    """

    seq: int
    ts_recv: int


class MarketDataRecord(Record, frozen=True, tag="market_data", gc=False):
    """One micro-batch of market data, columnar."""

    ticks: TickColumns


class DepthRecord(Record, frozen=True, tag="depth", gc=False):
    """Consecutive depth updates (L2 diffs with update ids) as one batch of rows, columnar:
    journaled like market data, so a replay feeds the book the same rows in the same order."""

    depth: DepthColumns


class ReportRecord(Record, frozen=True, tag="report"):
    """An execution report from the venue or OMS."""

    report: ExecutionReport


class CommandRecord(Record, frozen=True, tag="command"):
    """An operator command."""

    command: Command


class TimerRecord(Record, frozen=True, tag="timer"):
    """A timer came due and the core is about to fire it."""

    timer: TimerFired


class ClockRecord(Record, frozen=True, tag="clock"):
    """The core read the clock; ``ts_recv`` is the reading."""


class FeedStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The market-data feed changed: ``lost`` (broker gone, a quote older than
    ``max_quote_age``), ``restored`` (a fresh quote for every instrument), ``overflow``
    (the inbound queue dropped market data; ``dropped`` messages)."""

    status: Literal["lost", "restored", "overflow"]
    reason: str = ""
    dropped: int = 0


class FeedRecord(Record, frozen=True, tag="feed"):
    """A change of the feed's health, which moves the trading state."""

    feed: FeedStatus


class ExternalOrder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An order the OMS works that the engine never sent, as the OMS reports it, to be
    booked as the engine's own (``[live] external_orders = "adopt"``).

    ``filled_qty`` is what the OMS says is filled; ``fills_follow_qty`` is the part of it
    whose fills the reconciliation journals right after this record (they book the
    position themselves). The rest was filled by fills the engine never sees: it counts
    toward the order's filled quantity only, so the position check against the OMS
    names it.
    """

    order: OrderRequest
    status: Literal["pending", "accepted", "partially_filled"]
    filled_qty: float
    fills_follow_qty: float = 0.0
    venue_order_id: str = ""


class ModelSwitch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The daemon changes the model behind a registry alias here: ``version`` (the full
    sha256 content address, so a replay loads exactly it from the registry) at ``stage``.

    ``refused`` non-empty: the version was asked for (a command, an alias changed by hand)
    but did not load or pass its checks; applying the record raises an Alarm with the
    reason and changes nothing, live and in replay alike.
    """

    alias: Literal["champion", "challenger"]
    version: str
    stage: Literal["shadow", "paper", "live"]
    audit_entry_sha256: str = ""
    issuer: str = ""
    reason: str = ""
    refused: str = ""


class ModelSwitchRecord(Record, frozen=True, tag="model_switch"):
    """A model switch (or its refusal) at this point of the stream. Added after format
    version 1 shipped, like ``AdoptRecord``: older builds refuse a journal holding one."""

    switch: ModelSwitch


class AdoptRecord(Record, frozen=True, tag="adopt"):
    """Reconciliation adopted an order the OMS works that the engine never sent. Added
    after format version 1 shipped: an older build refuses a journal holding one (the
    record fails to decode), a newer build reads older journals unchanged."""

    external: ExternalOrder


class ClockJump(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The wall clock jumped: wall minus monotonic changed by ``step_ns`` (either sign)
    between two readings, or (at a start) the wall clock is behind the journal's last
    receive time. Receive times keep to the monotonic clock; applying the record raises
    a critical Alarm with ``reason`` and puts the engine's own claim at ``policy``
    (sticky: until an operator resumes; ``alarm``: no claim), live and in replay alike.
    """

    step_ns: int
    wall_ns: int
    policy: Literal["alarm", "reduce_only", "halt"]
    reason: str = ""


class ClockJumpRecord(Record, frozen=True, tag="clock_jump"):
    """A wall-clock jump at this point of the stream. Added after format version 1
    shipped, like ``AdoptRecord``: older builds refuse a journal holding one."""

    jump: ClockJump


class JournalLoss(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An operator accepted that the journal lost records (``--accept-journal-loss``): it
    had reached ``expected_last_seq``, only ``found_last_seq`` were left (0: none), for
    ``reason``. The records after it continue the journal; applying it only moves time."""

    expected_last_seq: int
    found_last_seq: int
    reason: str = ""


class JournalLossRecord(Record, frozen=True, tag="journal_loss"):
    """A journal loss accepted at this point of the stream. Added after format version 1
    shipped, like ``AdoptRecord``: older builds refuse a journal holding one."""

    loss: JournalLoss


AnyRecord = (
    MarketDataRecord
    | DepthRecord
    | ReportRecord
    | CommandRecord
    | TimerRecord
    | ClockRecord
    | FeedRecord
    | AdoptRecord
    | ModelSwitchRecord
    | ClockJumpRecord
    | JournalLossRecord
)
RECORD_TYPES: Final[tuple[type[Record], ...]] = (
    MarketDataRecord,
    DepthRecord,
    ReportRecord,
    CommandRecord,
    TimerRecord,
    ClockRecord,
    FeedRecord,
    AdoptRecord,
    ModelSwitchRecord,
    ClockJumpRecord,
    JournalLossRecord,
)
RecordBody = (
    TickBatch
    | DepthBatch
    | ExecutionReport
    | Command
    | TimerFired
    | FeedStatus
    | ExternalOrder
    | ModelSwitch
    | ClockJump
    | JournalLoss
)


def make_record(seq: int, ts_recv: int, body: RecordBody) -> AnyRecord:
    """The record that journals ``body`` under ``seq`` (use ``ClockRecord`` for a reading).

    Raises:
        TypeError: ``body`` is not a journaled input.
    """
    match body:
        case TickBatch():
            return MarketDataRecord(seq=seq, ts_recv=ts_recv, ticks=TickColumns.from_batch(body))
        case DepthBatch():
            return DepthRecord(seq=seq, ts_recv=ts_recv, depth=DepthColumns.from_batch(body))
        case Command():
            return CommandRecord(seq=seq, ts_recv=ts_recv, command=body)
        case TimerFired():
            return TimerRecord(seq=seq, ts_recv=ts_recv, timer=body)
        case FeedStatus():
            return FeedRecord(seq=seq, ts_recv=ts_recv, feed=body)
        case ExternalOrder():
            return AdoptRecord(seq=seq, ts_recv=ts_recv, external=body)
        case ModelSwitch():
            return ModelSwitchRecord(seq=seq, ts_recv=ts_recv, switch=body)
        case ClockJump():
            return ClockJumpRecord(seq=seq, ts_recv=ts_recv, jump=body)
        case JournalLoss():
            return JournalLossRecord(seq=seq, ts_recv=ts_recv, loss=body)
        case OrderAccepted() | OrderRejected() | Fill() | OrderCancelled() | CancelRejected():
            return ReportRecord(seq=seq, ts_recv=ts_recv, report=body)
    raise TypeError(f"{type(body).__name__} is not a journaled input")


class RecordEncoder:
    """Frames records; built once per writer, reuses its buffer."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._buffer = bytearray()

    def encode(self, record: Record) -> bytes:
        """``record`` framed: length, CRC32, MessagePack payload."""
        return bytes(self.encode_into(record))

    def encode_into(self, record: Record) -> memoryview:
        """Like ``encode`` without the copy: the view is valid until the next call.

        Release the view (or drop it) before calling again.
        """
        buffer = self._buffer
        self._encoder.encode_into(record, buffer, FRAME_HEADER_BYTES)
        view = memoryview(buffer)
        _FRAME.pack_into(
            buffer,
            0,
            len(buffer) - FRAME_HEADER_BYTES,
            zlib.crc32(view[FRAME_HEADER_BYTES:]),
        )
        return view


_DEFAULT_ENCODER = RecordEncoder()


def encode_record(record: Record) -> bytes:
    """``record`` as one frame (length, CRC32, MessagePack payload)."""
    return _DEFAULT_ENCODER.encode(record)


def encode_header(header: JournalHeader) -> bytes:
    """The start of a journal file: magic, format version and the header frame."""
    payload = msgspec.msgpack.encode(header)
    return (
        _PREFIX.pack(MAGIC, FORMAT_VERSION)
        + _FRAME.pack(len(payload), zlib.crc32(payload))
        + payload
    )


HEADER_PREFIX_BYTES: Final = _PREFIX.size + FRAME_HEADER_BYTES


def header_length(prefix: bytes) -> int:
    """How many bytes a journal file's magic, version and header frame take, from its
    first ``HEADER_PREFIX_BYTES`` (a reader that seeks reads just these first).

    Raises:
        JournalError: not a journal file's start.
    """
    if len(prefix) < HEADER_PREFIX_BYTES or prefix[:8] != MAGIC:
        raise JournalError("journal", 0, "not a tradeloop journal (bad magic)")
    (length, _crc) = _FRAME.unpack_from(prefix, _PREFIX.size)
    if not 0 < length <= MAX_PAYLOAD_BYTES:
        raise JournalError("journal", _PREFIX.size, f"header length {length} out of range")
    return HEADER_PREFIX_BYTES + int(length)


class TornTail(msgspec.Struct, frozen=True, kw_only=True):
    """An incomplete or damaged last record with nothing valid after it.

    ``offset`` is where the last good record ends (cut the file there); ``length`` counts the
    bytes after it.
    """

    source: str
    offset: int
    length: int
    reason: str


class JournalDecoder:
    """Decodes one journal file from bytes fed in any split.

    ``feed`` returns the records completed so far; ``finish`` at the end of the file reports
    a torn tail, if any. Raises ``JournalError`` as soon as the bytes prove corruption: bad
    magic or version, a bad frame with a valid frame after it, a record that passes its CRC
    but does not decode, a sequence gap.

    Args:
        source: file name for errors.
        expected_seq: the sequence number the first record must carry (the previous file's
            last plus one); by default the header's ``first_seq``.
    """

    def __init__(self, source: str = "journal", *, expected_seq: int | None = None) -> None:
        self.source = source
        self.header: JournalHeader | None = None
        self.records = 0
        self.last_ts = 0  # ts_recv of the last record decoded (0: none yet)
        self._expected_seq = expected_seq
        self._last_seq: int | None = None
        self._decoder: msgspec.msgpack.Decoder[AnyRecord] = msgspec.msgpack.Decoder(AnyRecord)
        self._stamp_decoder = msgspec.msgpack.Decoder(_Stamp)
        self._buffer = b""
        self._base = 0  # file offset of self._buffer[0]
        self._bad: tuple[int, str] | None = None  # file offset and reason of a bad frame
        self._finished = False

    @property
    def good_offset(self) -> int:
        """File offset just after the last good frame (header included)."""
        return self._base

    @property
    def next_seq(self) -> int | None:
        """The sequence number the next record must carry (``None`` before the header)."""
        if self._last_seq is not None:
            return self._last_seq + 1
        if self._expected_seq is not None:
            return self._expected_seq
        return None if self.header is None else self.header.first_seq

    def seek(self, offset: int, next_seq: int) -> None:
        """Go on at file offset ``offset``, where the record ``next_seq`` starts (a
        position a writer gave, ``FileJournalWriter.position``); feed the bytes from
        there. Only right after the header, before any record: the first record decoded
        must carry ``next_seq`` or the decoder raises as for any sequence gap.

        Raises:
            RuntimeError: the header is not read yet, or records were decoded already.
        """
        if self.header is None or self.records or self._buffer or self._bad is not None:
            raise RuntimeError("JournalDecoder.seek only right after the header")
        if offset < self._base:
            raise RuntimeError(f"JournalDecoder.seek to {offset}, inside the header")
        self._base = offset
        self._expected_seq = next_seq
        self._last_seq = None

    def feed(self, data: bytes) -> list[AnyRecord]:
        """Add bytes; return every record they complete, in order.

        Raises:
            JournalError: the file is corrupt.
        """
        out: list[AnyRecord] = []
        self._consume(data, out)
        return out

    def skim(self, data: bytes) -> int:
        """Like ``feed`` but keeps only each record's stamps: returns how many completed.

        Frames, CRCs and sequence numbers are checked as in ``feed``; record bodies are
        skipped, which is what a writer reopening a large file needs.
        """
        before = self.records
        self._consume(data, None)
        return self.records - before

    def finish(self) -> TornTail | None:
        """The end of the file was reached: report a torn tail, if any.

        Raises:
            JournalError: the header is incomplete, or the damage is not at the tail.
        """
        self._finished = True
        if self.header is None:
            raise JournalError(self.source, 0, "file ends inside the journal header")
        if self._bad is None and self._buffer:
            self._bad = (self._base, "file ends inside a frame")
        if self._bad is None:
            return None
        self._check_nothing_valid_after()
        _, reason = self._bad
        return TornTail(
            source=self.source, offset=self._base, length=len(self._buffer), reason=reason
        )

    def _consume(self, data: bytes, out: list[AnyRecord] | None) -> None:
        if self._finished:
            raise RuntimeError("JournalDecoder.feed after finish")
        self._buffer = self._buffer + data if self._buffer else bytes(data)
        if self._bad is not None:
            self._check_nothing_valid_after()
            return
        if self.header is None and not self._read_header():
            return
        buffer = self._buffer
        view = memoryview(buffer)
        pos = 0
        end = len(buffer)
        while end - pos >= FRAME_HEADER_BYTES:
            length, crc = _FRAME.unpack_from(buffer, pos)
            if not 0 < length <= MAX_PAYLOAD_BYTES:
                self._bad = (self._base + pos, f"frame length {length} out of range")
                break
            stop = pos + FRAME_HEADER_BYTES + length
            if stop > end:
                break  # incomplete: more bytes may come, or finish() calls it torn
            payload = view[pos + FRAME_HEADER_BYTES : stop]
            if zlib.crc32(payload) != crc:
                self._bad = (self._base + pos, "CRC mismatch")
                break
            if out is None:
                seq = self._decode_stamp(payload, self._base + pos)
            else:
                record = self._decode(payload, self._base + pos)
                seq = record.seq
                self.last_ts = record.ts_recv
                out.append(record)
            self._check_seq(seq, self._base + pos)
            pos = stop
        view.release()
        self._buffer = buffer[pos:]
        self._base += pos
        if self._bad is not None:
            self._check_nothing_valid_after()

    def _read_header(self) -> bool:
        buffer = self._buffer
        if len(buffer) >= _PREFIX.size:
            magic, version = _PREFIX.unpack_from(buffer)
            if magic != MAGIC:
                raise JournalError(self.source, 0, "not a tradeloop journal (bad magic)")
            if version != FORMAT_VERSION:
                raise JournalError(
                    self.source, 8, f"format version {version}, this build reads {FORMAT_VERSION}"
                )
        start = _PREFIX.size
        if len(buffer) < start + FRAME_HEADER_BYTES:
            return False
        length, crc = _FRAME.unpack_from(buffer, start)
        if not 0 < length <= MAX_PAYLOAD_BYTES:
            raise JournalError(self.source, start, f"header length {length} out of range")
        stop = start + FRAME_HEADER_BYTES + length
        if len(buffer) < stop:
            return False
        payload = buffer[start + FRAME_HEADER_BYTES : stop]
        if zlib.crc32(payload) != crc:
            raise JournalError(self.source, start, "header CRC mismatch")
        try:
            self.header = msgspec.msgpack.decode(payload, type=JournalHeader)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise JournalError(self.source, start, f"undecodable header: {exc}") from exc
        if self._expected_seq is not None and self._expected_seq != self.header.first_seq:
            raise JournalError(
                self.source,
                start,
                f"header first_seq {self.header.first_seq}, expected {self._expected_seq}",
            )
        self._buffer = buffer[stop:]
        self._base = stop
        return True

    def _decode(self, payload: memoryview, offset: int) -> AnyRecord:
        try:
            record = self._decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise JournalError(self.source, offset, f"record passes its CRC but {exc}") from exc
        if isinstance(record, MarketDataRecord):
            error = record.ticks.length_error()
            if error is not None:
                raise JournalError(self.source, offset, f"record passes its CRC but {error}")
        return record

    def _decode_stamp(self, payload: memoryview, offset: int) -> int:
        try:
            stamp = self._stamp_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise JournalError(self.source, offset, f"record passes its CRC but {exc}") from exc
        self.last_ts = stamp.ts_recv
        return stamp.seq

    def _check_seq(self, seq: int, offset: int) -> None:
        expected = self.next_seq
        if seq != expected:
            raise JournalError(self.source, offset, f"sequence {seq}, expected {expected}")
        self._last_seq = seq
        self.records += 1

    def _check_nothing_valid_after(self) -> None:
        assert self._bad is not None
        bad_offset, reason = self._bad
        found = _find_valid_frame(self._buffer, 1, self._decoder, self.next_seq)
        if found is not None:
            raise JournalError(
                self.source,
                bad_offset,
                f"{reason}, and a valid record follows at byte {self._base + found}",
            )


class _Stamp(msgspec.Struct):
    # Unknown fields (the tag and the body) are skipped without building them.
    seq: int
    ts_recv: int


def _find_valid_frame(
    buffer: bytes, start: int, decoder: msgspec.msgpack.Decoder[AnyRecord], min_seq: int | None
) -> int | None:
    """Position of the first frame at or after ``start`` that passes its CRC and decodes to a
    record with ``seq >= min_seq``; ``None`` if there is none."""
    data = np.frombuffer(buffer, np.uint8)
    view = memoryview(buffer)
    end = len(buffer)
    window_start = start
    while window_start <= end - FRAME_HEADER_BYTES - 1:
        window_stop = min(window_start + _SCAN_WINDOW, end - FRAME_HEADER_BYTES)
        # The little-endian u32 at every position of the window, vectorised: most positions
        # are ruled out by their length alone, and only the rest pay for a CRC.
        b = [data[window_start + i : window_stop + i].astype(np.uint32) for i in range(4)]
        lengths = b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)
        positions = np.arange(window_start, window_stop, dtype=np.int64)
        fits = (lengths > 0) & (positions + FRAME_HEADER_BYTES + lengths <= end)
        for pos in (np.flatnonzero(fits) + window_start).tolist():
            start_payload = pos + FRAME_HEADER_BYTES
            # Every payload this module writes opens with its tag key (msgspec writes the
            # tag first): a cheap test before paying for a CRC over up to the whole tail.
            if buffer[start_payload + 1 : start_payload + 1 + len(_TAG_KEY)] != _TAG_KEY:
                continue
            length, crc = _FRAME.unpack_from(buffer, pos)
            payload = view[start_payload : start_payload + length]
            if zlib.crc32(payload) != crc:
                continue
            try:
                record = decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if min_seq is None or record.seq >= min_seq:
                return pos
        window_start = window_stop
    return None
