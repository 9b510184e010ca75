"""Identity on the broker (issue 20, defect 7), against a mosquitto configured as docs/
ship it (``deployed_broker``: docs/mosquitto.conf, docs/mosquitto.acl, TLS): one user per
daemon, ACLs bound to the user, client ids bound to users. Another user connecting with a
daemon's client id does not knock it off; the feed's user cannot send orders or forge a
node's status, and neither can another daemon's user; a takeover by our own user (stolen
credentials, a second daemon) is counted and raises an alarm from the second time on."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from adapters.mqtt.session import MqttSession
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.status import offline_payload
from adapters.mqtt.topics import Topics
from adapters.mqtt.validation import MessageLimits
from engine.instruments import Instrument, InstrumentTable
from tests.integration.conftest import DeployedBroker

TOPICS = Topics(node="node1", account="acct1")
INSTRUMENTS = InstrumentTable([Instrument(symbol="BTC-USD", venue="X")])
_DAY = 86_400 * 1_000_000_000


def _settings(broker: DeployedBroker, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "username": "node1",
        "password": broker.passwords["node1"],
        "client_id": "tradeloop-node1",  # the old predictable id: bound ids ignore it
        "bind_client_id": True,
        "tls": True,
        "ca_file": str(broker.ca_file),
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
        "keepalive_s": 5,
        "limits": MessageLimits(max_tick_age_ns=_DAY, max_tick_future_ns=_DAY),
    }
    values.update(overrides)
    return MqttSettings(**values)


def _session(broker: DeployedBroker) -> MqttSession:
    return MqttSession(
        _settings(broker),
        TOPICS,
        INSTRUMENTS,
        receive_clock=time.time_ns,
        will_payload=offline_payload(TOPICS.node),
    )


def tls_client(broker: DeployedBroker, user: str, identifier: str = "") -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=user,
        password=broker.passwords[user],
        identifier=identifier or None,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=ssl.create_default_context(cafile=str(broker.ca_file)),
    )


async def _hold(broker: DeployedBroker, user: str, identifier: str, seconds: float) -> None:
    """Connect as ``user`` with ``identifier`` and stay a while (a takeover needs the
    intruder's CONNACK; the victim's reconnect may knock the intruder off in turn)."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with tls_client(broker, user, identifier):
            await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def _watching(broker: DeployedBroker, topic: str) -> AsyncIterator[list[str]]:
    """The topics of what the operator (who reads everything) sees on ``topic``."""
    seen: list[str] = []
    async with tls_client(broker, "operator") as watcher:
        await watcher.subscribe(topic, qos=1)

        async def read() -> None:
            async for m in watcher.messages:
                seen.append(m.topic.value)

        reader = asyncio.create_task(read())
        try:
            yield seen
        finally:
            reader.cancel()


@pytest.mark.asyncio
async def test_identity_other_users_with_the_daemons_client_ids_do_not_knock_it_off(
    deployed_broker: DeployedBroker,
) -> None:
    async with _session(deployed_broker) as session:
        assert session.state == "connected"
        # every other user, with each of the daemon's client ids, old and new
        for user in ("feed", "oms", "operator", "node2"):
            for identifier in ("node1", "node1-md", "node1-reconcile", "tradeloop-node1"):
                await _hold(deployed_broker, user, identifier, 0.05)
        await asyncio.sleep(0.5)
        assert session.counters["connection_lost"] == 0, session.counters
        assert session.counters["session_taken_over"] == 0
        assert session.state == "connected"


@pytest.mark.asyncio
async def test_identity_feed_and_other_daemon_cannot_send_orders_or_forge_status(
    deployed_broker: DeployedBroker,
) -> None:
    async with _watching(deployed_broker, "#") as seen:
        for user in ("feed", "node2", "oms"):
            async with tls_client(deployed_broker, user) as intruder:
                for topic in (TOPICS.orders, TOPICS.status, TOPICS.requests, TOPICS.command):
                    # MQTT 5: mosquitto acknowledges a refused publish (0x87) and drops it
                    with contextlib.suppress(aiomqtt.MqttError):
                        await intruder.publish(topic, b"{}", qos=1)
        # the daemon's own user, for contrast: its orders and its status go through
        async with tls_client(deployed_broker, "node1") as daemon:
            await daemon.publish(TOPICS.orders, b"{}", qos=1)
            await daemon.publish(TOPICS.status, b"{}", qos=1)
            # but never another account's orders or another node's status
            await daemon.publish("oms/acct2/orders", b"{}", qos=1)
            await daemon.publish("tradeloop/node2/status", b"{}", qos=1)
        deadline = time.monotonic() + 5.0
        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
    assert sorted(seen) == sorted([TOPICS.orders, TOPICS.status])


@pytest.mark.asyncio
async def test_identity_repeated_takeover_by_our_own_user_is_counted_and_alarmed(
    deployed_broker: DeployedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    async with _session(deployed_broker) as session:
        for _ in range(3):
            before = session.counters["reconnects"]
            await _hold(deployed_broker, "node1", "", 0.1)  # our user: the broker's id node1
            deadline = time.monotonic() + 5.0
            while session.counters["reconnects"] == before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        assert session.counters["session_taken_over"] >= 3, session.counters
        assert session.counters["session_takeover_alarms"] >= 2
    assert any("ALARM" in r.getMessage() and r.levelname == "CRITICAL" for r in caplog.records)
