"""``oms-sim`` against a real mosquitto: acks and fills by the simulated venue's rules, resends,
cancels, reconciliation over MQTT 5 request/response, malformed orders."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import get_args

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
from adapters.sim_venue import SimulatedVenue
from adapters.tools.cli import ANSWER_MODES
from adapters.tools.oms.oms_sim import AnswerMode, MqttOmsSimulator
from adapters.tools.oms.simulated_oms import SimulatedOms
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
from tests.integration.test_mqtt_session import _open_gate, _restart_broker

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
async def client(
    broker: Broker, name: str, *topics: str, operator: bool = False
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.operator if operator else broker.username,
        password=broker.operator_password if operator else broker.password,
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


@pytest.mark.asyncio
async def test_oms_sim_reconnects_after_a_broker_restart_with_its_state_and_unsent_reports(
    broker: Broker,
) -> None:
    instruments = InstrumentTable([Instrument(symbol=SYMBOL, venue="SIM")])
    # 2 s of latency: the ack and fill are made while the broker is down (it is killed
    # as soon as the order is in, and let in again only after they are made)
    oms = SimulatedOms(instruments, SimulatedVenue(2_000_000_000, fee_bps=1.0))
    sim = MqttOmsSimulator(oms, host=broker.host, port=broker.port, topics=TOPICS,
                           username=broker.username, password=broker.password)  # fmt: skip
    stop = asyncio.Event()
    restarted: subprocess.Popen[bytes] | None = None
    try:
        async with sim:
            task = asyncio.create_task(sim.serve(stop, reconnect=True), name="oms-sim")
            async with client(broker, "daemon") as c:
                await send_quote(c, sim, 100.0, 101.0)
                await send(c, order("o-1", qty=1.0))
                await until(lambda: sim.counters["orders"] == 1)
            # the simulator's user stays out until the gate opens, so the reports it made
            # meanwhile can only go out after the subscriber below is in
            restarted = await asyncio.to_thread(_restart_broker, broker)
            await until(lambda: sim.counters["fills"] == 1)
            assert sim.counters["published"] == 0
            async with client(broker, "operator", TOPICS.reports, operator=True) as c:
                _open_gate(broker, restarted)
                ack, fill = await reports(c, 2, timeout_s=20)
                assert isinstance(ack, OrderAccepted) and isinstance(fill, Fill)
                assert sim.counters["reconnects"] == 1
                await send(c, order("o-1", qty=1.0))  # a resend: the OMS kept its state
                (again,) = await reports(c, 1)
                assert again == fill
            stop.set()
            await task
    finally:
        if restarted is not None:
            restarted.terminate()
            restarted.wait(5)
    assert sim.counters["fills"] == 1 and sim.counters["resends"] == 1
    assert oms.positions[SYMBOL] == 1.0


_COMMAND = """
import argparse, sys
from pathlib import Path
from adapters.tools.cli import register

parser = argparse.ArgumentParser()
register(parser.add_subparsers(), tick_files=None, default_config=Path("replay/default_config.toml"))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""
ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_PUB = shutil.which("mosquitto_pub")


