"""Start-up and reconnect reconciliation (issue 11): the journal first, then the OMS.

Rebuild. A restarted daemon replays every earlier session's journal records through its
new engine before it goes live (``apply_history``): orders, fills, positions, the day's
loss-monitor figures, token buckets, feature state, the trading state and who set it are
what they were, because they are a function of the input stream. Each earlier session is
replayed under its own client order id prefix (``OrderDesk.begin_session``), so the
orders it makes again carry the ids the OMS knows, and nothing is sent meanwhile. The
replay of a journal (``replay.sessions.journal_replay``) applies the earlier sessions the same way
before the session it checks, so parity stays exact.

Reconcile. Then the daemon asks the OMS (``adapters.mqtt.reconcile``, MQTT 5 request /
response, with a timeout) for fills since the journal's last fill, its positions and its
open orders (``fetch_snapshot``), and turns the differences into journaled inputs, so the
new session's journal still holds everything its engine was fed:

- a fill the OMS booked and the journal does not hold -> that ``Fill`` as a report (the
  OMS's own ``fill_id``: a second restart finds it in the journal and adds nothing);
- an order open here but not at the OMS (it was cancelled or rejected while we were away,
  or never reached the OMS before a crash) -> ``OrderCancelled``; an order open at the OMS
  still NEW or UNKNOWN here -> ``OrderAccepted``;
- an order the OMS works that we never sent (external) -> ``flag`` (the default): its
  ``OrderAccepted`` is journaled, which the engine alarms on as an unknown order (its
  fills are booked, alarmed and reduce only); ``adopt``: an ``ExternalOrder`` record
  (``engine.journal.AdoptRecord``, the order as the OMS holds it) journaled before the
  missed fills, which ``OrderDesk.adopt`` books as the engine's own open order. Its
  fills the OMS returns are journaled right after it and book the position (with their
  prices and fees); fills older than the question's ``since`` are in the OMS's position
  only, so the position check names them. An order with nonsense fields is refused by
  the engine (critical Alarm, reduce only) and never booked;
- positions that still differ -> a ``kill`` command from issuer ``reconciliation`` whose
  reason names each difference on its own line; ``apply_input`` emits one ``Alarm`` per
  line before the kill, in the live daemon and in replay alike. The daemon asks again
  while it holds that kill, and lifts it (``resume`` from ``reconciliation``) once they
  agree. That resume clears only reconciliation's own claim and the previous session's
  shutdown kill (``engine.trading_state``): an operator's kill, a loss limit or the
  engine's own claims stay, across restarts too.

The positions and fills are read as one consistent snapshot: fills, positions, fills
again, retried until no fill was booked between the two fill reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import aiomqtt
import msgspec

from adapters.mqtt.reconcile import (
    FillsResponse,
    FillsSinceRequest,
    OpenOrder,
    OpenOrdersRequest,
    OpenOrdersResponse,
    PositionsRequest,
    PositionsResponse,
    ReconcileCodec,
    ReconcileRequest,
    ReconcileResponse,
    request,
)
from adapters.mqtt.settings import MqttSettings
from adapters.mqtt.topics import Topics
from engine.clock import Clock
from engine.engine import Engine
from engine.errors import AdapterError
from engine.events import (
    Alarm,
    Command,
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    side_sign,
)
from engine.journal import AnyRecord, ClockRecord, ExternalOrder
from engine.orders import OrderStatus
from engine.ports import ExecutionReport
from engine.trading_state import RECONCILIATION, SHUTDOWN_REASON

log = logging.getLogger("tradeloop.reconciliation")

ExternalOrders = Literal["adopt", "flag"]

_T = TypeVar("_T", bound=ReconcileResponse)

# positions are sums of lot multiples; below this they are equal
_QTY_EPS = 1e-9
# consistent reads: fills, positions, fills again, up to this many times
_SNAPSHOT_ATTEMPTS = 5


# the journal's sessions


class SessionStart(msgspec.Struct, frozen=True, kw_only=True):
    """Where a session of a journal folder starts (``session-{id}.json``, other fields
    ignored): at ``first_seq`` where the daemon wrote it, else at its first clock
    reading (``ts_recv == start_ns``)."""

    session_id: str
    order_id_prefix: str
    start_ns: int
    first_seq: int | None = None

    def starts_at(self, record: AnyRecord) -> bool:
        if self.first_seq is not None:
            return record.seq == self.first_seq
        return isinstance(record, ClockRecord) and record.ts_recv == self.start_ns


def session_starts(journal_dir: Path) -> list[SessionStart]:
    """The sessions of a journal folder, oldest first (unreadable files are skipped and
    logged: a session that cannot be placed is replayed under its predecessor's prefix,
    whose orders then do not match their reports and are alarmed on)."""
    found: list[SessionStart] = []
    decoder = msgspec.json.Decoder(SessionStart)
    for path in journal_dir.glob("session-*.json"):
        try:
            found.append(decoder.decode(path.read_bytes()))
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("journal %s: session file %s unreadable: %s", journal_dir, path.name, exc)
    found.sort(key=lambda s: (s.start_ns, s.first_seq or 0, s.session_id))
    return found


@dataclass
class History:
    """What ``apply_history`` replayed."""

    records: int = 0
    sessions: list[str] = field(default_factory=list)
    last_seq: int = 0
    last_ts: int = 0
    snapshot_seq: int = 0  # the snapshot the records after it were applied to (0: none)
    snapshots_invalid: int = 0  # snapshots found torn, damaged or not for this config


def apply_history(
    engine: Engine,
    records: Iterable[AnyRecord],
    sessions: list[SessionStart],
    apply: Callable[[Engine, AnyRecord], None],
    *,
    stop: Callable[[AnyRecord], bool] | None = None,
) -> History:
    """Apply journal records to ``engine`` until ``stop`` says a record is not history,
    switching the client order id prefix at each session's first record.

    Args:
        engine: a fresh engine of the config (its router must send nothing).
        records: the journal's records in sequence order.
        sessions: ``session_starts`` of the folder.
        apply: how one record reaches the engine (``adapters.daemon.core.apply_record``).
        stop: the first record that is not history (None: all of them are).
    """
    history = History()
    for record in records:
        if stop is not None and stop(record):
            break
        for session in sessions:
            if session.starts_at(record):
                engine.desk.begin_session(session.order_id_prefix)
                history.sessions.append(session.session_id)
        apply(engine, record)
        history.records += 1
        history.last_seq = record.seq
        history.last_ts = max(history.last_ts, record.ts_recv)
    return history


# what the engine knows (a sink, attached before the history is applied)


class FillLedger:
    """Every fill id the engine was given and when the last one was received: what a
    restart asks the OMS about (``FillsSinceRequest``) and what it need not apply again.

    The time is our own: the engine's clock when it booked the fill, which is the receive
    time the journal holds for it, never the fill's ``ts_event`` (the OMS's stamp, or a
    forger's: one fill stamped a day ahead moved the question a day forward, and the
    fills made while the daemon was down were never asked for again).

    Args:
        clock: the engine's clock (it runs on receive time).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.fill_ids: set[str] = set()
        self.last_receipt_ns = 0
        self.entries: list[tuple[str, str, float]] = []  # fill id, instrument, signed qty

    def __call__(self, event: Event) -> None:
        if isinstance(event, Fill) and event.fill_id not in self.fill_ids:
            self.fill_ids.add(event.fill_id)
            self.last_receipt_ns = max(self.last_receipt_ns, self._clock.now_ns())
            self.entries.append(
                (event.fill_id, event.instrument, side_sign(event.side) * event.qty)
            )

    def window_start_ns(self, now_ns: int, lookback_ns: int) -> int:
        """Where the question for missed fills starts (``FillsSinceRequest.since_ns``):
        ``lookback_ns`` (``[live] reconcile_lookback``) before the receipt of the last
        fill booked, or before ``now_ns`` if that is earlier (a receive clock that ran
        ahead); 0, every fill, before the first. The OMS compares it with its own stamps:
        the lookback covers its clock being behind ours and a report in flight when the
        connection went; fills are matched by id, so a wider window costs only bandwidth.
        """
        if not self.fill_ids:
            return 0
        return max(0, min(self.last_receipt_ns, now_ns) - lookback_ns)

    def booked_after(self, mark: int, known: set[str]) -> dict[str, float]:
        """Net quantity by instrument of the fills booked since ``len(entries)`` was
        ``mark`` that are not in ``known``: what the engine holds beyond a snapshot."""
        out: dict[str, float] = {}
        for fill_id, instrument, qty in self.entries[mark:]:
            if fill_id not in known:
                out[instrument] = out.get(instrument, 0.0) + qty
        return out


