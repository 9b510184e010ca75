"""Connection settings of one MQTT session (the ``[mqtt]`` section, secrets resolved)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Literal

from adapters.mqtt.validation import MessageLimits
from engine.errors import AdapterError, ConfigError


@dataclass(frozen=True)
class MqttSettings:
    """Everything ``MqttSession`` needs to reach the broker and bound its queues.

    Secrets (``password``, ``command_key``) are resolved from the environment by the
    caller; this class never reads the environment.

    Attributes:
        host: broker host name or address.
        port: broker port.
        username: user name (None: connect without credentials).
        password: password of ``username``.
        client_id: MQTT client identifier; unique per daemon (ignored with
            ``bind_client_id``).
        bind_client_id: the broker binds client ids to users (mosquitto's
            ``use_username_as_clientid``, docs/mosquitto.conf): each connection logs in as a
            user of its own whose name is its client id, ``<username>`` (orders, reports,
            commands, status), ``<username>-md`` (market data) and
            ``<username>-reconcile``, with one password. No other user can then take a
            daemon's client id, so none can knock it off the broker.
        tls: connect over TLS.
        ca_file: CA bundle that signs the broker's certificate (None: the system's).
        cert_file: client certificate, for brokers that require one.
        key_file: private key of ``cert_file``.
        format: payload codec, ``"json"`` or ``"msgpack"``.
        market_data_qos: subscription QoS of market-data topics (0 by default: one
            message per quote at QoS 1 ran under 1k msgs/s). At 0, market data comes on
            a second connection of its own (MQTT 3.1.1, client id ``<client_id>-md``,
            same credentials and TLS); at 1 or 2 it shares the MQTT 5 connection.
        max_payload_bytes: larger inbound payloads are refused unread.
        inbox_size: bound of the inbound stream, in items.
        outbox_size: bound of the outbound publish queue, in messages.
        keepalive_s: MQTT keepalive; a silent broker is detected after 1.5 times this.
        reconnect_min_s: first reconnect delay bound.
        reconnect_max_s: cap of the reconnect delay bound.
        command_key: HMAC-SHA256 key of operator commands (None: every command is refused).
        max_order_age_ns: a new order older than this since its decision is never sent
            (withdrawn and rejected, ``[live] max_order_age``); None: no limit.
        limits: the configured bounds of inbound checks (``[live] max_tick_age``,
            ``max_tick_future``, ``max_fee_bps``), market data, reports and answers alike.
        first_connect_timeout_s: how long the first connection is retried before the
            session gives up with one error naming the broker and what to check (None:
            for ever). Once connected, a lost connection is retried for ever.

    Raises:
        ConfigError: a field is out of range.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str = "tradeloop"
    bind_client_id: bool = False
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    format: Literal["json", "msgpack"] = "json"
    market_data_qos: int = 0
    max_payload_bytes: int = 65536
    inbox_size: int = 10_000
    outbox_size: int = 10_000
    keepalive_s: int = 15
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 10.0
    command_key: bytes | None = None
    max_order_age_ns: int | None = None
    limits: MessageLimits = field(default_factory=MessageLimits)
    first_connect_timeout_s: float | None = 30.0

    def __post_init__(self) -> None:
        checks = (
            ("port", 0 < self.port < 65536, "must be in 1..65535"),
            ("client_id", bool(self.client_id), "must not be empty"),
            ("format", self.format in ("json", "msgpack"), "must be 'json' or 'msgpack'"),
            ("market_data_qos", self.market_data_qos in (0, 1, 2), "must be 0, 1 or 2"),
            ("max_payload_bytes", self.max_payload_bytes > 0, "must be > 0"),
            ("inbox_size", self.inbox_size > 0, "must be > 0"),
            ("outbox_size", self.outbox_size > 0, "must be > 0"),
            ("keepalive_s", self.keepalive_s > 0, "must be > 0"),
            ("reconnect_min_s", self.reconnect_min_s > 0, "must be > 0"),
            (
                "reconnect_max_s",
                self.reconnect_max_s >= self.reconnect_min_s,
                "must be >= reconnect_min_s",
            ),
            ("cert_file", self.tls or self.cert_file is None, "needs tls = true"),
            ("key_file", self.key_file is None or self.cert_file is not None, "needs cert_file"),
            ("bind_client_id", not self.bind_client_id or bool(self.username), "needs a user"),
            ("command_key", self.command_key is None or len(self.command_key) > 0, "is empty"),
            (
                "first_connect_timeout",
                self.first_connect_timeout_s is None or self.first_connect_timeout_s > 0,
                "must be > 0",
            ),
        )
        for name, ok, reason in checks:
            if not ok:
                raise ConfigError(f"mqtt.{name}", reason)

    def unreachable(self, cause: str) -> str:
        """One line for a broker that cannot be reached: where, why, and what to check
        (a user's first run without mosquitto reads this, not a traceback)."""
        transport = (
            "this config connects with TLS: check [mqtt] tls, ca_file and that the broker's "
            "certificate names this host"
            if self.tls
            else "this config connects without TLS: a broker that only listens with TLS "
            "needs [mqtt] tls = true"
        )
        return (
            f"cannot reach the MQTT broker at {self.host}:{self.port} ({cause.strip()}): is "
            f"mosquitto running and listening there? check [mqtt] host and port in the "
            f"config; {transport}"
        )

    def login(self, role: str = "") -> tuple[str | None, str]:
        """The user name and client id of one of the session's connections: ``role`` ""
        (the main one), ``"md"`` (market data) or ``"reconcile"``."""
        suffix = f"-{role}" if role else ""
        if self.bind_client_id and self.username:
            return self.username + suffix, self.username + suffix
        return self.username, self.client_id + suffix

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every connection of the session (None without ``tls``).

        Raises:
            AdapterError: the CA, certificate or key file cannot be loaded.
        """
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise AdapterError(f"mqtt TLS files: {exc}") from exc
        return context
