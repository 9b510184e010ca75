"""MqttSession against a real mosquitto (the ``broker`` fixture): ingest, order, signatures,
status and will, broker restart, inbox overflow; market data on its own connection (receipt
order across the two, one ``Connection`` item each way, keepalive, TLS); and the ingest rate
beside mosquitto_sub, in a burst and paced."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from numba import typeof
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.ingest import Ingest
from adapters.mqtt.session import (
    CommandIn,
    Connection,
    Inbound,
    MarketData,
    MqttSession,
    Overflow,
    ReportIn,
)
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.status import Status, decode_status, encode_status, offline_payload
from adapters.mqtt.topics import Topics
from adapters.mqtt.validation import MessageLimits
from engine.codec import EventCodec
from engine.errors import AdapterError
from engine.events import CancelRequest, Command, Fill, OrderAccepted, OrderRequest, Quote
from engine.instruments import Instrument, InstrumentTable
from engine.ticks import QUOTE, TickBatch
from tests.integration.conftest import MOSQUITTO, Broker

ROOT = Path(__file__).resolve().parents[2]
KEY = b"operator-key"
# Quotes and reports here are stamped BASE + a small id (the tests follow them by it) and
# age by at most the run's length: the sessions take a day either way, the checks of
# market data's age are the validation tests' (tests/adapters/mqtt/test_validation.py)
BASE = time.time_ns()
_DAY = 86_400 * 1_000_000_000
WIDE = MessageLimits(max_tick_age_ns=_DAY, max_tick_future_ns=_DAY)
TOPICS = Topics(node="n1", account="a1")
INSTRUMENTS = InstrumentTable(
    [Instrument(symbol="BTC-USD", venue="X"), Instrument(symbol="ETH-USD", venue="X")]
)
CODEC = EventCodec("json")
QUOTE_TOPIC = TOPICS.quote("X", "BTC-USD")


def _settings(broker: Broker, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "username": broker.username,
        "password": broker.password,
        "client_id": f"tradeloop-test-{os.getpid()}",
        "command_key": KEY,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        "limits": WIDE,
    }
    values.update(overrides)
    return MqttSettings(**values)


def _receive_clock() -> Callable[[], int]:
    last = 0

    def clock() -> int:
        nonlocal last
        last = max(last, time.time_ns())
        return last

    return clock


def _session(broker: Broker, **overrides: Any) -> MqttSession:
    return MqttSession(
        _settings(broker, **overrides),
        TOPICS,
        INSTRUMENTS,
        receive_clock=_receive_clock(),
        will_payload=offline_payload(TOPICS.node),
    )


@asynccontextmanager
async def _client(broker: Broker, *, operator: bool = False) -> AsyncIterator[aiomqtt.Client]:
    """The other side: an OMS / feed (user daemon) or the operator."""
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
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        yield client


def _quote(ts: int, symbol: str = "BTC-USD", bid: float = 100.0) -> Quote:
    return Quote(
        ts_event=BASE + ts,
        ts_recv=0,
        instrument=symbol,
        bid=bid,
        ask=bid + 0.5,
        bid_size=1.0,
        ask_size=2.0,
    )


def _ids(batch: TickBatch) -> list[int]:
    """The ids of a batch's ticks (their ``ts_event`` less ``BASE``)."""
    return [t - BASE for t in batch.ts_event.tolist()]


def _signed(payload: bytes, key: bytes = KEY) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [(SIGNATURE_PROPERTY, sign_command(payload, key, TOPICS))]
    return properties


async def _get(session: MqttSession, timeout: float = 5.0) -> Inbound:
    return await asyncio.wait_for(session.inbox.get(), timeout)


async def _until_ticks(session: MqttSession, ticks: int, timeout: float = 30.0) -> list[Inbound]:
    """Items until ``ticks`` market-data rows have arrived."""
    items: list[Inbound] = []
    seen = 0
    async with asyncio.timeout(timeout):
        while seen < ticks:
            item = await session.inbox.get()
            items.append(item)
            if isinstance(item, MarketData):
                seen += len(item.batch)
    return items


def _burst(broker: Broker, lines: list[bytes], topic: str = QUOTE_TOPIC) -> subprocess.Popen[bytes]:
    """mosquitto_pub -l: one message per line of stdin, as fast as the C client goes.

    Stdin is a file, not a pipe: writing megabytes into a pipe would block this process
    (and the session's event loop in it) while mosquitto_pub publishes, and a rate
    measured beside mosquitto_sub, another process, would not compare like with like.
    """
    with tempfile.TemporaryFile() as stdin:
        stdin.write(b"\n".join(lines) + b"\n")
        stdin.seek(0)
        return subprocess.Popen(
            [
                *("mosquitto_pub", "-V", "5", "-h", broker.host, "-p", str(broker.port)),
                *("-u", broker.username, "-P", broker.password, "-t", topic, "-l"),
            ],
            stdin=stdin,
        )


