"""The operator's kill survives a graceful restart (issue 19, defect 1), against a real
mosquitto and ``oms-sim``: the daemon trades, an operator kills it, it is stopped with
SIGTERM (its own shutdown kill on top) and started again. The restart's reconciliation
finds the OMS in agreement and lifts what it may (the shutdown kill), and the daemon stays
HALTED, sending nothing, until the operator resumes; then it trades again."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from adapters.journal_file import FileJournalReader
from adapters.mqtt.status import Status, decode_status
from engine.journal import CommandRecord
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_command_replay import publish, signed
from tests.integration.test_reliability import (
    TOPICS,
    _spawn,
    client,
    manifests,
    new_oms,
    quote,
    serving,
    until,
    write_config,
)


@pytest.mark.asyncio
async def test_operator_kill_sigterm_restart_stays_halted_until_operator_resume(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port, every=2, rest=False)
    journal = tmp_path / "journal"
    oms = new_oms()
    statuses: list[tuple[int, Status]] = []  # (our receipt time, status)
    async with serving(daemon_env, oms), client(daemon_env) as feed, client(daemon_env) as operator:
        await feed.subscribe(TOPICS.status, qos=1)

        async def read() -> None:
            async for m in feed.messages:
                statuses.append((time.time_ns(), decode_status(bytes(m.payload))))

        def online_since(t_ns: int) -> list[Status]:
            return [s for t, s in statuses if t >= t_ns and s.online]

        async def quoting(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await quote(feed)
                await asyncio.sleep(0.02)

        reader = asyncio.create_task(read())
        try:
            # session 1: trades, then the operator's kill, then SIGTERM
            started = time.time_ns()
            proc = _spawn(config)
            try:
                await until(lambda: bool(online_since(started)), timeout=60)
                while oms.counters["orders"] < 2:
                    await quoting(0.1)
                await publish(operator, signed("kill"))
                await until(lambda: online_since(started)[-1].state == "HALTED")
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 20) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
            orders_at_kill = oms.counters["orders"]

            # session 2: the OMS agrees; the daemon stays HALTED and sends nothing
            restarted = time.time_ns()
            proc = _spawn(config)
            try:
                await until(lambda: bool(online_since(restarted)), timeout=60)
                await quoting(2.0)  # 40 quotes: a market order every 2 were it trading
                seen = online_since(restarted)
                assert seen and all(s.state == "HALTED" for s in seen), [s.state for s in seen]
                assert seen[-1].claims.get("operator") == "HALTED"
                assert oms.counters["orders"] == orders_at_kill
                # the operator's resume: trading again
                resumed = time.time_ns()
                await publish(operator, signed("resume"))
                await until(lambda: any(s.state == "ACTIVE" for s in online_since(resumed)))
                while oms.counters["orders"] <= orders_at_kill:
                    await quoting(0.1)
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 20) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
        finally:
            reader.cancel()
    sessions = manifests(journal)
    assert len(sessions) == 2
    second = int(str(sessions[1]["first_seq"]))
    commands = [
        (r.command.issuer, r.command.action, r.command.reason.split("\n")[0])
        for r in FileJournalReader(journal)
        if isinstance(r, CommandRecord) and r.seq >= second
    ]
    # the restart's reconciliation lifted the shutdown kill, not the operator's; the
    # operator's resume came next
    assert commands[0] == ("reconciliation", "resume", "reconciled: the OMS agrees")
    assert commands[1][:2] == ("ops", "resume")
    for m in sessions:
        assert parity(journal, session=str(m["session_id"])).ok
