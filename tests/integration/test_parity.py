"""Parity end to end: a live session over a real mosquitto, then its journal replayed.

The daemon runs in this process (``run_daemon``) in live mode. A strategy driven by a
repeating timer and by signals trades against a scripted OMS (acks, fills, a duplicate,
an order left unanswered until it times out), signed operator commands kill, resume and
flatten, and the daemon is stopped (its own kill). Then ``replay.sessions.parity`` must find the
replay's decisions equal to the session's log, bit for bit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

try:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from adapters.daemon.run import Daemon, run_daemon
    from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
    from adapters.mqtt.topics import Topics
except ImportError as exc:  # the daemon is not in this tree yet
    pytest.skip(f"the live daemon is not importable: {exc}", allow_module_level=True)

from engine.clock import TimerFired
from engine.codec import EventCodec
from engine.events import (
    CancelRequest,
    Command,
    CommandAction,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRequest,
    Quote,
    Signal,
)
from engine.strategy import Strategy
from replay.sessions.parity import cmd_parity, parity
from tests.integration.conftest import COMMAND_KEY, Broker

SYMBOL = "BTC"
CODEC = EventCodec("json")
MS = 1_000_000


class PulseParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_ns: int = 40 * MS
    limit_orders: int = 1


class Pulse(Strategy):
    """A market buy on the first signal into the upper zone; on a repeating timer, a limit
    buy below the bid (at most ``limit_orders``) while the state is ACTIVE and nothing is
    working."""

    name = "pulse"
    Params = PulseParams

    def __init__(self, params: PulseParams) -> None:
        super().__init__(params)
        self.pulse = params
        self.bought = False
        self.limits = 0

    def thresholds(self) -> list[float]:
        return [0.0]

    def on_start(self) -> None:
        interval = self.pulse.interval_ns
        self.ctx.set_timer("pulse", self.ctx.now_ns() + interval, interval)

    def on_signal(self, signal: Signal) -> None:
        if signal.zone == 1 and not self.bought:
            self.bought = True
            self.ctx.submit_market(SYMBOL, "buy", 1.0)

    def on_timer(self, timer: TimerFired) -> None:
        quote = self.ctx.last_quote(SYMBOL)
        if quote is None or self.limits >= self.pulse.limit_orders:
            return
        if self.ctx.trading_state != "ACTIVE" or self.ctx.open_qty(SYMBOL) != 0.0:
            return
        self.limits += 1
        self.ctx.submit_limit(SYMBOL, "buy", 0.5, quote.bid - 1.0)


def write_config(tmp: Path, port: int) -> Path:
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

[model]
kind = "linear"
name = "mid_level"
params = {{ features = ["mid"], weights = [1.0], bias = -100.0 }}

[strategy]
name = "tests.integration.test_parity:Pulse"
params = {{ interval_ns = {40 * MS}, limit_orders = 1 }}

[risk]
max_order_qty = 5.0
max_position = 5.0
max_quote_age = "60s"

[mqtt]
host = "127.0.0.1"
port = {port}
username_env = "TL_TEST_MQTT_USER"
password_env = "TL_TEST_MQTT_PASSWORD"
reconnect_min = "50ms"
reconnect_max = "200ms"

[live]
node = "n1"
account = "a1"
heartbeat = "50ms"
order_timeout = "300ms"
command_key_env = "TL_TEST_COMMAND_KEY"
metrics_port = 0
shutdown_timeout = "3s"

[journal]
dir = "{(tmp / "journal").as_posix()}"
fsync = "batch"
""")
    return path


def _client(broker: Broker, *, operator: bool = False) -> aiomqtt.Client:
    user, password = (
        (broker.operator, broker.operator_password)
        if operator
        else (broker.username, broker.password)
    )
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                          protocol=aiomqtt.ProtocolVersion.V5)  # fmt: skip


