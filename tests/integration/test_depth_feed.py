"""Depth over a real mosquitto: a depth parquet file and a tick stream played by the publisher
(``merge_by_time``: time order, an update never split even where the file's reader cuts
one), received and validated by the daemon's ``Ingest``: every update arrives whole, in
order, with the rows the file holds, and a hostile message between them is refused and
counted without disturbing the rest."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from adapters.mqtt.ingest import DepthData, Ingest, MarketData
from adapters.mqtt.topics import Topics
from adapters.tools.publish import MqttTickPublisher, merge_by_time
from engine.book.batch import DepthBatch
from engine.codec import EventCodec
from engine.instruments import Instrument, InstrumentTable
from engine.ticks import TickBatch
from replay.files.depth.reader import DepthFileReader
from replay.files.depth.table import DepthTable
from tests.integration.conftest import Broker

SYM = "BTCUSDT"
INSTRUMENTS = InstrumentTable([Instrument(symbol=SYM, venue="BINANCE")])
MS = 1_000_000
T0 = 1_723_161_254_000 * MS


def _depth_file(path: Path, updates: int) -> None:
    rng = random.Random(7)
    table = DepthTable()
    table.add_update(
        ts_event=T0, ts_recv=T0, symbol=SYM, snapshot=True, first_update_id=100,
        last_update_id=100, prev_update_id=100,
        bids=[(61000.0 - k * 0.01, 1.0 + k) for k in range(30)],
        asks=[(61000.01 + k * 0.01, 2.0 + k) for k in range(30)],
    )  # fmt: skip
    uid = 100
    for n in range(updates):
        levels = rng.randint(0, 12)
        bids = [(round(61000.0 - rng.randint(0, 40) * 0.01, 2), rng.choice((0.0, 0.5, 1.25)))
                for _ in range(levels // 2)]  # fmt: skip
        asks = [(round(61000.01 + rng.randint(0, 40) * 0.01, 2), rng.choice((0.0, 0.75, 3.0)))
                for _ in range(levels - levels // 2)]  # fmt: skip
        bids = list(dict(bids).items())  # one row per price and side, as Binance sends
        asks = list(dict(asks).items())
        first, uid = uid + 1, uid + rng.randint(1, 5)
        ts = T0 + (n + 1) * 100 * MS
        table.add_update(ts_event=ts, ts_recv=ts, symbol=SYM, bids=bids, asks=asks,
                         first_update_id=first, last_update_id=uid)  # fmt: skip
    table.write(path)


def _ticks(n: int) -> TickBatch:
    ts = T0 + np.arange(n, dtype=np.int64) * 37 * MS + 5
    return TickBatch.trades(ts, ts, np.zeros(n, np.int32), np.full(n, 61000.0),
                            np.full(n, 0.01), np.where(np.arange(n) % 2, 1, -1).astype(np.int8))  # fmt: skip


@pytest.mark.asyncio
async def test_depth_file_published_arrives_whole_in_order_and_validated(
    broker: Broker, tmp_path: Path
) -> None:
    path = tmp_path / "depth.parquet"
    _depth_file(path, 150)
    # what the file holds, read whole: the rows every subscriber must get, update by update
    table = DepthBatch.concat(list(DepthFileReader(path, INSTRUMENTS.index)))
    ticks = _ticks(300)
    topics = Topics(prefix="lab/")
    # the reader cuts the file every 97 rows: updates are split across its chunks
    reader = DepthFileReader(path, INSTRUMENTS.index, chunk_rows=97)
    stream = list(merge_by_time([ticks.slice(0, 150), ticks.slice(150, 300)], reader))
    want_updates = int(np.count_nonzero(table.flags & 4))
    want_messages = want_updates + len(ticks)
    publisher = MqttTickPublisher(
        broker.host, broker.port, instruments=INSTRUMENTS, topics=topics,
        codec=EventCodec("msgpack"), username=broker.operator,
        password=broker.operator_password,
    )  # fmt: skip
    ingest = Ingest(topics, INSTRUMENTS, fmt="msgpack", max_payload_bytes=1 << 20,
                    command_key=None, counters=Counter())  # fmt: skip
    kinds: list[str] = []
    depth: list[DepthBatch] = []
    async with aiomqtt.Client(
        broker.host, broker.port, username=broker.operator, password=broker.operator_password,
        identifier="depth-listener", protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:  # fmt: skip
        await client.subscribe("lab/md/#", qos=0)
        sender = asyncio.create_task(asyncio.to_thread(lambda: _publish(publisher, stream)))
        received = 0
        async with asyncio.timeout(20):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                raw = (message.topic.value, message.payload, None, False)
                # a hostile message in the middle of the feed: refused, counted, harmless
                junk = (topics.depth("BINANCE", SYM), b"\x93\x01", None, False)
                items = ingest.decode([raw, junk] if received == 40 else [raw],
                                      _now())  # fmt: skip
                for item in items:
                    if isinstance(item, DepthData):
                        kinds.append("depth")
                        depth.append(item.batch)
                    else:
                        assert isinstance(item, MarketData)
                        kinds.append("tick")
                received += 1
                if received == want_messages:
                    break
        assert await sender == want_messages
    assert ingest.counters["bad_messages"] == 1 and ingest.counters["bad_undecodable"] == 1
    assert kinds.count("depth") == want_updates and kinds.count("tick") == len(ticks)
    got = DepthBatch.concat(depth)
    assert want_updates > 150 and len(got) == len(table)
    for name in ("side", "price", "qty", "flags", "first_update_id", "last_update_id",
                 "prev_update_id"):  # fmt: skip
        assert np.array_equal(getattr(got, name), getattr(table, name), equal_nan=True), name
    # time order across the two streams: the k-th message kind is the merged stream's
    merged_kinds = []
    for piece in stream:
        if isinstance(piece, DepthBatch):
            merged_kinds += ["depth"] * int(np.count_nonzero(piece.flags & 4))
        else:
            merged_kinds += ["tick"] * len(piece)
    assert kinds == merged_kinds


def _publish(publisher: MqttTickPublisher, stream: list[TickBatch | DepthBatch]) -> int:
    with publisher:
        return publisher.publish(stream, speed=0).messages


def _now() -> int:
    from engine.clock import wall_clock_ns

    return wall_clock_ns()
