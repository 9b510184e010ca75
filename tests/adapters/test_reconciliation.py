"""Reconciliation without a broker: the consistent snapshot read against an OMS that
answers late, twice, out of order or never; the differences turned into inputs; who may
lift a halt; a rebuild that replays each session under its own prefix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.daemon.assembly import build_live_engine
from adapters.daemon.core import apply_input
from adapters.live_sender import ShadowSender
from adapters.mqtt.reconcile import (
    FillsResponse,
    FillsSinceRequest,
    OpenOrder,
    OpenOrdersResponse,
    PositionsRequest,
    PositionsResponse,
    ReconcileRequest,
    ReconcileResponse,
    RequestFailed,
)
from adapters.reconciliation import (
    RECONCILIATION,
    ClaimHolder,
    FillLedger,
    OmsSnapshot,
    adoptions,
    alarms_of,
    fetch_snapshot,
    missed_fills,
    order_reports,
    position_differences,
    verdict,
)
from engine.clock import ReplayClock
from engine.config import load_config
from engine.engine import Engine
from engine.errors import AdapterError
from engine.events import Alarm, Command, Event, Fill, OrderAccepted, OrderCancelled, OrderRequest
from engine.orders import OrderStatus
from engine.ports import SendOnly
from tests.support import quotes

T = 1_700_000_000_000_000_000


def _fill(fill_id: str, cid: str = "x", qty: float = 1.0, side: str = "buy") -> Fill:
    return Fill(ts_event=T, ts_recv=T, client_order_id=cid, fill_id=fill_id, instrument="BTC",
                side=side, qty=qty, price=100.0, fee=0.0, liquidity="taker")  # type: ignore[arg-type]  # fmt: skip


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "live.toml"
    path.write_text("""