def _quote_lines(n: int) -> list[bytes]:
    return [CODEC.encode(_quote(i + 1, bid=100.0 + (i % 50) * 0.01)) for i in range(n)]


@pytest.mark.asyncio
async def test_session_quotes_in_arrive_as_tick_batch_with_columns(broker: Broker) -> None:
    async with _session(broker) as session, _client(broker) as feed:
        first = await _get(session)
        assert isinstance(first, Connection) and first.connected
        assert session.state == "connected"
        await feed.publish(QUOTE_TOPIC, CODEC.encode(_quote(10)))
        await feed.publish(TOPICS.quote("X", "ETH-USD"), CODEC.encode(_quote(11, "ETH-USD", 20.0)))
        items = await _until_ticks(session, 2)
    batches = [i for i in items if isinstance(i, MarketData)]
    rows = [
        (
            int(b.batch.ts_event[k]) - BASE,
            int(b.batch.instrument[k]),
            float(b.batch.bid[k]),
            float(b.batch.ask[k]),
            int(b.batch.kind[k]),
        )
        for b in batches
        for k in range(len(b.batch))
    ]
    assert rows == [(10, 0, 100.0, 100.5, QUOTE), (11, 1, 20.0, 20.5, QUOTE)]
    stamps = [i.ts_recv for i in [first, *items]]
    assert stamps == sorted(stamps)
    state: str = session.state  # after the block
    assert state == "closed"


def test_session_one_quote_batch_has_the_columns_of_the_many_quote_path() -> None:
    # a lone quote (the live loop's usual batch) takes a shorter path to its TickBatch:
    # same values, dtypes, contiguity and numba types as that quote among others
    ingest = Ingest(TOPICS, INSTRUMENTS, fmt="json", max_payload_bytes=4096, command_key=None,
                    counters=Counter(), limits=WIDE)  # fmt: skip
    quote = (QUOTE_TOPIC, CODEC.encode(_quote(10, bid=100.07)), None, False)
    (one,) = ingest.decode([quote], BASE + 77)
    (two,) = ingest.decode([quote, quote], BASE + 77)
    assert isinstance(one, MarketData) and isinstance(two, MarketData)
    for column in TickBatch.__slots__:
        a, b = getattr(one.batch, column), getattr(two.batch, column)[:1].copy()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), column
        assert a.flags.c_contiguous and typeof(a) == typeof(b), column


@pytest.mark.asyncio
async def test_session_burst_arrives_in_few_batches_nothing_lost(broker: Broker) -> None:
    n = 5000
    async with _session(broker) as session:
        assert isinstance(await _get(session), Connection)
        proc = _burst(broker, _quote_lines(n))
        items = await _until_ticks(session, n)
        await asyncio.to_thread(proc.wait)
    batches = [i for i in items if isinstance(i, MarketData)]
    ts_event = [t for b in batches for t in _ids(b.batch)]
    assert ts_event == list(range(1, n + 1))  # nothing lost, arrival order kept
    assert sum(b.messages for b in batches) == n
    print(f"\n{n} quotes in {len(batches)} batches (mean {n / len(batches):.1f} per batch)")
    assert len(batches) < n / 4  # micro-batched, not one item per message
    assert session.counters["messages_in_quote"] == n


@pytest.mark.asyncio
async def test_session_one_connection_reports_commands_quotes_keep_broker_order(
    broker: Broker,
) -> None:
    """Market data at QoS 1 shares the MQTT 5 connection: the broker's order, exactly."""
    accepted = OrderAccepted(
        ts_event=BASE + 5, ts_recv=0, client_order_id="S-1", venue_order_id="V-1"
    )
    fill = Fill(
        ts_event=BASE + 6,
        ts_recv=0,
        client_order_id="S-1",
        fill_id="F-1",
        instrument="BTC-USD",
        side="buy",
        qty=0.5,
        price=100.5,
        fee=0.01,
        liquidity="taker",
    )
    kill = Command(ts_event=time.time_ns(), ts_recv=0, action="kill", reason="test", issuer="ops")
    kill_payload = CODEC.encode(kill)
    async with (
        _session(broker, market_data_qos=1) as session,
        _client(broker, operator=True) as operator,
    ):
        assert isinstance(await _get(session), Connection)
        # one publisher connection at QoS 1: the broker forwards in this order
        await operator.publish(QUOTE_TOPIC, CODEC.encode(_quote(1)), qos=1)
        await operator.publish(TOPICS.reports, CODEC.encode(accepted), qos=1)
        await operator.publish(QUOTE_TOPIC, CODEC.encode(_quote(2)), qos=1)
        await operator.publish(
            TOPICS.command, kill_payload, qos=1, properties=_signed(kill_payload)
        )
        await operator.publish(TOPICS.reports, CODEC.encode(fill), qos=1)
        await operator.publish(QUOTE_TOPIC, CODEC.encode(_quote(3)), qos=1)
        seen: list[object] = []
        last = 0
        while len(seen) < 6:
            item = await _get(session)
            assert item.ts_recv >= last
            last = item.ts_recv
            if isinstance(item, MarketData):
                seen += [f"quote {t}" for t in _ids(item.batch)]
            elif isinstance(item, ReportIn):
                seen.append(item.report)
            elif isinstance(item, CommandIn):
                seen.append(item.command)
    assert seen == ["quote 1", accepted, "quote 2", kill, fill, "quote 3"]


