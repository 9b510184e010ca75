"""The daemon end to end against a real mosquitto: quotes in, decisions, orders on the OMS
topic, reports back, status out; shadow and paper modes; bad payloads; signed commands;
SIGTERM on a subprocess. Plus the loop's ordering with a fake session (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import msgspec
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.daemon.assembly import build_live_engine
from adapters.daemon.core import DECISION_TYPES, ReceiveClock, apply_record
from adapters.daemon.run import Daemon, run_daemon
from adapters.journal_file import FileJournalReader
from adapters.live_sender import ShadowSender
from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.ingest import CommandIn, Connection, MarketData, ReportIn
from adapters.mqtt.status import Status, decode_status
from adapters.mqtt.topics import Topics
from adapters.sim_venue import SimulatedVenue
from engine.codec import EventCodec
from engine.config import load_config
from engine.errors import ConfigError
from engine.events import (
    Command,
    Fill,
    OrderAccepted,
    OrderRequest,
    Quote,
)
from engine.journal import ClockRecord, CommandRecord, FeedRecord, MarketDataRecord
from engine.ports import OrderRouter, SendOnly
from engine.strategy import Strategy
from tests.integration.conftest import COMMAND_KEY, Broker
from tests.support import FakeSession, quotes

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BTC"
CODEC = EventCodec("json")


class BuyOnceParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    qty: float = 1.0


class BuyOnce(Strategy):
    """Buys ``qty`` at market on the first quote it sees."""

    name = "buy_once"
    Params = BuyOnceParams

    def __init__(self, params: BuyOnceParams) -> None:
        super().__init__(params)
        self.qty = params.qty
        self.sent = False

    def on_quote(self, quote: Quote) -> None:
        if not self.sent:
            self.sent = True
            self.ctx.submit_market(quote.instrument, "buy", self.qty)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    tmp: Path,
    mode: str,
    port: int,
    *,
    heartbeat: str = "100ms",
    max_quote_age: str = "60s",
    metrics_port: int = 0,
    max_payload_bytes: int = 1024,
) -> Path:
    path = tmp / f"{mode}.toml"
    path.write_text(f"""
mode = "{mode}"

[[instruments]]
symbol = "{SYMBOL}"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001

[[features]]
name = "mid"
kind = "mid"

[strategy]
name = "tests.integration.test_daemon:BuyOnce"
params = {{ qty = 1.0 }}

[risk]
max_order_qty = 5.0
max_position = 5.0
max_quote_age = "{max_quote_age}"

[venue.sim]
latency = "0us"
fee_bps = 1.0

[mqtt]
host = "127.0.0.1"
port = {port}
username_env = "TL_TEST_MQTT_USER"
password_env = "TL_TEST_MQTT_PASSWORD"
max_payload_bytes = {max_payload_bytes}
reconnect_min = "50ms"
reconnect_max = "200ms"

[live]
node = "n1"
account = "a1"
heartbeat = "{heartbeat}"
order_timeout = "30s"
command_key_env = "TL_TEST_COMMAND_KEY"
metrics_port = {metrics_port}
shutdown_timeout = "3s"