mode = "live"
[[instruments]]
symbol = "BTC"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001
[[features]]
name = "mid"
kind = "mid"
[strategy]
name = "ema_cross"
params = { qty = 1.0 }
[risk]
max_order_qty = 5.0
max_position = 5.0
warmup = false
[live]
order_timeout = "5s"
""")
    return path


def _engine(tmp_path: Path) -> tuple[Engine, FillLedger, ClaimHolder, list[Event]]:
    config, _ = load_config(_config(tmp_path))
    engine = build_live_engine(config, SendOnly(ShadowSender()), order_id_prefix="n-s")
    ledger = FillLedger(engine.clock)
    holder = ClaimHolder(engine)
    events: list[Event] = []
    engine.sinks += [ledger, events.append]
    apply_input(engine, T, quotes([(T, 100.0, 100.5, 5.0, 5.0)]))
    return engine, ledger, holder, events


def _send(engine: Engine, side: str = "buy") -> str:
    return engine.desk.submit("BTC", side, 1.0, "limit", 99.0, "gtc", False)  # type: ignore[arg-type]


class Oms:
    """Answers from scripts; ``None`` in a script never answers."""

    def __init__(self, fills: list[list[Fill]], positions: dict[str, float]) -> None:
        self.fills = fills
        self.positions = positions
        self.asked: list[str] = []

    async def ask(self, req: ReconcileRequest, timeout_s: float) -> ReconcileResponse:
        self.asked.append(type(req).__name__)
        match req:
            case FillsSinceRequest():
                got = self.fills.pop(0) if len(self.fills) > 1 else self.fills[0]
                return FillsResponse(as_of_ns=T, fills=got)
            case PositionsRequest():
                return PositionsResponse(as_of_ns=T, positions=self.positions)
            case _:
                return OpenOrdersResponse(as_of_ns=T, orders=[])


@pytest.mark.asyncio
async def test_fetch_snapshot_fill_between_reads_reads_again_until_consistent() -> None:
    one, two = _fill("f1"), _fill("f2")
    oms = Oms([[one], [one, two], [one, two]], {"BTC": 2.0})
    snapshot = await fetch_snapshot(oms.ask, 0, 1.0)
    assert [f.fill_id for f in snapshot.fills] == ["f1", "f2"]
    assert snapshot.reads == 3 and snapshot.positions == {"BTC": 2.0}


@pytest.mark.asyncio
async def test_fetch_snapshot_oms_never_answers_or_fails_or_answers_wrong_type_is_adapter_error() -> (
    None
):
    async def never(req: ReconcileRequest, timeout_s: float) -> ReconcileResponse:
        async with asyncio.timeout(timeout_s):
            await asyncio.Event().wait()
        raise AssertionError

    async def late(req: ReconcileRequest, timeout_s: float) -> ReconcileResponse:
        try:
            return await never(req, timeout_s)
        except TimeoutError as exc:
            raise AdapterError("no answer") from exc

    async def failed(req: ReconcileRequest, timeout_s: float) -> ReconcileResponse:
        return RequestFailed(reason="busy")

    async def crossed(req: ReconcileRequest, timeout_s: float) -> ReconcileResponse:
        return PositionsResponse(as_of_ns=T, positions={})  # the answer to another question

    for ask in (late, failed, crossed):
        with pytest.raises(AdapterError):
            await fetch_snapshot(ask, 0, 0.05)


@pytest.mark.asyncio
async def test_fetch_snapshot_fills_that_never_settle_is_adapter_error() -> None:
    oms = Oms([[_fill(f"f{i}") for i in range(n)] for n in range(1, 20)], {})
    with pytest.raises(AdapterError, match="consistent"):
        await fetch_snapshot(oms.ask, 0, 1.0)


def test_missed_fills_only_unknown_ids_once_each_in_oms_order(tmp_path: Path) -> None:
    clock = ReplayClock()
    ledger = FillLedger(clock)
    assert ledger.window_start_ns(T, 5) == 0  # no fill yet: every fill
    clock.advance(T + 7)  # received 7 ns after its stamp
    ledger(_fill("f1"))
    snapshot = OmsSnapshot([_fill("f1"), _fill("f3"), _fill("f2"), _fill("f3")], {}, [], 1)
    assert [f.fill_id for f in missed_fills(ledger, snapshot)] == ["f3", "f2"]
    assert ledger.last_receipt_ns == T + 7
    assert ledger.window_start_ns(T + 10, 5) == T + 2
    assert ledger.window_start_ns(T, 5) == T - 5  # a receive clock that stepped back


def test_order_reports_closed_at_oms_cancelled_working_acked_external_flagged(
    tmp_path: Path,
) -> None:
    engine, _, _, _ = _engine(tmp_path)
    gone, working, newer = _send(engine), _send(engine), _send(engine)
    request = engine.orders.get(working).request
    external = OrderRequest(ts_event=T, ts_recv=T, client_order_id="ext-1", instrument="BTC",
                            side="sell", qty=1.0)  # fmt: skip
    snapshot = OmsSnapshot([], {}, [
        OpenOrder(order=request, status="accepted", filled_qty=0.0, venue_order_id="v2"),
        OpenOrder(order=external, status="accepted", filled_qty=0.0, venue_order_id="v9"),
    ], 1)  # fmt: skip
    reports = order_reports(engine, snapshot, T, asked={gone, working})
    assert reports == [
        OrderCancelled(ts_event=T, ts_recv=T, client_order_id=gone,
                       reason="reconciliation: not open at the OMS"),
        OrderAccepted(ts_event=T, ts_recv=T, client_order_id=working, venue_order_id="v2"),
        OrderAccepted(ts_event=T, ts_recv=T, client_order_id="ext-1", venue_order_id="v9"),
    ]  # fmt: skip
    assert newer not in {r.client_order_id for r in reports}  # sent after the question
    for report in reports:
        apply_input(engine, T, report)
    assert engine.orders.get(gone).status is OrderStatus.CANCELLED
    assert engine.orders.get(working).status is OrderStatus.ACCEPTED
    assert engine.counters["reports_unknown_order"] == 1  # the flag: an Alarm


def test_position_differences_and_fills_booked_after_the_snapshot(tmp_path: Path) -> None:
    engine, ledger, _, _ = _engine(tmp_path)
    cid = _send(engine)
    mark = len(ledger.entries)
    apply_input(engine, T, _fill("f1", cid))
    snapshot = OmsSnapshot([], {"BTC": 0.0, "ETH": 2.0}, [], 1)
    later = ledger.booked_after(mark, known=set())
    assert later == {"BTC": 1.0}
    assert position_differences(engine, snapshot, later) == [
        "position ETH: not an instrument here, OMS 2"
    ]
    assert position_differences(engine, snapshot)[0] == "position BTC: engine 1, OMS 0"


def test_verdict_kill_names_each_difference_resume_only_over_our_own_claim(
    tmp_path: Path,
) -> None:
    engine, _, holder, events = _engine(tmp_path)
    kill = verdict(["position BTC: engine 1, OMS 0", "position ETH: ..."], holder, T)
    assert kill is not None and kill.action == "kill" and kill.issuer == RECONCILIATION
    apply_input(engine, T, kill)
    alarms = [e for e in events if isinstance(e, Alarm)]
    assert [a.message for a in alarms] == ["position BTC: engine 1, OMS 0", "position ETH: ..."]
    assert alarms == alarms_of(kill)
    assert engine.risk.state == "HALTED" and holder.held_by_reconciliation()
    # an operator's kill since: reconciliation's resume lifts its own kill, never that one
    apply_input(engine, T + 1, Command(ts_event=T, ts_recv=T, action="kill", issuer="ops"))
    resume = verdict([], holder, T + 2)
    assert resume is not None and resume.action == "resume"
    apply_input(engine, T + 2, resume)
    assert not holder.held_by_reconciliation() and engine.risk.state == "HALTED"
    assert verdict([], holder, T + 3) is None  # nothing of its own left to lift
    # the previous session's shutdown kill is lifted once the OMS agrees, and only it: a
    # loss limit's claim stays
    apply_input(engine, T + 4, Command(ts_event=T, ts_recv=T, action="resume", issuer="ops"))
    apply_input(engine, T + 5, Command(ts_event=T, ts_recv=T, action="kill", issuer="daemon",
                                       reason="daemon shutdown"))  # fmt: skip
    engine.request_state("loss_limit", "REDUCE_ONLY", "test")
    lifted = verdict([], holder, T + 6)
    assert lifted is not None and lifted.action == "resume"
    apply_input(engine, T + 6, lifted)
    assert engine.risk.state == "REDUCE_ONLY"
    assert verdict([], holder, T + 7) is None


def test_rebuild_replays_each_session_under_its_own_prefix(tmp_path: Path) -> None:
    engine, _, _, _ = _engine(tmp_path)
    engine.desk.begin_session("n-old")
    assert _send(engine) == "n-old-00000001"
    engine.desk.begin_session("n-new")
    assert _send(engine) == "n-new-00000001"


# external_orders = "adopt"


def test_adoptions_journaled_before_their_fills_book_order_and_position_agree(
    tmp_path: Path,
) -> None:
    """The OMS works ext-1 (sell 3, 2 filled): one fill of 1.5 is after ``since`` (the OMS
    returns it), 0.5 before (it does not). The adoption says 1.5 follow: the order ends
    at the OMS's 2 filled, the position gets the 1.5 whose price is known, and the check
    against the OMS names the 0.5 it cannot book."""
    engine, ledger, _, events = _engine(tmp_path)
    external = OrderRequest(ts_event=T, ts_recv=T, client_order_id="ext-1", instrument="BTC",
                            side="sell", qty=3.0, order_type="limit", limit_price=101.0)  # fmt: skip
    later = _fill("oms-7", "ext-1", qty=1.5, side="sell")
    snapshot = OmsSnapshot([later], {"BTC": -2.0}, [
        OpenOrder(order=external, status="partially_filled", filled_qty=2.0, venue_order_id="v9"),
    ], 1)  # fmt: skip
    fills = missed_fills(ledger, snapshot)
    adopted = adoptions(engine, snapshot, fills)
    assert [(a.order.client_order_id, a.filled_qty, a.fills_follow_qty) for a in adopted] == [
        ("ext-1", 2.0, 1.5)
    ]
    for body in [*adopted, *fills]:
        apply_input(engine, T, body)
    order = engine.orders.get("ext-1")
    assert order.filled_qty == 2.0 and order.is_open and order.remaining_qty == 1.0
    assert engine.portfolio.positions.tolist() == [-1.5]
    assert engine.counters["fills_unknown_order"] == 0
    assert order_reports(engine, snapshot, T, external="adopt") == []  # nothing flagged
    assert position_differences(engine, snapshot) == ["position BTC: engine -1.5, OMS -2"]
    assert any(
        isinstance(e, Alarm) and e.message.startswith("adopted external order ext-1")
        for e in events
    )
    # a second reconciliation adopts nothing again
    assert adoptions(engine, snapshot, []) == []


def test_adoptions_of_nonsense_are_refused_by_the_engine_not_flagged_twice(
    tmp_path: Path,
) -> None:
    engine, _, _, events = _engine(tmp_path)
    bad = OrderRequest(ts_event=T, ts_recv=T, client_order_id="ext-nan", instrument="BTC",
                       side="buy", qty=1.0, order_type="limit", limit_price=float("nan"))  # fmt: skip
    snapshot = OmsSnapshot([], {}, [OpenOrder(order=bad, status="accepted", filled_qty=0.0)], 1)
    for body in adoptions(engine, snapshot, []):
        apply_input(engine, T, body)
    assert engine.orders.find("ext-nan") is None
    assert engine.risk.state == "REDUCE_ONLY"
    assert [e.severity for e in events if isinstance(e, Alarm)] == ["critical"]
    assert order_reports(engine, snapshot, T, external="adopt") == []
