"""Fault tests of the live daemon (issue 11) against a real mosquitto and ``oms-sim``:
restart reconciliation, the broker killed and restarted mid-session, the daemon killed
with SIGKILL and restarted again and again. Each prints the figures docs/reliability.md
quotes (``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from adapters.daemon.run import Daemon, run_daemon
from adapters.mqtt.status import decode_status
from adapters.mqtt.topics import Topics
from adapters.sim_venue import SimulatedVenue
from adapters.tools.oms.oms_sim import AnswerFault, MqttOmsSimulator
from adapters.tools.oms.simulated_oms import SimulatedOms
from engine.codec import EventCodec
from engine.events import Event, OrderRequest, Quote, Side, TradingState
from engine.instruments import Instrument, InstrumentTable
from engine.strategy import Strategy
from replay.sessions.journal_replay import replay_journal
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_mqtt_session import _open_gate, _restart_broker

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BTC"
TOPICS = Topics(node="n1", account="a1")
CODEC = EventCodec("json")


class ChurnParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    qty: float = 1.0
    every: int = 2  # a market order every ``every`` quotes
    rest: bool = True  # one resting limit buy far below the touch, once


class Churn(Strategy):
    """Trades on quotes: a market order every few quotes (buy when flat or short, else
    sell) and, once, a limit buy that rests at the OMS."""

    name = "churn"
    Params = ChurnParams

    def __init__(self, params: ChurnParams) -> None:
        super().__init__(params)
        self.p = params
        self.quotes = 0
        self.rested = False

    def on_quote(self, quote: Quote) -> None:
        self.quotes += 1
        if self.ctx.trading_state != "ACTIVE":
            return
        if self.p.rest and not self.rested:
            self.rested = True
            self.ctx.submit_limit(quote.instrument, "buy", self.p.qty, quote.bid - 5.0)
        if self.quotes % self.p.every == 0:
            side: Side = "buy" if self.ctx.position(quote.instrument) <= 0 else "sell"
            self.ctx.submit_market(quote.instrument, side, self.p.qty)


def write_config(
    tmp: Path, port: int, *, cancel_on_stop: bool = True, every: int = 2, rest: bool = True
) -> Path:
    path = tmp / "live.toml"
    path.write_text(f"""
mode = "live"

[[instruments]]
symbol = "{SYMBOL}"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001

[[features]]
name = "mid"
kind = "mid"

[strategy]
name = "tests.integration.test_reliability:Churn"
params = {{ qty = 1.0, every = {every}, rest = {str(rest).lower()} }}

[risk]
max_order_qty = 5.0
max_position = 5.0
max_quote_age = "60s"
warmup = false

[mqtt]
host = "127.0.0.1"
port = {port}
username_env = "TL_TEST_MQTT_USER"
password_env = "TL_TEST_MQTT_PASSWORD"
reconnect_min = "50ms"
reconnect_max = "200ms"
keepalive = "2s"

[live]
node = "n1"
account = "a1"
heartbeat = "50ms"
order_timeout = "5s"
cancel_on_stop = {str(cancel_on_stop).lower()}
command_key_env = "TL_TEST_COMMAND_KEY"
metrics_port = 0
shutdown_timeout = "3s"