[journal]
dir = "{(tmp / "journal").as_posix()}"
fsync = "batch"
""")
    return path


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Daemon]:
    """The daemon of ``config`` as a task of this loop; stopped gracefully on exit."""
    stop = asyncio.Event()
    built: list[Daemon] = []
    task = asyncio.create_task(run_daemon(config, stop=stop, on_ready=built.append))
    try:
        while not built:
            await asyncio.sleep(0.01)
        yield built[0]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15.0) == 0


def _client(broker: Broker, *, operator: bool = False) -> aiomqtt.Client:
    user, password = (
        (broker.operator, broker.operator_password)
        if operator
        else (broker.username, broker.password)
    )
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                          protocol=aiomqtt.ProtocolVersion.V5)  # fmt: skip


class Watcher:
    """A test client subscribed to the daemon's orders and status topics."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.orders: list[OrderRequest] = []
        self.statuses: list[Status] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.subscribe([("oms/a1/orders", 1), ("tradeloop/n1/status", 1)])
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, bytes)
            if message.topic.matches("oms/a1/orders"):
                event = CODEC.decode(payload)
                if isinstance(event, OrderRequest):
                    self.orders.append(event)
            else:
                self.statuses.append(decode_status(payload))

    async def wait(self, what: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not what():
                await asyncio.sleep(0.02)

    async def status(self, what: Callable[[Status], bool], timeout: float = 10.0) -> Status:
        await self.wait(lambda: bool(self.statuses) and what(self.statuses[-1]), timeout)
        return self.statuses[-1]

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


@contextlib.asynccontextmanager
async def watching(broker: Broker) -> AsyncIterator[tuple[Watcher, aiomqtt.Client]]:
    async with _client(broker) as feed:
        watcher = Watcher(feed)
        await watcher.start()
        try:
            yield watcher, feed
        finally:
            watcher.stop()


async def publish_quote(client: aiomqtt.Client, bid: float = 100.0, ask: float = 100.5) -> None:
    ts = time.time_ns()
    quote = Quote(ts_event=ts, ts_recv=ts, instrument=SYMBOL, bid=bid, ask=ask, bid_size=3.0,
                  ask_size=3.0)  # fmt: skip
    await client.publish(f"md/SIM/{SYMBOL}/quote", CODEC.encode(quote), qos=0)


N1 = Topics(node="n1", account="a1")  # the test daemon's target


async def publish_command(
    client: aiomqtt.Client, action: str, *, signed: bool = True, key: str = COMMAND_KEY
) -> None:
    ts = time.time_ns()
    payload = CODEC.encode(Command(ts_event=ts, ts_recv=ts, action=action,  # type: ignore[arg-type]
                                   reason="test", issuer="ops"))  # fmt: skip
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if signed:
        props.UserProperty = [(SIGNATURE_PROPERTY, sign_command(payload, key.encode(), N1))]
    await client.publish("tradeloop/n1/command", payload, qos=1, properties=props)


def _records(journal: Path) -> list[object]:
    return list(FileJournalReader(journal))


def _decisions(journal: Path, session_id: str) -> list[dict[str, object]]:
    text = (journal / f"decisions-{session_id}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _replayed_decisions(config: Path, journal: Path, session_id: str, prefix: str) -> list[str]:
    """Decisions of a fresh engine fed the journal: the parity the journal promises."""
    cfg, _ = load_config(config)
    router: OrderRouter
    if cfg.mode == "paper":
        sim = cfg.venue.sim
        router = SimulatedVenue(sim.latency_ns, sim.fee_bps, sim.maker_fee_bps)
    else:
        router = SendOnly(ShadowSender())
    engine = build_live_engine(cfg, router, order_id_prefix=prefix)
    lines: list[str] = []
    engine.sinks.append(
        lambda e: lines.append(CODEC.encode(e).decode()) if isinstance(e, DECISION_TYPES) else None
    )
    for record in FileJournalReader(journal):
        apply_record(engine, record)
    return lines


# against the broker


@pytest.mark.asyncio
async def test_daemon_live_quote_order_fill_status_and_journal(
    daemon_env: Broker, tmp_path: Path
) -> None:
    metrics_port = _free_port()
    config = write_config(tmp_path, "live", daemon_env.port, metrics_port=metrics_port)
    async with watching(daemon_env) as (watcher, feed), running(config) as daemon:
        await watcher.status(lambda s: s.online and s.mode == "live")
        await publish_quote(feed)
        await watcher.wait(lambda: len(watcher.orders) == 1)
        order = watcher.orders[0]
        assert order.side == "buy" and order.qty == 1.0 and order.instrument == SYMBOL
        assert order.client_order_id.startswith(f"n1-{daemon.session_id}-")
        ts = time.time_ns()
        accepted = OrderAccepted(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id,
                                 venue_order_id="v1")  # fmt: skip
        fill = Fill(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id, fill_id="f1",
                    instrument=SYMBOL, side="buy", qty=1.0, price=100.5, fee=0.01,
                    liquidity="taker")  # fmt: skip
        for report in (accepted, fill, fill):  # the fill twice: booked once
            await feed.publish("oms/a1/reports", CODEC.encode(report), qos=1)
        status = await watcher.status(lambda s: s.positions.get(SYMBOL) == 1.0)
        assert status.state == "ACTIVE"
        await watcher.wait(lambda: daemon.engine.counters["fills_duplicate"] == 1)
        text = _scrape(metrics_port)
        assert "tradeloop_tick_to_order_seconds_count 1.0" in text
        assert 'tradeloop_orders_total{status="published"} 1.0' in text
        assert 'tradeloop_orders_total{status="filled"} 2.0' in text
        assert 'tradeloop_messages_in_total{kind="report"} 3.0' in text
        assert 'tradeloop_build_info{version="' in text
        assert len(daemon.latencies_ns) == 1 and 0 < daemon.latencies_ns[0] < 100_000_000
        await watcher.wait(  # set at the next heartbeat
            lambda: 'tradeloop_position{instrument="BTC"} 1.0' in _scrape(metrics_port)
        )
    # after the stop: offline status retained, journal and decisions on disk
    assert watcher.statuses[-1].state == "offline" and not watcher.statuses[-1].online
    journal = tmp_path / "journal"
    records = _records(journal)
    assert isinstance(records[0], ClockRecord)
    assert any(isinstance(r, MarketDataRecord) for r in records)
    last = records[-1]
    assert isinstance(last, CommandRecord) and last.command.issuer == "daemon"
    assert last.command.action == "kill"
    assert [r.seq for r in records] == list(range(1, len(records) + 1))  # type: ignore[attr-defined]
    decisions = _decisions(journal, daemon.session_id)
    types = [d["type"] for d in decisions]
    assert "order_request" in types and types[-1] == "trading_state"
    manifest = json.loads((journal / f"session-{daemon.session_id}.json").read_text())
    assert manifest["mode"] == "live" and manifest["order_id_prefix"] == daemon.order_id_prefix
    assert (journal / f"session-{daemon.session_id}.toml").read_bytes() == config.read_bytes()
    replayed = _replayed_decisions(config, journal, daemon.session_id, daemon.order_id_prefix)
    assert replayed == (journal / f"decisions-{daemon.session_id}.jsonl").read_text().splitlines()


@pytest.mark.asyncio
async def test_daemon_shadow_logs_orders_and_sends_nothing(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "shadow", daemon_env.port)
    async with watching(daemon_env) as (watcher, feed), running(config) as daemon:
        await watcher.status(lambda s: s.online and s.mode == "shadow")
        await publish_quote(feed)
        await watcher.wait(lambda: daemon.engine.counters["orders_sent"] == 1)
        await asyncio.sleep(0.3)
        assert watcher.orders == []
    decisions = _decisions(tmp_path / "journal", daemon.session_id)
    assert [d["type"] for d in decisions].count("order_request") == 1
    assert any(isinstance(r, MarketDataRecord) for r in _records(tmp_path / "journal"))


@pytest.mark.asyncio
async def test_daemon_paper_fills_on_the_simulated_venue(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "paper", daemon_env.port)
    async with watching(daemon_env) as (watcher, feed), running(config) as daemon:
        await watcher.status(lambda s: s.online and s.mode == "paper")
        await publish_quote(feed)
        status = await watcher.status(lambda s: s.positions.get(SYMBOL) == 1.0)
        assert status.pnl < 0.0  # bought at the ask, marked at the mid, paid the fee
        assert watcher.orders == []
    journal = tmp_path / "journal"
    replayed = _replayed_decisions(config, journal, daemon.session_id, daemon.order_id_prefix)
    assert replayed == (journal / f"decisions-{daemon.session_id}.jsonl").read_text().splitlines()


@pytest.mark.asyncio
async def test_daemon_bad_payloads_are_counted_and_send_no_order(
    daemon_env: Broker, tmp_path: Path
) -> None:
    metrics_port = _free_port()
    config = write_config(tmp_path, "live", daemon_env.port, metrics_port=metrics_port)
    async with watching(daemon_env) as (watcher, feed), running(config) as daemon:
        await watcher.status(lambda s: s.online)
        topic = f"md/SIM/{SYMBOL}/quote"
        ts = time.time_ns()
        crossed = Quote(ts_event=ts, ts_recv=ts, instrument=SYMBOL, bid=101.0, ask=100.0,
                        bid_size=1.0, ask_size=1.0)  # fmt: skip
        wrong = Quote(ts_event=ts, ts_recv=ts, instrument="ETH", bid=1.0, ask=2.0,
                      bid_size=1.0, ask_size=1.0)  # fmt: skip
        for payload in (b"not json", b'{"type":"quote"}', b"x" * 5000, CODEC.encode(crossed),
                        CODEC.encode(crossed), CODEC.encode(wrong), b"\xff\xfe"):  # fmt: skip
            await feed.publish(topic, payload, qos=0)
        await feed.publish("oms/a1/reports", b"[1,2,3]", qos=1)

        def counted() -> bool:
            return "tradeloop_decode_errors_total" in _scrape(metrics_port) and (
                daemon.core is not None
                and sum(
                    v
                    for k, v in _session_counters(metrics_port).items()
                    if k.startswith("tradeloop_decode_errors_total")
                )
                >= 8
            )

        await watcher.wait(counted)
        text = _scrape(metrics_port)
        assert 'tradeloop_decode_errors_total{reason="oversized"} 1.0' in text
        assert 'tradeloop_decode_errors_total{reason="crossed"} 2.0' in text
        assert 'tradeloop_decode_errors_total{reason="undecodable"}' in text
        await asyncio.sleep(0.3)
        assert watcher.orders == [] and daemon.engine.counters["orders_requested"] == 0
        assert (await watcher.status(lambda s: s.online)).state == "ACTIVE"


def _session_counters(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in _scrape(port).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.asyncio
async def test_daemon_signed_commands_flatten_and_kill_unsigned_ignored(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "live", daemon_env.port)
    async with (
        watching(daemon_env) as (watcher, feed),
        _client(daemon_env, operator=True) as operator,
        running(config) as daemon,
    ):
        await watcher.status(lambda s: s.online)
        await publish_quote(feed)
        await watcher.wait(lambda: len(watcher.orders) == 1)
        cid = watcher.orders[0].client_order_id
        ts = time.time_ns()
        fill = Fill(ts_event=ts, ts_recv=ts, client_order_id=cid, fill_id="f1", instrument=SYMBOL,
                    side="buy", qty=1.0, price=100.5, fee=0.0, liquidity="taker")  # fmt: skip
        await feed.publish("oms/a1/reports", CODEC.encode(fill), qos=1)
        await watcher.status(lambda s: s.positions.get(SYMBOL) == 1.0)
        # unsigned, and signed with the wrong key: no effect
        await publish_command(operator, "kill", signed=False)
        await publish_command(operator, "kill", key="wrong-key")
        await asyncio.sleep(0.4)
        assert daemon.engine.risk.state == "ACTIVE"
        # the daemon user may not publish commands at all (broker ACL)
        await publish_command(feed, "kill")
        await asyncio.sleep(0.3)
        assert daemon.engine.risk.state == "ACTIVE"
        await publish_command(operator, "flatten")
        await watcher.wait(lambda: len(watcher.orders) == 2)
        flat = watcher.orders[1]
        assert (flat.side, flat.qty, flat.reduce_only) == ("sell", 1.0, True)
        assert (await watcher.status(lambda s: s.state == "REDUCE_ONLY")).online
        await publish_command(operator, "kill")
        await watcher.status(lambda s: s.state == "HALTED")
    commands = [r for r in _records(tmp_path / "journal") if isinstance(r, CommandRecord)]
    assert [(c.command.action, c.command.issuer) for c in commands] == [
        ("flatten", "ops"),
        ("kill", "ops"),
        ("kill", "daemon"),
    ]


@pytest.mark.asyncio
async def test_daemon_stale_feed_halts_and_fresh_quotes_restore(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "shadow", daemon_env.port, max_quote_age="300ms")
    async with watching(daemon_env) as (watcher, feed), running(config) as daemon:
        await watcher.status(lambda s: s.state == "HALTED")  # no quote since start
        await publish_quote(feed)
        await watcher.status(lambda s: s.state == "ACTIVE")
        await watcher.status(lambda s: s.state == "HALTED")  # and quiet again
        assert daemon.engine.counters["market_data_lost"] >= 2
    feeds = [r.feed.status for r in _records(tmp_path / "journal") if isinstance(r, FeedRecord)]
    assert feeds[:3] == ["lost", "restored", "lost"]


def test_daemon_sigterm_exits_zero_offline_status_and_clean_journal(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "live", daemon_env.port)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.daemon.cli", "run", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    async def until_online() -> None:
        async with _client(daemon_env) as c:
            await c.subscribe("tradeloop/n1/status", qos=1)
            async with asyncio.timeout(30):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    if decode_status(m.payload).online:
                        return

    try:
        asyncio.run(until_online())
    except TimeoutError:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the daemon never came online: {err.decode()[-2000:]}")
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no exit within 20 s of SIGTERM: {err.decode()[-2000:]}")
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("session") and "stopped" in line["message"]
               for line in lines)  # fmt: skip
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)

    async def retained() -> Status:
        async with _client(daemon_env) as c:
            await c.subscribe("tradeloop/n1/status", qos=1)
            async with asyncio.timeout(10):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    return decode_status(m.payload)
        raise AssertionError("no retained status")

    status = asyncio.run(retained())
    assert status.state == "offline" and not status.online and status.mode == "live"
    journal = tmp_path / "journal"
    reader = FileJournalReader(journal)
    records = list(reader)
    assert reader.torn is None and records
    assert isinstance(records[-1], CommandRecord) and records[-1].command.action == "kill"
    assert next(iter(journal.glob("decisions-*.jsonl"))).stat().st_size > 0


def test_daemon_refuses_a_replay_config_and_a_missing_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, "live", 1883)
    monkeypatch.delenv("TL_TEST_MQTT_USER", raising=False)
    with pytest.raises(ConfigError, match="TL_TEST_MQTT_USER"):
        Daemon.create(config)
    replay = tmp_path / "replay.toml"
    replay.write_text(config.read_text().replace('mode = "live"', 'mode = "replay"'))
    monkeypatch.setenv("TL_TEST_MQTT_USER", "u")
    monkeypatch.setenv("TL_TEST_MQTT_PASSWORD", "p")
    with pytest.raises(ConfigError, match="mode"):
        Daemon.create(replay)


