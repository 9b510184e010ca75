"""What ``tradeloop live-demo`` prints: where everything is once the daemon is online, and
the session's counts after the stop (from the decisions log, the journal and the daemon's
last status).
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from adapters.journal_file import FileJournalReader
from adapters.mqtt.status import Status
from adapters.mqtt.topics import Topics
from adapters.tools.demo.broker import BrokerAccess
from engine.config import Config
from engine.events import Fill
from engine.journal import ReportRecord


@dataclass
class DemoSummary:
    """The session's counts, read after the stop."""

    session_id: str = ""
    decisions: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    fills: int | None = None
    last_state: str | None = None


def print_where(
    out: Path,
    speed: float,
    minutes: float,
    access: BrokerAccess,
    config: Config,
    topics: Topics,
    session: str,
) -> None:
    wall = (
        "as fast as the broker takes it"
        if speed == 0
        else (f"about {minutes * 60 / speed:.0f} s at {speed:g}x")
    )
    operator = access.logins["operator"]
    login = "" if operator is None else f" -u {operator.username} -P {operator.password}"
    broker = "mosquitto of its own" if access.own else "--broker"
    logs = out / "logs"
    names = "oms-sim,daemon,publish" if config.mode == "live" else "daemon,publish"
    print(
        f"\nlive-demo: daemon online in {config.mode} mode, session {session}; feed of "
        f"{minutes:g} min starts now ({wall}). Ctrl-C stops everything.\n"
        f"  broker    {access.host}:{access.port} ({broker}; log {logs / 'broker.log'})\n"
        f"  metrics   http://127.0.0.1:{config.live.metrics_port}/metrics\n"
        f"  status    {topics.status} (retained): mosquitto_sub -V 5 -h {access.host} "
        f"-p {access.port}{login} -t {topics.status}\n"
        f"  journal   {config.journal.dir} (decisions: decisions-{session}.jsonl in it)\n"
        f"  logs      {logs}/{{{names}}}.log\n"
        f"  command   tradeloop live-demo --out {out} --command kill   "
        "(or reduce_only, flatten, resume; signed with this run's key)\n"
        f"  parity    tradeloop parity {config.journal.dir}   (after the stop)\n",
        flush=True,
    )


def scrape_filled(port: int) -> float | None:
    """Orders filled by the daemon's count (paper fills never cross the journal)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    match = re.search(r'^tradeloop_orders_total\{status="filled"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def read_summary(journal: Path, session: str, mode: str) -> DemoSummary:
    summary = DemoSummary(session_id=session)
    decisions = journal / f"decisions-{session}.jsonl"
    with contextlib.suppress(OSError), decisions.open("rb") as f:
        for line in f:
            event = json.loads(line)
            kind = str(event.get("type"))
            summary.decisions[kind] += 1
            if kind == "risk_rejected":
                summary.rejections[str(event.get("check"))] += 1
            elif kind == "trading_state":
                summary.last_state = str(event.get("state"))
    if mode == "live":
        manifest = json.loads((journal / f"session-{session}.json").read_text())
        prefix = str(manifest["order_id_prefix"])
        summary.fills = sum(
            1
            for record in FileJournalReader(journal)
            if isinstance(record, ReportRecord)
            and isinstance(record.report, Fill)
            and record.report.client_order_id.startswith(prefix)
        )
    return summary


def print_summary(
    summary: DemoSummary,
    mode: str,
    journal: Path,
    at_feed_end: Status | None,
    goodbye: Status | None,
    filled: float | None,
) -> None:
    d = summary.decisions
    refused = ", ".join(f"{check} {n}" for check, n in summary.rejections.most_common())
    if mode == "shadow":
        fills = "no fills (shadow: intended orders only)"
    elif summary.fills is not None:
        fills = f"{summary.fills} fills (journal)"
    elif filled is not None:
        fills = f"{filled:g} fills (the daemon's metrics: paper fills stay inside it)"
    else:
        fills = "fills unknown"
    book = goodbye if goodbye is not None else at_feed_end
    if book is None:
        book_line = "?"
    else:
        positions = ", ".join(f"{s} {q:g}" for s, q in book.positions.items())
        book_line = f"{positions}; pnl {book.pnl:,.2f}"
    refused_count = d["risk_rejected"]
    alarms = f"  alarms    {d['alarm']} (in the decisions log)\n" if d["alarm"] else ""
    print(
        f"\nlive-demo stopped: session {summary.session_id}\n"
        f"  orders    {d['order_request']} requested, {refused_count} refused by risk"
        f"{f' ({refused})' if refused else ''}, {d['order_request'] - refused_count} sent, "
        f"{d['cancel_request']} cancels; {fills}\n"
        f"  state     {at_feed_end.state if at_feed_end else '?'} when the feed stopped, "
        f"{summary.last_state or 'ACTIVE'} after the stop\n"
        f"{alarms}"
        f"  book      {book_line}\n"
        f"check parity: tradeloop parity {journal}   (its report: tradeloop replay {journal} "
        f"--out {Path(journal).parent / 'report'})"
    )
