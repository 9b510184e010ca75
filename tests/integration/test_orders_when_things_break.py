"""When things break, orders do not linger (issue 20, items 4 and 5), against a real
mosquitto: a journal that cannot be written cancels the working orders before the daemon
exits; an order that outlived its connection is never sent after the reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.mqtt.ingest import Connection, ReportIn
from adapters.mqtt.status import decode_status
from adapters.tools.oms.simulated_oms import SimulatedOms
from engine.events import Alarm, CancelRequest, OrderRejected, OrderRequest
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_mqtt_session import (
    CODEC,
    TOPICS,
    _client,
    _get,
    _open_gate,
    _restart_broker,
    _session,
)
from tests.integration.test_reliability import (
    ROOT,
    client,
    new_oms,
    quote,
    running,
    serving,
    state_of,
    until,
    write_config,
)


@pytest.mark.asyncio
async def test_session_order_older_than_max_order_age_after_reconnect_withdrawn_cancel_sent(
    broker: Broker,
) -> None:
    new_broker: subprocess.Popen[bytes] | None = None
    try:
        async with _session(broker, max_order_age_ns=500_000_000) as session:
            assert isinstance(await _get(session), Connection)
            restart = asyncio.create_task(asyncio.to_thread(_restart_broker, broker))
            lost = await _get(session, timeout=10)
            assert isinstance(lost, Connection) and not lost.connected
            now = time.time_ns()
            order = OrderRequest(ts_event=now, ts_recv=now, client_order_id="n1-S-1",
                                 instrument="BTC-USD", side="buy", qty=1.0)  # fmt: skip
            cancel = CancelRequest(ts_event=now, ts_recv=now, client_order_id="n1-S-0",
                                   instrument="BTC-USD")  # fmt: skip
            await session.publish_order(order)  # queued while the broker is away
            await session.publish_order(cancel)
            new_broker = await restart
            async with _client(broker, operator=True) as oms:
                await oms.subscribe(TOPICS.orders, qos=1)
                await asyncio.sleep(0.6)  # the order is older than max_order_age now
                _open_gate(broker, new_broker)
                sent = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        async for message in oms.messages:
                            sent.append(CODEC.decode(bytes(message.payload)))
                assert cancel in sent  # the cancel goes
                # the order never does (if it was written to the dying connection, its
                # own cancel follows: the broker may have forwarded it)
                assert not [m for m in sent if isinstance(m, OrderRequest)]
                assert {m.client_order_id for m in sent} <= {"n1-S-0", "n1-S-1"}
                assert await session.flush(5.0)
                items = [await _get(session, timeout=5) for _ in range(2)]
                assert any(isinstance(i, Connection) and i.connected for i in items)
                (rejected,) = [i for i in items if isinstance(i, ReportIn)]
                assert isinstance(rejected.report, OrderRejected)
                assert rejected.report.client_order_id == "n1-S-1"
                assert rejected.report.reason == "not sent: older than max_order_age"
            assert session.counters["orders_withdrawn_stale"] == 1
            assert session.counters["published_order"] == 0
    finally:
        if new_broker is not None:
            new_broker.terminate()
            new_broker.wait(5)


# 4. a journal that cannot be written: cancel every working order, then exit in one line


def _spawn_daemon(config: Path) -> subprocess.Popen[bytes]:
    # stderr on a pipe (a file would meet the file size limit too)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.daemon.cli", "run", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _working(oms: SimulatedOms) -> list[str]:
    return [o.order.client_order_id for o in oms.open_orders() if o.status == "accepted"]


@pytest.mark.asyncio
async def test_daemon_journal_write_fails_cancels_working_order_exits_one_line(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port, every=1_000_000)  # one resting order
    journal = tmp_path / "journal"
    oms = new_oms()
    status: list[tuple[int, bool]] = []
    async with serving(daemon_env, oms), client(daemon_env) as feed:
        await feed.subscribe(TOPICS.status, qos=1)

        async def read() -> None:
            async for m in feed.messages:
                s = decode_status(bytes(m.payload))
                status.append((s.ts_ns, s.online))

        reader = asyncio.create_task(read())
        spawned = time.time_ns()
        proc = _spawn_daemon(config)
        err = asyncio.create_task(asyncio.to_thread(proc.communicate, timeout=90))
        try:
            await until(lambda: any(ts >= spawned and on for ts, on in status), 60)
            await quote(feed, 100.0, 100.5)
            await until(lambda: bool(_working(oms)), 10)
            (working,) = _working(oms)
            await asyncio.sleep(0.3)  # the acceptance is journaled
            # the disk is full: no file of the daemon's may grow past its current size
            newest = sorted(journal.glob("journal-*.tlj"))[-1]
            limit = newest.stat().st_size
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
            for _ in range(20):
                await quote(feed, 100.0, 100.5)
                await asyncio.sleep(0.05)
            async with asyncio.timeout(20):
                _, raw = await asyncio.shield(err)
            rc = proc.returncode
            stderr = raw.decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
            await err
            reader.cancel()
        await until(lambda: oms.orders[working].status == "cancelled", 5)
    assert rc != 0
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("tradeloop: error: journal write failed")
    assert oms.counters["cancels"] >= 1


@pytest.mark.asyncio
async def test_daemon_journal_disk_below_min_free_bytes_reduce_only_with_alarm_parity(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port, every=1_000_000)
    free = shutil.disk_usage(tmp_path).free
    with config.open("a") as f:  # the [journal] section is the file's last
        f.write(f"min_free_bytes = {free * 2}\n")
    journal = tmp_path / "journal"
    oms = new_oms()
    async with serving(daemon_env, oms), client(daemon_env) as feed, running(config) as daemon:
        await until(lambda: state_of(daemon) == "REDUCE_ONLY", 10)
        await quote(feed, 100.0, 100.5)  # no new order adds risk now
        await asyncio.sleep(0.3)
        assert daemon.core is not None and daemon.core.counters["journal_disk_low"] == 1
    assert not oms.orders
    decisions = b"".join(p.read_bytes() for p in journal.glob("decisions-*.jsonl"))
    alarms = [CODEC.decode(line) for line in decisions.splitlines() if b'"alarm"' in line]
    assert any(isinstance(a, Alarm) and a.source == "journal" and "min_free_bytes" in a.message
               for a in alarms)  # fmt: skip
    assert parity(journal).ok