def _report(k: int) -> OrderAccepted:
    return OrderAccepted(ts_event=BASE + k, ts_recv=0, client_order_id=f"S-{k}", venue_order_id="V")


@pytest.mark.asyncio
async def test_session_two_connections_inbox_in_receipt_order(broker: Broker) -> None:
    """Market data at QoS 0 has its own connection: each connection keeps the broker's
    order, and across them the inbox is in receipt order (stamps never decrease; a report
    or a command is an item of its own, between batches)."""
    kill = Command(ts_event=time.time_ns(), ts_recv=0, action="kill", reason="test", issuer="ops")
    kill_payload = CODEC.encode(kill)
    async with _session(broker) as session, _client(broker, operator=True) as operator:
        assert isinstance(await _get(session), Connection)
        # each message received before the next is sent: receipt order is this order
        steps: list[tuple[str, bytes, Any]] = [
            (QUOTE_TOPIC, CODEC.encode(_quote(1)), None),
            (TOPICS.reports, CODEC.encode(_report(1)), None),
            (QUOTE_TOPIC, CODEC.encode(_quote(2)), None),
            (TOPICS.command, kill_payload, _signed(kill_payload)),
            (QUOTE_TOPIC, CODEC.encode(_quote(3)), None),
        ]
        stepped: list[Inbound] = []
        for topic, payload, properties in steps:
            await operator.publish(topic, payload, qos=1, properties=properties)
            stepped.append(await _get(session))
        assert [type(i) for i in stepped] == [
            MarketData,
            ReportIn,
            MarketData,
            CommandIn,
            MarketData,
        ]
        assert [_ids(i.batch) for i in stepped if isinstance(i, MarketData)] == [
            [1],
            [2],
            [3],
        ]

        # a burst of quotes on one connection while reports come on the other
        n, reports = 5000, 50
        proc = _burst(broker, [CODEC.encode(_quote(10 + i)) for i in range(n)])
        for k in range(reports):
            await operator.publish(TOPICS.reports, CODEC.encode(_report(100 + k)), qos=1)
        items = await _until_ticks(session, n)
        async with asyncio.timeout(10):
            while sum(isinstance(i, ReportIn) for i in items) < reports:
                items.append(await session.inbox.get())
        await asyncio.to_thread(proc.wait)
    stamps = [i.ts_recv for i in [*stepped, *items]]
    assert stamps == sorted(stamps)
    quotes = [t for i in items if isinstance(i, MarketData) for t in _ids(i.batch)]
    assert quotes == list(range(10, 10 + n))
    assert [i.report for i in items if isinstance(i, ReportIn)] == [
        _report(100 + k) for k in range(reports)
    ]
    batches = sum(isinstance(i, MarketData) for i in items)
    print(f"\n{n} quotes in {batches} batches, {reports} reports between them")