class Oms:
    """The test's OMS: reads the daemon's orders and cancels, publishes reports."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.orders: list[OrderRequest] = []
        self.cancels: list[CancelRequest] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.subscribe("oms/a1/orders", qos=1)
        self._task = asyncio.create_task(self._read(), name="oms-reader")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            event = CODEC.decode(message.payload)
            if isinstance(event, OrderRequest):
                self.orders.append(event)
            elif isinstance(event, CancelRequest):
                self.cancels.append(event)

    async def report(self, report: OrderAccepted | Fill | OrderCancelled) -> None:
        await self.client.publish("oms/a1/reports", CODEC.encode(report), qos=1)

    async def quote(self, bid: float, ask: float) -> None:
        ts = time.time_ns()
        quote = Quote(ts_event=ts, ts_recv=ts, instrument=SYMBOL, bid=bid, ask=ask,
                      bid_size=3.0, ask_size=3.0)  # fmt: skip
        await self.client.publish(f"md/SIM/{SYMBOL}/quote", CODEC.encode(quote), qos=0)


async def until(what: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.01)


async def command(operator: aiomqtt.Client, action: CommandAction) -> None:
    ts = time.time_ns()
    payload = CODEC.encode(
        Command(ts_event=ts, ts_recv=ts, action=action, reason="parity test", issuer="ops")
    )
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    signature = sign_command(payload, COMMAND_KEY.encode(), Topics(node="n1", account="a1"))
    props.UserProperty = [(SIGNATURE_PROPERTY, signature)]
    await operator.publish("tradeloop/n1/command", payload, qos=1, properties=props)


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    built: list[Daemon] = []
    task = asyncio.create_task(run_daemon(config, stop=stop, on_ready=built.append))
    try:
        await until(lambda: bool(built) or task.done())
        if task.done():
            task.result()  # raises what stopped it
        yield built[0]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15.0) == 0


def _now() -> int:
    return time.time_ns()


def _fill(order: OrderRequest, fill_id: str, price: float) -> Fill:
    ts = _now()
    return Fill(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id, fill_id=fill_id,
                instrument=order.instrument, side=order.side, qty=order.qty, price=price,
                fee=0.01, liquidity="taker")  # fmt: skip


def _ack(order: OrderRequest) -> OrderAccepted:
    ts = _now()
    return OrderAccepted(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id,
                         venue_order_id=f"v-{order.client_order_id}")  # fmt: skip


@pytest.mark.asyncio
async def test_parity_of_a_live_session_over_the_broker_is_exact(
    daemon_env: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, daemon_env.port)
    async with (
        _client(daemon_env) as feed,
        _client(daemon_env, operator=True) as operator,
    ):
        oms = Oms(feed)
        await oms.start()
        try:
            async with running(config) as daemon:
                engine = daemon.engine
                # below the threshold, again until the daemon has subscribed (QoS 0)
                async with asyncio.timeout(10):
                    while engine.counters["ticks"] == 0:
                        await oms.quote(99.0, 99.5)
                        await asyncio.sleep(0.1)
                # the pulse timer places its limit while the first quotes are in
                await until(lambda: any(o.order_type == "limit" for o in oms.orders))
                await oms.quote(100.0, 100.5)  # into the upper zone: a signal, a market buy
                await until(lambda: any(o.order_type == "market" for o in oms.orders))
                market = next(o for o in oms.orders if o.order_type == "market")
                await oms.report(_ack(market))
                fill = _fill(market, "f1", 100.5)
                await oms.report(fill)
                await oms.report(fill)  # a duplicate: booked once
                # the limit is never answered: UNKNOWN after the order timeout, reducing
                # only, its cancel goes out
                limit = next(o for o in oms.orders if o.order_type == "limit")
                await until(lambda: engine.counters["orders_unknown"] == 1)
                await until(lambda: any(c.client_order_id == limit.client_order_id
                                        for c in oms.cancels))  # fmt: skip
                await oms.report(_ack(limit))  # late: the engine trades again
                ts = _now()
                await oms.report(OrderCancelled(ts_event=ts, ts_recv=ts,
                                                client_order_id=limit.client_order_id))  # fmt: skip
                await until(
                    lambda: engine.risk.state == "ACTIVE" and not engine.orders.open_orders()
                )
                await oms.quote(100.5, 101.0)
                await command(operator, "kill")
                await until(lambda: engine.risk.state == "HALTED")
                await command(operator, "resume")
                await until(lambda: engine.risk.state == "ACTIVE")
                await command(operator, "flatten")
                await until(lambda: any(o.reduce_only for o in oms.orders))
                flatten = next(o for o in oms.orders if o.reduce_only)
                await oms.report(_ack(flatten))
                await oms.report(_fill(flatten, "f2", 100.75))
                await until(lambda: engine.counters["fills"] == 2)
                await oms.quote(99.5, 100.0)
                heartbeats = daemon.heartbeat_seq
                await until(lambda: daemon.heartbeat_seq >= heartbeats + 3)
                live_counters = dict(engine.counters)
        finally:
            oms.stop()
    journal = tmp_path / "journal"
    result = parity(journal)
    assert result.ok, "\n".join(result.differences)
    replay = result.replay
    assert result.session_id == daemon.session_id
    assert result.decisions_equal == result.decisions_logged == result.decisions_replayed
    kinds = {type(d).__name__ for d in replay.decisions}
    assert {"Signal", "OrderRequest", "CancelRequest", "TradingState", "Alarm"} <= kinds
    assert replay.timers_fired > 3 and replay.records["clock"] > 3
    assert replay.records["command"] == 4  # kill, resume, flatten, and the daemon's kill
    assert replay.orders == live_counters["orders_sent"] == 3
    assert replay.engine.counters["fills_duplicate"] == 1
    assert replay.engine.counters["orders_unknown"] == 1
    assert replay.engine.portfolio.positions.tolist() == [0.0]
    assert cmd_parity(argparse.Namespace(journal_dir=str(journal), session=None)) == 0
    assert capsys.readouterr().out.startswith(f"parity: {result.decisions_equal} decisions equal")
