"""``tradeloop live-demo``: the live path on one machine, from sample data to a parity check.

One command plays every part of a deployment: it writes a sample of market data, starts a
mosquitto of its own (users, password file and the ACL of ``docs/mosquitto.acl``, Nagle
off) or uses ``--broker``, writes a live config from ``docs/live.toml`` pointed at that
broker, then starts, each as a child process of the ``tradeloop`` dispatcher:

=========================  =============  ==============================================
child                      broker user    role
=========================  =============  ==============================================
``tradeloop oms-sim``      ``oms``        the OMS: acks and fills by the simulated venue
                                          (live mode only: paper fills inside the daemon)
``tradeloop run``          ``tradeloop``  the daemon, once the OMS listens
``tradeloop publish``      ``feed``       the sample as a feed at ``--speed``, once the
                                          daemon's retained status says online
=========================  =============  ==============================================

It stops by itself ``--grace`` seconds after the feed ends, or on Ctrl-C/SIGTERM, in the
order that lets each part finish its work: the feed, the daemon (SIGTERM: it cancels its
working orders, which the OMS still answers), the OMS, the broker. Then it prints the
session's counts from the decisions log, the journal and the daemon's last status.

The children run in sessions of their own, so a Ctrl-C in the terminal reaches this
process alone and the stop keeps its order. Credentials reach the children through the
environment variables the config names, one user per role; the command key is made per
run and kept, with the broker's address and the operator's login, in
``DIR/live-demo.json`` (mode 0600), which ``live-demo --command ACTION`` reads to send a
signed operator command.

The broker side (logins, the mosquitto of its own, the status watcher) is
``adapters.tools.demo.broker``; what the demo prints, ``adapters.tools.demo.report``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.topics import Topics
from adapters.tools.demo.broker import (
    ROLES,
    BrokerAccess,
    Login,
    Mosquitto,
    StatusWatcher,
    docs_file,
    free_port,
    paho_client,
    paho_connect,
    parse_broker,
)
from adapters.tools.demo.report import print_summary, print_where, read_summary, scrape_filled
from engine.clock import LiveClock
from engine.codec import EventCodec
from engine.config import Config, load_config
from engine.errors import AdapterError, ConfigError
from engine.events import Command, CommandAction

DEMO_FILE = "live-demo.json"
MODES = ("paper", "live", "shadow")
# first start of a daemon compiles every numba kernel (later starts load numba's cache)
_ONLINE_TIMEOUT_S = 180.0
_READY_TIMEOUT_S = 60.0
# the daemon's own stop waits at most [live] shutdown_timeout (5 s in docs/live.toml)
_STOP_TIMEOUT_S = 30.0
_TAIL_LINES = 5


class SampleData(Protocol):
    """Writes ``quotes.parquet`` and ``trades.parquet`` of the first ``symbols`` sample
    instruments (``replay.files.sample_data.generate``, wired by the dispatcher)."""

    def __call__(
        self,
        out_dir: str | Path,
        *,
        symbols: int,
        hours: float,
        quote_interval_ms: float,
        seed: int,
    ) -> tuple[Path, Path]: ...


@dataclass(frozen=True)
class DemoSettings:
    """What ``tradeloop live-demo`` was asked for.

    Attributes:
        out: folder for the data, config, broker files, logs and journal.
        broker: ``HOST:PORT`` of a broker to use instead of a mosquitto of its own.
        speed: feed pace (1 = real time, 0 = as fast as the broker takes it).
        minutes: length of the sample feed, in minutes of market time.
        mode: the daemon's mode (``paper``, ``live`` or ``shadow``).
        grace_s: seconds to wait after the feed ends before stopping.
    """

    out: Path
    broker: str | None = None
    speed: float = 10.0
    minutes: float = 30.0
    mode: str = "live"
    grace_s: float = 3.0


# the entry point


def run_live_demo(settings: DemoSettings, *, sample_data: SampleData, entry: Sequence[str]) -> int:
    """Run the demo until the feed ends (plus the grace period) or Ctrl-C/SIGTERM.

    Args:
        settings: the command line's choices.
        sample_data: writes the sample (``replay.files.sample_data.generate``).
        entry: the command that runs the ``tradeloop`` dispatcher in a child process,
            e.g. ``(sys.executable, "-m", "replay.cli")``.

    Returns:
        0 after a clean stop, 1 if a child failed.

    Raises:
        ConfigError: a bad flag, a missing template, neither mosquitto nor ``--broker``.
        AdapterError: the broker, the OMS or the daemon did not come up.
    """
    _check(settings)
    out = settings.out.resolve()
    for sub in ("data", "logs", "journal"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    template = docs_file("live.toml")
    base, _ = load_config(template)
    symbols = [i.symbol for i in base.instruments]
    sample_data(
        out / "data",
        symbols=len(symbols),
        hours=settings.minutes / 60.0,
        quote_interval_ms=50.0,
        seed=7,
    )
    print(f"sample data: {settings.minutes:g} min of {', '.join(symbols)} in {out / 'data'}")

    stop = threading.Event()
    children: list[_Child] = []
    with contextlib.ExitStack() as stack:
        # leaving stops in the reverse order of starting: feed, daemon, OMS, watcher, broker
        stack.enter_context(_signals_set(stop))
        access = _broker(settings, out, stack)
        command_key = secrets.token_hex(32)
        # the dashboard's operator token, per run like the command key (its buttons)
        dashboard_token = secrets.token_urlsafe(24)
        config_path, config = _write_config(template, out, settings, access)
        _write_demo_file(out, access, config, command_key, dashboard_token)
        topics = Topics(config.mqtt.topic_prefix, config.live.node, config.live.account)
        journal = Path(config.journal.dir)
        watcher = stack.enter_context(StatusWatcher(access, topics.status))
        env = _child_env(config, access, command_key, dashboard_token)

        def start(name: str, role: str, args: list[str], stop_signal: int) -> _Child:
            argv = [*entry, *args, "--config", str(config_path)]
            child = stack.enter_context(_Child(name, argv, env[role], out, stop_signal))
            children.append(child)
            return child

        oms: _Child | None = None
        if settings.mode == "live":
            oms = start("oms-sim", "oms", ["oms-sim"], signal.SIGTERM)
            _wait(
                lambda: oms.says("oms-sim: orders on"),
                _READY_TIMEOUT_S,
                stop,
                oms,
                "the OMS simulator did not subscribe",
            )
        manifests = set(journal.glob("session-*.json"))
        daemon = start("daemon", "daemon", ["run"], signal.SIGTERM)
        _wait(
            lambda: watcher.online,
            _ONLINE_TIMEOUT_S,
            stop,
            daemon,
            "the daemon did not come online",
        )
        session = _new_session(journal, manifests)
        print_where(out, settings.speed, settings.minutes, access, config, topics, session)
        print(f"dashboard: {dashboard_url(config)} (operator token for its buttons: "
              f"{dashboard_token}; also in {out / DEMO_FILE})", flush=True)  # fmt: skip
        feed = start(
            "publish",
            "feed",
            ["publish", str(out / "data"), "--speed", f"{settings.speed:g}"],
            signal.SIGINT,
        )
        while not stop.is_set() and feed.poll() is None:
            stop.wait(0.2)
        at_feed_end = watcher.latest
        feed_failed = feed.poll() not in (None, 0)
        if feed_failed:
            print(f"live-demo: the feed failed: {feed.tail()}", file=sys.stderr)
        elif not stop.is_set():
            print(f"feed done: {feed.last_line()}; stopping in {settings.grace_s:g} s", flush=True)
            stop.wait(settings.grace_s)
        filled = scrape_filled(config.live.metrics_port)
        parts = ["feed", "daemon", *(["OMS"] if oms else []), *(["broker"] if access.own else [])]
        print(f"stopping: {', '.join(parts)}", flush=True)
    summary = read_summary(journal, session, config.mode)
    print_summary(summary, settings.mode, journal, at_feed_end, watcher.latest, filled)
    failed = [c.name for c in children if c.returncode not in (0, None)]
    if failed:
        print(f"live-demo: {', '.join(failed)} failed: see {out / 'logs'}", file=sys.stderr)
        return 1
    return 0


def _check(settings: DemoSettings) -> None:
    if settings.mode not in MODES:
        raise ConfigError("--mode", f"must be one of {', '.join(MODES)}, got {settings.mode!r}")
    if not settings.speed >= 0:
        raise ConfigError("--speed", f"must be >= 0, got {settings.speed:g}")
    if not 0 < settings.minutes <= 24 * 60:
        raise ConfigError("--minutes", f"must be in (0, 1440], got {settings.minutes:g}")
    if not 0 <= settings.grace_s <= 3600:
        raise ConfigError("--grace", f"must be in 0 .. 3600 s, got {settings.grace_s:g}")
    if settings.broker is not None:
        parse_broker(settings.broker)
    elif _mosquitto() is None:
        raise ConfigError(
            "--broker",
            "mosquitto is not installed (apt install mosquitto, brew install mosquitto): "
            "install it or give a broker with --broker HOST:PORT",
        )


@contextlib.contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM ask for the ordered stop instead of interrupting it."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            print(f"\nlive-demo: {signal.Signals(signum).name}, stopping", flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _wait(
    ready: Callable[[], bool], timeout_s: float, stop: threading.Event, child: _Child, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if stop.is_set():
            raise AdapterError(f"live-demo: stopped while waiting: {what}")
        if child.poll() is not None:
            raise AdapterError(f"{what}: {child.name} exited ({child.returncode}): {child.tail()}")
        if time.monotonic() > deadline:
            raise AdapterError(f"{what} within {timeout_s:g} s: see {child.log_path}")
        stop.wait(0.05)


# the broker


def _broker(settings: DemoSettings, out: Path, stack: contextlib.ExitStack) -> BrokerAccess:
    """``--broker`` if given (logins from $TRADELOOP_MQTT_USER/_PASSWORD, else anonymous),
    else a mosquitto of our own."""
    if settings.broker is not None:
        host, port = parse_broker(settings.broker)
        user = os.environ.get("TRADELOOP_MQTT_USER")
        login = Login(user, os.environ.get("TRADELOOP_MQTT_PASSWORD", "")) if user else None
        return BrokerAccess(host, port, own=False, logins=dict.fromkeys(ROLES, login))
    binary = _mosquitto()
    assert binary is not None  # checked with the flags
    return stack.enter_context(Mosquitto(binary, out / "broker", out / "logs" / "broker.log"))


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():  # not on a user's PATH
        found = "/usr/sbin/mosquitto"
    return found


# the config, the demo file, the children's environment


def _write_config(
    template: Path, out: Path, settings: DemoSettings, access: BrokerAccess
) -> tuple[Path, Config]:
    """``DIR/live.toml``: the template with the mode, broker, metrics port and journal set;
    validated in full (``load_config``) before anything starts."""
    text = template.read_text()
    metrics_port = free_port()
    journal = (out / "journal").as_posix()
    text = set_toml_key(text, "", "mode", json.dumps(settings.mode))
    text = set_toml_key(text, "mqtt", "host", json.dumps(access.host))
    text = set_toml_key(text, "mqtt", "port", str(access.port))
    if access.logins["daemon"] is None:  # an anonymous broker: no credentials to name
        text = set_toml_key(text, "mqtt", "username_env", None)
        text = set_toml_key(text, "mqtt", "password_env", None)
    text = set_toml_key(text, "live", "metrics_port", str(metrics_port))
    text = set_toml_key(text, "live", "metrics_host", '"127.0.0.1"')
    # the live dashboard, on this machine only, at a port known before the daemon starts
    text = set_toml_key(text, "live", "dashboard", "true")
    text = set_toml_key(text, "live", "dashboard_host", '"127.0.0.1"')
    text = set_toml_key(text, "live", "dashboard_port", str(free_port()))
    # the demo's own broker has the identity layout of docs/ (client ids bound to users),
    # on a loopback listener without TLS (oms-sim and publish speak no TLS); a --broker of
    # the user's own: one login for every role, as before
    text = set_toml_key(text, "mqtt", "tls", "false")
    text = set_toml_key(text, "mqtt", "ca_file", None)
    text = set_toml_key(text, "mqtt", "bind_client_id", "true" if access.own else "false")
    text = set_toml_key(text, "journal", "dir", json.dumps(journal))
    header = "# written by `tradeloop live-demo` from docs/live.toml\n"
    path = out / "live.toml"
    path.write_text(header + text)
    config, _ = load_config(path)
    m = config.mqtt
    if (config.mode, m.host, m.port, config.journal.dir) != (
        settings.mode,
        access.host,
        access.port,
        journal,
    ):
        raise ConfigError(str(path), "the template's keys could not be set (edited layout?)")
    return path, config


_SECTION = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def set_toml_key(text: str, section: str, key: str, value: str | None) -> str:
    """Set ``key = value`` (a TOML literal) in ``[section]`` of a TOML text (``""``: the top
    level), keeping every other line and comment; ``None`` removes the key. A missing key is
    added at the end of its section, a missing section at the end of the text."""
    lines = text.splitlines()
    current = ""
    start: int | None = 0 if section == "" else None
    end = len(lines)
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i, line in enumerate(lines):
        header = _SECTION.match(line)
        if header is not None:
            if current == section and start is not None:
                end = i
                break
            current = header.group(1)
            if current == section and not line.lstrip().startswith("[["):
                start = i + 1
            continue
        if current == section and start is not None and assignment.match(line):
            if value is None:
                del lines[i]
            else:
                lines[i] = f"{key} = {value}  # set by live-demo"
            return "\n".join(lines) + "\n"
    if value is None:
        return text
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    while end > start and not lines[end - 1].strip():
        end -= 1
    lines.insert(end, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def dashboard_url(config: Config) -> str:
    """The address of the daemon's dashboard (``[live] dashboard_host``/``_port``)."""
    return f"http://{config.live.dashboard_host}:{config.live.dashboard_port}/"


