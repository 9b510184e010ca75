"""The live tools' subcommands: ``tradeloop publish``, ``tradeloop oms-sim``,
``tradeloop command`` (a signed operator command to one's own daemon) and
``tradeloop certs`` (a CA and the broker's certificate for a first deployment).

``register`` adds them to the ``tradeloop`` dispatcher. Reading tick and depth files
belongs to ``replay``, which ``adapters`` may not import, so the dispatcher hands in the
functions that open a tick folder (``TickFiles``) and its depth files (``DepthFiles``)
along with the path of the bundled config.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, get_args

from engine.errors import ConfigError
from engine.events import CommandAction
from engine.units import parse_duration_ns

if TYPE_CHECKING:
    from adapters.tools.oms.oms_sim import MqttOmsSimulator
    from engine.book.batch import DepthBatch
    from engine.config import Config
    from engine.ticks import TickBatch

# ``replay/cli.py`` imports ``register`` at start-up of every ``tradeloop`` command: what
# pulls in aiomqtt, numpy, numba (``engine.config`` builds feature sets) or tqdm is
# imported inside the command functions.

# AnswerFault's modes, spelled here so building the parser imports nothing heavy
# (tests check they match ``adapters.tools.oms.oms_sim.AnswerMode``)
ANSWER_MODES = ("normal", "late", "twice", "shuffled", "never")


class TickFiles(Protocol):
    """Opens a folder (or file) of tick files: the time-ordered batches, with their
    ``instrument`` indices in the order of ``config.instruments``, and the row count
    (for the progress bar; None when unknown)."""

    def __call__(self, config: Config, data: str) -> tuple[Iterator[TickBatch], int | None]: ...


class DepthFiles(Protocol):
    """Opens the depth files of a folder (or a file): the time-ordered depth batches with
    ``instrument`` indices in the order of ``config.instruments``, or None when it has none."""

    def __call__(self, config: Config, data: str) -> Iterator[DepthBatch] | None: ...


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    tick_files: TickFiles,
    default_config: Path,
    depth_files: DepthFiles | None = None,
) -> None:
    """Add ``publish`` and ``oms-sim`` to the dispatcher's subcommands.

    Args:
        subparsers: the dispatcher's ``add_subparsers()`` result.
        tick_files: opens a tick folder (``replay``'s readers, wired by the dispatcher).
        depth_files: opens its depth files, played beside the ticks (None: ticks only).
        default_config: the config used when ``--config`` is not given.
    """
    p = subparsers.add_parser(
        "publish", help="play tick files onto an MQTT broker as a live market-data feed"
    )
    p.add_argument(
        "data",
        help="folder of *quotes*/*trades* (and depth) parquet|csv files, or one file",
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="1 = real time, 10 = ten times faster, 0 = max"
    )
    p.add_argument(
        "--keep-time",
        action="store_true",
        help="send the files' ts_event (default: the time each message is sent, as a live "
        "feed; a daemon refuses market data older than [live] max_tick_age)",
    )
    _broker_arguments(p)
    p.add_argument("--format", choices=("json", "msgpack"), help="payload format ([mqtt] format)")
    p.set_defaults(
        func=cmd_publish,
        tick_files=tick_files,
        depth_files=depth_files,
        default_config=default_config,
    )

    o = subparsers.add_parser(
        "oms-sim", help="play the OMS on an MQTT broker: acks, fills, cancels, reconciliation"
    )
    _broker_arguments(o)
    o.add_argument("--account", help="OMS account of the order/report topics ([live] account)")
    o.add_argument("--latency", help="one-way order latency, e.g. 250us ([venue.sim] latency)")
    o.add_argument("--fee-bps", type=float, help="taker fee in bps of notional ([venue.sim])")
    o.add_argument(
        "--format", choices=("json", "msgpack"), help="format of the reports ([mqtt] format)"
    )
    o.add_argument(
        "--answer",
        choices=ANSWER_MODES,
        default="normal",
        help=(
            "how reports are answered, to rehearse a misbehaving OMS: normal (at once), "
            "late (each report --answer-delay late, in order), twice (each report "
            "published twice), shuffled (an order's reports held until it is closed, then "
            "newest first: fill before ack), never (no report and no reconciliation "
            "answer) (default: %(default)s)"
        ),
    )
    o.add_argument(
        "--answer-delay",
        default="2s",
        metavar="DURATION",
        help="how late reports are with --answer late, e.g. 500ms (default: %(default)s)",
    )
    o.add_argument(
        "--cancel-on-disconnect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cancel a daemon's working orders when its status goes offline (last will or "
        "goodbye) or its heartbeat lapses (default: on)",
    )
    o.add_argument(
        "--heartbeat-lapse",
        default="5s",
        metavar="DURATION",
        help="no status from an online daemon for this long cancels its orders; 0: only "
        "the last will (default: %(default)s)",
    )
    o.set_defaults(func=cmd_oms_sim, default_config=default_config)
    _register_operator_tools(subparsers)


def _register_operator_tools(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    c = subparsers.add_parser(
        "command",
        help="send a signed operator command to your daemon; print the state it then reports",
        description="Sign ACTION for the daemon of --config (its [mqtt] broker and TLS, "
        "[live] node and account, the key in $[live] command_key_env), send it as the "
        "operator's broker user, and print the trading state the daemon's retained status "
        "shows next.",
    )
    c.add_argument("action", choices=get_args(CommandAction), help="the command")
    c.add_argument("--config", required=True, help="the daemon's TOML config (live.toml)")
    c.add_argument("--reason", default="tradeloop command", help="recorded with the command")
    c.add_argument("--target", default="", help="promote: a version, a prefix or challenger")
    c.add_argument("--stage", default="", help="promote: the registry stage")
    c.add_argument(
        "--username-env",
        default="TRADELOOP_OPERATOR_USER",
        metavar="VAR",
        help="variable holding the operator's broker user (default: %(default)s)",
    )
    c.add_argument(
        "--password-env",
        default="TRADELOOP_OPERATOR_PASSWORD",
        metavar="VAR",
        help="variable holding its password (default: %(default)s)",
    )
    c.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the daemon's status (default: %(default)s)",
    )
    c.set_defaults(func=cmd_command)
    k = subparsers.add_parser(
        "certs",
        help="make a CA and the broker's TLS certificate for a first deployment",
        description="Write ca.crt, ca.key, broker.crt and broker.key into DIR (never "
        "overwritten), with openssl. The broker serves broker.crt; clients check it "
        "against ca.crt ([mqtt] ca_file). Keep ca.key elsewhere once done.",
    )
    k.add_argument("dir", help="folder for the files, e.g. deploy/certs")
    k.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME",
        help="a name or address clients reach the broker by (repeat; default: mosquitto, "
        "localhost, 127.0.0.1)",
    )
    k.add_argument("--days", type=int, default=825, help="validity (default: %(default)s)")
    k.set_defaults(func=cmd_certs)


def cmd_command(args: argparse.Namespace) -> int:
    """``tradeloop command``: prints the daemon's state after the command; returns 0.

    Raises:
        ConfigError: a bad config, or the key or a login variable is not set.
        AdapterError: the broker refused, or the daemon reported no effect in time.
    """
    from adapters.tools.operator_command import describe, send_command
    from engine.config import load_config

    if args.timeout <= 0:
        raise ConfigError("--timeout", f"must be > 0, got {args.timeout:g}")
    config, _ = load_config(args.config)
    result = asyncio.run(
        send_command(
            config,
            args.action,
            reason=args.reason,
            username_env=args.username_env,
            password_env=args.password_env,
            target=args.target,
            stage=args.stage,
            timeout_s=args.timeout,
        )
    )
    print(describe(result))
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    """``tradeloop certs DIR``: returns 0.

    Raises:
        ConfigError: DIR already holds certificates, or a bad flag.
        AdapterError: openssl is missing or failed.
    """
    from adapters.tools.certs import DEFAULT_HOSTS, make_certificates

    if args.days <= 0:
        raise ConfigError("--days", f"must be > 0, got {args.days}")
    files = make_certificates(Path(args.dir), tuple(args.hosts or DEFAULT_HOSTS), days=args.days)
    print(f"CA {files.ca_cert} (keep {files.ca_key} elsewhere), broker {files.broker_cert}")
    return 0


def _broker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config: instruments, [mqtt] (default: the bundled one)")
    p.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker ([mqtt] host and port)")
    p.add_argument("--username", help="broker user (default: $[mqtt] username_env)")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the password ([mqtt] password_env)",
    )
    p.add_argument("--prefix", help="topic prefix, with its trailing / ([mqtt] topic_prefix)")


def cmd_publish(args: argparse.Namespace) -> int:
    """``tradeloop publish``: returns the exit code.

    Raises:
        ConfigError: a bad flag or config value.
        DataError: a bad tick or depth file.
        AdapterError: the broker refused or dropped the connection.
    """
    from tqdm import tqdm

    from adapters.mqtt.topics import Topics
    from adapters.tools.publish import MqttTickPublisher, merge_by_time
    from engine.codec import EventCodec
    from engine.instruments import InstrumentTable

    config = _config(args)
    if args.speed < 0:
        raise ConfigError("--speed", f"must be >= 0, got {args.speed:g}")
    host, port = _broker(args, config)
    username, password = _credentials(args, config)
    instruments = InstrumentTable(list(config.instruments))
    ticks, total = args.tick_files(config, args.data)
    opener = getattr(args, "depth_files", None)
    depth = opener(config, args.data) if opener is not None else None
    # depth updates go out between the ticks, in time order (the bar's total counts ticks
    # only: the number of updates is not known before the files are read)
    batches = ticks if depth is None else merge_by_time(ticks, depth)
    publisher = MqttTickPublisher(
        host,
        port,
        instruments=instruments,
        topics=Topics(prefix=_prefix(args, config)),
        codec=EventCodec(args.format or config.mqtt.format),
        username=username,
        password=password,
        restamp=not args.keep_time,
    )
    with (
        publisher,
        tqdm(total=total, unit="msg", unit_scale=True, desc="publish", disable=None) as bar,
    ):
        result = publisher.publish(batches, speed=args.speed, progress=bar.update)
    print(
        f"published {result.messages:,} messages in {result.seconds:.2f}s "
        f"({result.rate:,.0f} msgs/s) to {host}:{port}"
    )
    return 0


def cmd_oms_sim(args: argparse.Namespace) -> int:
    """``tradeloop oms-sim``: serves until SIGTERM or SIGINT; returns the exit code.

    Raises:
        ConfigError: a bad flag or config value.
        AdapterError: the broker refused or dropped the connection.
    """
    from adapters.mqtt.topics import Topics
    from adapters.sim_venue import SimulatedVenue
    from adapters.tools.oms.disconnect import CancelOnDisconnect
    from adapters.tools.oms.oms_sim import AnswerFault, MqttOmsSimulator
    from adapters.tools.oms.simulated_oms import SimulatedOms, warm_up
    from engine.instruments import InstrumentTable

    config = _config(args)
    host, port = _broker(args, config)
    username, password = _credentials(args, config)
    try:
        delay_ns = parse_duration_ns(args.answer_delay)
    except ValueError as exc:
        raise ConfigError("--answer-delay", str(exc)) from exc
    if args.answer == "late" and delay_ns <= 0:
        raise ConfigError("--answer-delay", "must be > 0 with --answer late")
    fault = AnswerFault(mode=args.answer, delay_s=delay_ns / 1e9)
    try:
        lapse_ns = parse_duration_ns(args.heartbeat_lapse)
    except ValueError as exc:
        raise ConfigError("--heartbeat-lapse", str(exc)) from exc
    on_disconnect = CancelOnDisconnect(
        enabled=args.cancel_on_disconnect, heartbeat_lapse_s=lapse_ns / 1e9 if lapse_ns else None
    )
    sim = config.venue.sim
    latency_ns = sim.latency_ns
    if args.latency is not None:
        try:
            latency_ns = parse_duration_ns(args.latency)
        except ValueError as exc:
            raise ConfigError("--latency", str(exc)) from exc
    fee_bps = sim.fee_bps if args.fee_bps is None else args.fee_bps
    if not 0.0 <= fee_bps <= 1000.0:
        raise ConfigError("--fee-bps", f"must be in 0 .. 1000, got {fee_bps:g}")
    instruments = InstrumentTable(list(config.instruments))
    warm_up(instruments)  # before the banner: "orders on ..." means ready to answer
    oms = SimulatedOms(instruments, SimulatedVenue(latency_ns, fee_bps, sim.maker_fee_bps))
    topics = Topics(prefix=_prefix(args, config), account=args.account or config.live.account)
    simulator = MqttOmsSimulator(
        oms,
        host=host,
        port=port,
        topics=topics,
        username=username,
        password=password,
        report_format=args.format or config.mqtt.format,
        market_data_qos=config.mqtt.market_data_qos,
        fault=fault,
        cancel_on_disconnect=on_disconnect,
    )
    asyncio.run(_serve(simulator))
    c = oms.counters
    bad = sum(simulator.bad_messages.values())
    answered = sum(o.status != "pending" for o in oms.orders.values())
    print(
        f"oms-sim stopped: {c['orders']} orders ({c['resends']} resends, {answered} "
        f"answered), {c['cancels']} cancels, {c['fills']} fills, {c['requests']} "
        f"reconciliation requests, {c['ticks']:,} ticks, {bad} bad messages, "
        f"{c['reconnects']} reconnects"
    )
    return 0


async def _serve(simulator: MqttOmsSimulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with simulator:
            t = simulator.topics
            mode = simulator.fault.mode
            print(
                f"oms-sim: orders on {t.orders}, reports on {t.reports}, requests on "
                f"{t.requests}; answers {mode}; SIGTERM or Ctrl-C stops",
                flush=True,
            )
            # a broker restart is not the end of the OMS: it reconnects with its state
            await simulator.serve(stop, reconnect=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _config(args: argparse.Namespace) -> Config:
    from engine.config import load_config

    config, _ = load_config(args.config or args.default_config)
    if not config.instruments:
        raise ConfigError("instruments", "no [[instruments]]: nothing to publish or trade")
    return config


def _broker(args: argparse.Namespace, config: Config) -> tuple[str, int]:
    if args.broker is None:
        return config.mqtt.host, config.mqtt.port
    host, sep, port = str(args.broker).rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65_535:
        raise ConfigError("--broker", f"expected HOST:PORT, got {args.broker!r}")
    return host.strip("[]"), int(port)  # [::1]:1883 names an IPv6 host


def _prefix(args: argparse.Namespace, config: Config) -> str:
    return str(args.prefix) if args.prefix is not None else config.mqtt.topic_prefix


def _credentials(args: argparse.Namespace, config: Config) -> tuple[str | None, str | None]:
    username = args.username
    if username is None and config.mqtt.username_env:
        username = _env(config.mqtt.username_env, "mqtt.username_env")
    password_env = args.password_env or config.mqtt.password_env
    password = None
    if password_env:
        password = _env(
            password_env, "--password-env" if args.password_env else "mqtt.password_env"
        )
    if password is not None and username is None:
        raise ConfigError("--username", "a password is set but no user name")
    return username, password


def _env(name: str, where: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(where, f"environment variable {name} is not set")
    return value