[journal]
dir = "{(tmp / "journal").as_posix()}"
fsync = "batch"
""")
    return path


def new_oms() -> SimulatedOms:
    instruments = InstrumentTable([Instrument(symbol=SYMBOL, venue="SIM")])
    return SimulatedOms(instruments, SimulatedVenue(0, fee_bps=1.0))


@contextlib.asynccontextmanager
async def serving(
    broker: Broker,
    oms: SimulatedOms,
    fault: AnswerFault | None = None,
    *,
    drain_timeout_s: float = 5.0,
) -> AsyncIterator[MqttOmsSimulator]:
    """``oms-sim`` on the broker (as the operator user, whom a gated broker lets in),
    misbehaving as ``fault`` says if one is given."""
    sim = MqttOmsSimulator(oms, host=broker.host, port=broker.port, topics=TOPICS,
                           username=broker.operator, password=broker.operator_password,
                           client_id=f"oms-sim-{time.monotonic_ns()}", fault=fault)  # fmt: skip
    stop = asyncio.Event()
    async with sim:
        task = asyncio.create_task(sim.serve(stop, drain_timeout_s=drain_timeout_s),
                                   name="oms-sim")  # fmt: skip
        try:
            yield sim
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await task


def client(broker: Broker) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, username=broker.operator,
                          password=broker.operator_password,
                          identifier=f"feed-{time.monotonic_ns()}",
                          protocol=aiomqtt.ProtocolVersion.V5)  # fmt: skip


async def quote(feed: aiomqtt.Client, bid: float = 100.0, ask: float = 100.5) -> None:
    ts = time.time_ns()
    q = Quote(ts_event=ts, ts_recv=ts, instrument=SYMBOL, bid=bid, ask=ask, bid_size=10.0,
              ask_size=10.0)  # fmt: skip
    await feed.publish(f"md/SIM/{SYMBOL}/quote", CODEC.encode(q), qos=0)


async def until(what: Callable[[], bool], timeout: float = 10.0, every: float = 0.01) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    built: list[Daemon] = []
    task = asyncio.create_task(run_daemon(config, stop=stop, on_ready=built.append))
    try:
        await until(lambda: bool(built) and built[0].core is not None and not task.done())
        yield built[0]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15.0) == 0


def state_of(daemon: Daemon) -> str:
    return daemon.engine.risk.state


def manifests(journal: Path) -> list[dict[str, object]]:
    found = [json.loads(p.read_text()) for p in journal.glob("session-*.json")]
    return sorted(found, key=lambda m: int(str(m["first_seq"])))


# 1. start-up reconciliation


@pytest.mark.asyncio
async def test_restart_applies_missed_fill_once_flags_external_halts_on_difference(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port, cancel_on_stop=False, every=10**6)
    journal = tmp_path / "journal"
    oms = new_oms()
    async with serving(daemon_env, oms), client(daemon_env) as feed:
        # session 1: one limit buy rests at the OMS; stopped without cancelling it
        async with running(config):
            async with asyncio.timeout(10):
                while not oms.open_orders():
                    await quote(feed)
                    await asyncio.sleep(0.05)
        resting = oms.open_orders()[0].order
        # while the daemon is away: the limit fills (its report reaches nobody), and
        # someone else's order arrives at the OMS
        await quote(feed, bid=94.0, ask=94.5)
        await until(lambda: oms.positions[SYMBOL] == 1.0)
        external = OrderRequest(ts_event=1, ts_recv=1, client_order_id="ext-1",
                                instrument=SYMBOL, side="sell", qty=2.0, order_type="limit",
                                limit_price=500.0)  # fmt: skip
        await feed.publish(TOPICS.orders, CODEC.encode(external), qos=1)
        await until(lambda: len(oms.open_orders()) == 1)
        # session 2: rebuilt, then the missed fill applied once, the external order flagged
        async with running(config) as second:
            await until(lambda: second.reconciliation["runs"] == 1)
            engine = second.engine
            assert second.history.records > 0
            assert second.reconciliation["missed_fills"] == 1
            assert engine.portfolio.positions.tolist() == [1.0]
            assert engine.orders.get(resting.client_order_id).filled_qty == 1.0
            assert engine.counters["reports_unknown_order"] >= 1  # ext-1, flagged
            assert engine.risk.state == "ACTIVE"  # the shutdown kill lifted: they agree
        # session 3: nothing new; then the OMS's position is changed behind our back
        async with running(config) as third:
            await until(lambda: third.reconciliation["runs"] == 1)
            assert third.reconciliation["missed_fills"] == 0
            assert third.engine.counters["fills_duplicate"] == 0
        oms.positions[SYMBOL] = 3.0
        async with running(config) as fourth:
            alarms: list[Event] = []
            fourth.engine.sinks.append(alarms.append)
            await until(lambda: fourth.engine.risk.state == "HALTED")
            await until(lambda: any(type(e).__name__ == "Alarm" for e in alarms))
            messages = [getattr(e, "message", "") for e in alarms]
            assert "position BTC: engine 1, OMS 3" in messages
            oms.positions[SYMBOL] = 1.0  # put right: the next check lifts the halt
            await until(lambda: fourth.engine.risk.state == "ACTIVE", timeout=10)
    for m in manifests(journal):
        assert parity(journal, session=str(m["session_id"])).ok
    print(f"\nrestart reconciliation: sessions {len(manifests(journal))}, "
          f"start-up reconciliation {second.reconciliation['start_ms']} ms")  # fmt: skip


# 2. broker loss


@pytest.mark.asyncio
async def test_broker_killed_mid_session_loss_state_in_one_turn_reconciled_after_reconnect(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port, every=3)
    oms = new_oms()
    states: list[tuple[float, TradingState]] = []
    new_broker: subprocess.Popen[bytes] | None = None
    try:
        async with running(config) as daemon:
            engine = daemon.engine
            engine.sinks.append(
                lambda e: (
                    states.append((time.monotonic(), e)) if isinstance(e, TradingState) else None
                )
            )
            async with contextlib.AsyncExitStack() as old:  # they die with the broker
                await old.enter_async_context(serving(daemon_env, oms))
                feed = await old.enter_async_context(client(daemon_env))
                async with asyncio.timeout(10):
                    while oms.counters["fills"] < 3 or not oms.open_orders():
                        await quote(feed)
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)
                assert engine.risk.state == "ACTIVE"
                killed_at = time.monotonic()
                restart = asyncio.create_task(asyncio.to_thread(_restart_broker, daemon_env))
                await until(lambda: engine.risk.state == "HALTED")
                lost_s = states[-1][0] - killed_at
                new_broker = await restart
            async with serving(daemon_env, oms), client(daemon_env) as feed:
                # the OMS is back first: the resting buy fills, its report is lost to us
                await quote(feed, bid=90.0, ask=90.5)
                await until(lambda: not oms.open_orders())
                runs = daemon.reconciliation["runs"]
                reopened = time.monotonic()
                _open_gate(daemon_env, new_broker)
                await until(lambda: daemon.reconciliation["runs"] > runs, timeout=15)
                reconnect_s = time.monotonic() - reopened
                assert state_of(daemon) == "HALTED"  # no fresh quote yet
                await quote(feed)
                await until(lambda: engine.risk.state == "ACTIVE")
                assert engine.portfolio.positions.tolist() == [oms.positions[SYMBOL]]
                assert daemon.reconciliation["missed_fills"] >= 1
    finally:
        if new_broker is not None:
            new_broker.terminate()
            new_broker.wait(5)
    journal = tmp_path / "journal"
    assert parity(journal).ok
    print(f"\nbroker loss: data-loss state {lost_s * 1000:.0f} ms after the kill; "
          f"reconnected and reconciled {reconnect_s * 1000:.0f} ms after the broker let "
          f"the daemon in")  # fmt: skip


@pytest.mark.asyncio
async def test_broker_back_but_oms_silent_halts_until_it_answers(
    daemon_env: Broker, tmp_path: Path
) -> None:
    """After a reconnect nobody knows what became of the orders in flight: an OMS that does
    not answer the reconciliation keeps trading HALTED, a fresh feed notwithstanding, until
    it answers."""
    config = write_config(tmp_path, daemon_env.port, every=3)
    oms = new_oms()
    new_broker: subprocess.Popen[bytes] | None = None
    try:
        async with running(config) as daemon:
            engine = daemon.engine
            async with contextlib.AsyncExitStack() as old:  # they die with the broker
                await old.enter_async_context(serving(daemon_env, oms))
                feed = await old.enter_async_context(client(daemon_env))
                async with asyncio.timeout(10):
                    while oms.counters["fills"] < 1:
                        await quote(feed)
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)
                restart = asyncio.create_task(asyncio.to_thread(_restart_broker, daemon_env))
                await until(lambda: engine.risk.state == "HALTED")
                new_broker = await restart
            async with client(daemon_env) as feed:  # the broker is back, the OMS is not
                failed = daemon.reconciliation["failed"]
                _open_gate(daemon_env, new_broker)
                await until(lambda: daemon.reconciliation["failed"] > failed, timeout=20)
                for _ in range(10):
                    await quote(feed)
                    await asyncio.sleep(0.05)
                assert engine.risk.state == "HALTED"
                assert engine.risk.trading.claim("reconciliation") == "HALTED"
            runs = daemon.reconciliation["runs"]
            async with serving(daemon_env, oms), client(daemon_env) as feed:
                await until(lambda: daemon.reconciliation["runs"] > runs, timeout=20)
                await quote(feed)
                await until(lambda: engine.risk.state == "ACTIVE", timeout=10)
                assert engine.portfolio.positions.tolist() == [oms.positions[SYMBOL]]
    finally:
        if new_broker is not None:
            new_broker.terminate()
            new_broker.wait(5)
    assert parity(tmp_path / "journal").ok


# 3. crash recovery


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.daemon.cli", "run", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def _online_after(status: list[tuple[int, bool]], spawned_ns: int, timeout: float) -> None:
    await until(lambda: any(ts >= spawned_ns and on for ts, on in status), timeout)


KILLS = int(os.environ.get("TL_RELIABILITY_KILLS", "10"))


@pytest.mark.asyncio
async def test_daemon_sigkilled_repeatedly_no_duplicate_order_no_double_fill(
    daemon_env: Broker, tmp_path: Path
) -> None:
    figures = await crash_loop(daemon_env, tmp_path, kills=KILLS, seed=11)
    assert figures["duplicate_orders"] == 0
    assert figures["fills_double_booked"] == 0
    assert figures["position_difference"] == 0.0
    assert figures["parity_ok"]
    print(f"\ncrash recovery: {json.dumps(figures)}")


def tear(journal: Path) -> None:
    """A write cut short by the crash: half a frame at the end of the newest file."""
    newest = sorted(journal.glob("journal-*.tlj"))[-1]
    with newest.open("ab") as f:
        f.write((100).to_bytes(4, "little") + b"\x00" * 14)


async def crash_loop(broker: Broker, tmp_path: Path, *, kills: int, seed: int) -> dict[str, object]:
    """Start the daemon as a process, trade, SIGKILL it at a random point, ``kills``
    times; then start it once more, let it reconcile, stop it. The figures."""
    rng = random.Random(seed)
    config = write_config(tmp_path, broker.port, every=2)
    journal = tmp_path / "journal"
    oms = new_oms()
    status: list[tuple[int, bool]] = []
    restarts_s: list[float] = []
    async with serving(broker, oms), client(broker) as feed:
        await feed.subscribe(TOPICS.status, qos=1)

        async def read() -> None:
            async for m in feed.messages:
                s = decode_status(bytes(m.payload))
                status.append((s.ts_ns, s.online))

        reader = asyncio.create_task(read())
        try:
            for _ in range(kills + 1):
                spawned = time.time_ns()
                t0 = time.monotonic()
                proc = _spawn(config)
                try:
                    await _online_after(status, spawned, 60)
                    restarts_s.append(time.monotonic() - t0)
                    if len(restarts_s) == kills + 1:  # the last one: reconcile, then stop
                        await asyncio.sleep(1.0)
                        proc.send_signal(signal.SIGTERM)
                        await asyncio.to_thread(proc.wait, 20)
                        break
                    end = time.monotonic() + rng.uniform(0.05, 1.2)
                    while time.monotonic() < end:
                        await quote(feed, 100.0 + rng.uniform(-0.5, 0.5), 100.6)
                        await asyncio.sleep(0.005)
                finally:
                    if proc.poll() is None:
                        proc.kill()  # SIGKILL: no goodbye, no flush
                        await asyncio.to_thread(proc.wait, 10)
                        if len(restarts_s) % 4 == 2:
                            tear(journal)
            await asyncio.sleep(0.5)
        finally:
            reader.cancel()
    sessions = manifests(journal)
    last = replay_journal(journal, session=str(sessions[-1]["session_id"]))
    engine = last.engine
    ids = [o.request.client_order_id for o in oms.orders.values()]
    fill_ids = [f.fill_id for f in oms.fills]
    return {
        "kills": kills,
        "sessions": len(sessions),
        "orders_at_oms": oms.counters["orders"],
        "duplicate_orders": oms.counters["resends"] + len(ids) - len(set(ids)),
        "fills_at_oms": len(fill_ids),
        "fills_booked": engine.counters["fills"],
        "fills_double_booked": engine.counters["fills"] - len(set(fill_ids)),
        "fills_duplicate_refused": engine.counters["fills_duplicate"],
        "position_engine": float(engine.portfolio.positions[0]),
        "position_oms": oms.positions[SYMBOL],
        "position_difference": abs(float(engine.portfolio.positions[0]) - oms.positions[SYMBOL]),
        "torn_tails_cut": sum(int(str(m.get("torn_tails_cut", 0))) for m in sessions),
        "torn_bytes_cut": sum(int(str(m.get("torn_bytes_cut", 0))) for m in sessions),
        "records": last.history_records + last.record_count,
        "restart_to_online_s_median": sorted(restarts_s)[len(restarts_s) // 2],
        "parity_ok": parity(journal).ok,
    }
