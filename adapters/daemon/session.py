"""A live session's identity, the broker session it talks to and the files it leaves
next to the journal.

The broker session is ``adapters.mqtt.session.MqttSession`` (``mqtt_session``), built
from ``[mqtt]`` and ``[live]`` with secrets from the environment (``mqtt_settings``); a
test passes a fake of the ``LiveSession`` protocol instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from adapters.journal_folder import atomic_write, read_journal_end
from adapters.metrics import tradeloop_version
from adapters.mqtt.command_guard import CommandGuard
from adapters.mqtt.ingest import Inbound
from adapters.mqtt.session import MqttSession
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.topics import Topics
from adapters.mqtt.validation import MessageLimits
from engine.config import Config, MqttConfig
from engine.errors import AdapterError, ConfigError, TradeloopError
from engine.events import CancelRequest, OrderRequest
from engine.instruments import InstrumentTable
from engine.units import parse_duration_ns

log = logging.getLogger("tradeloop.daemon")


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_RANDOM_DIGITS = 4  # hex digits after the time part


def new_session_id(now_ns: int, journal_dir: Path | None = None) -> str:
    """A session id unique across restarts: the UTC start time in ms, base 36 (sorts by
    time while the width stays 8, until 2059), and 4 random hex digits (two daemons
    started in the same ms).

    With ``journal_dir``, the time part is never at or below that of a session already
    there (``last_session_ms``): after the wall clock stepped back, the id is the last
    one's ms plus one, so ids stay unique and sorted in start order.
    """
    ms = now_ns // 1_000_000
    if journal_dir is not None:
        ms = max(ms, last_session_ms(journal_dir) + 1)
    digits = ""
    while True:
        ms, r = divmod(ms, 36)
        digits = _BASE36[r] + digits
        if ms == 0:
            break
    return f"{digits}{secrets.token_hex(_RANDOM_DIGITS // 2)}"


def session_ms(session_id: str) -> int | None:
    """The start time in ms a ``new_session_id`` encodes (None: not one of its ids)."""
    head = session_id[:-_RANDOM_DIGITS]
    if not head or any(c not in _BASE36 for c in head):
        return None
    return int(head, 36)


def last_session_ms(journal_dir: Path) -> int:
    """The latest start (ms) among the sessions of a journal folder, by their files
    (``session-{id}.json``/``.toml``) and the journal's end marker; -1 when none."""
    ids: list[str] = []
    if journal_dir.is_dir():
        for path in journal_dir.glob("session-*"):
            ids.append(path.name.removeprefix("session-").split(".", 1)[0])
    try:
        end = read_journal_end(journal_dir)
    except TradeloopError:
        end = None
    if end is not None:
        ids.append(end.session_id)
    found = [ms for ms in map(session_ms, ids) if ms is not None]
    return max(found, default=-1)


# the session the daemon talks to (``adapters.mqtt.session.MqttSession``; a fake in tests)


class LiveSession(Protocol):
    inbox: asyncio.Queue[Inbound]
    counters: Counter[str]

    async def publish_order(self, order: OrderRequest | CancelRequest) -> None: ...
    def publish_order_now(self, order: OrderRequest | CancelRequest) -> bool: ...
    async def publish_status(self, payload: bytes) -> None: ...
    def outbox_empty(self) -> bool: ...
    async def flush(self, timeout_s: float) -> bool: ...


SessionFactory = Callable[
    [MqttSettings, Topics, InstrumentTable, Callable[[], int], bytes, CommandGuard],
    contextlib.AbstractAsyncContextManager[LiveSession],
]


def mqtt_session(
    settings: MqttSettings,
    topics: Topics,
    instruments: InstrumentTable,
    receive_clock: Callable[[], int],
    will_payload: bytes,
    command_guard: CommandGuard,
) -> contextlib.AbstractAsyncContextManager[LiveSession]:
    """The real session: ``MqttSession`` over aiomqtt."""
    return MqttSession(
        settings, topics, instruments, receive_clock=receive_clock, will_payload=will_payload,
        command_guard=command_guard,
    )  # fmt: skip


