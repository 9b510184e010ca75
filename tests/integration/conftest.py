"""A real mosquitto broker per test, on a free port, with a password file.

Tests never use the machine's broker on 1883. Where the ``mosquitto`` binary is missing
(a user's own clone), the integration tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.tools.certs import make_certificates

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str  # a user the password file knows
    password: str
    operator: str  # the user allowed to publish operator commands
    operator_password: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_running(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    """True once this mosquitto logs that it runs (it logs ``running`` only after its
    listener is bound, so a port another test's broker took in the meantime, which
    ``connect`` alone would not tell apart, reads as a failed start); False if it exited."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        text = log.read_text(errors="replace") if log.exists() else ""
        if " running" in text:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return True
        time.sleep(0.02)
    raise RuntimeError("mosquitto did not start listening within 10 s")


def _password_file(path: Path, passwords: dict[str, str]) -> None:
    for i, (user, password) in enumerate(passwords.items()):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(path), user, password],
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def _mosquitto(conf: Path, log: Path, conf_text: Callable[[int], str]) -> Iterator[int]:
    """A mosquitto running ``conf_text(port)`` on a free port, stopped on exit; yields the
    port. Tests run in parallel workers: a free port can be taken by another worker's
    broker before this one binds it, so a failed start is retried on another port."""
    for _attempt in range(5):
        port = _free_port()
        log.unlink(missing_ok=True)
        conf.write_text(conf_text(port))
        proc = subprocess.Popen(
            [MOSQUITTO or "mosquitto", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait_running(port, proc, log):
            break
    else:
        raise RuntimeError(f"mosquitto exited: {log.read_text(errors='replace')}")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# the command key every test daemon's config reads (``command_key_env``)
COMMAND_KEY = "test-command-key"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto on a free port: anonymous access off, two users (``daemon`` and
    ``operator``), an ACL that lets only ``operator`` publish on ``tradeloop/+/command`` (``daemon``
    may publish market data, orders, reports and status)."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    passwd = tmp_path / "passwd"
    users = {"daemon": "daemon-secret", "operator": "operator-secret"}
    _password_file(passwd, users)
    acl = tmp_path / "acl"
    acl.write_text(
        "user daemon\ntopic read #\ntopic write md/#\ntopic write oms/#\n"
        "topic write tradeloop/+/status\n\nuser operator\ntopic readwrite #\n"
    )
    log = tmp_path / "mosquitto.log"

    def conf_text(port: int) -> str:
        # started as root, mosquitto switches to its own user unless told to stay, and
        # could not read files in pytest's private tmp dir then
        return (
            f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {acl}\npersistence false\nlog_dest file {log}\n"
            "max_queued_messages 100000\n"
            # without it the broker's Nagle holds quotes to a client that also publishes
            # (the daemon) by ~10 ms once it has sent its first order
            "set_tcp_nodelay true\n"
        )

    with _mosquitto(tmp_path / "mosquitto.conf", log, conf_text) as port:
        yield Broker(
            "127.0.0.1", port, "daemon", users["daemon"], "operator", users["operator"], log
        )


@pytest.fixture
def daemon_env(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    """The broker, with the environment a test daemon's config names for its credentials
    (``TL_TEST_MQTT_USER``/``_PASSWORD``) and its command key (``TL_TEST_COMMAND_KEY``)."""
    monkeypatch.setenv("TL_TEST_MQTT_USER", broker.username)
    monkeypatch.setenv("TL_TEST_MQTT_PASSWORD", broker.password)
    monkeypatch.setenv("TL_TEST_COMMAND_KEY", COMMAND_KEY)
    return broker


# the deployment of docs/: its broker config and ACL, over TLS


DOCS = Path(__file__).resolve().parents[2] / "docs"
# docs/mosquitto.acl's users (a daemon's three: node1's), and node2, a second daemon's user
# known to the password file and to the ACL's patterns only
DEPLOYED_USERS = ("node1", "node1-md", "node1-reconcile", "node2", "oms", "feed", "operator")
# lines of docs/mosquitto.conf the fixture writes itself (paths and the listener)
_LOCAL_KEYS = frozenset({
    "user", "listener", "cafile", "certfile", "keyfile", "password_file", "acl_file",
    "persistence", "persistence_location", "log_dest",
})  # fmt: skip


@dataclass(frozen=True)
class DeployedBroker:
    host: str
    port: int
    ca_file: Path  # the CA that signs the broker's certificate
    passwords: dict[str, str]  # per user of DEPLOYED_USERS
    log: Path


@pytest.fixture
def deployed_broker(tmp_path: Path) -> Iterator[DeployedBroker]:
    """A mosquitto as docs/ ship it: docs/mosquitto.conf's settings (client ids bound to
    users, no anonymous access), docs/mosquitto.acl, a TLS listener on a free port of
    127.0.0.1 with certificates from ``adapters.tools.certs``, a password per user of
    ``DEPLOYED_USERS`` (the daemon's three users share theirs)."""
    if MOSQUITTO is None or shutil.which("openssl") is None:
        pytest.skip("mosquitto or openssl is not installed")
    certs = make_certificates(tmp_path / "certs", ("127.0.0.1", "localhost"), days=1)
    passwd = tmp_path / "passwd"
    daemon_password = "node1-secret"
    passwords = {
        u: daemon_password if u.startswith("node1") else f"{u}-secret" for u in DEPLOYED_USERS
    }
    _password_file(passwd, passwords)
    acl = tmp_path / "acl"
    acl.write_text((DOCS / "mosquitto.acl").read_text())
    shipped = [
        line
        for line in (DOCS / "mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#") and line.split()[0] not in _LOCAL_KEYS
    ]
    log = tmp_path / "mosquitto-tls.log"

    def conf_text(port: int) -> str:
        return (
            f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\ncafile {certs.ca_cert}\n"
            f"certfile {certs.broker_cert}\nkeyfile {certs.broker_key}\n"
            + "\n".join(shipped)
            + f"\npassword_file {passwd}\nacl_file {acl}\npersistence false\n"
            f"log_dest file {log}\n"
        )

    with _mosquitto(tmp_path / "mosquitto-tls.conf", log, conf_text) as port:
        yield DeployedBroker("127.0.0.1", port, certs.ca_cert, passwords, log)


@pytest.fixture
def deployed_env(
    deployed_broker: DeployedBroker, monkeypatch: pytest.MonkeyPatch
) -> DeployedBroker:
    """The variables docs/live.toml names (the daemon's user node1), and the operator's
    login for ``tradeloop command``."""
    monkeypatch.setenv("TRADELOOP_MQTT_USER", "node1")
    monkeypatch.setenv("TRADELOOP_MQTT_PASSWORD", deployed_broker.passwords["node1"])
    monkeypatch.setenv("TRADELOOP_COMMAND_KEY", COMMAND_KEY)
    monkeypatch.setenv("TRADELOOP_OPERATOR_USER", "operator")
    monkeypatch.setenv("TRADELOOP_OPERATOR_PASSWORD", deployed_broker.passwords["operator"])
    return deployed_broker
