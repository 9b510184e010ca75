"""The shipped deployment's transport (issue 20, defect 8), against a mosquitto configured
as docs/ ship it (``deployed_broker``: TLS listener, client ids bound to users, the ACL):
a daemon run from docs/live.toml connects over TLS, so its password never crosses the
network in clear (a recording proxy sits between it and the broker); a plaintext client
is refused; the metrics endpoint listens on this machine only unless configured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from adapters.daemon.run import Daemon
from adapters.metrics import DaemonMetrics
from adapters.mqtt.status import Status, decode_status
from adapters.tools.demo.live_demo import set_toml_key
from engine.config import LiveConfig
from tests.integration.conftest import DOCS, DeployedBroker
from tests.integration.test_daemon import running
from tests.integration.test_identity import tls_client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployed_config(tmp: Path, broker: DeployedBroker, port: int | None = None) -> Path:
    """docs/live.toml as shipped (TLS, bound client ids, node1 on acct1), pointed at the
    test broker (or at ``port``, a proxy in front of it), its CA, a journal in ``tmp``, a
    free metrics port on 127.0.0.1, shadow mode (no OMS needed)."""
    text = (DOCS / "live.toml").read_text()
    for section, key, value in (
        ("", "mode", '"shadow"'),
        ("mqtt", "host", json.dumps(broker.host)),
        ("mqtt", "port", str(port or broker.port)),
        ("mqtt", "ca_file", json.dumps(str(broker.ca_file))),
        ("mqtt", "reconnect_min", '"50ms"'),
        ("mqtt", "reconnect_max", '"300ms"'),
        ("live", "heartbeat", '"200ms"'),
        ("live", "metrics_port", str(_free_port())),
        ("live", "metrics_host", '"127.0.0.1"'),  # the docs name the compose service
        ("live", "shutdown_timeout", '"3s"'),
        ("journal", "dir", json.dumps((tmp / "journal").as_posix())),
    ):
        text = set_toml_key(text, section, key, value)
    path = tmp / "live.toml"
    path.write_text(text)
    return path


class _RecordingProxy:
    """Forwards TCP connections from a free port to the broker, keeping every byte."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.bytes = bytearray()
        self.connections = 0
        # what ``close`` ends: a connection outliving the test left its transports to the
        # garbage collector, whose ResourceWarning failed a later test of the same worker
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    self.bytes += data
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        self.writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers.append(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def _proxy(target: tuple[str, int]) -> AsyncIterator[tuple[_RecordingProxy, int]]:
    proxy = _RecordingProxy(target)
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    try:
        yield proxy, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await proxy.close()
        await server.wait_closed()


async def online_status(broker: DeployedBroker, timeout: float = 60.0) -> Status:
    """The first online status of node1, read as the operator."""
    async with tls_client(broker, "operator") as watcher:
        await watcher.subscribe("tradeloop/node1/status", qos=1)
        async with asyncio.timeout(timeout):
            async for message in watcher.messages:
                status = decode_status(bytes(message.payload))  # type: ignore[arg-type]
                if status.online:
                    return status
    raise AssertionError("no status")


@pytest.mark.asyncio
async def test_tls_deployment_daemon_password_never_in_clear_and_metrics_on_loopback(
    deployed_env: DeployedBroker, tmp_path: Path
) -> None:
    broker = deployed_env
    async with _proxy((broker.host, broker.port)) as (proxy, port):
        config = deployed_config(tmp_path, broker, port)
        async with running(config) as daemon:
            status = await online_status(broker)
            assert status.node == "node1"
            host = _metrics_address(daemon)
    # the daemon's three connections (main, market data, reconciliation's not in shadow)
    assert proxy.connections >= 2
    assert len(proxy.bytes) > 1000
    assert broker.passwords["node1"].encode() not in proxy.bytes
    assert b"node1" not in proxy.bytes  # not even the user name: all of it is TLS
    assert host == "127.0.0.1"


def _metrics_address(daemon: Daemon) -> str:
    server = daemon.metrics._server
    assert server is not None
    return str(server.server_address[0])


@pytest.mark.asyncio
async def test_tls_deployment_plaintext_client_is_refused(deployed_broker: DeployedBroker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            deployed_broker.host,
            deployed_broker.port,
            username="operator",
            password=deployed_broker.passwords["operator"],
            timeout=3.0,
        ):
            pass


def test_tls_deployment_metrics_default_to_loopback() -> None:
    assert LiveConfig().metrics_host == "127.0.0.1"
    metrics = DaemonMetrics(("BTC-USD",))
    try:
        metrics.serve(0)
        assert metrics._server is not None
        assert metrics._server.server_address[0] == "127.0.0.1"
    finally:
        metrics.close()
