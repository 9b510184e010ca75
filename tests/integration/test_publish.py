"""``tradeloop publish`` against a real mosquitto: every tick of a sample folder arrives, on
its topic, in order, with the payload the file says; pacing follows ``ts_event / speed``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from adapters.mqtt.topics import Topics
from adapters.tools.cli import register
from adapters.tools.publish import MqttTickPublisher
from engine.codec import EventCodec
from engine.config import Config, load_config
from engine.errors import AdapterError
from engine.events import Event, Quote, Trade
from engine.instruments import InstrumentTable
from engine.ticks import QUOTE, TickBatch
from replay.backtest.runner import tick_batches
from replay.files.raw_files import total_rows
from replay.files.readers import BadRowCounts
from replay.files.sample_data import generate
from tests.integration.conftest import Broker

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "replay" / "default_config.toml"


def tick_files(config: Config, data: str) -> tuple[Iterator[TickBatch], int | None]:
    """What the dispatcher hands to ``register``: replay's readers."""
    batches, files = tick_batches(
        config, data, InstrumentTable(list(config.instruments)), BadRowCounts()
    )
    return batches, total_rows(files)


def expected(config: Config, data: Path, topics: Topics) -> list[tuple[str, Event]]:
    instruments = config.instruments
    out: list[tuple[str, Event]] = []
    for batch in tick_files(config, str(data))[0]:
        for t in range(len(batch)):
            inst = instruments[int(batch.instrument[t])]
            ts = int(batch.ts_event[t])
            if batch.kind[t] == QUOTE:
                out.append(
                    (
                        topics.quote(inst.venue, inst.symbol),
                        Quote(
                            ts_event=ts,
                            ts_recv=ts,
                            instrument=inst.symbol,
                            bid=float(batch.bid[t]),
                            ask=float(batch.ask[t]),
                            bid_size=float(batch.bid_size[t]),
                            ask_size=float(batch.ask_size[t]),
                        ),
                    )
                )
            else:
                out.append(
                    (
                        topics.trade(inst.venue, inst.symbol),
                        Trade(
                            ts_event=ts,
                            ts_recv=ts,
                            instrument=inst.symbol,
                            price=float(batch.price[t]),
                            size=float(batch.size[t]),
                            side="buy" if batch.side[t] > 0 else "sell",
                        ),
                    )
                )
    return out


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    data = tmp_path / "ticks"
    generate(data, symbols=2, hours=0.002, seed=3)  # about 7 s of ticks, a few hundred
    return data


@contextlib.asynccontextmanager
async def subscriber(
    broker: Broker,
    topic: str,
    *,
    operator: bool = False,
) -> AsyncIterator[aiomqtt.Client]:
    user, password = (
        (broker.operator, broker.operator_password)
        if operator
        else (broker.username, broker.password)
    )
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=user,
        password=password,
        identifier="subscriber",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as c:
        await c.subscribe(topic, qos=0)
        yield c


async def collect(c: aiomqtt.Client, n: int, codec: EventCodec) -> list[tuple[str, Event]]:
    got: list[tuple[str, Event]] = []
    async with asyncio.timeout(20):
        async for message in c.messages:
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, codec.decode(message.payload)))
            if len(got) == n:
                break
    return got


@pytest.mark.asyncio
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_publish_command_every_tick_arrives_in_order_with_its_payload(
    broker: Broker, sample: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", broker.password)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(), tick_files=tick_files, default_config=DEFAULT_CONFIG)
    args = parser.parse_args(
        [
            "publish",
            str(sample),
            "--speed",
            "0",
            "--format",
            fmt,
            "--broker",
            f"{broker.host}:{broker.port}",
            "--username",
            broker.username,
            "--password-env",
            "TEST_MQTT_PASSWORD",
            "--keep-time",
        ]
    )
    config, _ = load_config(DEFAULT_CONFIG)
    want = expected(config, sample, Topics())
    assert 300 < len(want) < 2000 and {type(e) for _, e in want} == {Quote, Trade}
    async with subscriber(broker, "md/#") as c:
        listening = asyncio.create_task(collect(c, len(want), EventCodec(fmt)))  # type: ignore[arg-type]
        assert await asyncio.to_thread(args.func, args) == 0
        got = await listening
    assert got == want


@pytest.mark.asyncio
async def test_publish_paces_by_event_time_over_speed(broker: Broker, sample: Path) -> None:
    config, _ = load_config(DEFAULT_CONFIG)
    topics = Topics(prefix="lab/")
    want = expected(config, sample, topics)
    span_s = (want[-1][1].ts_event - want[0][1].ts_event) / 1e9
    speed = span_s / 0.6  # the whole file in 0.6 s
    publisher = MqttTickPublisher(
        broker.host,
        broker.port,
        instruments=InstrumentTable(list(config.instruments)),
        topics=topics,
        codec=EventCodec("json"),
        username=broker.operator,
        password=broker.operator_password,
        restamp=False,
    )
    async with subscriber(broker, "lab/md/#", operator=True) as c:
        listening = asyncio.create_task(collect(c, len(want), EventCodec("json")))

        def run() -> float:
            with publisher:
                t0 = time.perf_counter()
                publisher.publish(tick_files(config, str(sample))[0], speed=speed)
                return time.perf_counter() - t0

        elapsed = await asyncio.to_thread(run)
        got = await listening
    assert got == want
    assert 0.55 <= elapsed < 2.0


@pytest.mark.asyncio
async def test_publish_stamps_each_message_with_its_send_time_as_a_live_feed(
    broker: Broker, sample: Path
) -> None:
    # a file's ticks are old: a daemon refuses market data older than [live] max_tick_age
    config, _ = load_config(DEFAULT_CONFIG)
    want = expected(config, sample, Topics())
    publisher = MqttTickPublisher(
        broker.host,
        broker.port,
        instruments=InstrumentTable(list(config.instruments)),
        topics=Topics(),
        codec=EventCodec("json"),
        username=broker.username,
        password=broker.password,
    )
    async with subscriber(broker, "md/#") as c:
        listening = asyncio.create_task(collect(c, len(want), EventCodec("json")))
        t0 = time.time_ns()

        def run() -> None:
            with publisher:
                publisher.publish(tick_files(config, str(sample))[0], speed=0)

        await asyncio.to_thread(run)
        t1 = time.time_ns()
        got = await listening
    stamps = [e.ts_event for _, e in got]
    assert all(t0 <= t <= t1 for t in stamps) and stamps == sorted(stamps)
    assert all(e.ts_recv == e.ts_event for _, e in got)
    assert [(topic, msgspec.structs.replace(e, ts_event=0, ts_recv=0)) for topic, e in got] == [
        (topic, msgspec.structs.replace(e, ts_event=0, ts_recv=0)) for topic, e in want
    ]


def test_publish_wrong_password_is_one_adapter_error(broker: Broker) -> None:
    config, _ = load_config(DEFAULT_CONFIG)
    publisher = MqttTickPublisher(
        broker.host,
        broker.port,
        instruments=InstrumentTable(list(config.instruments)),
        topics=Topics(),
        codec=EventCodec("json"),
        username=broker.username,
        password="wrong",
    )
    with pytest.raises(AdapterError, match="refused the connection"), publisher:
        pass