async def _intrude(broker: Broker, identifier: str) -> None:
    """Connect with ``identifier`` and leave: the broker drops the session's connection of
    that id (session takeover); the session's own reconnect may drop this one first."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V311,
        ):
            pass


@pytest.mark.asyncio
async def test_session_either_connection_lost_one_connection_item_each_way(
    broker: Broker,
) -> None:
    """One ``Connection(False)`` when either connection is lost (the reason names it),
    ``Connection(True)`` when it is back; the other connection is untouched."""
    settings = _settings(broker)
    async with _session(broker) as session, _client(broker) as feed:
        assert isinstance(await _get(session), Connection)
        seen: list[Connection] = []
        for identifier, link in (
            (f"{settings.client_id}-md", "market data"),
            (settings.client_id, "reports/commands"),
        ):
            await _intrude(broker, identifier)
            lost = await _get(session, timeout=10)
            back = await _get(session, timeout=10)
            assert isinstance(lost, Connection) and isinstance(back, Connection)
            assert not lost.connected and lost.reason.startswith(f"{link}: ")
            assert back.connected and back.reason == "reconnected"
            assert session.state == "connected"
            seen += [lost, back]
            # market data flows again once the session says it is connected
            await feed.publish(QUOTE_TOPIC, CODEC.encode(_quote(len(seen))))
            items = await _until_ticks(session, 1, timeout=10)
            assert [type(i) for i in items] == [MarketData]
        await asyncio.sleep(0.2)
        assert session.inbox.empty()  # no second item for one loss
    assert [c.connected for c in seen] == [False, True, False, True]
    c = session.counters
    assert (c["connection_lost"], c["reconnects"]) == (2, 2)
    assert (c["feed_connection_lost"], c["feed_reconnects"]) == (1, 1)


@pytest.mark.asyncio
async def test_session_idle_feed_kept_alive_by_pingreq(broker: Broker) -> None:
    """The broker drops a client silent for 1.5 keepalives; an idle feed pings."""
    async with _session(broker, keepalive_s=2) as session, _client(broker) as feed:
        assert isinstance(await _get(session), Connection)
        await asyncio.sleep(5.0)
        assert session.inbox.empty()
        await feed.publish(QUOTE_TOPIC, CODEC.encode(_quote(5)))
        items = await _until_ticks(session, 1)
    assert [type(i) for i in items] == [MarketData]
    assert session.counters["feed_connection_lost"] == 0


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr, ext = (folder / n for n in ("server.pem", "server.key", "server.csr", "ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca"]
        + ["-keyout", str(ca_key), "-out", str(ca)],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"]
        + ["-keyout", str(key), "-out", str(csr)],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key)]
        + ["-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert)],
    ):
        subprocess.run(["openssl", *argv], check=True, capture_output=True)
    return ca, cert, key


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    """A mosquitto with one TLS listener (anonymous), and its CA file."""
    if MOSQUITTO is None or shutil.which("openssl") is None:
        pytest.skip("mosquitto or openssl is not installed")
    ca, cert, key = _tls_files(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = tmp_path / "mosquitto.log"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\npersistence false\nlog_dest file {log}\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not _port_open(port):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "TLS broker not listening"
            time.sleep(0.02)
        yield Broker("127.0.0.1", port, "", "", "", "", log), ca
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.asyncio
async def test_session_tls_market_data_connection_uses_the_same_context(
    tls_broker: tuple[Broker, Path],
) -> None:
    broker, ca = tls_broker
    session = MqttSession(
        MqttSettings(
            host=broker.host,
            port=broker.port,
            client_id=f"tradeloop-tls-{os.getpid()}",
            tls=True,
            ca_file=str(ca),
            limits=WIDE,
        ),
        TOPICS,
        INSTRUMENTS,
        receive_clock=_receive_clock(),
        will_payload=offline_payload(TOPICS.node),
    )
    async with (
        session,
        aiomqtt.Client(
            broker.host, broker.port, tls_context=ssl.create_default_context(cafile=str(ca))
        ) as feed,
    ):
        assert isinstance(await _get(session), Connection)
        await feed.publish(QUOTE_TOPIC, CODEC.encode(_quote(7)))
        items = await _until_ticks(session, 1)
    assert [_ids(i.batch) for i in items if isinstance(i, MarketData)] == [[7]]
    assert session.counters["messages_in_quote"] == 1


@pytest.mark.asyncio
async def test_session_bad_payloads_counted_nothing_enqueued(broker: Broker) -> None:
    order = OrderRequest(
        ts_event=1, ts_recv=0, client_order_id="c", instrument="BTC-USD", side="buy", qty=1.0
    )
    crossed = Quote(
        ts_event=BASE + 1,
        ts_recv=0,
        instrument="BTC-USD",
        bid=101.0,
        ask=100.0,
        bid_size=1.0,
        ask_size=1.0,
    )
    bad = [
        (QUOTE_TOPIC, b"{malformed"),
        (QUOTE_TOPIC, b"x" * 2000),  # oversized
        (QUOTE_TOPIC, CODEC.encode(_quote(1, symbol="DOGE"))),  # unknown symbol
        (QUOTE_TOPIC, CODEC.encode(crossed)),
        (QUOTE_TOPIC, CODEC.encode(order)),  # wrong type for the topic
        (TOPICS.reports, CODEC.encode(_quote(1))),  # wrong type for the topic
        (TOPICS.trade("X", "BTC-USD") + "s", CODEC.encode(_quote(1))),  # no such kind
        ("md/X/BTC-USD/depth", CODEC.encode(_quote(1))),  # the subscription matches it
    ]
    async with _session(broker, max_payload_bytes=1024) as session, _client(broker) as feed:
        assert isinstance(await _get(session), Connection)
        for topic, payload in bad:
            await feed.publish(topic, payload, qos=1)
        await feed.publish(QUOTE_TOPIC, CODEC.encode(_quote(99)), qos=1)  # sentinel
        items = await _until_ticks(session, 1)
        await asyncio.sleep(0.1)
        assert session.inbox.empty()
    assert [_ids(i.batch) for i in items if isinstance(i, MarketData)] == [[99]]
    assert len(items) == 1
    c = session.counters
    assert c["bad_messages"] == 8
    assert (
        c["bad_undecodable"],
        c["oversized"],
        c["bad_unknown_symbol"],
        c["bad_crossed"],
        c["bad_wrong_type"],
        c["bad_unknown_topic"],
    ) == (1, 1, 1, 1, 3, 1)  # a Quote on the depth topic (it carries DepthUpdate): wrong type


@pytest.mark.asyncio
async def test_session_commands_need_signature_and_operator(broker: Broker) -> None:
    payload = CODEC.encode(
        Command(ts_event=time.time_ns(), ts_recv=0, action="reduce_only", issuer="ops")
    )
    resume = CODEC.encode(
        Command(ts_event=time.time_ns(), ts_recv=0, action="resume", issuer="ops")
    )
    async with (
        _session(broker) as session,
        _client(broker, operator=True) as operator,
        _client(broker) as daemon,
    ):
        assert isinstance(await _get(session), Connection)
        await operator.publish(TOPICS.command, payload, qos=1)  # unsigned
        await operator.publish(TOPICS.command, payload, qos=1, properties=_signed(payload, b"k"))
        # signed, but from a user the broker's ACL does not let publish commands
        await daemon.publish(TOPICS.command, resume, qos=1, properties=_signed(resume))
        await operator.publish(TOPICS.command, payload, qos=1, properties=_signed(payload))
        item = await _get(session)
        await asyncio.sleep(0.2)
        assert session.inbox.empty()
    assert isinstance(item, CommandIn)
    assert item.command.action == "reduce_only"
    assert session.counters["commands_unauthenticated"] == 2
    assert session.counters["messages_in_command"] == 3  # the ACL stopped the fourth


@pytest.mark.asyncio
async def test_session_orders_reach_oms_at_qos1(broker: Broker) -> None:
    order = OrderRequest(
        ts_event=1,
        ts_recv=2,
        client_order_id="S-7",
        instrument="BTC-USD",
        side="sell",
        qty=0.25,
        order_type="limit",
        limit_price=101.0,
    )
    cancel = CancelRequest(ts_event=3, ts_recv=4, client_order_id="S-7", instrument="BTC-USD")
    async with _client(broker) as oms:
        await oms.subscribe(TOPICS.orders, qos=1)
        async with _session(broker) as session:
            await session.publish_order(order)
            await session.publish_order(cancel)
            assert await session.flush(5.0)
            assert session.outbox_empty()
            received = []
            async with asyncio.timeout(5):
                async for message in oms.messages:
                    received.append(message)
                    if len(received) == 2:
                        break
    assert [m.qos for m in received] == [1, 1]
    assert [CODEC.decode(bytes(m.payload)) for m in received] == [order, cancel]
    assert session.counters["published_order"] == 1
    assert session.counters["published_cancel"] == 1


@pytest.mark.asyncio
async def test_session_publish_order_now_writes_in_the_call_in_order_at_qos1(
    broker: Broker,
) -> None:
    orders = [
        OrderRequest(
            ts_event=1,
            ts_recv=1,
            client_order_id=f"N-{n}",
            instrument="BTC-USD",
            side="buy",
            qty=0.5,
        )
        for n in range(4)
    ]
    async with _client(broker) as oms:
        await oms.subscribe(TOPICS.orders, qos=1)
        async with _session(broker) as session:
            assert session.publish_order_now(orders[0])
            assert not session.outbox_empty()  # written, not yet acknowledged
            assert session.publish_order_now(orders[1])
            await session.publish_order(orders[2])  # goes at once too: nothing waits
            assert session.publish_order_now(orders[3])
            assert await session.flush(5.0)
            assert session.outbox_empty()
            received = []
            async with asyncio.timeout(5):
                async for message in oms.messages:
                    received.append(message)
                    if len(received) == 4:
                        break
        assert not session.publish_order_now(orders[0])  # closed: declined, nothing sent
    assert [m.qos for m in received] == [1, 1, 1, 1]
    assert [CODEC.decode(bytes(m.payload)) for m in received] == orders
    assert session.counters["published_order"] == 4


def _status(seq: int, online: bool = True) -> Status:
    return Status(
        node=TOPICS.node,
        mode="paper",
        state="ACTIVE",
        online=online,
        ts_ns=time.time_ns(),
        positions={"BTC-USD": 0.5},
        pnl=1.25,
        heartbeat_seq=seq,
    )


async def _first_status(broker: Broker, timeout: float = 5.0) -> tuple[Status, bool]:
    async with _client(broker, operator=True) as viewer:
        await viewer.subscribe(TOPICS.status, qos=1)
        async with asyncio.timeout(timeout):
            async for message in viewer.messages:
                return decode_status(bytes(message.payload)), message.retain
    raise AssertionError("no status")


_CHILD = """
import asyncio, os, sys, time
from adapters.mqtt.session import MqttSession
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.status import Status, encode_status, offline_payload
from adapters.mqtt.topics import Topics
from engine.instruments import Instrument, InstrumentTable