# the loop without a broker


@pytest.mark.asyncio
async def test_daemon_loop_journals_each_input_before_applying_in_stream_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_TEST_MQTT_USER", "u")
    monkeypatch.setenv("TL_TEST_MQTT_PASSWORD", "p")
    config = write_config(tmp_path, "live", 1883, heartbeat="50ms")
    session = FakeSession()
    clock = ReceiveClock()
    stop = asyncio.Event()
    built: list[Daemon] = []
    seen_at_apply: list[int] = []

    def factory(*args: object) -> FakeSession:
        return session

    task = asyncio.create_task(
        run_daemon(
            config,
            stop=stop,
            receive_clock=clock,
            session_factory=factory,  # type: ignore[arg-type]
            on_ready=built.append,
        )
    )
    while not built:
        await asyncio.sleep(0.01)
    daemon = built[0]
    while daemon.core is None:
        await asyncio.sleep(0.01)
    journal = daemon.core.journal
    daemon.engine.sinks.append(lambda e: seen_at_apply.append(journal.next_seq))
    t = clock()
    await session.inbox.put(Connection(connected=True, ts_recv=t, reason="connected"))
    batch = quotes([(t, 100.0, 100.5, 2.0, 2.0)])
    await session.inbox.put(MarketData(batch=batch, ts_recv=t, messages=1))
    async with asyncio.timeout(5):
        while not session.orders:
            await asyncio.sleep(0.01)
    order = session.orders[0]
    assert isinstance(order, OrderRequest)
    # a report stamped before the engine's time (it waited in a full inbox) is clamped
    early = t - 1_000
    fill = Fill(ts_event=early, ts_recv=early, client_order_id=order.client_order_id,
                fill_id="f1", instrument=SYMBOL, side="buy", qty=1.0, price=100.5, fee=0.0,
                liquidity="taker")  # fmt: skip
    await session.inbox.put(ReportIn(report=fill, ts_recv=early))
    cmd = Command(ts_event=t, ts_recv=t, action="reduce_only", issuer="ops", reason="x")
    await session.inbox.put(CommandIn(command=cmd, ts_recv=early))
    async with asyncio.timeout(5):
        while daemon.engine.risk.state != "REDUCE_ONLY":
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)  # a few heartbeats
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert daemon.core.counters["receive_time_clamped"] == 2
    records = _records(tmp_path / "journal")
    kinds = [type(r).__name__ for r in records]
    assert kinds[0] == "ClockRecord" and kinds.count("ClockRecord") >= 3
    assert (
        kinds.index("MarketDataRecord") < kinds.index("ReportRecord") < kinds.index("CommandRecord")
    )
    ts = [r.ts_recv for r in records]  # type: ignore[attr-defined]
    assert ts == sorted(ts)
    # every event the engine emitted came after the input that caused it was journaled
    assert all(seq > 1 for seq in seen_at_apply)
    assert session.statuses[-1].state == "offline"
    assert session.statuses[-1].positions == {SYMBOL: 1.0}
    assert [s.heartbeat_seq for s in session.statuses] == sorted(
        s.heartbeat_seq for s in session.statuses
    )


class _NeverConnects(FakeSession):
    async def __aenter__(self) -> FakeSession:
        await asyncio.Event().wait()  # a broker that never answers: retries forever
        return self


@pytest.mark.asyncio
async def test_daemon_stop_while_connecting_exits_zero_and_closes_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_TEST_MQTT_USER", "u")
    monkeypatch.setenv("TL_TEST_MQTT_PASSWORD", "p")
    config = write_config(tmp_path, "live", 1883)
    stop = asyncio.Event()
    built: list[Daemon] = []
    task = asyncio.create_task(
        run_daemon(
            config,
            stop=stop,
            session_factory=lambda *args: _NeverConnects(),  # type: ignore[arg-type]
            on_ready=built.append,
        )
    )
    while not built or built[0].core is None:
        await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    core = built[0].core
    assert core is not None and core.journal.state == "closed"
    assert isinstance(_records(tmp_path / "journal")[0], ClockRecord)
