"""``tradeloop command --config live.toml ACTION``: one signed operator command to the
daemon of that config, and the trading state it reports next.

The config names everything but the operator's login: the broker (``[mqtt]``: host,
port, TLS and CA, topic prefix), the target (``[live]`` node and account: the signature
binds them and the topic, ``adapters.mqtt.auth.sign_command``) and the variable holding
the command key (``[live] command_key_env``). The operator logs in as the broker user
that may send commands (docs/mosquitto.acl: ``operator``), from the variables
``--username-env``/``--password-env`` name.

After the broker acknowledges the command, the tool reads the daemon's retained status
until a status shows the command's effect (``kill``: the operator's claim HALTED,
``reduce_only``: REDUCE_ONLY, ``resume``: no operator claim; other actions: the next
heartbeat stamped after the command was sent), and prints its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import msgspec
from aiomqtt.exceptions import MqttCodeError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.status import Status, decode_status
from adapters.mqtt.topics import Topics
from engine.clock import LiveClock
from engine.codec import EventCodec
from engine.config import Config
from engine.errors import AdapterError, ConfigError
from engine.events import Command, CommandAction

# the operator's login, by variable name (as the daemon's credentials are)
DEFAULT_USERNAME_ENV = "TRADELOOP_OPERATOR_USER"
DEFAULT_PASSWORD_ENV = "TRADELOOP_OPERATOR_PASSWORD"

# how long the broker has to send the retained status on subscribing
_RETAINED_WAIT_S = 2.0
# the operator's claim each action leaves, where it leaves one (None: lifted)
_CLAIM_AFTER: dict[str, str | None] = {"kill": "HALTED", "reduce_only": "REDUCE_ONLY",
                                       "resume": None}  # fmt: skip


@dataclass(frozen=True)
class CommandResult:
    """What the daemon reported after the command."""

    topic: str
    status: Status


def _env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(what, f"environment variable {name} is not set")
    return value


def _shows_effect(action: CommandAction, before: Status | None) -> Callable[[Status], bool]:
    # a heartbeat newer than the retained one found before sending (the daemon's own
    # stamps: clocks of two machines are never compared)
    def done(status: Status) -> bool:
        if not status.online or (before is not None and status.ts_ns <= before.ts_ns):
            return False
        if action in _CLAIM_AFTER:
            return status.claims.get("operator") == _CLAIM_AFTER[action]
        return True

    return done


async def send_command(
    config: Config,
    action: CommandAction,
    *,
    reason: str,
    username_env: str = DEFAULT_USERNAME_ENV,
    password_env: str = DEFAULT_PASSWORD_ENV,
    target: str = "",
    stage: str = "",
    timeout_s: float = 10.0,
) -> CommandResult:
    """Sign ``action`` for the daemon of ``config``, send it, and wait for its status.

    Raises:
        ConfigError: the key or a login variable is not set.
        AdapterError: the broker cannot be reached, refused the login or the command, or
            no status showed the command's effect within ``timeout_s``.
    """
    m, live = config.mqtt, config.live
    key = _env(live.command_key_env, "live.command_key_env").encode()
    settings = MqttSettings(
        host=m.host,
        port=m.port,
        username=_env(username_env, "--username-env"),
        password=_env(password_env, "--password-env"),
        tls=m.tls,
        ca_file=m.ca_file,
        cert_file=m.cert_file,
        key_file=m.key_file,
    )
    topics = Topics(m.topic_prefix, live.node, live.account)
    sent_ns = LiveClock().now_ns()  # the command's own stamp; the daemon stamps receipt
    payload = EventCodec("json").encode(
        Command(
            ts_event=sent_ns,
            ts_recv=sent_ns,
            action=action,
            reason=reason,
            issuer="operator",
            target=target,
            stage=stage,
        )
    )
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [(SIGNATURE_PROPERTY, sign_command(payload, key, topics))]
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=settings.ssl_context(),
        timeout=timeout_s,
    )
    try:
        async with client:
            await client.subscribe(topics.status, qos=1)
            before = await _retained(client, min(timeout_s, _RETAINED_WAIT_S))
            done = _shows_effect(action, before)
            try:
                await client.publish(topics.command, payload, qos=1, properties=properties)
            except MqttCodeError as exc:
                raise AdapterError(f"the broker refused the {action} command: {exc}") from exc
            last: Status | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    async for message in client.messages:
                        last = _status(message) or last
                        if last is not None and done(last):
                            return CommandResult(topics.command, last)
    except aiomqtt.MqttError as exc:
        raise AdapterError(f"broker {m.host}:{m.port}: {exc}") from exc
    seen = "no status" if last is None else f"its last status says {last.state}"
    raise AdapterError(
        f"sent {action} to {topics.command}, but node {live.node} reported no effect within "
        f"{timeout_s:g} s ({seen})"
    )


def _status(message: aiomqtt.Message) -> Status | None:
    payload = message.payload
    if not isinstance(payload, (bytes, bytearray)):
        return None
    try:
        return decode_status(bytes(payload))
    except msgspec.DecodeError:
        return None


async def _retained(client: aiomqtt.Client, wait_s: float) -> Status | None:
    """The retained status the broker sends on subscribing (None: none came in time)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            async for message in client.messages:
                if message.retain:
                    return _status(message)
    return None


def describe(result: CommandResult) -> str:
    """One line: the node, its trading state and who holds a claim."""
    s = result.status
    claims = ", ".join(f"{holder}={state}" for holder, state in sorted(s.claims.items()))
    return f"{s.node}: {s.state}" + (f" (claims: {claims})" if claims else "")


__all__ = [
    "DEFAULT_PASSWORD_ENV",
    "DEFAULT_USERNAME_ENV",
    "CommandResult",
    "describe",
    "send_command",
]
