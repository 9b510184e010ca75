"""The market-data connection: a minimal MQTT 3.1.1 subscriber as an ``asyncio.Protocol``.

Why a second client. Measured here, paho (under aiomqtt) spent ~70% of the ingest time
parsing packets: an MQTT 5 ``Properties`` object per message (~19 us), three socket reads
per packet and one packet per turn of the event loop. Market data at QoS 0 needs none
of MQTT 5: this subscriber only sends CONNECT, SUBSCRIBE, PINGREQ and DISCONNECT, and
its ``data_received`` parses EVERY complete PUBLISH in what the socket gave (up to 256 KiB
a read) in one loop, so a burst reaches the decoder as one list, one ``TickBatch``.

What it accepts from the broker: CONNACK, SUBACK, PINGRESP and PUBLISH at QoS 0, each
publish with its RETAIN flag (the decoder drops retained market data). A PUBLISH at QoS 1
or 2 (the broker never sends one on a QoS 0 subscription) is parsed, dropped and counted
(``feed_qos_refused``). A PUBLISH larger than any we accept is skipped by its length:
its bytes are read and discarded as they arrive, never buffered, and it is counted
(``feed_frames_oversized``, ``oversized``, ``bad_messages``); the frames after it are
parsed as usual, so one message never costs the connection (a retained one would cost it
again at every reconnect). Anything else, a remaining length that is not a valid varint,
an oversized frame that is not a PUBLISH, a topic that is not UTF-8, is counted
(``feed_frames_malformed`` / ``feed_frames_oversized``) and the connection is reset: after
such a frame the byte stream cannot be trusted, and guessing would misparse every later
message. Valid frames before it in the same read are delivered.

The frame parser (``FrameParser``) is sans-I/O, so it is tested byte by byte.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import cast

from adapters.mqtt.ingest import RawMessage
from engine.errors import AdapterError

__all__ = [
    "DISCONNECT",
    "MAX_TOPIC_BYTES",
    "PINGREQ",
    "FeedProtocol",
    "FrameParser",
    "connect_packet",
    "open_feed",
    "subscribe_packet",
]

log = logging.getLogger(__name__)

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"

# A topic name is length-prefixed by two bytes (MQTT 3.1.1, 1.5.3): no publish of ours
# can be longer than the payload bound plus that and its two length bytes, so a larger
# remaining length is skipped without a byte of its body buffered.
MAX_TOPIC_BYTES = 65_535

# the one SUBSCRIBE of a connection; the broker answers with the same identifier
_SUBSCRIBE_ID = 1

# topic bytes -> str, kept for the few topics a daemon sees; a feed that cycles through
# more names than this decodes the rest each time instead of growing the cache
_TOPIC_CACHE_SIZE = 4096

# CONNACK return codes (3.2.2.3) that retrying cannot fix: unacceptable protocol version,
# identifier rejected, bad user name or password, not authorized
_REFUSALS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    4: "bad user name or password",
    5: "not authorized",
}

_PUBLISH = 0x30
_CONNACK = 0x20
_SUBACK = 0x90
_PINGRESP = 0xD0
_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise AdapterError(f"mqtt string of {len(raw)} bytes is longer than 65535")
    return len(raw).to_bytes(2, "big") + raw


def _frame(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(
    client_id: str, *, username: str | None, password: str | None, keepalive_s: int
) -> bytes:
    """A CONNECT of MQTT 3.1.1 with a clean session.

    A password without a user name is not sent (3.1.1 forbids the flag alone).

    Raises:
        AdapterError: a string is longer than MQTT allows.
    """
    flags = 0x02  # clean session: nothing of ours is kept by the broker while we are away
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    keepalive = min(keepalive_s, 0xFFFF).to_bytes(2, "big")
    return _frame(0x10, _string("MQTT") + bytes([4, flags]) + keepalive + payload)


def subscribe_packet(packet_id: int, filters: Sequence[str]) -> bytes:
    """A SUBSCRIBE of every filter at QoS 0.

    Raises:
        AdapterError: a filter is longer than MQTT allows.
    """
    body = packet_id.to_bytes(2, "big") + b"".join(_string(f) + b"\x00" for f in filters)
    return _frame(0x82, body)


def _remaining_length(data: bytes, at: int, n: int) -> tuple[int, int]:
    """``(length, body start)`` of the varint at ``at``; ``(-1, 0)`` when the bytes are not
    there yet, ``(-2, 0)`` when the fourth byte still says more follow (3.1.1, 2.2.3)."""
    length = 0
    shift = 0
    for i in range(at, min(at + 4, n)):
        byte = data[i]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, i + 1
        shift += 7
    return (-2, 0) if n >= at + 4 else (-1, 0)


class FrameParser:
    """Splits the broker's byte stream into frames (sans-I/O).

    ``feed`` takes what the socket gave and returns every complete PUBLISH in it as
    ``(topic, payload, None, retained)`` in stream order; other packets go to
    ``controls`` as ``(first byte, body)``; a partial frame waits for the next call.

    Args:
        max_payload_bytes: the largest payload the session accepts; a PUBLISH larger than
            that plus a topic is skipped by its length (never buffered) and counted.
            Payloads between the two are delivered, for the decoder to count as oversized.
        counters: ``feed_qos_refused``, ``feed_frames_malformed``, ``feed_frames_oversized``
            (and ``oversized``, ``bad_messages`` for a skipped publish).

    Attributes:
        controls: non-PUBLISH packets not yet handled, in stream order.
        error: set when the stream cannot be trusted; nothing more is parsed after it.
    """

    __slots__ = (
        "_buffer",
        "_max_remaining",
        "_need",
        "_skip",
        "_topics",
        "controls",
        "counters",
        "error",
    )

    def __init__(self, max_payload_bytes: int, counters: collections.Counter[str]) -> None:
        self._buffer = bytearray()
        self._need = 0  # bytes the buffered partial frame needs before it is worth a parse
        self._skip = 0  # bytes of an oversized publish still to discard as they arrive
        self._max_remaining = 2 + MAX_TOPIC_BYTES + 2 + max_payload_bytes
        self._topics: dict[bytes, str] = {}
        self.controls: list[tuple[int, bytes]] = []
        self.counters = counters
        self.error: str | None = None

    def feed(self, chunk: bytes) -> list[RawMessage]:
        """Every complete PUBLISH at QoS 0 in the stream so far, in order."""
        out: list[RawMessage] = []
        if self.error is not None:
            return out
        if self._skip:
            discard = min(self._skip, len(chunk))
            self._skip -= discard
            if discard == len(chunk):
                return out
            chunk = chunk[discard:]
        buffer = self._buffer
        if buffer:
            buffer += chunk
            if len(buffer) < self._need:
                return out  # a large frame still arriving: no copy, no parse
            data = bytes(buffer)
        else:
            data = chunk
        n = len(data)
        pos = 0
        topics = self._topics
        limit = self._max_remaining
        # the hot loop: one PUBLISH at QoS 0 costs a few index reads and two slices
        while n - pos >= 2:
            first = data[pos]
            length = data[pos + 1]
            start = pos + 2
            if length > 0x7F:
                # two bytes (128 B to 16 KiB: a quote or a trade) inline, longer in a call
                if n - pos > 2 and data[start] < 0x80:
                    length = (length & 0x7F) | (data[start] << 7)
                    start += 1
                else:
                    length, start = _remaining_length(data, pos + 1, n)
                    if length == -1:
                        break
                    if length == -2:
                        self._fail("frames_malformed", "remaining length longer than 4 bytes")
                        return out
            end = start + length
            if length > limit:
                if first & 0xF0 != _PUBLISH:
                    self._fail("frames_oversized", f"frame of {length} bytes (limit {limit})")
                    return out
                self._skipped(length, limit)
                if end > n:  # the rest of it is discarded as it arrives
                    self._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                self._need = end - pos
                break
            if first & 0xF6 == _PUBLISH:  # PUBLISH at QoS 0 (the DUP and RETAIN bits free)
                # a body too short for the topic length leaves topic_end past the frame
                topic_end = (
                    start + 2 + ((data[start] << 8) | data[start + 1]) if length > 1 else n + 1
                )
                if topic_end > end:
                    self._fail("frames_malformed", "topic longer than the frame")
                    return out
                raw_topic = data[start + 2 : topic_end]
                topic = topics.get(raw_topic)
                if topic is None:
                    topic = self._topic(raw_topic)
                    if topic is None:
                        return out
                out.append((topic, data[topic_end:end], None, bool(first & 0x01)))
            elif not self._other(first, data, start, end):
                return out
            pos = end
        if pos == n:
            buffer.clear()
            self._need = 0
        elif buffer:
            del buffer[:pos]
        else:
            buffer += data[pos:]
        return out

    def _skipped(self, length: int, limit: int) -> None:
        counters = self.counters
        counters["feed_frames_oversized"] += 1
        counters["oversized"] += 1
        counters["bad_messages"] += 1
        log.warning("market-data publish of %d bytes skipped (limit %d)", length, limit)

    def _topic(self, raw: bytes) -> str | None:
        try:
            topic = raw.decode()
        except UnicodeDecodeError:
            self._fail("frames_malformed", "topic is not UTF-8")
            return None
        if len(self._topics) < _TOPIC_CACHE_SIZE:
            self._topics[raw] = topic
        return topic

    def _other(self, first: int, data: bytes, start: int, end: int) -> bool:
        """A packet other than PUBLISH at QoS 0; False when it broke the stream."""
        length = end - start
        kind = first & 0xF0
        if kind == _PUBLISH:
            qos = (first >> 1) & 0x03
            if qos == 3 or length < 2:
                return self._fail("frames_malformed", f"publish with QoS bits {qos}")
            topic_end = start + 2 + ((data[start] << 8) | data[start + 1])
            if topic_end + 2 > end:
                return self._fail("frames_malformed", "topic longer than the frame")
            # a QoS 0 subscription never gets one; dropped, counted, the stream goes on
            self.counters["feed_qos_refused"] += 1
            log.warning("market-data publish at QoS %d dropped (subscribed at QoS 0)", qos)
            return True
        ok = (
            (first == _CONNACK and length == 2)
            or (first == _SUBACK and length >= 3)
            or (first == _PINGRESP and length == 0)
        )
        if not ok:
            return self._fail(
                "frames_malformed", f"unexpected packet 0x{first:02x} of {length} bytes"
            )
        self.controls.append((first, data[start:end]))
        return True

    def _fail(self, counter: str, reason: str) -> bool:
        self.counters[f"feed_{counter}"] += 1
        self.error = reason
        self._buffer.clear()
        self._need = 0
        return False


class FeedProtocol(asyncio.Protocol):
    """One subscriber connection; made by ``open_feed``.

    Publishes go to ``on_messages`` as one list per read of the socket, once ``start``
    was called (the session announces the connection first); until then they are held,
    in order.

    Args:
        max_payload_bytes: see ``FrameParser``.
        counters: shared with the session (``feed_delivery_failed``: a read whose
            messages the receiver raised on, counted and logged, the connection kept).
        on_messages: receives every read's publishes, in stream order.

    Attributes:
        connack: the CONNACK return code.
        suback: the SUBACK return codes.
        lost: done with the reason when the connection is gone.
        last_received: ``loop.time()`` of the last bytes from the broker.
    """

    def __init__(
        self,
        *,
        max_payload_bytes: int,
        counters: collections.Counter[str],
        on_messages: Callable[[list[RawMessage]], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._parser = FrameParser(max_payload_bytes, counters)
        self._on_messages = on_messages
        self._held: list[RawMessage] | None = []
        self._transport: asyncio.Transport | None = None
        self._reset_reason: str | None = None
        self.counters = counters
        self.connack: asyncio.Future[int] = self._loop.create_future()
        self.suback: asyncio.Future[tuple[int, ...]] = self._loop.create_future()
        self.lost: asyncio.Future[str] = self._loop.create_future()
        self.last_received = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not an asyncio.Transport subclass, same methods)
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.last_received = self._loop.time()
        parser = self._parser
        messages = parser.feed(data)
        if messages:
            held = self._held
            if held is None:
                self._deliver(messages)
            else:
                held.extend(messages)
        if parser.controls:
            for first, body in parser.controls:
                self._control(first, body)
            parser.controls.clear()
        if parser.error is not None:
            self.reset(f"malformed stream from the broker: {parser.error}")

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self._reset_reason or (str(exc) if exc else "closed by the broker")
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_exception(ConnectionError(reason))
                future.exception()  # whoever awaits it still gets it; nobody else logs it
        if not self.lost.done():
            self.lost.set_result(reason)

    def start(self) -> None:
        """Deliver what was held and every later read directly."""
        held, self._held = self._held, None
        if held:
            self._deliver(held)

    def _deliver(self, messages: list[RawMessage]) -> None:
        # an exception here would make asyncio drop the connection: what a read brought
        # is the receiver's to count, never a reason to reset
        try:
            self._on_messages(messages)
        except Exception:
            self.counters["feed_delivery_failed"] += 1
            log.exception("market data of one read not delivered (%d messages)", len(messages))

    def send(self, packet: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(packet)

    def reset(self, reason: str) -> None:
        """Drop the connection at once (``lost`` gets ``reason``)."""
        if self._reset_reason is None:
            self._reset_reason = reason
            log.error("market-data connection reset: %s", reason)
        if self._transport is not None:
            self._transport.abort()

    def abandon(self) -> None:
        """Drop a connection whose handshake did not finish (nothing logged)."""
        if self._transport is not None:
            self._reset_reason = self._reset_reason or "handshake abandoned"
            self._transport.abort()

    def close(self) -> None:
        """DISCONNECT, then close once the write buffer is flushed (no reset)."""
        if self._transport is not None and not self._transport.is_closing():
            self._reset_reason = self._reset_reason or "closed by us"
            self._transport.write(DISCONNECT)
            self._transport.close()

    def _control(self, first: int, body: bytes) -> None:
        if first == _CONNACK:
            if self.connack.done():
                self.reset("a second CONNACK")
                return
            self.connack.set_result(body[1])
        elif first == _SUBACK:
            packet_id = (body[0] << 8) | body[1]
            codes = tuple(body[2:])
            if self.suback.done() or packet_id != _SUBSCRIBE_ID:
                self.counters["feed_frames_malformed"] += 1
                self.reset(f"SUBACK for packet {packet_id} not asked for")
            elif not _SUBACK_CODES.issuperset(codes):
                self.counters["feed_frames_malformed"] += 1
                self.reset(f"SUBACK return codes {codes}")
            else:
                self.suback.set_result(codes)
        # PINGRESP: last_received is all it is for


async def open_feed(
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    client_id: str,
    username: str | None,
    password: str | None,
    keepalive_s: int,
    filters: Sequence[str],
    max_payload_bytes: int,
    counters: collections.Counter[str],
    on_messages: Callable[[list[RawMessage]], None],
    timeout_s: float,
) -> FeedProtocol:
    """Connect, subscribe every filter at QoS 0, and return the connection.

    A refused filter (SUBACK 0x80) is counted (``subscriptions_refused``) and logged; the
    others flow.

    Raises:
        AdapterError: the broker refused the connection (credentials, identifier,
            protocol version): retrying cannot help.
        ConnectionError: the broker could not be reached, the handshake failed or took
            longer than ``timeout_s``: retrying may help.
    """
    loop = asyncio.get_running_loop()
    protocol: FeedProtocol | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, protocol = await loop.create_connection(
                lambda: FeedProtocol(
                    max_payload_bytes=max_payload_bytes, counters=counters, on_messages=on_messages
                ),
                host,
                port,
                ssl=tls,
            )
            protocol.send(
                connect_packet(
                    client_id, username=username, password=password, keepalive_s=keepalive_s
                )
            )
            code = await protocol.connack
            if code in _REFUSALS:
                raise AdapterError(
                    f"broker {host}:{port} refused the market-data connection: {_REFUSALS[code]}"
                )
            if code != 0:
                raise ConnectionError(f"CONNACK code {code}")
            protocol.send(subscribe_packet(_SUBSCRIBE_ID, filters))
            codes = await protocol.suback
    except TimeoutError as exc:
        _abandon(protocol)
        raise ConnectionError(f"market-data handshake took longer than {timeout_s} s") from exc
    except OSError as exc:  # ConnectionError, ssl.SSLError, refused or unreachable
        _abandon(protocol)
        raise ConnectionError(f"market-data connection: {exc}") from exc
    except BaseException:
        _abandon(protocol)
        raise
    if len(codes) != len(filters):
        protocol.reset(f"SUBACK with {len(codes)} codes for {len(filters)} filters")
        raise ConnectionError("market-data SUBACK does not match the SUBSCRIBE")
    for topic, code in zip(filters, codes):
        if code == 0x80:
            counters["subscriptions_refused"] += 1
            log.error("mqtt subscription to %s refused by the broker", topic)
    return protocol


def _abandon(protocol: FeedProtocol | None) -> None:
    if protocol is not None:
        protocol.abandon()
