"""Paper and shadow never reconcile with an OMS (issue 19, defect 11), against a real
mosquitto that is killed and restarted under a running daemon, with no OMS on the bus: a
reconnect used to start a reconciliation nobody answers, which ended in a kill that
nothing lifts. Now fresh quotes after the reconnect bring back ACTIVE, and it stays."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_faults import online, write_config
from tests.integration.test_mqtt_session import _open_gate, _restart_broker
from tests.integration.test_reliability import client, quote, running, until


@pytest.mark.parametrize("mode", ["paper", "shadow"])
@pytest.mark.asyncio
async def test_paper_and_shadow_reconnect_never_reconcile_trading_resumes(
    daemon_env: Broker, tmp_path: Path, mode: str
) -> None:
    config = write_config(tmp_path, daemon_env.port, mode=mode, max_orders=0)
    # an OMS that does not answer fails fast: had a question been asked, the kill follows
    config.write_text(
        config.read_text().replace('node = "n1"', 'node = "n1"\nreconcile_timeout = "200ms"')
    )
    new_broker: subprocess.Popen[bytes] | None = None
    try:
        async with running(config) as daemon:
            await online(daemon)
            engine = daemon.engine
            assert daemon.reconciler.fetch is None
            async with client(daemon_env) as feed:
                await quote(feed)
                await until(lambda: engine.risk.state == "ACTIVE")
            restart = asyncio.create_task(asyncio.to_thread(_restart_broker, daemon_env))
            await until(lambda: engine.risk.state == "HALTED")  # the data-loss claim
            new_broker = await restart
            session = daemon.session
            assert session is not None
            reconnects = session.counters["reconnects"]
            _open_gate(daemon_env, new_broker)
            await until(lambda: session.counters["reconnects"] > reconnects, timeout=15)
            async with client(daemon_env) as feed:
                await quote(feed)
                await until(lambda: engine.risk.state == "ACTIVE")
                for _ in range(30):  # 1.5 s: several reconciliation timeouts
                    await quote(feed)
                    await asyncio.sleep(0.05)
            assert engine.risk.state == "ACTIVE"
            assert engine.risk.trading.claim("operator") == "ACTIVE"
            assert dict(daemon.reconciliation) == {}
    finally:
        if new_broker is not None:
            new_broker.terminate()
            new_broker.wait(5)
    assert parity(tmp_path / "journal").ok
