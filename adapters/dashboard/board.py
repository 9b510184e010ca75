"""What the dashboard shows, as one JSON document built from the running daemon: no I/O,
no asyncio (the server in ``adapters.dashboard.server`` pushes it).

The engine's events reach ``RecentEvents`` as one of its sinks; the sink only appends the
event object to a bounded deque (no formatting on the decision path). Everything else is
read from the daemon's objects when a document is built, which happens only while a page
is open, and at most once per push interval.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.engine import Engine
from engine.events import (
    Alarm,
    Command,
    Event,
    Fill,
    OrderRejected,
    RiskRejected,
    Signal,
    TradingState,
)

log = logging.getLogger("tradeloop.dashboard")

# rows kept per list: a screenful each; older rows are in the journal and decisions log
RECENT_ROWS: Final = 25
# working orders listed (newest first); the document says how many there are in all, so a
# book of thousands of orders does not make every push that large
MAX_ORDER_ROWS: Final = 50
# the explanations file is read from its end: at most this many bytes per poll
_TAIL_BYTES: Final = 256 * 1024


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso(ts_ns: int) -> str:
    """UTC ISO time of integer nanoseconds, to the microsecond (truncated)."""
    if ts_ns <= 0:
        return ""
    # integer microseconds: a float of ns since 1970 rounds the last digit
    when = _EPOCH + dt.timedelta(microseconds=ts_ns // 1000)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class RecentEvents:
    """Engine sink: the last ``RECENT_ROWS`` fills, signals, refusals, alarms, state changes
    and commands, as the event objects themselves. ``changes`` counts every event kept."""

    def __init__(self, rows: int = RECENT_ROWS) -> None:
        self.fills: deque[Fill] = deque(maxlen=rows)
        self.signals: deque[Signal] = deque(maxlen=rows)
        self.refusals: deque[RiskRejected | OrderRejected] = deque(maxlen=rows)
        self.alarms: deque[Alarm] = deque(maxlen=rows)
        self.states: deque[TradingState] = deque(maxlen=rows)
        self.commands: deque[Command] = deque(maxlen=rows)
        self.changes = 0

    def __call__(self, event: Event) -> None:
        match event:
            case Fill():
                self.fills.append(event)
            case Signal():
                self.signals.append(event)
            case RiskRejected() | OrderRejected():
                self.refusals.append(event)
            case Alarm():
                self.alarms.append(event)
            case TradingState():
                self.states.append(event)
            case Command():
                self.commands.append(event)
            case _:
                return
        self.changes += 1


class ExplanationTail:
    """The last explanations the worker wrote (``explanations-<id>.jsonl``), read from
    the file's end as it grows; a torn last line waits for the next read.

    Args:
        path: the session's explanations file (None: explanations are off).
        rows: lines kept.
    """

    def __init__(self, path: Path | None, rows: int = RECENT_ROWS) -> None:
        self.path = path
        self.lines: deque[dict[str, Any]] = deque(maxlen=rows)
        self._offset = 0
        self._partial = b""
        self.unreadable = 0

    def poll(self) -> bool:
        """Read what was appended since the last poll (blocking file I/O: run it off the
        loop). True if a line was added."""
        if self.path is None:
            return False
        try:
            size = self.path.stat().st_size
            if size <= self._offset:
                return False
            start = max(self._offset, size - _TAIL_BYTES)
            with self.path.open("rb") as f:
                f.seek(start)
                chunk = f.read(size - start)
        except OSError:
            return False  # not written yet
        skipped = start > self._offset
        self._offset = start + len(chunk)
        data = chunk if skipped else self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        if skipped and complete:
            complete = complete[1:]  # the first line was cut by the seek
        added = False
        for line in complete:
            try:
                doc = json.loads(line)
            except ValueError:
                self.unreadable += 1
                continue
            if isinstance(doc, dict):
                self.lines.append(doc)
                added = True
        return added


@dataclass
class BoardSources:
    """Where the document's parts come from, read when it is built.

    Attributes:
        engine: the session's engine.
        node: ``[live] node``.
        mode: shadow, paper or live.
        book: positions and PnL per instrument (``LiveCore.book``).
        models: the models' monitor figures (``StatusBoard.model_statuses``).
        feed: ``(connected, lost)`` of the feed monitor.
        session_counters: the broker session's counters (messages in, refusals).
        wall_clock: the receive clock (quote ages are measured on it).
        actions: whether operator actions are enabled, and if not, why.
    """

    engine: Engine
    node: str
    mode: str
    book: Callable[[], tuple[list[float], list[float]]]
    models: Callable[[], list[Any]]
    feed: Callable[[], tuple[bool, bool]]
    session_counters: Callable[[], Mapping[str, int]]
    wall_clock: Callable[[], int]
    actions: tuple[bool, str] = (False, "")
    extra_counters: Callable[[], Mapping[str, int]] = field(default=lambda: {})


def _signal_row(s: Signal, explained: dict[tuple[int, str], dict[str, Any]]) -> dict[str, Any]:
    doc = explained.get((s.ts_event, s.instrument))
    return {
        "time": iso(s.ts_recv),
        "instrument": s.instrument,
        "score": _finite(s.score),
        "zone": s.zone,
        "contributions": doc.get("contributions", []) if doc else [],
        "rest": doc.get("rest") if doc else None,
        "expected_value": doc.get("expected_value") if doc else None,
        "order_ids": doc.get("order_ids", []) if doc else [],
    }


def build_document(
    sources: BoardSources, recent: RecentEvents, tail: ExplanationTail
) -> dict[str, Any]:
    """The dashboard's document now (plain JSON types; NaN and infinities as null)."""
    e = sources.engine
    symbols = e.instruments.symbols
    positions, pnl = sources.book()
    now = sources.wall_clock()
    quote_ts = e.market.quote_ts.tolist()
    trading = e.risk.trading
    connected, lost = sources.feed()
    explained = {(int(d.get("ts_ns", 0)), str(d.get("instrument", ""))): d for d in tail.lines}
    working = e.orders.open_orders()
    newest = sorted(working, key=lambda o: o.request.ts_recv, reverse=True)[:MAX_ORDER_ROWS]
    open_orders = [
        {
            "client_order_id": o.client_order_id,
            "instrument": o.request.instrument,
            "side": o.request.side,
            "qty": o.request.qty,
            "filled": o.filled_qty,
            "type": o.request.order_type,
            "limit_price": o.request.limit_price,
            "status": o.status.name,
            "cancel_sent": o.cancel_sent,
            "time": iso(o.request.ts_recv),
        }
        for o in newest
    ]
    counters = Counter(sources.session_counters())
    counters.update(sources.extra_counters())
    enabled, why = sources.actions
    return {
        "node": sources.node,
        "mode": sources.mode,
        "time": iso(now),
        "state": trading.state,
        "held_by": trading.source or "",
        "claims": {k: v for k, v in trading.claims().items() if v != "ACTIVE"},
        "instruments": [
            {
                "symbol": sym,
                "position": positions[i],
                "pnl": _finite(pnl[i]),
                "last_quote": iso(int(quote_ts[i])),
                "quote_age_s": (now - int(quote_ts[i])) / 1e9 if quote_ts[i] > 0 else None,
            }
            for i, sym in enumerate(symbols)
        ],
        "pnl": _finite(float(sum(pnl))),
        "orders": open_orders,
        "orders_total": len(working),
        "fills": [
            {
                "time": iso(f.ts_recv),
                "instrument": f.instrument,
                "side": f.side,
                "qty": f.qty,
                "price": f.price,
                "fee": f.fee,
                "client_order_id": f.client_order_id,
                "fill_id": f.fill_id,
            }
            for f in reversed(recent.fills)
        ],
        "signals": [_signal_row(s, explained) for s in reversed(recent.signals)],
        "refusals": [
            {
                "time": iso(r.ts_recv),
                "client_order_id": r.client_order_id,
                "reason": r.reason,
                "check": getattr(r, "check", ""),
            }
            for r in reversed(recent.refusals)
        ],
        "alarms": [
            {
                "time": iso(a.ts_recv),
                "source": a.source,
                "severity": a.severity,
                "message": a.message,
            }
            for a in reversed(recent.alarms)
        ],
        "states": [
            {"time": iso(t.ts_recv), "state": t.state, "reason": t.reason}
            for t in reversed(recent.states)
        ],
        "commands": [
            {"time": iso(c.ts_recv), "action": c.action, "issuer": c.issuer, "reason": c.reason}
            for c in reversed(recent.commands)
        ],
        "models": [msgspec.to_builtins(m) for m in sources.models()],
        "feed": {
            "connected": connected,
            "lost": lost,
            "messages_in": {
                k.removeprefix("messages_in_"): v
                for k, v in counters.items()
                if k.startswith("messages_in_")
            },
            "refused": {
                k.removeprefix("bad_"): v
                for k, v in counters.items()
                if k.startswith("bad_") and k != "bad_messages" and v
            },
            "commands_unauthenticated": counters.get("commands_unauthenticated", 0),
        },
        "actions": {"enabled": enabled, "why": why},
    }


def encode_document(doc: dict[str, Any]) -> bytes:
    """The document as JSON on one line (an SSE ``data:`` line may not contain a newline);
    non-finite floats become null."""
    return msgspec.json.encode(doc)


__all__ = [
    "MAX_ORDER_ROWS",
    "RECENT_ROWS",
    "BoardSources",
    "ExplanationTail",
    "RecentEvents",
    "build_document",
    "encode_document",
    "iso",
]