class ClaimHolder:
    """The trading-state claims reconciliation acts on, read from the engine's trading
    state (``engine.trading_state``: one claim per holder, rebuilt from the journal and
    restored from a snapshot with the rest of the engine), never kept twice."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def liftable(self) -> bool:
        """Reconciliation's own kill, or the previous session's shutdown kill, is in
        force: what a ``resume`` from reconciliation lifts (and nothing else: an
        operator's kill, a loss limit or the engine's own claims stay)."""
        trading = self._engine.risk.trading
        return trading.claim("reconciliation") != "ACTIVE" or trading.claim("shutdown") != "ACTIVE"

    def held_by_reconciliation(self) -> bool:
        return self._engine.risk.trading.claim("reconciliation") != "ACTIVE"


def alarms_of(command: Command) -> list[Alarm]:
    """The alarms a reconciliation kill carries: one per line of its reason after the
    first (``apply_input`` emits them before the kill)."""
    if command.issuer != RECONCILIATION or command.action != "kill":
        return []
    ts = command.ts_recv
    return [
        Alarm(ts_event=ts, ts_recv=ts, source=RECONCILIATION, severity="critical", message=line)
        for line in command.reason.split("\n")[1:]
    ]


# the OMS's side


@dataclass(frozen=True)
class OmsSnapshot:
    """The OMS's fills (since a time), positions and open orders, fills and positions
    read consistently."""

    fills: list[Fill]
    positions: dict[str, float]
    orders: list[OpenOrder]
    reads: int  # fills reads it took to get a consistent one


Ask = Callable[[ReconcileRequest, float], Awaitable[ReconcileResponse]]
"""One request/response with the OMS, with a timeout (raises ``AdapterError``)."""


async def fetch_snapshot(ask: Ask, since_ns: int, timeout_s: float) -> OmsSnapshot:
    """Ask the OMS for fills since ``since_ns``, positions and open orders.

    Raises:
        AdapterError: the OMS did not answer in time, answered wrongly, or kept booking
            fills through every attempt at a consistent read.
    """
    first = await _ask(ask, FillsSinceRequest(since_ns=since_ns), FillsResponse, timeout_s)
    for attempt in range(1, _SNAPSHOT_ATTEMPTS + 1):
        positions = await _ask(ask, PositionsRequest(), PositionsResponse, timeout_s)
        again = await _ask(ask, FillsSinceRequest(since_ns=since_ns), FillsResponse, timeout_s)
        if [f.fill_id for f in again.fills] == [f.fill_id for f in first.fills]:
            orders = await _ask(ask, OpenOrdersRequest(), OpenOrdersResponse, timeout_s)
            return OmsSnapshot(first.fills, positions.positions, orders.orders, attempt + 1)
        first = again
    raise AdapterError(f"the OMS booked fills through {_SNAPSHOT_ATTEMPTS} consistent reads")


async def _ask(ask: Ask, req: ReconcileRequest, answer: type[_T], timeout_s: float) -> _T:
    got = await ask(req, timeout_s)
    if not isinstance(got, answer):
        raise AdapterError(f"the OMS answered {type(req).__name__} with {type(got).__name__}")
    return got


class MqttReconcileClient:
    """Its own MQTT 5 connection (client id ``<client_id>-reconcile``) for the requests of
    one reconciliation, so the session's reader never has to route answers.

    Args:
        settings: the daemon's connection settings.
        topics: the topic contract.
        counters: where refused answers are counted (the session's, so they reach metrics).
    """

    def __init__(
        self, settings: MqttSettings, topics: Topics, counters: Counter[str] | None = None
    ) -> None:
        self.topics = topics
        self._codec = ReconcileCodec(settings.format, limits=settings.limits, counters=counters)
        username, client_id = settings.login("reconcile")
        self._client = aiomqtt.Client(
            settings.host,
            settings.port,
            username=username,
            password=settings.password,
            identifier=client_id,
            tls_context=settings.ssl_context(),
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=settings.keepalive_s,
            timeout=5.0,
        )

    async def __aenter__(self) -> MqttReconcileClient:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise AdapterError(f"reconciliation cannot reach the broker: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(exc_type, exc, tb)

    async def ask(self, req: ReconcileRequest, timeout_s: float) -> ReconcileResponse:
        """One request and its answer.

        Raises:
            AdapterError: no answer in time, ``RequestFailed``, a broker error.
        """
        return await request(self._client, self.topics, req, timeout_s, codec=self._codec)


async def fetch_over_mqtt(
    settings: MqttSettings,
    topics: Topics,
    since_ns: int,
    timeout_s: float,
    counters: Counter[str] | None = None,
) -> OmsSnapshot:
    """``fetch_snapshot`` on a connection of its own.

    Raises:
        AdapterError: as ``fetch_snapshot``, or the broker cannot be reached.
    """
    async with asyncio.timeout(timeout_s * (2 * _SNAPSHOT_ATTEMPTS + 3)):
        async with MqttReconcileClient(settings, topics, counters) as client:
            return await fetch_snapshot(client.ask, since_ns, timeout_s)


# the differences, as inputs


def missed_fills(ledger: FillLedger, snapshot: OmsSnapshot) -> list[Fill]:
    """The OMS's fills the engine has not been given, in the OMS's booking order."""
    seen: set[str] = set()
    out: list[Fill] = []
    for fill in snapshot.fills:
        if fill.fill_id not in ledger.fill_ids and fill.fill_id not in seen:
            seen.add(fill.fill_id)
            out.append(fill)
    return out


def order_reports(
    engine: Engine,
    snapshot: OmsSnapshot,
    ts_ns: int,
    *,
    asked: set[str] | None = None,
    external: ExternalOrders = "flag",
) -> list[ExecutionReport]:
    """Status reports that bring the engine's orders to the OMS's view (call it after
    the missed fills are applied).

    Args:
        engine: the engine.
        snapshot: the OMS's answer.
        ts_ns: stamp of the reports.
        asked: the orders open here when the OMS was asked (None: every open order); an
            order sent since is not judged on an answer older than it.
        external: what to do with orders the OMS works that the engine never sent.
    """
    at_oms = {o.order.client_order_id: o for o in snapshot.orders}
    out: list[ExecutionReport] = []
    for order in engine.orders.open_orders():
        cid = order.client_order_id
        if asked is not None and cid not in asked:
            continue
        held = at_oms.get(cid)
        if held is None:
            out.append(OrderCancelled(ts_event=ts_ns, ts_recv=ts_ns, client_order_id=cid,
                                      reason="reconciliation: not open at the OMS"))  # fmt: skip
        elif held.status != "pending" and order.status in (OrderStatus.NEW, OrderStatus.UNKNOWN):
            out.append(OrderAccepted(ts_event=ts_ns, ts_recv=ts_ns, client_order_id=cid,
                                     venue_order_id=held.venue_order_id))  # fmt: skip
    if external == "adopt":
        return out  # ``adoptions`` went first: adopted, or refused with an alarm
    for cid, held in at_oms.items():
        if engine.orders.find(cid) is None:
            # the engine alarms on an ack for an order it never sent: the flag
            out.append(OrderAccepted(ts_event=ts_ns, ts_recv=ts_ns, client_order_id=cid,
                                     venue_order_id=held.venue_order_id))  # fmt: skip
    return out


def adoptions(engine: Engine, snapshot: OmsSnapshot, missed: list[Fill]) -> list[ExternalOrder]:
    """The orders the OMS works that the engine never sent, to adopt (``external_orders =
    "adopt"``), journaled before ``missed`` (the missed fills): each says how much of its
    filled quantity those fills book, so the order's filled quantity ends at the OMS's
    and the position gets exactly the fills whose prices are known. The engine checks
    the fields (``OrderDesk.adopt``): nonsense is refused there, in the journal's order,
    so a replay refuses it too."""
    follow: dict[str, float] = {}
    for fill in missed:
        follow[fill.client_order_id] = follow.get(fill.client_order_id, 0.0) + fill.qty
    out: list[ExternalOrder] = []
    for held in snapshot.orders:
        cid = held.order.client_order_id
        if engine.orders.find(cid) is not None or any(e.order.client_order_id == cid for e in out):
            continue
        out.append(
            ExternalOrder(
                order=held.order,
                status=held.status,
                filled_qty=held.filled_qty,
                fills_follow_qty=follow.get(cid, 0.0),
                venue_order_id=held.venue_order_id,
            )
        )
    return out


def position_differences(
    engine: Engine, snapshot: OmsSnapshot, later: dict[str, float] | None = None
) -> list[str]:
    """One line per instrument whose position differs from the OMS's (``later``: fills
    the engine booked after the snapshot was taken, left out of the comparison)."""
    out: list[str] = []
    positions = engine.portfolio.positions
    symbols = engine.instruments.symbols
    later = later or {}
    for i, symbol in enumerate(symbols):
        theirs = snapshot.positions.get(symbol, 0.0)
        ours = float(positions[i]) - later.get(symbol, 0.0)
        if not _same_qty(ours, theirs):
            out.append(f"position {symbol}: engine {ours:g}, OMS {theirs:g}")
    for symbol, theirs in snapshot.positions.items():
        if symbol not in engine.instruments.index and not _same_qty(0.0, theirs):
            out.append(f"position {_printable(symbol)}: not an instrument here, OMS {theirs:g}")
    return out


def _same_qty(ours: float, theirs: float) -> bool:
    """Equal positions: both finite and within rounding. A NaN compares unequal to
    everything, so ``abs(a - b) > eps`` alone let a NaN position agree with any."""
    return math.isfinite(ours) and math.isfinite(theirs) and abs(ours - theirs) <= _QTY_EPS


def _printable(symbol: str) -> str:
    """A symbol the OMS named, fit for one line of a kill's reason (each line becomes an
    Alarm): as it is if short and printable, else quoted and cut."""
    return symbol if symbol.isprintable() and len(symbol) <= 64 else repr(symbol[:64])


def verdict(
    differences: list[str], holder: ClaimHolder, ts_ns: int, *, what: str = "positions"
) -> Command | None:
    """The command that follows a reconciliation: a kill naming each difference, a
    resume when they agree and the kill in force is reconciliation's (or a previous
    session's shutdown kill), else nothing."""
    if differences:
        reason = "\n".join([f"reconciliation: {what} differ from the OMS", *differences])
        return Command(ts_event=ts_ns, ts_recv=ts_ns, action="kill", issuer=RECONCILIATION,
                       reason=reason)  # fmt: skip
    if holder.liftable():
        return Command(ts_event=ts_ns, ts_recv=ts_ns, action="resume", issuer=RECONCILIATION,
                       reason="reconciled: the OMS agrees")  # fmt: skip
    return None


def unanswered(error: Exception, ts_ns: int) -> Command:
    """The kill when the OMS cannot be asked: nothing is known about what it holds."""
    return Command(ts_event=ts_ns, ts_recv=ts_ns, action="kill", issuer=RECONCILIATION,
                   reason=f"reconciliation: the OMS did not answer\n{error}")  # fmt: skip


def iter_records_before(records: Iterable[AnyRecord], seq: int) -> Iterator[AnyRecord]:
    """The records with a sequence number below ``seq``."""
    for record in records:
        if record.seq >= seq:
            return
        yield record


__all__ = [
    "RECONCILIATION",
    "SHUTDOWN_REASON",
    "ClaimHolder",
    "ExternalOrders",
    "FillLedger",
    "History",
    "MqttReconcileClient",
    "OmsSnapshot",
    "SessionStart",
    "adoptions",
    "alarms_of",
    "apply_history",
    "fetch_over_mqtt",
    "fetch_snapshot",
    "missed_fills",
    "order_reports",
    "position_differences",
    "session_starts",
    "unanswered",
    "verdict",
]
