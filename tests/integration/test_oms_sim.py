"""``oms-sim`` against a real mosquitto: acks and fills by the simulated venue's rules, resends,
cancels, reconciliation over MQTT 5 request/response, malformed orders."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import msgspec
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.reconcile import (
    FillsResponse,
    FillsSinceRequest,
    OpenOrdersRequest,
    PositionsRequest,
    ReconcileCodec,
    request,
    response_topic,
)
from adapters.mqtt.topics import Topics
from adapters.oms_sim import MqttOmsSimulator, SimulatedOms
from adapters.sim_venue import SimulatedVenue
from engine.codec import EventCodec
from engine.errors import AdapterError
from engine.events import (
    CancelRejected,
    CancelRequest,
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Quote,
    Side,
)
from engine.instruments import Instrument, InstrumentTable
from tests.integration.conftest import Broker

TOPICS = Topics(account="acct1", node="node1")
SYMBOL = "BTC-USD"
CODEC = EventCodec("json")


@contextlib.asynccontextmanager
async def oms_sim(broker: Broker, *, latency_ns: int = 0) -> AsyncIterator[MqttOmsSimulator]:
    instruments = InstrumentTable([Instrument(symbol=SYMBOL, venue="SIM")])
    oms = SimulatedOms(instruments, SimulatedVenue(latency_ns, fee_bps=1.0))
    sim = MqttOmsSimulator(
        oms,
        host=broker.host,
        port=broker.port,
        topics=TOPICS,
        username=broker.username,
        password=broker.password,
    )
    stop = asyncio.Event()
    async with sim:
        task = asyncio.create_task(sim.serve(stop), name="oms-sim")
        try:
            yield sim
        finally:
            stop.set()
            await task


@contextlib.asynccontextmanager
async def client(broker: Broker, name: str, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=name,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as c:
        for topic in topics:
            await c.subscribe(topic, qos=1)
        yield c


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def reports(c: aiomqtt.Client, n: int, timeout_s: float = 5.0) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout_s):
        async for message in c.messages:
            assert isinstance(message.payload, bytes)
            out.append(CODEC.decode(message.payload))
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


async def no_more(c: aiomqtt.Client, wait_s: float = 0.3) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            async for message in c.messages:
                raise AssertionError(f"unexpected report {message.payload!r}")


async def send_quote(
    c: aiomqtt.Client, sim: MqttOmsSimulator, bid: float, ask: float, size: float = 5.0
) -> None:
    seen = sim.counters["ticks"]
    quote = Quote(
        ts_event=1, ts_recv=1, instrument=SYMBOL, bid=bid, ask=ask, bid_size=size, ask_size=size
    )
    await c.publish(TOPICS.quote("SIM", SYMBOL), CODEC.encode(quote), qos=0)
    await until(lambda: sim.counters["ticks"] > seen)


def order(
    cid: str, side: Side = "buy", qty: float = 2.0, limit: float | None = None
) -> OrderRequest:
    return OrderRequest(
        ts_event=1,
        ts_recv=1,
        client_order_id=cid,
        instrument=SYMBOL,
        side=side,
        qty=qty,
        order_type="market" if limit is None else "limit",
        limit_price=limit,
    )


async def send(c: aiomqtt.Client, event: Event | bytes) -> None:
    payload = event if isinstance(event, bytes) else CODEC.encode(event)
    await c.publish(TOPICS.orders, payload, qos=1)


@pytest.mark.asyncio
async def test_oms_sim_market_order_acked_and_filled_at_the_touch(broker: Broker) -> None:
    async with oms_sim(broker) as sim, client(broker, "daemon", TOPICS.reports) as c:
        await send_quote(c, sim, 100.0, 101.0, size=5.0)
        await send(c, order("o-1", qty=2.0))
        ack, fill = await reports(c, 2)
        assert isinstance(ack, OrderAccepted) and ack.client_order_id == "o-1"
        assert isinstance(fill, Fill)
        assert (fill.client_order_id, fill.side, fill.qty, fill.price, fill.liquidity) == (
            "o-1",
            "buy",
            2.0,
            101.0,
            "taker",
        )
        assert fill.fee == pytest.approx(2.0 * 101.0 * 1e-4)
        # displayed size is used once: 3 left at the ask, so a second buy of 5 takes 3 and rests
        await send(c, order("o-2", qty=5.0))
        ack2, fill2 = await reports(c, 2)
        assert isinstance(ack2, OrderAccepted) and isinstance(fill2, Fill)
        assert (fill2.qty, fill2.price) == (3.0, 101.0)
        await send_quote(c, sim, 100.5, 101.5, size=10.0)  # fresh size fills the rest
        (fill3,) = await reports(c, 1)
        assert isinstance(fill3, Fill) and (fill3.qty, fill3.price) == (2.0, 101.5)
        assert sim.oms.positions[SYMBOL] == 7.0


@pytest.mark.asyncio
async def test_oms_sim_resend_of_a_client_order_id_gives_no_second_fill(broker: Broker) -> None:
    async with oms_sim(broker) as sim, client(broker, "daemon", TOPICS.reports) as c:
        await send_quote(c, sim, 100.0, 101.0, size=5.0)
        await send(c, order("o-1", qty=1.0))
        _, fill = await reports(c, 2)
        await send(c, order("o-1", qty=1.0))  # the daemon did not see the answer: resend
        (again,) = await reports(c, 1)
        assert again == fill  # the latest report again, same fill id: booked once
        await no_more(c)
        assert sim.counters["resends"] == 1 and sim.counters["fills"] == 1
        assert sim.oms.positions[SYMBOL] == 1.0


@pytest.mark.asyncio
async def test_oms_sim_cancel_of_a_resting_order_then_of_a_closed_one(broker: Broker) -> None:
    async with oms_sim(broker) as sim, client(broker, "daemon", TOPICS.reports) as c:
        await send_quote(c, sim, 100.0, 101.0)
        await send(c, order("o-1", limit=99.0))
        (ack,) = await reports(c, 1)
        assert isinstance(ack, OrderAccepted)
        cancel = CancelRequest(ts_event=2, ts_recv=2, client_order_id="o-1", instrument=SYMBOL)
        await send(c, cancel)
        (cancelled,) = await reports(c, 1)
        assert isinstance(cancelled, OrderCancelled) and cancelled.client_order_id == "o-1"
        await send(c, cancel)
        await send(c, msgspec.structs.replace(cancel, client_order_id="never-sent"))
        closed, unknown = await reports(c, 2)
        assert isinstance(closed, CancelRejected) and closed.client_order_id == "o-1"
        assert isinstance(unknown, CancelRejected) and unknown.client_order_id == "never-sent"
        await send_quote(c, sim, 98.0, 98.5)  # through the old limit: nothing fills
        await no_more(c)
        assert sim.oms.open_orders() == []


@pytest.mark.asyncio
async def test_oms_sim_latency_delivers_without_a_tick(broker: Broker) -> None:
    async with (
        oms_sim(broker, latency_ns=100_000_000) as sim,
        client(broker, "daemon", TOPICS.reports) as c,
    ):
        await send_quote(c, sim, 100.0, 101.0)
        t0 = time.monotonic()
        await send(c, order("o-1", qty=1.0))
        ack, fill = await reports(c, 2)
        assert time.monotonic() - t0 >= 0.09  # reached the venue 100 ms after the OMS read it
        assert isinstance(ack, OrderAccepted) and isinstance(fill, Fill)
        assert fill.ts_event == ack.ts_event  # taken on arrival, at the touch


@pytest.mark.asyncio
async def test_oms_sim_reconciliation_answers_open_orders_fills_and_positions(
    broker: Broker,
) -> None:
    async with oms_sim(broker) as sim, client(broker, "daemon", TOPICS.reports) as c:
        await send_quote(c, sim, 100.0, 101.0)
        await send(c, order("filled", qty=2.0))
        await send(c, order("resting", side="sell", qty=1.0, limit=105.0))
        await reports(c, 3)
        async with client(broker, "daemon-reconcile") as r:
            opened = await request(r, TOPICS, OpenOrdersRequest(), timeout_s=5)
            fills = await request(r, TOPICS, FillsSinceRequest(since_ns=0), timeout_s=5)
            positions = await request(r, TOPICS, PositionsRequest(), timeout_s=5)
            assert [(o.order.client_order_id, o.status, o.filled_qty) for o in opened.orders] == [
                ("resting", "accepted", 0.0)
            ]
            assert opened.orders[0].order == order("resting", side="sell", qty=1.0, limit=105.0)
            assert [(f.client_order_id, f.qty, f.price) for f in fills.fills] == [
                ("filled", 2.0, 101.0)
            ]
            later = await request(r, TOPICS, FillsSinceRequest(since_ns=fills.as_of_ns + 1), 5)
            assert later.fills == []
            assert positions.positions == {SYMBOL: 2.0}


@pytest.mark.asyncio
async def test_oms_sim_answers_on_the_response_topic_with_the_correlation_data(
    broker: Broker,
) -> None:
    codec = ReconcileCodec("msgpack")
    answers = response_topic(TOPICS)
    async with oms_sim(broker), client(broker, "daemon", answers) as c:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = answers
        props.CorrelationData = b"question-42"
        request_bytes = codec.encode(FillsSinceRequest(since_ns=0))
        await c.publish(TOPICS.requests, request_bytes, qos=1, properties=props)
        async with asyncio.timeout(5):
            message = await anext(aiter(c.messages))
        assert message.properties is not None
        assert getattr(message.properties, "CorrelationData", None) == b"question-42"
        assert isinstance(message.payload, bytes)
        answer = codec.decode_response(message.payload)
        assert isinstance(answer, FillsResponse) and answer.fills == []


@pytest.mark.asyncio
async def test_reconcile_request_without_an_oms_times_out_as_adapter_error(
    broker: Broker,
) -> None:
    async with client(broker, "daemon") as c:
        with pytest.raises(AdapterError, match="no answer from the OMS"):
            await request(c, TOPICS, PositionsRequest(), timeout_s=0.3)


@pytest.mark.asyncio
async def test_oms_sim_malformed_orders_are_counted_and_rejected_when_an_id_is_readable(
    broker: Broker,
) -> None:
    async with oms_sim(broker) as sim, client(broker, "daemon", TOPICS.reports) as c:
        await send_quote(c, sim, 100.0, 101.0)
        await send(c, b"\xff\x00 not an order")
        await send(c, b'{"type": "order_request", "client_order_id": "bad-1", "qty": "lots"}')
        await send(c, b'{"type": "cancel_request", "client_order_id": "bad-2"}')
        await send(
            c,
            CODEC.encode(
                Quote(
                    ts_event=1,
                    ts_recv=1,
                    instrument=SYMBOL,
                    bid=1.0,
                    ask=2.0,
                    bid_size=1.0,
                    ask_size=1.0,
                )
            ),
        )
        rejected, cancel_rejected = await reports(c, 2)
        assert isinstance(rejected, OrderRejected) and rejected.client_order_id == "bad-1"
        assert "malformed order" in rejected.reason
        assert isinstance(cancel_rejected, CancelRejected)
        assert cancel_rejected.client_order_id == "bad-2"
        await until(lambda: sim.bad_messages["orders"] == 4)
        # still serving, and a MessagePack order is read as well
        await send(c, EventCodec("msgpack").encode(order("good", qty=1.0)))
        ack, fill = await reports(c, 2)
        assert isinstance(ack, OrderAccepted) and isinstance(fill, Fill)
        await c.publish(TOPICS.quote("SIM", SYMBOL), b"{broken", qos=0)
        await until(lambda: sim.bad_messages["market_data"] == 1)


_COMMAND = """
import argparse, sys
from pathlib import Path
from adapters.tools_cli import register

parser = argparse.ArgumentParser()
register(parser.add_subparsers(), tick_files=None, default_config=Path("replay/default_config.toml"))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@pytest.mark.asyncio
async def test_oms_sim_command_serves_until_sigterm_then_prints_its_counts(
    broker: Broker,
) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _COMMAND,
        "oms-sim",
        "--broker",
        f"{broker.host}:{broker.port}",
        "--username",
        broker.username,
        "--password-env",
        "TEST_MQTT_PASSWORD",
        "--account",
        "acct1",
        "--latency",
        "0us",
        cwd=root,
        env={**os.environ, "TEST_MQTT_PASSWORD": broker.password},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            banner = await proc.stdout.readline()  # printed once subscribed
        assert b"orders on oms/acct1/orders" in banner
        async with client(broker, "daemon", TOPICS.reports) as c:
            await send(c, order("o-1", limit=99.0))  # no quote yet: a limit order rests
            (ack,) = await reports(c, 1, timeout_s=10)
            assert isinstance(ack, OrderAccepted)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"oms-sim stopped: 1 orders (0 resends, 1 answered)" in out
