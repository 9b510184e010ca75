"""The broker side of ``tradeloop live-demo``: where the broker is and who logs in for each
role, a mosquitto of the demo's own (the users and ACL of ``docs/mosquitto.acl``), and the
operator's paho connections (the daemon's retained status, signed commands).
"""

from __future__ import annotations

import getpass
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from adapters.mqtt.status import Status, decode_status
from engine.errors import AdapterError, ConfigError

_DOCS = Path(__file__).resolve().parents[3] / "docs"
# the users of docs/mosquitto.acl, one per role: the daemon's is its node's name (the
# template's [live] node), the status watcher's the read-only ``monitor`` (the broker binds
# client ids to users: one connection per user, and the operator sends commands)
ROLES = {"daemon": "node1", "oms": "oms", "feed": "feed", "operator": "operator",
         "monitor": "monitor"}  # fmt: skip
# the daemon's market-data and reconciliation connections log in as users of their own
# (``[mqtt] bind_client_id``), with the daemon's password
DAEMON_CONNECTIONS = ("md", "reconcile")


def docs_file(name: str) -> Path:
    """A file of the repository's ``docs/`` (the live config template, the broker's ACL).

    Raises:
        ConfigError: not there (live-demo runs from a clone of the repository).
    """
    path = _DOCS / name
    if not path.is_file():
        raise ConfigError(
            "live-demo", f"{path} not found: live-demo runs from a clone of the repository"
        )
    return path


@dataclass(frozen=True)
class Login:
    username: str
    password: str


@dataclass(frozen=True)
class BrokerAccess:
    """Where the broker is and who logs in for each role (None: anonymous)."""

    host: str
    port: int
    own: bool
    logins: dict[str, Login | None]


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:1883`` for an IPv6 host).

    Raises:
        ConfigError: not ``HOST:PORT``.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65_535:
        raise ConfigError("--broker", f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A mosquitto of the demo's own on a free port of 127.0.0.1: anonymous access off, a
    generated password per user of ``docs/mosquitto.acl``, that ACL, Nagle off.

    Args:
        binary: the mosquitto executable.
        directory: where the config, password file and ACL go.
        log: the broker's log file.
    """

    def __init__(self, binary: str, directory: Path, log: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BrokerAccess:
        passwd_tool = shutil.which("mosquitto_passwd") or str(
            Path(self.binary).with_name("mosquitto_passwd")
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        passwd = self.directory / "passwd"
        passwd.unlink(missing_ok=True)
        logins: dict[str, Login | None] = {}
        entries: list[tuple[str, str]] = []
        for role, user in ROLES.items():
            login = Login(user, secrets.token_urlsafe(18))
            logins[role] = login
            entries.append((user, login.password))
            if role == "daemon":
                entries += [(f"{user}-{c}", login.password) for c in DAEMON_CONNECTIONS]
        for i, (user, password) in enumerate(entries):
            try:
                subprocess.run(
                    [passwd_tool, "-b", *(["-c"] if i == 0 else []), str(passwd), user, password],
                    check=True,
                    capture_output=True,
                )
            except (OSError, subprocess.CalledProcessError) as exc:
                raise AdapterError(f"mosquitto_passwd failed: {exc}") from exc
        passwd.chmod(0o600)
        acl = self.directory / "acl"
        shutil.copyfile(docs_file("mosquitto.acl"), acl)
        port = free_port()
        conf = self.directory / "mosquitto.conf"
        # docs/mosquitto.conf's users and ACL, and the daemon logs in as its node's users with
        # bound client ids; unlike docs/mosquitto.conf, no use_username_as_clientid (oms-sim
        # opens two connections as its one user, which would knock each other off) and no
        # TLS (oms-sim and publish speak none): a listener on loopback only
        # started as root, mosquitto switches to its own user unless told to stay, and could
        # not read the files here then
        conf.write_text(
            f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {acl}\npersistence false\n"
            f"log_dest file {self.log}\nmax_queued_messages 100000\n"
            # as docs/mosquitto.conf: Nagle held quotes to the daemon by ~10 ms
            "set_tcp_nodelay true\n"
        )
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10.0
        while True:
            if self._proc.poll() is not None:
                raise AdapterError(f"mosquitto exited ({self._proc.returncode}): see {self.log}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise AdapterError(f"mosquitto did not listen on {port} within 10 s")
            time.sleep(0.02)
        return BrokerAccess("127.0.0.1", port, own=True, logins=logins)

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class StatusWatcher:
    """Subscribes to the daemon's retained status (as ``monitor``, the operator on a
    broker not of the demo's own) and keeps the newest."""

    def __init__(self, access: BrokerAccess, topic: str) -> None:
        self.access = access
        self.topic = topic
        self.latest: Status | None = None
        watcher = access.logins.get("monitor", access.logins["operator"])
        self._client = paho_client("tradeloop-live-demo-status", watcher)
        self._client.on_message = self._on_message

    @property
    def online(self) -> bool:
        return self.latest is not None and self.latest.online

    def __enter__(self) -> StatusWatcher:
        paho_connect(self._client, self.access)
        self._client.subscribe(self.topic, qos=1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            status = decode_status(bytes(message.payload))
        except msgspec.DecodeError:
            return
        self.latest = status


def paho_client(client_id: str, login: Login | None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if login is not None:
        client.username_pw_set(login.username, login.password)
    return client


def paho_connect(client: paho.Client, access: BrokerAccess, timeout_s: float = 10.0) -> None:
    """Connect and wait for the broker's answer (paho's thread runs from here on).

    Raises:
        AdapterError: no broker there, or it refused the login.
    """
    answered = threading.Event()
    reasons: list[ReasonCode] = []

    def on_connect(c: paho.Client, u: object, f: object, reason: ReasonCode, p: object) -> None:
        reasons.append(reason)
        answered.set()

    client.on_connect = on_connect
    where = f"{access.host}:{access.port}"
    try:
        client.connect(access.host, access.port)
    except OSError as exc:
        raise AdapterError(f"broker {where}: {exc}") from exc
    client.loop_start()
    if not answered.wait(timeout_s) or reasons[0].is_failure:
        client.loop_stop()
        why = str(reasons[0]) if reasons else f"no answer within {timeout_s:g} s"
        raise AdapterError(f"broker {where} refused the connection: {why}")
