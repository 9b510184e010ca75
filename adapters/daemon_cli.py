"""``tradeloop run``: the daemon's subcommand, registered by the ``tradeloop`` dispatcher.

``python -m adapters.daemon_cli run --config live.toml`` runs it without the dispatcher.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from adapters.daemon import run_daemon
from adapters.json_logging import install_json_logging
from engine.errors import TradeloopError


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
    return _run_loop(run_daemon(args.config))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` to the ``tradeloop`` dispatcher's subcommands."""
    r = subparsers.add_parser(
        "run",
        help="the live daemon beside the OMS (mode shadow, paper or live from the config)",
        description="Run the engine on live market data over MQTT; every input is journaled "
        "before it is acted on. Stops cleanly on SIGTERM or SIGINT.",
    )
    r.add_argument("--config", required=True, help="TOML config with [mqtt], [live], [journal]")
    r.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="JSON log lines on standard error from this level",
    )
    r.set_defaults(func=cmd_run)


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
