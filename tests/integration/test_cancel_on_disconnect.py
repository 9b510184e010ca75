"""Cancel-on-disconnect, part of the OMS contract (issue 20, item 6), against a real
mosquitto: ``oms-sim`` cancels a daemon's working orders when its last will fires (the
daemon SIGKILLed) or its heartbeat lapses (the daemon frozen), per account, and leaves
them working when the account has it off."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.mqtt.status import decode_status
from adapters.tools.oms.disconnect import CancelOnDisconnect
from adapters.tools.oms.oms_sim import MqttOmsSimulator
from adapters.tools.oms.simulated_oms import SimulatedOms
from tests.integration.conftest import Broker
from tests.integration.test_reliability import (
    ROOT,
    TOPICS,
    client,
    new_oms,
    quote,
    until,
    write_config,
)


@contextlib.asynccontextmanager
async def _oms_sim(
    broker: Broker, oms: SimulatedOms, on_disconnect: CancelOnDisconnect
) -> AsyncIterator[MqttOmsSimulator]:
    sim = MqttOmsSimulator(oms, host=broker.host, port=broker.port, topics=TOPICS,
                           username=broker.operator, password=broker.operator_password,
                           client_id=f"oms-sim-{time.monotonic_ns()}",
                           cancel_on_disconnect=on_disconnect)  # fmt: skip
    stop = asyncio.Event()
    async with sim:
        task = asyncio.create_task(sim.serve(stop), name="oms-sim")
        try:
            yield sim
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await task


def _working(oms: SimulatedOms) -> list[str]:
    return [o.order.client_order_id for o in oms.open_orders() if o.status == "accepted"]


async def _daemon_with_resting_order(
    broker: Broker, tmp_path: Path, oms: SimulatedOms
) -> tuple[subprocess.Popen[bytes], str]:
    """A daemon process, online, with one limit order resting at the OMS."""
    config = write_config(tmp_path, broker.port, every=1_000_000)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    status: list[tuple[int, bool]] = []
    spawned = time.time_ns()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.daemon.cli", "run", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with client(broker) as feed:
            await feed.subscribe(TOPICS.status, qos=1)

            async def read() -> None:
                async for m in feed.messages:
                    s = decode_status(bytes(m.payload))
                    status.append((s.ts_ns, s.online))

            reader = asyncio.create_task(read())
            try:
                await until(lambda: any(ts >= spawned and on for ts, on in status), 60)
                await quote(feed, 100.0, 100.5)
                await until(lambda: bool(_working(oms)), 10)
            finally:
                reader.cancel()
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    (working,) = _working(oms)
    return proc, working


@pytest.mark.asyncio
async def test_oms_sim_daemon_sigkilled_last_will_cancels_its_resting_orders(
    daemon_env: Broker, tmp_path: Path
) -> None:
    oms = new_oms()
    async with _oms_sim(daemon_env, oms, CancelOnDisconnect(enabled=True)):
        proc, working = await _daemon_with_resting_order(daemon_env, tmp_path, oms)
        killed = time.monotonic()
        proc.kill()  # SIGKILL: no goodbye, no cancel of its own; the broker sends the will
        await asyncio.to_thread(proc.wait, 10)
        await until(lambda: oms.orders[working].status == "cancelled", 5)
        elapsed = time.monotonic() - killed
    assert oms.counters["cancels_on_disconnect"] == 1
    assert oms.counters["nodes_offline"] >= 1
    assert oms.counters["cancels"] == 0  # the daemon itself sent none
    print(f"\ncancel-on-disconnect after SIGKILL: {elapsed:.3f} s")


@pytest.mark.asyncio
async def test_oms_sim_daemon_frozen_heartbeat_lapse_cancels_its_resting_orders(
    daemon_env: Broker, tmp_path: Path
) -> None:
    oms = new_oms()
    on_disconnect = CancelOnDisconnect(enabled=True, heartbeat_lapse_s=0.5)
    async with _oms_sim(daemon_env, oms, on_disconnect):
        proc, working = await _daemon_with_resting_order(daemon_env, tmp_path, oms)
        try:
            proc.send_signal(signal.SIGSTOP)  # connected, silent: the will cannot fire yet
            await until(lambda: oms.orders[working].status == "cancelled", 2.0)
            # before the broker's keepalive (2 s, times 1.5) could have fired the will
            assert oms.counters["heartbeats_lapsed"] == 1
            assert oms.counters["nodes_offline"] == 0
        finally:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)


@pytest.mark.asyncio
async def test_oms_sim_cancel_on_disconnect_off_sigkilled_daemon_orders_stay_working(
    daemon_env: Broker, tmp_path: Path
) -> None:
    oms = new_oms()
    async with _oms_sim(daemon_env, oms, CancelOnDisconnect(enabled=False)):
        proc, working = await _daemon_with_resting_order(daemon_env, tmp_path, oms)
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        await asyncio.sleep(1.0)
        assert oms.orders[working].status == "accepted"
    assert oms.counters["cancels_on_disconnect"] == 0