def _write_demo_file(
    out: Path, access: BrokerAccess, config: Config, command_key: str, dashboard_token: str
) -> None:
    operator = access.logins["operator"]
    topics = Topics(config.mqtt.topic_prefix, config.live.node, config.live.account)
    document = {
        "host": access.host,
        "port": access.port,
        "operator": None if operator is None else [operator.username, operator.password],
        "command_key": command_key,
        "command_topic": topics.command,
        # a signature names its target: the daemon refuses one made for another
        "topic_prefix": topics.prefix,
        "node": topics.node,
        "account": topics.account,
        "status_topic": topics.status,
        "dashboard": dashboard_url(config),
        "dashboard_token": dashboard_token,
    }
    path = out / DEMO_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds secrets
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=2)


def _child_env(
    config: Config, access: BrokerAccess, command_key: str, dashboard_token: str
) -> dict[str, dict[str, str]]:
    """Per role: this process's environment, the role's login in the variables the config
    names, the command key and the dashboard's token for the daemon alone."""
    envs: dict[str, dict[str, str]] = {}
    for role in ("daemon", "oms", "feed"):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        login = access.logins[role]
        if login is not None and config.mqtt.username_env and config.mqtt.password_env:
            env[config.mqtt.username_env] = login.username
            env[config.mqtt.password_env] = login.password
        env.pop(config.live.command_key_env, None)
        env.pop(config.live.dashboard_token_env, None)
        envs[role] = env
    envs["daemon"][config.live.command_key_env] = command_key
    envs["daemon"][config.live.dashboard_token_env] = dashboard_token
    return envs


