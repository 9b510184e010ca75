"""The market-data connection's MQTT 3.1.1 framing (no broker): frames split anywhere,
many frames per read, remaining lengths of 1 to 4 bytes, control packets, malformed and
oversized streams counted and reset; the handshake against a small fake broker."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from adapters.mqtt.feed_protocol import (
    DISCONNECT,
    MAX_TOPIC_BYTES,
    FeedProtocol,
    FrameParser,
    connect_packet,
    open_feed,
    subscribe_packet,
)
from adapters.mqtt.ingest import RawMessage
from engine.errors import AdapterError

MAX_PAYLOAD = 1024
TOPIC = "md/X/BTC-USD/quote"
SUBACK_OK = b"\x90\x03\x00\x01\x00"
PINGRESP = b"\xd0\x00"
CONNACK_OK = b"\x20\x02\x00\x00"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _publish(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> bytes:
    raw = topic.encode()
    body = len(raw).to_bytes(2, "big") + raw + (b"\x00\x07" if qos else b"") + payload
    return bytes([0x30 | qos << 1 | int(retain)]) + _varint(len(body)) + body


def _parser(max_payload: int = MAX_PAYLOAD) -> FrameParser:
    return FrameParser(max_payload, collections.Counter())


def _messages(n: int) -> list[RawMessage]:
    return [(f"md/X/S{i % 3}/quote", b'{"n":%d}' % i, None, False) for i in range(n)]


def _stream(messages: list[RawMessage]) -> bytes:
    return b"".join(_publish(topic, payload) for topic, payload, _, _ in messages)


@pytest.mark.parametrize("payload", [b'{"bid":1.5}', b"q" * 300], ids=["1-byte", "2-byte"])
def test_frame_parser_frame_split_at_every_byte_same_message(payload: bytes) -> None:
    frame = _publish(TOPIC, payload, retain=True)
    for cut in range(len(frame) + 1):
        parser = _parser()
        first = parser.feed(frame[:cut])
        second = parser.feed(frame[cut:])
        assert first + second == [(TOPIC, payload, None, True)], cut
        assert (first == []) == (cut < len(frame))
        assert parser.error is None
    parser = _parser()
    out = [m for k in range(len(frame)) for m in parser.feed(frame[k : k + 1])]
    assert out == [(TOPIC, payload, None, True)]


def test_frame_parser_many_frames_in_one_read_all_in_order() -> None:
    messages = _messages(500)
    parser = _parser()
    assert parser.feed(_stream(messages)) == messages
    assert parser.error is None and parser.controls == []


def test_frame_parser_stream_cut_anywhere_same_messages() -> None:
    messages = _messages(40)
    stream = _stream(messages)
    for size in (1, 2, 3, 7, 64, 1000):
        parser = _parser()
        out = []
        for k in range(0, len(stream), size):
            out += parser.feed(stream[k : k + size])
        assert out == messages, size


@pytest.mark.parametrize(
    ("remaining", "varint_bytes"),
    [
        (2 + len(TOPIC), 1),
        (127, 1),
        (128, 2),
        (16_383, 2),
        (16_384, 3),
        (2_097_151, 3),
        (2_097_152, 4),
    ],
)
def test_frame_parser_remaining_length_varints_1_to_4_bytes(
    remaining: int, varint_bytes: int
) -> None:
    payload = b"p" * (remaining - 2 - len(TOPIC))
    frame = _publish(TOPIC, payload)
    assert len(frame) == 1 + varint_bytes + remaining
    after = _publish(TOPIC, b"next")
    parser = _parser(max_payload=len(payload))
    # the varint itself split across reads, then the body
    out = parser.feed(frame[:2]) + parser.feed(frame[2:-1]) + parser.feed(frame[-1:] + after)
    assert out == [(TOPIC, payload, None, False), (TOPIC, b"next", None, False)]


def test_frame_parser_payload_above_max_delivered_for_the_decoder_to_count() -> None:
    # above max_payload_bytes but within payload + topic: the decoder counts it oversized
    parser = _parser()
    frame = _publish(TOPIC, b"x" * (MAX_PAYLOAD + 100))
    assert parser.feed(frame) == [(TOPIC, b"x" * (MAX_PAYLOAD + 100), None, False)]
    assert parser.error is None


LIMIT = 2 + MAX_TOPIC_BYTES + 2 + MAX_PAYLOAD  # the largest publish the parser keeps


@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("size", [1, 2, 5, 4096, 1 << 20])
def test_frame_parser_oversized_publish_skipped_by_length_stream_goes_on(
    retain: bool, size: int
) -> None:
    # issue 19, item 6: a payload over about 131 kB reset the feed connection; retained,
    # it did again at every reconnect. Now it is skipped by its length, read in any cuts.
    big = _publish(TOPIC, b"x" * (LIMIT - 2 - len(TOPIC) + 1), retain=retain)
    huge = _publish(TOPIC, b"y" * 300_000)
    stream = _publish(TOPIC, b"a") + big + _publish(TOPIC, b"b") + huge + _publish(TOPIC, b"c")
    parser = _parser()
    out = []
    for k in range(0, len(stream), size):
        out += parser.feed(stream[k : k + size])
    assert [m[1] for m in out] == [b"a", b"b", b"c"]
    assert parser.error is None
    assert parser.counters == {"feed_frames_oversized": 2, "oversized": 2, "bad_messages": 2}
    assert len(parser._buffer) == 0  # nothing of the skipped frames is held


def test_frame_parser_oversized_publish_never_buffered() -> None:
    parser = _parser()
    body = 10 * LIMIT
    header = b"\x30" + _varint(body)
    assert parser.feed(_publish(TOPIC, b"ok") + header + b"z" * 1000) == [
        (TOPIC, b"ok", None, False)
    ]
    for _ in range(body // 65536):
        assert parser.feed(b"z" * 65536) == []
        assert len(parser._buffer) == 0
    rest = body - 1000 - (body // 65536) * 65536
    assert parser.feed(b"z" * rest + _publish(TOPIC, b"after")) == [(TOPIC, b"after", None, False)]
    assert parser.error is None and parser.counters["feed_frames_oversized"] == 1


def test_frame_parser_oversized_control_packet_counted_stream_stops() -> None:
    # only a publish is a message to skip: a huge SUBACK means the stream is not MQTT
    parser = _parser()
    header = b"\x90" + _varint(LIMIT + 1)
    assert parser.feed(_publish(TOPIC, b"ok") + header) == [(TOPIC, b"ok", None, False)]
    assert parser.error is not None and "limit" in parser.error
    assert parser.counters == {"feed_frames_oversized": 1}
    assert parser.feed(_publish(TOPIC, b"after")) == []  # nothing more is trusted


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "remaining length"),  # a fifth varint byte
        (b"\x30\x05\x00\x09md/X", "topic longer"),  # topic length past the frame
        (b"\x30\x01\x00", "topic longer"),  # no room for the topic length
        (b"\x30\x00", "topic longer"),
        (b"\x30\x04\x00\x02\xff\xfe", "UTF-8"),
        (b"\x36\x06\x00\x02ab\x00\x01", "QoS bits 3"),
        (b"\x40\x02\x00\x01", "unexpected packet 0x40"),  # PUBACK: we never publish
        (b"\x10\x00", "unexpected packet 0x10"),  # CONNECT from the broker
        (b"\x20\x03\x00\x00\x00", "unexpected packet 0x20"),  # CONNACK of 3 bytes
        (b"\x92\x03\x00\x01\x00", "unexpected packet 0x92"),  # SUBACK with flags
        (b"\xd0\x01\x00", "unexpected packet 0xd0"),  # PINGRESP with a body
    ],
)
def test_frame_parser_malformed_frame_counted_stream_stops(frame: bytes, why: str) -> None:
    parser = _parser()
    before = _publish(TOPIC, b"before")
    assert parser.feed(before + frame + _publish(TOPIC, b"after")) == [
        (TOPIC, b"before", None, False)
    ]
    assert parser.error is not None and why in parser.error
    assert parser.counters == {"feed_frames_malformed": 1}
    assert parser.feed(_publish(TOPIC, b"later")) == []


def test_frame_parser_control_packets_listed_publishes_returned() -> None:
    parser = _parser()
    stream = CONNACK_OK + SUBACK_OK + _publish(TOPIC, b"a") + PINGRESP + _publish(TOPIC, b"b")
    assert parser.feed(stream[:7]) == []
    assert parser.feed(stream[7:]) == [(TOPIC, b"a", None, False), (TOPIC, b"b", None, False)]
    assert parser.controls == [(0x20, b"\x00\x00"), (0x90, b"\x00\x01\x00"), (0xD0, b"")]
    assert parser.error is None


def test_frame_parser_publish_at_qos1_dropped_counted_stream_goes_on() -> None:
    parser = _parser()
    stream = _publish(TOPIC, b"q1", qos=1) + _publish(TOPIC, b"q0")
    assert parser.feed(stream) == [(TOPIC, b"q0", None, False)]
    assert parser.counters == {"feed_qos_refused": 1}
    assert parser.error is None


def test_connect_and_subscribe_packets_bytes() -> None:
    packet = connect_packet("id-md", username="u", password="pw", keepalive_s=15)
    assert packet == (
        b"\x10\x18\x00\x04MQTT\x04\xc2\x00\x0f" + b"\x00\x05id-md" + b"\x00\x01u" + b"\x00\x02pw"
    )
    anonymous = connect_packet("c", username=None, password="ignored", keepalive_s=70_000)
    assert anonymous == b"\x10\x0d\x00\x04MQTT\x04\x02\xff\xff\x00\x01c"
    assert subscribe_packet(1, ["a/+", "b"]) == b"\x82\x0c\x00\x01\x00\x03a/+\x00\x00\x01b\x00"


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closing = True


def _protocol(reads: list[list[RawMessage]]) -> tuple[FeedProtocol, _Transport]:
    protocol = FeedProtocol(
        max_payload_bytes=MAX_PAYLOAD, counters=collections.Counter(), on_messages=reads.append
    )
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


@pytest.mark.asyncio
async def test_feed_protocol_one_list_per_read_held_until_started() -> None:
    reads: list[list[RawMessage]] = []
    protocol, _ = _protocol(reads)
    messages = _messages(10)
    protocol.data_received(CONNACK_OK + SUBACK_OK + _stream(messages[:3]))
    assert protocol.connack.result() == 0 and protocol.suback.result() == (0,)
    assert reads == []  # held until the session announced the connection
    protocol.start()
    protocol.data_received(_stream(messages[3:]) + PINGRESP)
    assert reads == [messages[:3], messages[3:]]


@pytest.mark.asyncio
async def test_feed_protocol_malformed_stream_counted_connection_reset() -> None:
    reads: list[list[RawMessage]] = []
    protocol, transport = _protocol(reads)
    protocol.start()
    protocol.data_received(_publish(TOPIC, b"ok") + b"\x30\xff\xff\xff\xff\x01")
    assert reads == [[(TOPIC, b"ok", None, False)]]
    assert transport.aborted
    assert protocol.counters["feed_frames_malformed"] == 1
    protocol.connection_lost(None)
    assert "malformed" in protocol.lost.result()
    with pytest.raises(ConnectionError):
        protocol.connack.result()


@pytest.mark.asyncio
async def test_feed_protocol_receiver_raising_counted_connection_kept() -> None:
    # an exception out of data_received makes asyncio drop the connection
    def on_messages(messages: list[RawMessage]) -> None:
        raise RuntimeError("a bug downstream")

    protocol = FeedProtocol(
        max_payload_bytes=MAX_PAYLOAD, counters=collections.Counter(), on_messages=on_messages
    )
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.start()
    protocol.data_received(_stream(_messages(3)))
    protocol.data_received(_publish(TOPIC, b"y" * (LIMIT + 1)) + _stream(_messages(2)))
    assert not transport.aborted and not protocol.lost.done()
    assert protocol.counters["feed_delivery_failed"] == 2
    assert protocol.counters["feed_frames_oversized"] == 1


@pytest.mark.asyncio
async def test_feed_protocol_suback_for_another_packet_counted_connection_reset() -> None:
    protocol, transport = _protocol([])
    protocol.data_received(CONNACK_OK + b"\x90\x03\x00\x02\x00")
    assert transport.aborted and protocol.counters["feed_frames_malformed"] == 1


@pytest.mark.asyncio
async def test_feed_protocol_close_sends_disconnect() -> None:
    protocol, transport = _protocol([])
    protocol.close()
    assert bytes(transport.written) == DISCONNECT and transport.closing
    protocol.close()  # once
    assert bytes(transport.written) == DISCONNECT


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _fake_broker(handler: Handler) -> AsyncIterator[int]:
    """A server on a free port that runs ``handler`` per connection, then closes it."""
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    first = await reader.readexactly(2)
    length, shift, byte = 0, 0, first[1]
    header = bytearray(first)
    while True:
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        byte = (await reader.readexactly(1))[0]
        header.append(byte)
    return bytes(header) + await reader.readexactly(length)


async def _open(
    port: int,
    counters: collections.Counter[str],
    reads: list[list[RawMessage]],
    *,
    timeout_s: float = 5.0,
) -> FeedProtocol:
    return await open_feed(
        host="127.0.0.1",
        port=port,
        tls=None,
        client_id="tl-md",
        username="daemon",
        password="secret",
        keepalive_s=15,
        filters=["md/X/A/+", "md/X/B/+"],
        max_payload_bytes=MAX_PAYLOAD,
        counters=counters,
        on_messages=reads.append,
        timeout_s=timeout_s,
    )


@pytest.mark.asyncio
async def test_open_feed_handshake_refused_filter_counted_messages_flow() -> None:
    seen: list[bytes] = []
    done = asyncio.Event()

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_packet(reader))  # CONNECT
        writer.write(CONNACK_OK)
        seen.append(await _read_packet(reader))  # SUBSCRIBE
        writer.write(b"\x90\x04\x00\x01\x00\x80" + _publish("md/X/A/quote", b"1"))
        seen.append(await _read_packet(reader))  # DISCONNECT
        await reader.read()  # then the close
        done.set()

    counters: collections.Counter[str] = collections.Counter()
    reads: list[list[RawMessage]] = []
    async with _fake_broker(broker) as port:
        protocol = await _open(port, counters, reads)
        protocol.start()
        async with asyncio.timeout(5):
            while not reads:
                await asyncio.sleep(0.01)
        protocol.close()
        await asyncio.wait_for(done.wait(), 5)
        assert await asyncio.wait_for(protocol.lost, 5) == "closed by us"
    assert seen == [
        connect_packet("tl-md", username="daemon", password="secret", keepalive_s=15),
        subscribe_packet(1, ["md/X/A/+", "md/X/B/+"]),
        DISCONNECT,
    ]
    assert counters["subscriptions_refused"] == 1
    assert reads == [[("md/X/A/quote", b"1", None, False)]]


@pytest.mark.parametrize(
    ("code", "error", "match"),
    [
        (4, AdapterError, "bad user name or password"),
        (5, AdapterError, "not authorized"),
        (3, ConnectionError, "CONNACK code 3"),
    ],
)
@pytest.mark.asyncio
async def test_open_feed_connack_refusal_adapter_error_else_connection_error(
    code: int, error: type[Exception], match: str
) -> None:
    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_packet(reader)
        writer.write(bytes([0x20, 2, 0, code]))
        await reader.read()

    async with _fake_broker(broker) as port:
        with pytest.raises(error, match=match):
            await _open(port, collections.Counter(), [])


@pytest.mark.asyncio
async def test_open_feed_silent_broker_connection_error_after_timeout() -> None:
    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with _fake_broker(broker) as port:
        with pytest.raises(ConnectionError, match="longer than"):
            await _open(port, collections.Counter(), [], timeout_s=0.2)


@pytest.mark.asyncio
async def test_open_feed_nothing_listening_connection_error() -> None:
    async with _fake_broker(lambda r, w: asyncio.sleep(0)) as port:
        pass
    with pytest.raises(ConnectionError):
        await _open(port, collections.Counter(), [])


def test_open_feed_under_uvloop_messages_flow_disconnect_sent() -> None:
    """The daemon runs on uvloop, whose transports are not ``asyncio.Transport`` classes."""
    uvloop = pytest.importorskip("uvloop")
    tail: list[bytes] = []

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_packet(reader)
        writer.write(CONNACK_OK)
        await _read_packet(reader)
        writer.write(b"\x90\x04\x00\x01\x00\x00" + _stream(_messages(3)))
        tail.append(await reader.read())

    async def main() -> list[list[RawMessage]]:
        reads: list[list[RawMessage]] = []
        async with _fake_broker(broker) as port:
            protocol = await _open(port, collections.Counter(), reads)
            protocol.start()
            async with asyncio.timeout(5):
                while not reads:
                    await asyncio.sleep(0.01)
            protocol.close()
            await asyncio.wait_for(protocol.lost, 5)
            async with asyncio.timeout(5):
                while not tail:
                    await asyncio.sleep(0.01)
        return reads

    assert uvloop.run(main()) == [_messages(3)]
    assert tail == [DISCONNECT]
