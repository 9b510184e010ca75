"""``tradeloop run`` (the daemon) and ``tradeloop live-demo``, registered by the
``tradeloop`` dispatcher.

``python -m adapters.daemon.cli run --config live.toml`` runs the daemon without the
dispatcher. ``live-demo`` needs what only the dispatcher has (``adapters`` may not import
``replay``): the sample-data writer and the command that runs the dispatcher itself in a
child process (for ``publish``, ``oms-sim`` and ``run``); without them it is not offered.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, get_args

from adapters.daemon.run import run_daemon
from adapters.json_logging import install_json_logging
from adapters.tools.demo.live_demo import (
    MODES,
    DemoSettings,
    SampleData,
    run_live_demo,
    send_command,
)
from engine.errors import TradeloopError
from engine.events import CommandAction


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it exists: only the live entry point installs it."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.run(main)
    return uvloop.run(main)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; 0 after a clean stop.

    Raises:
        TradeloopError: the config cannot run (the dispatcher prints one line).
    """
    install_json_logging(getattr(logging, str(args.log_level).upper()))
    return _run_loop(run_daemon(args.config, accept_journal_loss=args.accept_journal_loss))


def cmd_live_demo(args: argparse.Namespace) -> int:
    """``tradeloop live-demo``: the demo, or with ``--command`` one signed command to the
    demo running in ``--out``.

    Raises:
        TradeloopError: a bad flag, no broker, a part that did not come up.
    """
    out = Path(args.out)
    if args.command_action is not None:
        topic = send_command(out, args.command_action)
        print(f"sent a signed {args.command_action} to {topic}")
        return 0
    settings = DemoSettings(
        out=out,
        broker=args.broker,
        speed=args.speed,
        minutes=args.minutes,
        mode=args.mode,
        grace_s=args.grace,
    )
    return run_live_demo(settings, sample_data=args.sample_data, entry=args.entry)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    sample_data: SampleData | None = None,
    entry: Sequence[str] | None = None,
) -> None:
    """Add ``run`` (and ``live-demo``) to the ``tradeloop`` dispatcher's subcommands.

    Args:
        subparsers: the dispatcher's ``add_subparsers()`` result.
        sample_data: writes sample tick files (``replay.files.sample_data.generate``).
        entry: runs the dispatcher in a child process, e.g.
            ``(sys.executable, "-m", "replay.cli")``.
    """
    r = subparsers.add_parser(
        "run",
        help="the live daemon beside the OMS (mode shadow, paper or live from the config)",
        description="Run the engine on live market data over MQTT; every input is journaled "
        "before it is acted on. Stops cleanly on SIGTERM or SIGINT.",
    )
    r.add_argument("--config", required=True, help="TOML config with [mqtt], [live], [journal]")
    r.add_argument(
        "--accept-journal-loss",
        action="store_true",
        help="start although the journal is shorter than its recorded end (or gone while "
        "its snapshots and session files remain); the loss is journaled. Without it such a "
        "journal is refused",
    )
    r.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="JSON log lines on standard error from this level",
    )
    r.set_defaults(func=cmd_run)
    if sample_data is None or entry is None:
        return
    d = subparsers.add_parser(
        "live-demo",
        help="the live path on one machine: broker, OMS simulator, daemon and a sample feed",
        description="Write sample data, start a mosquitto of its own (or use --broker), "
        "tradeloop oms-sim and the daemon, then play the sample as a feed. Stops after the "
        "feed (plus --grace) or on Ctrl-C, and prints the session's counts.",
    )
    d.add_argument("--out", default="tradeloop-live-demo", help="folder for everything it writes")
    d.add_argument(
        "--broker", metavar="HOST:PORT", help="use this broker, not a mosquitto of its own"
    )
    d.add_argument(
        "--speed", type=float, default=10.0, help="feed pace: 1 = real time, 0 = max (default 10)"
    )
    d.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="minutes of market data in the feed (default 30)",
    )
    d.add_argument("--mode", choices=MODES, default="live", help="the daemon's mode (default live)")
    d.add_argument(
        "--grace", type=float, default=3.0, help="seconds between the feed's end and the stop"
    )
    d.add_argument(
        "--command",
        dest="command_action",
        choices=get_args(CommandAction),
        help="send this signed operator command to the demo running in --out, and exit",
    )
    d.set_defaults(func=cmd_live_demo, sample_data=sample_data, entry=tuple(entry))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradeloop")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TradeloopError as exc:
        print(f"tradeloop: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