class CliRun:
    """A ``tradeloop oms-sim`` process; ``out`` holds its stdout once it stopped."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = ""


@contextlib.asynccontextmanager
async def oms_sim_command(broker: Broker, *flags: str) -> AsyncIterator[CliRun]:
    """``oms-sim`` through its command entry (as ``tradeloop oms-sim`` parses it), serving
    until the block ends; then SIGTERM, and it must exit 0."""
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
        *flags,
        cwd=ROOT,
        env={**os.environ, "TEST_MQTT_PASSWORD": broker.password},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    run = CliRun(proc)
    try:
        async with asyncio.timeout(60):
            banner = await proc.stdout.readline()  # printed once subscribed
        assert b"orders on oms/acct1/orders" in banner, banner
        yield run
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        run.out = out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def quoted(c: aiomqtt.Client, size: float = 5.0) -> int:
    """Quote until a market order of the command's OMS fills (it has read a quote: the
    quote and the order travel on two connections); the orders it took."""
    for attempt in range(100):
        await c.publish(
            TOPICS.quote("SIM", SYMBOL),
            CODEC.encode(
                Quote(
                    ts_event=1,
                    ts_recv=1,
                    instrument=SYMBOL,
                    bid=100.0,
                    ask=101.0,
                    bid_size=size,
                    ask_size=size,
                )
            ),
            qos=1,
        )
        cid = f"probe-{attempt}"
        await send(c, order(cid, qty=0.001))
        (first,) = await reports(c, 1)
        if isinstance(first, OrderRejected):
            continue  # no quote yet at the OMS
        assert isinstance(first, OrderAccepted)
        (fill,) = await reports(c, 1)
        assert isinstance(fill, Fill)
        return attempt + 1
    raise AssertionError("the OMS never read a quote")


@pytest.mark.asyncio
async def test_oms_sim_command_serves_until_sigterm_then_prints_its_counts(
    broker: Broker,
) -> None:
    async with oms_sim_command(broker) as run, client(broker, "daemon", TOPICS.reports) as c:
        await send(c, order("o-1", limit=99.0))  # no quote yet: a limit order rests
        (ack,) = await reports(c, 1, timeout_s=10)
        assert isinstance(ack, OrderAccepted)
    assert "oms-sim stopped: 1 orders (0 resends, 1 answered)" in run.out


def test_oms_sim_command_answer_modes_are_the_answer_faults() -> None:
    assert get_args(AnswerMode) == ANSWER_MODES


@pytest.mark.asyncio
async def test_oms_sim_command_answer_late_sends_every_report_after_the_delay(
    broker: Broker,
) -> None:
    flags = ("--answer", "late", "--answer-delay", "300ms")
    async with oms_sim_command(broker, *flags), client(broker, "daemon", TOPICS.reports) as c:
        await quoted(c)
        t0 = time.monotonic()
        await send(c, order("o-1", qty=1.0))
        ack, fill = await reports(c, 2, timeout_s=10)
        # a lower bound only: the OMS cannot answer before the delay, whatever the load
        assert time.monotonic() - t0 >= 0.3
        assert isinstance(ack, OrderAccepted) and isinstance(fill, Fill)
        assert ack.client_order_id == fill.client_order_id == "o-1"


@pytest.mark.asyncio
async def test_oms_sim_command_answer_twice_publishes_every_report_twice(broker: Broker) -> None:
    async with (
        oms_sim_command(broker, "--answer", "twice") as run,
        client(broker, "daemon", TOPICS.reports) as c,
    ):
        await send(c, order("o-1", limit=99.0))  # rests: one ack, twice
        ack1, ack2 = await reports(c, 2)
        assert isinstance(ack1, OrderAccepted) and ack1 == ack2
        await no_more(c)
    assert "1 orders (0 resends, 1 answered)" in run.out


@pytest.mark.asyncio
async def test_oms_sim_command_answer_shuffled_sends_the_fill_before_the_ack(
    broker: Broker,
) -> None:
    async with (
        oms_sim_command(broker, "--answer", "shuffled") as run,
        client(broker, "daemon", TOPICS.reports) as c,
    ):
        # the first probe orders may be rejected (no quote yet): a rejection closes the
        # order, so it is published at once in this mode too
        for attempt in range(100):
            await c.publish(
                TOPICS.quote("SIM", SYMBOL),
                CODEC.encode(
                    Quote(
                        ts_event=1,
                        ts_recv=1,
                        instrument=SYMBOL,
                        bid=100.0,
                        ask=101.0,
                        bid_size=5.0,
                        ask_size=5.0,
                    )
                ),
                qos=1,
            )
            await send(c, order(f"o-{attempt}", qty=1.0))
            first, *_ = await reports(c, 1)
            if not isinstance(first, OrderRejected):
                break
        (second,) = await reports(c, 1)
        assert isinstance(first, Fill) and isinstance(second, OrderAccepted)
        assert first.client_order_id == second.client_order_id
    assert "1 fills" in run.out


@pytest.mark.asyncio
async def test_oms_sim_command_answer_never_withholds_reports_and_answers(
    broker: Broker,
) -> None:
    async with (
        oms_sim_command(broker, "--answer", "never") as run,
        client(broker, "daemon", TOPICS.reports) as c,
    ):
        await send(c, order("o-1", limit=99.0))
        await no_more(c, wait_s=0.5)
        async with client(broker, "daemon-reconcile") as r:
            with pytest.raises(AdapterError, match="no answer from the OMS"):
                await request(r, TOPICS, PositionsRequest(), timeout_s=0.5)
    # the OMS took the order all the same: only what it publishes is withheld
    assert "1 orders (0 resends, 1 answered)" in run.out


@pytest.mark.asyncio
async def test_oms_sim_command_bad_answer_delay_is_a_config_error(broker: Broker) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from replay.cli import main; sys.exit(main(sys.argv[1:]))",
        "oms-sim",
        "--broker",
        f"{broker.host}:{broker.port}",
        "--answer",
        "late",
        "--answer-delay",
        "soon",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"--answer-delay" in out + err and b"Traceback" not in err


SMOKE_ORDERS = 20_000
SMOKE_QUOTES = 20_000


@pytest.mark.skipif(MOSQUITTO_PUB is None, reason="mosquitto_pub is not installed")
@pytest.mark.asyncio
async def test_oms_sim_command_answers_every_one_of_20k_orders_among_20k_quotes(
    broker: Broker, tmp_path: Path
) -> None:
    """A throughput smoke that counts, never times: 20,000 market orders (QoS 1) while
    20,000 quotes (QoS 0, under the broker's queue limit) stream in, from two
    ``mosquitto_pub -l`` processes; every order is acked and filled exactly once."""
    assert MOSQUITTO_PUB is not None
    quotes = tmp_path / "quotes.jsonl"
    orders = tmp_path / "orders.jsonl"
    quote = Quote(
        ts_event=1, ts_recv=1, instrument=SYMBOL, bid=100.0, ask=101.0, bid_size=1e9, ask_size=1e9
    )
    quotes.write_bytes(b"".join(CODEC.encode(quote) + b"\n" for _ in range(SMOKE_QUOTES)))
    sides: tuple[Side, Side] = ("buy", "sell")
    orders.write_bytes(
        b"".join(
            CODEC.encode(order(f"s-{i}", side=sides[i % 2], qty=0.001)) + b"\n"
            for i in range(SMOKE_ORDERS)
        )
    )
    login = ["-h", broker.host, "-p", str(broker.port), "-u", broker.username]
    login += ["-P", broker.password]
    acked: Counter[str] = Counter()
    filled: Counter[str] = Counter()
    async with (
        oms_sim_command(broker) as run,
        client(broker, "daemon", TOPICS.reports) as c,
    ):
        probes = await quoted(c, size=1e9)
        feeds = []
        for topic, qos, path in (
            (TOPICS.quote("SIM", SYMBOL), "0", quotes),
            (TOPICS.orders, "1", orders),
        ):
            args = [*login, "-t", topic, "-q", qos, "-l", "-i", f"smoke-{qos}"]
            with path.open("rb") as lines:
                feeds.append(
                    await asyncio.create_subprocess_exec(MOSQUITTO_PUB, *args, stdin=lines)
                )
        # generous: this counts, it does not time (about 10 s here under load)
        async with asyncio.timeout(300):
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                report = CODEC.decode(message.payload)
                assert isinstance(report, OrderAccepted | Fill), report
                (acked if isinstance(report, OrderAccepted) else filled)[
                    report.client_order_id
                ] += 1
                if len(filled) == SMOKE_ORDERS and len(acked) == SMOKE_ORDERS:
                    break
            for feed in feeds:
                assert await feed.wait() == 0
        await no_more(c)
    assert set(acked) == set(filled) == {f"s-{i}" for i in range(SMOKE_ORDERS)}
    assert set(acked.values()) == set(filled.values()) == {1}
    taken = SMOKE_ORDERS + probes
    assert f"oms-sim stopped: {taken} orders (0 resends, {taken} answered)" in run.out
    assert f" {SMOKE_ORDERS + 1} fills" in run.out  # one probe filled
    print(run.out)
