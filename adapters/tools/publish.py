"""Tick files played onto a broker as a live feed (``tradeloop publish``).

Each quote goes out as a ``Quote`` on ``topics.quote(venue, symbol)``, each trade as a
``Trade`` on ``topics.trade(venue, symbol)`` and each depth update (the rows of a depth
parquet file from one update to its ``end`` row, ``engine.book.schema``) as a
``DepthUpdate`` on ``topics.depth(venue, symbol)``, QoS 0, encoded with the event codec, with
``ts_recv = ts_event`` (a receiver stamps its own receive time). Messages are paced by
the file's ``ts_event / speed``; ``speed = 0`` sends as fast as the broker takes them.
As a live feed would, the publisher stamps each message with the wall-clock time it is
sent (a daemon refuses market data older than ``[live] max_tick_age`` when it arrives, and
a file's ticks are hours to years old); ``restamp=False`` (``--keep-time``) sends the
file's own times.

Batching is what makes it fast. paho's ``publish`` costs two system calls per message (a
wake-up byte and a ``send``), which held it near 11k msgs/s here. Paho still does what
needs care (connect, authentication, keepalive, disconnect), but the market data itself
is framed here as MQTT 5 QoS 0 PUBLISH packets (no packet id, no state to keep on either
side: MQTT 5 section 3.3) and a chunk of them is written to paho's socket in one ``send``,
only while paho has nothing of its own queued, so packets never interleave.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from adapters.mqtt.topics import Topics
from engine.book.batch import F_END, F_RESET, F_SNAPSHOT, DepthBatch
from engine.clock import LiveClock
from engine.codec import EventCodec
from engine.errors import AdapterError
from engine.events import DepthUpdate, Quote, Trade
from engine.instruments import InstrumentTable
from engine.ticks import QUOTE, TickBatch

log = logging.getLogger(__name__)

# Messages framed into one write before the pacing is checked again: large enough that
# the system call is a small share of the cost per message, small enough that a chunk
# (about 150 kB of JSON quotes) fits a socket buffer.
CHUNK = 1024
# Longest sleep between pacing checks: keeps keepalive pings flowing in a quiet stretch.
MAX_WAIT_S = 0.25


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one ``publish`` run sent."""

    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second over the whole run."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class MqttTickPublisher:
    """Publishes tick batches as market-data events, paced by their event time.

    A synchronous context manager: entering connects (MQTT 5) and waits for the broker's
    answer, leaving sends what is still buffered and disconnects.

    Args:
        host: broker host.
        port: broker port.
        instruments: the table the batches' ``instrument`` indices refer to; each
            instrument's ``venue`` names its topics.
        topics: the topic contract (its prefix).
        codec: encoder of the payloads (JSON or MessagePack).
        username: broker user, or None for an anonymous connection.
        password: the user's password.
        client_id: MQTT client id.
        connect_timeout_s: how long to wait for the broker's CONNACK.
        restamp: stamp each message with the time it is sent (a live feed), not the
            file's ``ts_event``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        instruments: InstrumentTable,
        topics: Topics,
        codec: EventCodec,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "tradeloop-publish",
        connect_timeout_s: float = 10.0,
        restamp: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.codec = codec
        self.connect_timeout_s = connect_timeout_s
        self._wall = LiveClock().now_ns if restamp else None
        self._symbols = [i.symbol for i in instruments.instruments]
        self._quote_heads = [
            _topic_head(topics.quote(i.venue, i.symbol)) for i in instruments.instruments
        ]
        self._trade_heads = [
            _topic_head(topics.trade(i.venue, i.symbol)) for i in instruments.instruments
        ]
        self._depth_heads = [
            _topic_head(topics.depth(i.venue, i.symbol)) for i in instruments.instruments
        ]
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._connack: ReasonCode | None = None

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        props: object,
    ) -> None:
        self._connack = reason

    def __enter__(self) -> MqttTickPublisher:
        where = f"{self.host}:{self.port}"
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise AdapterError(f"cannot connect to the broker at {where}: {exc}") from exc
        deadline = time.monotonic() + self.connect_timeout_s
        while self._connack is None:
            if time.monotonic() > deadline:
                self._client.disconnect()
                raise AdapterError(
                    f"no answer from the broker at {where} within {self.connect_timeout_s:g} s"
                )
            rc = self._client.loop(timeout=0.05)
            # a refusal comes as a CONNACK (seen by _on_connect) and an error code
            if self._connack is None and rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
                raise AdapterError(
                    f"connection to the broker at {where} failed: {paho.error_string(rc)}"
                )
        if self._connack.is_failure:
            raise AdapterError(f"the broker at {where} refused the connection: {self._connack}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client.is_connected():
            if exc_type is None:
                self._drain()
            self._client.disconnect()
            self._client.loop(timeout=0.1)

    def publish(
        self,
        batches: Iterable[TickBatch | DepthBatch],
        *,
        speed: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> PublishResult:
        """Send every tick and depth update of ``batches`` (time-ordered, the two kinds
        merged by ``merge_by_time``), paced by ``ts_event / speed``.

        Args:
            batches: time-ordered tick batches and depth batches (whole updates each).
            speed: 1.0 plays in real time, 10 ten times faster, 0 as fast as possible.
            progress: called with the number of messages sent after each chunk.

        Raises:
            AdapterError: the connection to the broker was lost.
            ValueError: ``speed`` is negative.
        """
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        sent = 0
        start = time.perf_counter_ns()
        ts0: int | None = None
        for batch in batches:
            updates = _update_starts(batch) if isinstance(batch, DepthBatch) else None
            stamps = batch.ts_event if updates is None else batch.ts_event[updates[:-1]]
            n = len(stamps)
            if n == 0:
                continue
            if ts0 is None:
                ts0 = int(stamps[0])
            due = None
            if speed > 0:
                due = ((stamps - ts0) / speed).astype(np.int64)
            i = 0
            while i < n:
                stop = min(n, i + CHUNK)
                if due is not None:
                    now = time.perf_counter_ns() - start
                    ready = int(np.searchsorted(due, now, side="right"))
                    if ready <= i:
                        self._wait(min((int(due[i]) - now) / 1e9, MAX_WAIT_S))
                        continue
                    stop = min(stop, ready)
                if updates is None:
                    assert isinstance(batch, TickBatch)
                    self._send(batch, i, stop)
                else:
                    assert isinstance(batch, DepthBatch)
                    self._send_depth(batch, updates, i, stop)
                self._check(self._client.loop(timeout=0))  # keepalive, broker's packets
                sent += stop - i
                if progress is not None:
                    progress(stop - i)
                i = stop
        self._drain()
        return PublishResult(sent, (time.perf_counter_ns() - start) / 1e9)

    def _send(self, batch: TickBatch, start: int, stop: int) -> None:
        # a chunk goes out in one write: one reading of the wall clock stamps all of it
        ts = [self._wall()] * (stop - start) if self._wall else batch.ts_event[start:stop].tolist()
        inst = batch.instrument[start:stop].tolist()
        kind = batch.kind[start:stop].tolist()
        bid, ask = batch.bid[start:stop].tolist(), batch.ask[start:stop].tolist()
        bid_size, ask_size = (
            batch.bid_size[start:stop].tolist(),
            batch.ask_size[start:stop].tolist(),
        )
        price, size = batch.price[start:stop].tolist(), batch.size[start:stop].tolist()
        side = batch.side[start:stop].tolist()
        encode, symbols = self.codec.encode, self._symbols
        parts: list[bytes] = []
        for k in range(stop - start):
            i, t = inst[k], ts[k]
            if kind[k] == QUOTE:
                head = self._quote_heads[i]
                payload = encode(
                    Quote(
                        ts_event=t,
                        ts_recv=t,
                        instrument=symbols[i],
                        bid=bid[k],
                        ask=ask[k],
                        bid_size=bid_size[k],
                        ask_size=ask_size[k],
                    )
                )
            else:
                head = self._trade_heads[i]
                payload = encode(
                    Trade(
                        ts_event=t,
                        ts_recv=t,
                        instrument=symbols[i],
                        price=price[k],
                        size=size[k],
                        side="buy" if side[k] > 0 else "sell",
                    )
                )
            parts += (_PUBLISH_QOS0, _remaining_length(len(head) + len(payload)), head, payload)
        self._drain()  # paho's own packets (a ping) go first, whole
        self._write(b"".join(parts))

    def _send_depth(
        self, batch: DepthBatch, starts: npt.NDArray[np.int64], first: int, stop: int
    ) -> None:
        # updates first .. stop - 1; update k is rows starts[k] .. starts[k + 1] - 1
        encode, symbols = self.codec.encode, self._symbols
        parts: list[bytes] = []
        for k in range(first, stop):
            a, b = int(starts[k]), int(starts[k + 1])
            i = int(batch.instrument[a])
            flags = int(batch.flags[a])
            t = self._wall() if self._wall else int(batch.ts_event[a])
            side = batch.side[a:b].tolist()
            levels = list(zip(batch.price[a:b].tolist(), batch.qty[a:b].tolist(), strict=True))
            payload = encode(
                DepthUpdate(
                    ts_event=t,
                    ts_recv=t,
                    instrument=symbols[i],
                    first_update_id=int(batch.first_update_id[a]),
                    last_update_id=int(batch.last_update_id[a]),
                    prev_update_id=int(batch.prev_update_id[a]),
                    snapshot=bool(flags & F_SNAPSHOT),
                    reset=bool(flags & F_RESET),
                    bids=tuple(lv for lv, s in zip(levels, side, strict=True) if s > 0),
                    asks=tuple(lv for lv, s in zip(levels, side, strict=True) if s < 0),
                )
            )
            head = self._depth_heads[i]
            parts += (_PUBLISH_QOS0, _remaining_length(len(head) + len(payload)), head, payload)
        self._drain()
        self._write(b"".join(parts))

    def _write(self, data: bytes) -> None:
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):  # None once disconnected; TLS is a subclass
            self._lost(paho.MQTT_ERR_NO_CONN)
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                # the broker reads slower than we write: wait, and read what it sends
                select.select([sock], [sock], [], MAX_WAIT_S)
                self._check(self._client.loop_read())
                continue
            except OSError as exc:
                raise AdapterError(
                    f"lost the connection to the broker at {self.host}:{self.port}: {exc}"
                ) from exc
            view = view[sent:]

    def _drain(self) -> None:
        # what paho queued itself (a ping, a disconnect) and the socket did not take yet
        while self._client.want_write():
            self._check(self._client.loop(timeout=MAX_WAIT_S))

    def _wait(self, seconds: float) -> None:
        # Sleeping in select() on the socket also answers keepalive pings.
        if seconds > 0:
            self._check(self._client.loop(timeout=seconds))

    def _check(self, rc: paho.MQTTErrorCode) -> None:
        if rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
            self._lost(rc)

    def _lost(self, rc: paho.MQTTErrorCode) -> NoReturn:
        raise AdapterError(
            f"lost the connection to the broker at {self.host}:{self.port}: {paho.error_string(rc)}"
        )


def _update_starts(batch: DepthBatch) -> npt.NDArray[np.int64]:
    """Row index where each update starts, and the row count at the end: an update runs to
    its ``end`` row (a batch cut inside an update ends it there)."""
    ends = np.flatnonzero(batch.flags & F_END) + 1
    if not ends.shape[0] or ends[-1] != len(batch):
        ends = np.append(ends, len(batch))
    return np.concatenate(([0], ends)).astype(np.int64)


def _whole_updates(depth: Iterable[DepthBatch]) -> Iterator[DepthBatch]:
    # a file read in chunks may cut an update: its rows wait for the rest of it, since a
    # receiver drops the second half of a split update as stale (same ids)
    tail: DepthBatch | None = None
    for batch in depth:
        if tail is not None:
            batch = DepthBatch.concat([tail, batch])
        ends = np.flatnonzero(batch.flags & F_END)
        cut = int(ends[-1]) + 1 if ends.shape[0] else 0
        tail = batch.slice(cut, len(batch)) if cut < len(batch) else None
        if cut:
            yield batch.slice(0, cut)
    if tail is not None:
        yield tail  # a file that ends inside an update: sent as it is


def merge_by_time(
    ticks: Iterable[TickBatch], depth: Iterable[DepthBatch]
) -> Iterator[TickBatch | DepthBatch]:
    """Two time-ordered streams as one: pieces of tick batches and of depth batches (cut
    only between updates) in ``ts_event`` order, a depth update before ticks of its own
    stamp (the order the engine applies them in). Memory: one batch of each at a time."""
    tick_iter, depth_iter = iter(ticks), _whole_updates(depth)
    tb: TickBatch | None = next(tick_iter, None)
    db: DepthBatch | None = next(depth_iter, None)
    ti = di = 0
    while tb is not None or db is not None:
        if tb is not None and ti >= len(tb):
            tb, ti = next(tick_iter, None), 0
            continue
        if db is not None and di >= len(db):
            db, di = next(depth_iter, None), 0
            continue
        if db is None:
            assert tb is not None
            yield tb.slice(ti, len(tb))
            ti = len(tb)
            continue
        if tb is None:
            yield db.slice(di, len(db))
            di = len(db)
            continue
        next_tick = int(tb.ts_event[ti])
        if int(db.ts_event[di]) <= next_tick:
            # every whole update stamped at or before the next tick
            starts = _update_starts(db.slice(di, len(db))) + di
            k = int(np.searchsorted(db.ts_event[starts[:-1]], next_tick, side="right"))
            cut = int(starts[k])
            yield db.slice(di, cut)
            di = cut
        else:
            cut = int(np.searchsorted(tb.ts_event, int(db.ts_event[di]), side="left"))
            yield tb.slice(ti, cut)
            ti = cut


_PUBLISH_QOS0 = b"\x30"  # packet type 3 (PUBLISH), flags 0: QoS 0, no retain, no dup


def _topic_head(topic: str) -> bytes:
    """Variable header of a QoS 0 PUBLISH in MQTT 5: the topic, then an empty property
    list (QoS 0 has no packet identifier)."""
    raw = topic.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"topic longer than 65535 bytes: {topic[:40]}...")
    return len(raw).to_bytes(2, "big") + raw + b"\x00"


def _remaining_length(n: int) -> bytes:
    """MQTT's variable byte integer: 7 bits per byte, high bit set while more follow."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:  # the common case: a payload of 128 bytes .. 16 kB
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