def _env(name: str | None, where: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(where, f"environment variable {name} is not set")
    return value


def mqtt_settings(config: Config) -> MqttSettings:
    """``MqttSettings`` from ``[mqtt]`` and ``[live]``, secrets from the environment.

    Raises:
        ConfigError: a named environment variable is not set.
    """
    m = config.mqtt
    key = os.environ.get(config.live.command_key_env)
    if not key:
        log.warning("no command key in $%s: every operator command will be refused",
                    config.live.command_key_env)  # fmt: skip
    return MqttSettings(
        host=m.host,
        port=m.port,
        username=_env(m.username_env, "mqtt.username_env"),
        password=_env(m.password_env, "mqtt.password_env"),
        client_id=m.client_id or f"tradeloop-{config.live.node}",
        bind_client_id=m.bind_client_id,
        tls=m.tls,
        ca_file=m.ca_file,
        cert_file=m.cert_file,
        key_file=m.key_file,
        format=m.format,
        market_data_qos=m.market_data_qos,
        max_payload_bytes=m.max_payload_bytes,
        inbox_size=m.inbox_size,
        outbox_size=m.outbox_size,
        keepalive_s=max(1, parse_duration_ns(m.keepalive) // 1_000_000_000),
        reconnect_min_s=parse_duration_ns(m.reconnect_min) / 1e9,
        reconnect_max_s=parse_duration_ns(m.reconnect_max) / 1e9,
        command_key=key.encode() if key else None,
        limits=MessageLimits.from_config(config.live),
        max_order_age_ns=config.live.max_order_age_ns,
        first_connect_timeout_s=_first_connect_timeout_s(m),
    )


def _first_connect_timeout_s(m: MqttConfig) -> float | None:
    # ``[mqtt] first_connect_timeout``: "0s" retries the first connection for ever
    ns = parse_duration_ns(m.first_connect_timeout)
    return ns / 1e9 if ns > 0 else None


# what a session leaves next to the journal


@dataclass
class SessionFiles:
    """What a session leaves next to the journal besides the journal itself."""

    session_id: str
    config: Path
    manifest: Path
    decisions: Path


def write_session_files(
    config: Config, config_bytes: bytes, directory: Path, session_id: str, start_ns: int,
    order_id_prefix: str, *, first_seq: int | None = None, extra: dict[str, object] | None = None,
) -> SessionFiles:  # fmt: skip
    """``session-{id}.toml`` (the config that ran, byte for byte) and ``session-{id}.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = SessionFiles(
        session_id=session_id,
        config=directory / f"session-{session_id}.toml",
        manifest=directory / f"session-{session_id}.json",
        decisions=directory / f"decisions-{session_id}.jsonl",
    )
    # whole or not at all, and durable before the session acts (a torn manifest broke
    # the rebuild's client order id prefixes and model pins)
    _write_atomic(files.config, config_bytes)
    started = dt.datetime.fromtimestamp(start_ns / 1e9, dt.UTC)
    manifest: dict[str, object] = {
        "session_id": session_id,
        "mode": config.mode,
        "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
        "config_file": files.config.name,
        "decisions_file": files.decisions.name,
        "start_ns": start_ns,
        "start_utc": started.isoformat(timespec="milliseconds"),
        "order_id_prefix": order_id_prefix,
        "node": config.live.node,
        "account": config.live.account,
        "version": tradeloop_version(),
    }
    if first_seq is not None:
        manifest["first_seq"] = first_seq
    manifest.update(extra or {})
    _write_atomic(files.manifest, (json.dumps(manifest, indent=2) + "\n").encode())
    return files


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise AdapterError(f"session file {path}: {exc}") from exc


__all__ = [
    "LiveSession",
    "SessionFactory",
    "SessionFiles",
    "last_session_ms",
    "mqtt_session",
    "mqtt_settings",
    "new_session_id",
    "session_ms",
    "write_session_files",
]
