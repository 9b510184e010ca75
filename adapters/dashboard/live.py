"""The dashboard of a running daemon (``[live] dashboard = true``): what it reads from the
daemon, and how an operator's action becomes a command.

An accepted action is built as the operator's ``tradeloop command`` builds one (a
``Command`` stamped with the receive clock, issuer ``dashboard``, which holds the
``operator`` claim), encoded with the session's codec, signed with the daemon's command
key for its own node, account and command topic (``adapters.mqtt.auth.sign_command``),
and handed to the broker session's command ingest (``MqttSession.submit_command``): the
same signature check, freshness and repeat guard, counters, inbox, journal and apply as a
command from the bus. It is journaled before it acts and replayed like any command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from adapters.daemon.core import LiveCore
from adapters.daemon.status import StatusBoard
from adapters.dashboard.access import read_token
from adapters.dashboard.board import (
    BoardSources,
    ExplanationTail,
    RecentEvents,
    build_document,
    encode_document,
)
from adapters.dashboard.server import Dashboard
from adapters.metrics import DaemonMetrics
from adapters.mqtt.auth import sign_command
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.topics import Topics
from engine.codec import EventCodec
from engine.config import Config
from engine.engine import Engine
from engine.events import Command, CommandAction

log = logging.getLogger("tradeloop.dashboard")

ISSUER = "dashboard"
"""The issuer of the page's commands (an operator's claim, ``engine.trading_state``)."""


class CommandIngress(Protocol):
    """The broker session's way in for a command signed elsewhere."""

    def submit_command(self, payload: bytes, signature: str) -> str | None: ...


class LiveDashboard:
    """The dashboard's parts for one daemon session.

    Args:
        config: the session's config (``[live] dashboard*``).
        engine: the session's engine (a sink is added for the recent events).
        settings: the broker settings (codec and command key).
        topics: the daemon's topics (the signature's target).
        receive_clock: the daemon's receive clock (commands are stamped with it).
        metrics: where refusals and actions are counted (Prometheus).

    Raises:
        ConfigError: the dashboard token is set but too short.
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        settings: MqttSettings,
        topics: Topics,
        receive_clock: Callable[[], int],
        metrics: DaemonMetrics,
    ) -> None:
        live = config.live
        self.config = config
        self.engine = engine
        self.settings = settings
        self.topics = topics
        self.receive_clock = receive_clock
        self.metrics = metrics
        token = read_token(live.dashboard_token_env)
        if token is None:
            why = f"no dashboard token (set ${live.dashboard_token_env} to enable actions)"
        elif settings.command_key is None:
            why = f"no command key in ${live.command_key_env}: commands cannot be signed"
        else:
            why = ""
        self.actions = (not why, why)
        # without a command key no action could pass the command path: read-only
        self.token = token if not why else None
        self.recent = RecentEvents()
        engine.sinks.append(self.recent)
        self.tail = ExplanationTail(None)
        self._codec = EventCodec(settings.format)
        self._ingress: CommandIngress | None = None
        self.server: Dashboard | None = None

    async def open(
        self,
        core: LiveCore,
        status_board: StatusBoard,
        explanations: Path | None,
        session_counters: Callable[[], Mapping[str, int]],
    ) -> str:
        """Serve the page; returns its URL.

        Raises:
            AdapterError: the address cannot be bound.
        """
        live = self.config.live
        self.tail.path = explanations
        sources = BoardSources(
            engine=self.engine, node=live.node, mode=self.config.mode, book=core.book,
            models=status_board.model_statuses,
            feed=lambda: (core.feed.connected, core.feed.lost),
            session_counters=session_counters, wall_clock=self.receive_clock,
            actions=self.actions,
        )  # fmt: skip
        recent, tail = self.recent, self.tail
        self.server = Dashboard(
            lambda: build_document(sources, recent, tail), encode_document,
            host=live.dashboard_host, port=live.dashboard_port, token=self.token,
            submit=self.submit, poll=tail.poll, on_count=self._counted,
        )  # fmt: skip
        url = await self.server.start()
        log.info("dashboard on %s (%s)", url,
                    "actions need the token" if self.token else "read-only")  # fmt: skip
        return url

    def attach(self, session: object) -> None:
        """The broker session commands go through from now on (None: disconnected)."""
        ingress = getattr(session, "submit_command", None)
        self._ingress = session if callable(ingress) else None  # type: ignore[assignment]

    def changed(self) -> None:
        """After a turn or a heartbeat: the page may show something new."""
        if self.server is not None:
            self.server.changed()

    def submit(self, action: CommandAction, reason: str) -> str | None:
        """Sign ``action`` and hand it to the session's command ingest; None if it went
        in, else why not."""
        ingress = self._ingress
        key = self.settings.command_key
        if ingress is None:
            return "not_connected"
        if key is None:
            return "no_command_key"
        ts = self.receive_clock()
        command = Command(ts_event=ts, ts_recv=ts, action=action, issuer=ISSUER,
                          reason=reason or "from the dashboard")  # fmt: skip
        payload = self._codec.encode(command)
        return ingress.submit_command(payload, sign_command(payload, key, self.topics))

    async def close(self) -> None:
        """Stop serving (streams end, the port is freed)."""
        if self.server is not None:
            await self.server.close()
            self.server = None

    def _counted(self, key: str) -> None:
        self.metrics.dashboard_requests.labels(key).inc()


__all__ = ["ISSUER", "CommandIngress", "LiveDashboard"]