async def main():
    settings = MqttSettings(host=sys.argv[1], port=int(sys.argv[2]), username=sys.argv[3],
                            password=os.environ["MQTT_PASSWORD"], client_id="tradeloop-child")
    topics = Topics(node="n1", account="a1")
    instruments = InstrumentTable([Instrument(symbol="BTC-USD", venue="X")])
    async with MqttSession(settings, topics, instruments, receive_clock=time.time_ns,
                           will_payload=offline_payload("n1")) as session:
        await session.publish_status(encode_status(Status(
            node="n1", mode="live", state="ACTIVE", online=True, ts_ns=time.time_ns(),
            positions={}, pnl=0.0, heartbeat_seq=1)))
        assert await session.flush(5.0)
        print("ready", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_session_status_retained_and_will_offline_when_killed(broker: Broker) -> None:
    async with _session(broker) as session:
        await session.publish_status(encode_status(_status(1)))
        assert await session.flush(5.0)
    status, retained = await _first_status(broker)  # a late subscriber
    assert retained and status.online and status.heartbeat_seq == 1
    assert session.counters["published_status"] == 1

    # a daemon process killed without a disconnect: the broker publishes its will
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, broker.host, str(broker.port), broker.username],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MQTT_PASSWORD": broker.password},
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == b"ready"
        status, _ = await _first_status(broker)
        assert status.online and status.mode == "live"
        child.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.wait)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    async with asyncio.timeout(5):
        while True:
            status, retained = await _first_status(broker)
            if not status.online:
                break
            await asyncio.sleep(0.05)
    assert retained
    assert status == decode_status(offline_payload(TOPICS.node))


