"""``tradeloop monitor-report RUN_OR_JOURNAL --out DIR``: the model monitor's page
(``monitor.html`` and ``monitor_page.png``) of a replay run folder or of a live session.

A run folder holds the monitor's figures in ``monitor.json`` and the trading-state changes
in ``metrics.json``. A live session's journal folder is replayed through the engine that
ran it (``replay.sessions.journal_replay``, which builds it with ``engine.assembly`` and so attaches
the same monitor); the monitor is read after the last record, the trading-state changes
from the replayed decisions. ``--models`` adds the registry's promotions and rollbacks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adapters.model_registry_store import Registry
from engine.errors import DataError
from engine.events import TradingState
from engine.monitor import ModelMonitor
from replay.monitor.report import monitor_document, write_monitor_page
from replay.sessions.journal_replay import is_journal_dir, replay_journal


def add_monitor_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tradeloop monitor-report``."""
    parser.add_argument("source", help="a replay run folder (with monitor.json) or a live "
                        "session's journal folder")  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for monitor.html and monitor_page.png")
    parser.add_argument("--session", default=None, help="journal: the session id (default: latest)")
    parser.add_argument("--models", default=None,
                        help="a model registry folder: its promotions and rollbacks join the timeline")  # fmt: skip


def monitor_source(
    source: Path, session: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """The monitor document, the trading-state changes and a title for ``source``.

    Raises:
        DataError: neither a run folder with ``monitor.json`` nor a journal folder, or the
            session's model is not monitored.
        TradeloopError: as ``replay_journal``.
    """
    doc_path = source / "monitor.json"
    if doc_path.is_file():
        try:
            doc = json.loads(doc_path.read_text())
            metrics_path = source / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(str(source), f"cannot read the run folder's json: {exc}") from exc
        return doc, list(metrics.get("trading_states", [])), f"model monitor: run {source.name}"
    if is_journal_dir(source):
        result = replay_journal(source, session=session)
        monitor = next((o for o in result.engine.observers if isinstance(o, ModelMonitor)), None)
        if monitor is None:
            raise DataError(str(source), "the session's model is not monitored ([monitor] "
                            "enabled = false, or a model without a manifest)")  # fmt: skip
        states = [
            {"ts_event": d.ts_event, "state": d.state, "previous": d.previous, "reason": d.reason}
            for d in result.decisions
            if isinstance(d, TradingState)
        ]
        title = f"model monitor: live session {result.session.info.session_id}"
        return monitor_document(monitor), states, title
    raise DataError(str(source), "neither a run folder with monitor.json (a replay with a "
                    "monitored model) nor a live session's journal folder")  # fmt: skip


def registry_promotions(models: Path) -> list[dict[str, Any]]:
    """The registry's promotions and rollbacks (audit entries), oldest first.

    Raises:
        RegistryError, AuditChainError: no registry there, or its audit log is broken.
    """
    return [
        {"ts_ns": e.ts_ns, "action": e.action, "alias": e.alias, "version": e.version,
         "from_version": e.from_version, "stage": e.stage, "who": e.who, "reason": e.reason}
        for e in Registry(models).state().entries
        if e.action in ("promote", "rollback")
    ]  # fmt: skip


def cmd_monitor_report(args: argparse.Namespace) -> int:
    """``tradeloop monitor-report RUN_OR_JOURNAL --out DIR [--session ID] [--models DIR]``.

    Raises:
        TradeloopError: a user's mistake (see ``monitor_source``, ``registry_promotions``).
    """
    doc, states, title = monitor_source(Path(args.source), getattr(args, "session", None))
    models = getattr(args, "models", None)
    promotions = registry_promotions(Path(models)) if models else []
    paths = write_monitor_page(doc, args.out, states=states, promotions=promotions, title=title)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
