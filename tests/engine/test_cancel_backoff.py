"""One cancel per working order in flight, resent with back-off (issue 19, defect 12).

While the daemon flapped in and out of HALTED, one order got 140 identical cancel requests
in 16.5 s: each entry into a restricted state cancels the open orders, and a cancel the
venue rejected (the order still open) was forgotten, so the next flap, or the very
report that rejected it, sent another. The rule, kept in the engine (deterministic, its
time the engine's clock, so a replay sends the same cancels): a cancel sent for an order
is not sent again until ``[live] cancel_retry`` has passed, then again with the wait
doubling up to ``[live] cancel_retry_max``, while the order stays open.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.assembly import build_engine
from engine.clock import ReplayClock
from engine.config import load_config
from engine.engine import Engine
from engine.events import (
    CancelRejected,
    CancelRequest,
    Command,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRequest,
)
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument, InstrumentTable
from engine.ports import SendOnly
from engine.risk import RiskConfig, RiskEngine
from engine.ticks import TickBatch
from tests.support import Scripted

T = 1_700_000_000_000_000_000
MS = 1_000_000
S = 1_000_000_000


class Outbox:
    """The sending port: what left, in order, with the engine's time it left at."""

    def __init__(self) -> None:
        self.orders: list[OrderRequest] = []
        self.cancels: list[CancelRequest] = []

    def submit(self, order: OrderRequest) -> None:
        self.orders.append(order)

    def cancel(self, request: CancelRequest) -> None:
        self.cancels.append(request)


def _quote(engine: Engine, ts: int) -> None:
    one = np.array([ts], np.int64)
    bid, ask, size = np.array([100.0]), np.array([100.5]), np.ones(1)
    engine.process_batch(TickBatch.quotes(one, one, np.zeros(1, np.int32), bid, ask, size, size))


def _live_engine(tmp_path: Path, outbox: Outbox) -> Engine:
    """The engine a live config builds (``build_engine(live=True)``, as the daemon and
    the replay of its journal do), with the defaults of ``[live] cancel_retry`` (1 s)
    and ``cancel_retry_max`` (30 s)."""
    path = tmp_path / "live.toml"
    path.write_text("""
mode = "live"
[[instruments]]
symbol = "X"
tick_size = 0.5
lot_size = 0.1
[[features]]
name = "mid"
kind = "mid"
[risk]
warmup = false
on_data_loss = "halted"
""")
    config, _ = load_config(path)
    engine, _ = build_engine(config, SendOnly(outbox), live=True, strategy=Scripted())
    return engine


def test_cancel_state_flaps_with_cancels_rejected_one_in_flight_resent_with_backoff(
    tmp_path: Path,
) -> None:
    """140 flaps in 16.5 s against a venue that rejects every cancel (the order stays
    open): the cancels go at 0, 1, 3, 7 and 15 s, not 140 times."""
    outbox = Outbox()
    engine = _live_engine(tmp_path, outbox)
    _quote(engine, T)
    cid = engine.desk.submit("X", "buy", 1.0, "limit", 99.0, "gtc", False)
    engine.on_report(OrderAccepted(ts_event=T, ts_recv=T, client_order_id=cid, venue_order_id="v"))
    answered = 0
    for k in range(140):
        now = T + k * 16_500 * MS // 140
        engine.advance_to(now)
        engine.market_data_lost("flap")
        # the venue: "cannot cancel now" (bounded: a rejection answered by a new cancel at
        # once would never end)
        while answered < min(len(outbox.cancels), 1000):
            answered += 1
            engine.on_report(CancelRejected(ts_event=now, ts_recv=now, client_order_id=cid,
                                            reason="pending"))  # fmt: skip
        engine.market_data_restored("flap")
    sent = [c.ts_event - T for c in outbox.cancels]
    assert engine.orders.get(cid).is_open
    assert len(sent) == 5, len(sent)
    assert [b - a for a, b in itertools.pairwise(sent)] >= [S, 2 * S, 4 * S, 8 * S]


def test_cancel_unanswered_resent_after_backoff_then_closed_order_never_again(
    tmp_path: Path,
) -> None:
    outbox = Outbox()
    engine = _live_engine(tmp_path, outbox)
    _quote(engine, T)
    cid = engine.desk.submit("X", "buy", 1.0, "limit", 99.0, "gtc", False)
    engine.on_report(OrderAccepted(ts_event=T, ts_recv=T, client_order_id=cid, venue_order_id="v"))
    engine.on_command(Command(ts_event=T, ts_recv=T, action="kill", issuer="ops"))
    assert len(outbox.cancels) == 1  # the kill's cancel, at once
    engine.advance_to(T + S - 1)
    assert len(outbox.cancels) == 1  # unanswered, but not yet due again
    engine.advance_to(T + S)
    assert len(outbox.cancels) == 2  # resent after cancel_retry
    engine.advance_to(T + 2 * S)
    assert len(outbox.cancels) == 2  # the next wait is 2 s
    engine.advance_to(T + 3 * S)
    assert len(outbox.cancels) == 3
    engine.on_report(OrderCancelled(ts_event=T, ts_recv=T + 3 * S, client_order_id=cid))
    engine.advance_to(T + 60 * S)
    assert len(outbox.cancels) == 3
    assert engine.counters["cancels_resent"] == 2