def _mosquitto_pid(conf: Path) -> int:
    want = [MOSQUITTO, "-c", str(conf)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if [a.decode() for a in argv] == want:
            return int(entry.name)
    raise AssertionError(f"no mosquitto running with {conf}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _restart_broker(broker: Broker) -> subprocess.Popen[bytes]:
    """Kill the fixture's mosquitto (a crash, no goodbye) and start a new one on the same
    port and config, except that its password file leaves out the daemon's user until
    ``_open_gate``: the OMS can subscribe before the session is let back in, so nothing
    the session resends can go out before anyone listens. The caller stops the new one."""
    assert MOSQUITTO is not None
    folder = broker.log.parent
    conf, passwd, gate = folder / "mosquitto.conf", folder / "passwd", folder / "passwd-gated"
    shutil.copyfile(passwd, gate)
    subprocess.run(
        ["mosquitto_passwd", "-D", str(gate), broker.username], check=True, capture_output=True
    )
    gated = folder / "mosquitto-gated.conf"
    gated.write_text(
        conf.read_text().replace(f"password_file {passwd}\n", f"password_file {gate}\n")
    )
    os.kill(_mosquitto_pid(conf), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _port_open(broker.port):
        assert time.monotonic() < deadline, "old broker still listening"
        time.sleep(0.02)
    time.sleep(0.3)  # the session notices and starts its backoff against a closed port
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(gated)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while not _port_open(broker.port):
        assert proc.poll() is None, broker.log.read_text(errors="replace")
        assert time.monotonic() < deadline, "new broker not listening"
        time.sleep(0.02)
    return proc


def _open_gate(broker: Broker, proc: subprocess.Popen[bytes]) -> None:
    """Let the daemon's user in again (mosquitto reloads its password file on SIGHUP)."""
    folder = broker.log.parent
    shutil.copyfile(folder / "passwd", folder / "passwd-gated")
    proc.send_signal(signal.SIGHUP)


@pytest.mark.asyncio
async def test_session_broker_restart_reconnects_and_resends(broker: Broker) -> None:
    order = OrderRequest(
        ts_event=1, ts_recv=0, client_order_id="S-9", instrument="BTC-USD", side="buy", qty=1.0
    )
    new_broker: subprocess.Popen[bytes] | None = None
    try:
        async with _session(broker) as session:
            assert isinstance(await _get(session), Connection)
            restart = asyncio.create_task(asyncio.to_thread(_restart_broker, broker))
            lost = await _get(session, timeout=10)
            assert isinstance(lost, Connection) and not lost.connected
            assert session.state in ("reconnecting", "connected")
            await session.publish_order(order)  # queued while the broker is away
            assert not session.outbox_empty()
            new_broker = await restart
            async with _client(broker, operator=True) as oms:
                await oms.subscribe(TOPICS.orders, qos=1)
                # refused reconnects (not authorized) are retried like a closed port
                await asyncio.sleep(0.3)
                gated: str = session.state
                assert session.inbox.empty() and gated == "reconnecting"
                _open_gate(broker, new_broker)
                back = await _get(session, timeout=15)
                assert isinstance(back, Connection) and back.connected
                assert back.ts_recv >= lost.ts_recv
                assert session.state == "connected"
                async with asyncio.timeout(10):
                    message = await anext(aiter(oms.messages))
                assert CODEC.decode(bytes(message.payload)) == order
                assert await session.flush(5.0)
                # and ingest resumed on the new connection
                await oms.publish(QUOTE_TOPIC, CODEC.encode(_quote(42)))
                items = await _until_ticks(session, 1, timeout=10)
                assert isinstance(items[-1], MarketData)
                assert _ids(items[-1].batch) == [42]
            assert session.counters["reconnects"] == 1
            assert session.counters["connection_lost"] == 1
            assert session.counters["feed_reconnects"] == 1
    finally:
        if new_broker is not None:
            new_broker.terminate()
            new_broker.wait(5)


@pytest.mark.asyncio
async def test_session_inbox_overflow_drops_oldest_market_data_with_overflow_item(
    broker: Broker,
) -> None:
    n = 1000
    session = _session(broker, inbox_size=2)
    session.max_pending_ticks = 100
    async with session:
        proc = _burst(broker, _quote_lines(n))
        async with asyncio.timeout(20):
            while session.counters["messages_in_quote"] < n:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(proc.wait)
        items: list[Inbound] = []
        while True:
            try:
                items.append(await _get(session, timeout=0.5))
            except TimeoutError:
                break
    assert isinstance(items[0], Connection)
    overflows = [i for i in items if isinstance(i, Overflow)]
    batches = [i for i in items if isinstance(i, MarketData)]
    dropped = sum(o.dropped_messages for o in overflows)
    assert overflows and dropped > 0
    assert dropped == session.counters["dropped_market_data"]
    kept = [t for b in batches for t in _ids(b.batch)]
    assert len(kept) + dropped == n  # nothing vanished without a count
    assert kept == sorted(kept)  # the oldest went, order kept
    assert kept[-100:] == list(range(n - 99, n + 1))  # the newest are all there
    index = items.index(overflows[-1])
    assert isinstance(items[index + 1], MarketData)  # announced before the cut batch
    stamps = [i.ts_recv for i in items]
    assert stamps == sorted(stamps)


@pytest.mark.asyncio
async def test_session_refused_credentials_raise_adapter_error(broker: Broker) -> None:
    session = _session(broker, password="wrong")
    with pytest.raises(AdapterError, match="refused"):
        async with session:
            pass
    assert session.state == "closed"


def _dead_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
@pytest.mark.parametrize("tls", [False, True])
async def test_session_no_broker_gives_up_naming_host_port_and_what_to_check(tls: bool) -> None:
    """Issue 24: the first connection to nothing is one clear error after the timeout:
    the broker's address, the cause, what to check (the transport's advice too), no
    internal name."""
    port = _dead_port()
    settings = MqttSettings(port=port, reconnect_min_s=0.05, reconnect_max_s=0.1,
                            first_connect_timeout_s=0.5, tls=tls)  # fmt: skip
    session = MqttSession(settings, TOPICS, INSTRUMENTS, receive_clock=_receive_clock(),
                          will_payload=offline_payload(TOPICS.node))  # fmt: skip
    started = time.monotonic()
    with pytest.raises(AdapterError) as caught:
        async with session:
            pass
    assert 0.5 <= time.monotonic() - started < 5.0
    message = str(caught.value)
    assert message.startswith(f"cannot reach the MQTT broker at 127.0.0.1:{port} (")
    assert "is mosquitto running" in message and "[mqtt] host and port" in message
    assert ("[mqtt] tls, ca_file" in message) == tls
    assert "tls = true" in message or tls
    assert message.endswith("(gave up after 0.5 s)") and "_connect" not in message
    assert session.state == "closed"


def test_run_without_a_broker_is_one_error_line_without_traceback(tmp_path: Path) -> None:
    """``tradeloop run`` through the dispatcher, in a process of its own, against a port
    nothing listens on (``[mqtt] first_connect_timeout = "1s"``): exit 2, stderr ends with
    one ``tradeloop: error:`` line naming host and port, no traceback."""
    from tests.integration.test_daemon import write_config

    port = _dead_port()
    config = write_config(tmp_path, "paper", port)
    config.write_text(
        config.read_text().replace("[mqtt]\n", '[mqtt]\nfirst_connect_timeout = "1s"\n', 1)
    )
    env = dict(os.environ, TL_TEST_MQTT_USER="u", TL_TEST_MQTT_PASSWORD="p",
               TL_TEST_COMMAND_KEY="k")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "replay.cli", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tradeloop: error: cannot reach the MQTT broker at 127.0.0.1:{port} ")
    assert "is mosquitto running" in last and "gave up after 1 s" in last
    assert "Traceback" not in proc.stderr and "_connect" not in proc.stderr


@pytest.mark.slow
@pytest.mark.asyncio
async def test_session_ingest_rate_beside_mosquitto_sub(broker: Broker) -> None:
    """Prints figures (no assertion on speed): 50k quotes by ``mosquitto_pub -l``."""
    n = 50_000
    lines = _quote_lines(n)

    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-V",
            "5",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-u",
            broker.username,
            "-P",
            broker.password,
            "-t",
            "md/X/BTC-USD/+",
            "-C",
            str(n),
        ],
        stdout=subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    pub = _burst(broker, lines)
    await asyncio.to_thread(sub.wait)
    sub_rate = n / (time.perf_counter() - t0)
    await asyncio.to_thread(pub.wait)

    async with _session(broker) as session:
        assert isinstance(await _get(session), Connection)
        cpu0, t0 = time.process_time(), time.perf_counter()
        pub = _burst(broker, lines)
        items = await _until_ticks(session, n, timeout=120)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await asyncio.to_thread(pub.wait)
    batches = sum(isinstance(i, MarketData) for i in items)
    rate = n / elapsed
    print(
        f"\ningest of {n} quotes (nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}): "
        f"MqttSession {rate:,.0f} msgs/s ({batches} batches, {cpu / n * 1e6:.1f} us CPU/msg), "
        f"mosquitto_sub {sub_rate:,.0f} msgs/s, ratio {rate / sub_rate:.2f}"
    )
    assert sum(len(i.batch) for i in items if isinstance(i, MarketData)) == n


_PACER = """
import sys, time
from engine.codec import EventCodec
from engine.events import Quote

n, rate = int(sys.argv[1]), float(sys.argv[2])
codec = EventCodec("json")
out = sys.stdout.buffer
start = time.perf_counter()
sent = 0
while sent < n:
    due = min(n, int((time.perf_counter() - start) * rate) + 1)
    lines = []
    for i in range(sent, due):
        q = Quote(ts_event=time.time_ns(), ts_recv=0, instrument="BTC-USD",
                  bid=100.0 + (i % 50) * 0.01, ask=101.0, bid_size=1.0, ask_size=2.0)
        lines.append(codec.encode(q))
    if lines:
        out.write(b"\\n".join(lines) + b"\\n")
        out.flush()
    sent = due
    time.sleep(0.0005)
"""


def _sub_latency_us(line: bytes) -> float:
    received, payload = line.split(b" ", 1)
    seconds, nanoseconds = received.split(b".")
    event = CODEC.decode(payload)
    return (int(seconds) * 1_000_000_000 + int(nanoseconds) - event.ts_event) / 1e3


@pytest.mark.slow
@pytest.mark.asyncio
async def test_session_paced_feed_beside_mosquitto_sub_nothing_lost(
    broker: Broker, tmp_path: Path
) -> None:
    """Prints figures: 20k quotes paced at 10k msgs/s, the session and ``mosquitto_sub``
    subscribed at once; nothing may be lost; latency is receipt minus send time."""
    n, rate = 20_000, 10_000.0
    sub_path = tmp_path / "mosquitto_sub.out"
    async with _session(broker) as session:
        assert isinstance(await _get(session), Connection)
        sub_file = sub_path.open("wb")
        sub = subprocess.Popen(
            [
                *("mosquitto_sub", "-h", broker.host, "-p", str(broker.port)),
                *("-u", broker.username, "-P", broker.password),
                *("-t", "md/X/BTC-USD/+", "-C", str(n), "-W", "60"),
                *("-F", "%U %p"),  # receive time (s.ns), payload
            ],
            stdout=sub_file,  # a file: a pipe read only at the end would stall it
        )
        await asyncio.sleep(0.5)
        pacer = subprocess.Popen(
            [sys.executable, "-c", _PACER, str(n), str(rate)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
        )
        pub = subprocess.Popen(
            [
                *("mosquitto_pub", "-h", broker.host, "-p", str(broker.port)),
                *("-u", broker.username, "-P", broker.password, "-t", QUOTE_TOPIC, "-l"),
            ],
            stdin=pacer.stdout,
        )
        assert pacer.stdout is not None
        pacer.stdout.close()  # mosquitto_pub holds it now
        t0 = time.perf_counter()
        items = await _until_ticks(session, n, timeout=60)
        elapsed = time.perf_counter() - t0
        await asyncio.to_thread(sub.wait)
        sub_file.close()
        await asyncio.to_thread(pacer.wait)
        await asyncio.to_thread(pub.wait)
    batches = [i for i in items if isinstance(i, MarketData)]
    latency_us = sorted(
        (int(v) / 1e3) for b in batches for v in (b.batch.ts_recv - b.batch.ts_event).tolist()
    )
    p50, p99 = latency_us[n // 2], latency_us[n * 99 // 100]
    sub_lines = sub_path.read_bytes().splitlines()
    sub_count = len(sub_lines)
    sub_latency_us = sorted(_sub_latency_us(line) for line in sub_lines)
    sub_p50, sub_p99 = sub_latency_us[sub_count // 2], sub_latency_us[sub_count * 99 // 100]
    print(
        f"\npaced {n} quotes at {rate:,.0f}/s (nproc {os.cpu_count()}, load "
        f"{os.getloadavg()[0]:.2f}): MqttSession {n / elapsed:,.0f} msgs/s, "
        f"{len(batches)} batches, latency p50 {p50:.0f} us p99 {p99:.0f} us, "
        f"lost {n - sum(len(b.batch) for b in batches)}; mosquitto_sub got {sub_count}, "
        f"latency p50 {sub_p50:.0f} us p99 {sub_p99:.0f} us"
    )
    assert [int(t) for b in batches for t in b.batch.ts_event] == sorted(
        int(t) for b in batches for t in b.batch.ts_event
    )
    assert sum(len(b.batch) for b in batches) == n
    assert sub_count == n
