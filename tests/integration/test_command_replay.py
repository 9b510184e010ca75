"""A signed operator command is acted on once, and only while fresh, against a real
mosquitto: a QoS 1 redelivery or a captured command published again is refused as a
duplicate, a stamp outside ``[live] command_max_age`` (30 s here, the default) as stale
or future; every refusal is counted and none is journaled; trading goes on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.daemon.run import Daemon
from adapters.journal_file import FileJournalReader
from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from engine.events import Command, CommandAction, Event, OrderRequest
from engine.journal import CommandRecord
from tests.integration.conftest import COMMAND_KEY, Broker
from tests.integration.test_faults import online, write_config
from tests.integration.test_reliability import CODEC, TOPICS, client, quote, running, until

S = 1_000_000_000


def signed(action: CommandAction, ts_event: int | None = None) -> tuple[bytes, str]:
    """A command stamped ``ts_event`` (default: now) and its signature."""
    ts = time.time_ns() if ts_event is None else ts_event
    payload = CODEC.encode(
        Command(ts_event=ts, ts_recv=ts, action=action, reason="replay test", issuer="ops")
    )
    return payload, sign_command(payload, COMMAND_KEY.encode(), TOPICS)


async def publish(operator: aiomqtt.Client, message: tuple[bytes, str]) -> None:
    payload, signature = message
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [(SIGNATURE_PROPERTY, signature)]
    await operator.publish(TOPICS.command, payload, qos=1, properties=props)


def journaled_actions(journal: Path) -> list[str]:
    return [r.command.action for r in FileJournalReader(journal) if isinstance(r, CommandRecord)]


async def settle(daemon: Daemon, counter: str, value: int) -> None:
    assert daemon.session is not None
    counters = daemon.session.counters
    await until(lambda: counters[counter] >= value)
    await asyncio.sleep(0.2)  # a few turns: had it been applied, it would show
    assert counters[counter] == value


@pytest.mark.asyncio
async def test_command_replay_duplicate_stale_future_refused_fresh_applied(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port, mode="paper", max_orders=10**6)
    async with (
        client(daemon_env) as feed,
        client(daemon_env) as operator,
        running(config) as daemon,
    ):
        await online(daemon)
        assert daemon.session is not None
        counters = daemon.session.counters
        engine = daemon.engine
        seen: list[Event] = []
        engine.sinks.append(seen.append)

        def orders() -> int:
            return sum(isinstance(e, OrderRequest) for e in seen)

        stop_quotes = asyncio.Event()

        async def quotes() -> None:
            while not stop_quotes.is_set():
                await quote(feed)
                await asyncio.sleep(0.02)

        feeder = asyncio.create_task(quotes(), name="quotes")
        try:
            await until(lambda: orders() >= 2)

            # the same signed kill delivered twice: applied once, the copy counted
            kill = signed("kill")
            await publish(operator, kill)
            await publish(operator, kill)
            await until(lambda: engine.risk.state == "HALTED")
            await settle(daemon, "bad_command_duplicate", 1)

            # a fresh, distinct command after the duplicate is applied
            resume = signed("resume")
            await publish(operator, resume)
            await until(lambda: engine.risk.state == "ACTIVE")

            # a new kill; the earlier resume, captured and published again, does not
            # clear it
            await publish(operator, signed("kill"))
            await until(lambda: engine.risk.state == "HALTED")
            await publish(operator, resume)
            await settle(daemon, "bad_command_duplicate", 2)
            assert engine.risk.state == "HALTED"
            await publish(operator, signed("resume"))
            await until(lambda: engine.risk.state == "ACTIVE")

            # a kill stamped a minute ago and one a minute ahead (twice the window: a busy
            # machine's delay cannot bring either back in): refused, trading goes on
            await publish(operator, signed("kill", time.time_ns() - 60 * S))
            await settle(daemon, "bad_command_stale", 1)
            await publish(operator, signed("kill", time.time_ns() + 60 * S))
            await settle(daemon, "bad_command_future", 1)
            assert engine.risk.state == "ACTIVE"
            traded = orders()
            await until(lambda: orders() >= traded + 2)
        finally:
            stop_quotes.set()
            await feeder
        assert counters["commands_unauthenticated"] == 0
        assert counters["messages_in_command"] == 8
    assert journaled_actions(tmp_path / "journal") == ["kill", "resume", "kill", "resume"]


@pytest.mark.parametrize("snapshot", [True, False], ids=["from_snapshot", "from_journal"])
@pytest.mark.asyncio
async def test_command_replay_after_restart_refused_as_duplicate(
    daemon_env: Broker, tmp_path: Path, snapshot: bool
) -> None:
    config = write_config(tmp_path, daemon_env.port, mode="paper")
    journal = tmp_path / "journal"
    kill, resume = signed("kill"), signed("resume")
    async with client(daemon_env) as operator:
        async with running(config) as daemon:
            await online(daemon)
            await publish(operator, kill)
            await until(lambda: daemon.engine.risk.state == "HALTED")
            await publish(operator, resume)
            await until(lambda: daemon.engine.risk.state == "ACTIVE")
        if not snapshot:  # as after a crash before any snapshot: the journal alone
            for path in journal.glob("snapshot-*"):
                path.unlink()
        # restarted within the window: both come back from the journal, and a replay of
        # the kill is the copy of a command already applied
        async with running(config) as daemon:
            await online(daemon)
            assert daemon.engine.risk.state == "ACTIVE"
            await publish(operator, kill)
            await settle(daemon, "bad_command_duplicate", 1)
            assert daemon.engine.risk.state == "ACTIVE"
            assert daemon.history.snapshot_seq > 0 if snapshot else daemon.history.snapshot_seq == 0
    assert journaled_actions(journal) == ["kill", "resume"]
