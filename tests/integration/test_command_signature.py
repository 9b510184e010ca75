"""Operator commands against a real mosquitto and a running daemon: a signature that is
not ASCII (or empty, or huge) is refused and counted without dropping the connection
(issue 19, defect 5); a command signed for another node, another account or another
topic is refused and counted, so a captured ``resume`` cannot lift this node's kill
(defect 9)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.daemon.run import Daemon
from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.topics import Topics
from engine.events import Command, CommandAction
from replay.sessions.parity import parity
from tests.integration.conftest import COMMAND_KEY, Broker
from tests.integration.test_command_replay import journaled_actions
from tests.integration.test_faults import online, write_config
from tests.integration.test_reliability import CODEC, client, running, until

HERE = Topics(node="n2", account="a1")  # the daemon under test


def _config(tmp_path: Path, port: int) -> Path:
    path = write_config(tmp_path, port, mode="paper", max_orders=0)
    path.write_text(path.read_text().replace('node = "n1"', f'node = "{HERE.node}"'))
    return path


def _payload(action: CommandAction) -> bytes:
    ts = time.time_ns()
    return CODEC.encode(
        Command(ts_event=ts, ts_recv=ts, action=action, reason="signature test", issuer="ops")
    )


async def _publish(operator: aiomqtt.Client, payload: bytes, signature: str | None) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if signature is not None:
        props.UserProperty = [(SIGNATURE_PROPERTY, signature)]
    await operator.publish(HERE.command, payload, qos=1, properties=props)


def _signed(action: CommandAction, target: Topics = HERE) -> tuple[bytes, str]:
    payload = _payload(action)
    return payload, sign_command(payload, COMMAND_KEY.encode(), target)


async def _refused(daemon: Daemon, counter: str, value: int) -> None:
    assert daemon.session is not None
    counters = daemon.session.counters
    await until(lambda: counters[counter] >= value)
    assert counters[counter] == value


@pytest.mark.asyncio
async def test_command_signature_not_ascii_empty_or_huge_refused_counted_connection_kept(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = _config(tmp_path, daemon_env.port)
    async with client(daemon_env) as operator, running(config) as daemon:
        await online(daemon)
        assert daemon.session is not None
        counters = daemon.session.counters
        # (a NUL is no MQTT string: the broker drops the publisher, it never arrives)
        hostile = ["é" * 64, "\u2603", "", "é" * 30_000, "0" * 60_000, "\u00ff" * 32]
        for signature in hostile:
            await _publish(operator, _payload("kill"), signature)
        await _refused(daemon, "commands_unauthenticated", len(hostile))
        # the connection held: a valid command right after is applied
        await _publish(operator, *_signed("kill"))
        await until(lambda: daemon.engine.risk.state == "HALTED")
        assert counters["connection_lost"] == 0 and counters["reconnects"] == 0
        assert daemon.engine.risk.state == "HALTED"
    journal = tmp_path / "journal"
    assert journaled_actions(journal) == ["kill"]
    assert parity(journal).ok


@pytest.mark.asyncio
async def test_command_signed_for_another_node_account_or_topic_refused_kill_stays(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = _config(tmp_path, daemon_env.port)
    async with client(daemon_env) as operator, running(config) as daemon:
        await online(daemon)
        assert daemon.session is not None
        counters = daemon.session.counters
        await _publish(operator, *_signed("kill"))
        await until(lambda: daemon.engine.risk.state == "HALTED")
        # a resume the operator signed for n1, captured and published on n2's topic
        await _publish(operator, *_signed("resume", Topics(node="n1", account="a1")))
        await asyncio.sleep(0.3)  # a few turns: had it been applied, it would show
        assert daemon.engine.risk.state == "HALTED"
        await _refused(daemon, "commands_wrong_target", 1)
        # ... for n2 of another account, and for n2 under another topic prefix
        await _publish(operator, *_signed("resume", Topics(node="n2", account="a2")))
        await _refused(daemon, "commands_wrong_target", 2)
        await _publish(operator, *_signed("resume", Topics("x/", node="n2", account="a1")))
        await _refused(daemon, "commands_unauthenticated", 3)
        assert daemon.engine.risk.state == "HALTED"
        # signed for this daemon: applied
        await _publish(operator, *_signed("resume"))
        await until(lambda: daemon.engine.risk.state == "ACTIVE")
        assert counters["connection_lost"] == 0
    journal = tmp_path / "journal"
    assert journaled_actions(journal) == ["kill", "resume"]
    assert parity(journal).ok