def _new_session(journal: Path, before: set[Path]) -> str:
    new = sorted(set(journal.glob("session-*.json")) - before)
    if not new:
        raise AdapterError(f"the daemon is online but wrote no session file in {journal}")
    return new[-1].stem.removeprefix("session-")


# the children


class _Child:
    """A ``tradeloop`` subcommand in a process (and session) of its own, its output in
    ``DIR/logs/<name>.log``; leaving stops it with ``stop_signal``."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], out: Path, stop_signal: int
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = out / "logs" / f"{name}.log"
        self.stop_signal = stop_signal
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> _Child:
        self._log = self.log_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise AdapterError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(
                    f"live-demo: {self.name} did not stop in {_STOP_TIMEOUT_S:g} s: killed",
                    file=sys.stderr,
                )
                proc.kill()
                proc.wait()
            if self.stop_signal == signal.SIGINT and proc.returncode == 130:
                proc.returncode = 0  # the publisher stopped as asked
        self.returncode = proc.returncode
        if self._log is not None:
            self._log.close()

    def poll(self) -> int | None:
        if self._proc is None:
            return None
        self.returncode = self._proc.poll()
        return self.returncode

    def _lines(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        # tqdm redraws with carriage returns: the last state of a line is what it says
        return [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()]

    def says(self, fragment: str) -> bool:
        return any(fragment in line for line in self._lines())

    def last_line(self) -> str:
        lines = self._lines()
        return lines[-1].strip() if lines else "(no output)"

    def tail(self) -> str:
        return " | ".join(line.strip() for line in self._lines()[-_TAIL_LINES:]) or "(no output)"


# signed operator commands


def send_command(out: Path, action: CommandAction, reason: str = "live-demo") -> str:
    """Send a signed operator command to the demo running in ``out``; returns its topic.

    Raises:
        ConfigError: ``out`` holds no running demo's file.
        AdapterError: the broker is gone or refused the command.
    """
    path = out / DEMO_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("--out", f"{path}: no live-demo here ({exc})") from exc
    operator = document["operator"]
    access = BrokerAccess(
        document["host"],
        int(document["port"]),
        own=False,
        logins={"operator": None if operator is None else Login(*operator)},
    )
    ts = LiveClock().now_ns()  # the command's own stamp; the daemon stamps its receive time
    payload = EventCodec("json").encode(
        Command(ts_event=ts, ts_recv=ts, action=action, reason=reason, issuer="operator")
    )
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    try:
        target = Topics(document["topic_prefix"], document["node"], document["account"])
    except KeyError as exc:
        raise ConfigError("--out", f"{path}: written by an older tradeloop, restart the demo "
                          f"(no {exc})") from exc  # fmt: skip
    props.UserProperty = [
        (SIGNATURE_PROPERTY, sign_command(payload, document["command_key"].encode(), target))
    ]
    client = paho_client("tradeloop-live-demo-command", access.logins["operator"])
    try:
        paho_connect(client, access)
    except AdapterError as exc:
        raise AdapterError(f"{exc} (is `tradeloop live-demo --out {out}` running?)") from exc
    try:
        info = client.publish(document["command_topic"], payload, qos=1, properties=props)
        info.wait_for_publish(10.0)
        if not info.is_published():
            raise AdapterError(f"the broker did not acknowledge the {action} command")
    finally:
        client.disconnect()
        client.loop_stop()
    return str(document["command_topic"])


__all__ = [
    "DEMO_FILE",
    "MODES",
    "DemoSettings",
    "SampleData",
    "run_live_demo",
    "send_command",
    "set_toml_key",
]