# the property: arbitrary flaps, reports and time steps

RETRY = 1 * S
RETRY_MAX = 8 * S


def _engine(outbox: Outbox) -> Engine:
    inst = InstrumentTable([Instrument(symbol="X", tick_size=0.5, lot_size=0.1)])
    return Engine(
        instruments=inst,
        clock=ReplayClock(),
        router=SendOnly(outbox),
        features=FeatureSet([FeatureSpec(name="mid", kind="mid")]),
        model=None,
        strategy=Scripted(),
        risk=RiskEngine(RiskConfig(warmup=False, on_data_loss="halted"), inst.symbols),
        equity_interval_ns=0,
        arrival_order=True,
        order_timeout_ns=5 * S,
        cancel_retry_ns=RETRY,
        cancel_retry_max_ns=RETRY_MAX,
    )


class CancelMachine(RuleBasedStateMachine):
    """Orders, trading-state flaps (data loss, operator kill, reduce only, resume),
    strategy cancels, venue answers (acks, cancel rejections, cancellations, fills) and
    time steps, in any order. Invariants: for every order, each cancel after the first
    leaves at least the back-off after the one before it (1, 2, 4, 8, 8 ... s); and a
    cancel that is due is sent (a restricted state's first cancel at once, a resend once
    its wait has passed, at the next time step)."""

    def __init__(self) -> None:
        super().__init__()
        self.outbox = Outbox()
        self.engine = _engine(self.outbox)
        self.now = T
        self.seq = 0
        _quote(self.engine, self.now)

    def _open(self) -> list[str]:
        return [o.client_order_id for o in self.engine.orders.open_orders()]

    @rule(side=st.sampled_from(["buy", "sell"]), offset=st.integers(1, 4))
    def order(self, side: str, offset: int) -> None:
        price = 100.0 - offset if side == "buy" else 100.5 + offset
        self.engine.desk.submit("X", side, 1.0, "limit", price, "gtc", False)  # type: ignore[arg-type]

    @rule(flap=st.sampled_from(["lost", "restored", "kill", "reduce_only", "resume"]))
    def state(self, flap: str) -> None:
        e = self.engine
        if flap == "lost":
            e.market_data_lost("flap")
        elif flap == "restored":
            e.market_data_restored("flap")
        else:
            e.on_command(Command(ts_event=self.now, ts_recv=self.now, action=flap,  # type: ignore[arg-type]
                                 issuer="ops"))  # fmt: skip
        if e.risk.state == "HALTED":  # every open order is cancelled, or was recently
            for cid in self._open():
                assert any(c.client_order_id == cid for c in self.outbox.cancels), cid

    @precondition(lambda self: bool(self._open()))
    @rule(k=st.integers(0, 20))
    def strategy_cancel(self, k: int) -> None:
        opened = self._open()
        self.engine.desk.cancel(opened[k % len(opened)])

    @precondition(lambda self: bool(self._open()))
    @rule(k=st.integers(0, 20), answer=st.sampled_from(["ack", "reject", "cancelled", "fill"]))
    def venue(self, k: int, answer: str) -> None:
        opened = self._open()
        cid = opened[k % len(opened)]
        ts = self.now
        if answer == "ack":
            report: object = OrderAccepted(
                ts_event=ts, ts_recv=ts, client_order_id=cid, venue_order_id="v"
            )
        elif answer == "reject":
            report = CancelRejected(ts_event=ts, ts_recv=ts, client_order_id=cid, reason="no")
        elif answer == "cancelled":
            report = OrderCancelled(ts_event=ts, ts_recv=ts, client_order_id=cid)
        else:
            order = self.engine.orders.get(cid)
            self.seq += 1
            report = Fill(ts_event=ts, ts_recv=ts, client_order_id=cid, fill_id=f"f{self.seq}",
                          instrument="X", side=order.request.side, qty=0.5,
                          price=order.request.limit_price or 100.0, fee=0.0,
                          liquidity="maker")  # fmt: skip
        self.engine.on_report(report)  # type: ignore[arg-type]

    @rule(dt=st.sampled_from([1, 100 * MS, 500 * MS, S - 1, S, 2 * S, 5 * S, 20 * S]))
    def time_step(self, dt: int) -> None:
        self.now += dt
        self.engine.advance_to(self.now)
        # due resends went out: no open order with a cancel sent waits past its back-off
        for cid in self._open():
            times = [c.ts_event for c in self.outbox.cancels if c.client_order_id == cid]
            if times:
                wait = min(RETRY * 2 ** (len(times) - 1), RETRY_MAX)
                assert self.now - times[-1] < wait, (cid, times, self.now)

    @invariant()
    def one_cancel_in_flight_resent_with_backoff(self) -> None:
        by_order: dict[str, list[int]] = {}
        for c in self.outbox.cancels:
            by_order.setdefault(c.client_order_id, []).append(c.ts_event)
        for cid, times in by_order.items():
            for k, (a, b) in enumerate(itertools.pairwise(times)):
                assert b - a >= min(RETRY * 2**k, RETRY_MAX), (cid, times)


CancelMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cancels_one_in_flight_resent_with_backoff = CancelMachine.TestCase
