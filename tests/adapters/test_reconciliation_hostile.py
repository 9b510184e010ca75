"""Reconciliation against an OMS that answers nonsense or stamps with a wrong clock (issue
19): a non-finite position, or one for an unknown instrument, is a difference (the kill
stays); the window of missed fills is keyed on our own receipt times, never on the
OMS's stamps; paper and shadow never ask an OMS."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.daemon.background import Background
from adapters.daemon.core import InputBody, apply_input
from adapters.daemon.reconcile import Reconciler
from adapters.reconciliation import (
    ClaimHolder,
    FillLedger,
    OmsSnapshot,
    position_differences,
    verdict,
)
from engine.clock import ReplayClock
from engine.config import load_config
from engine.engine import Engine
from engine.errors import AdapterError
from engine.events import Command, Fill
from engine.snapshot import capture_state, restore_state
from tests.adapters.test_reconciliation import T, _config, _engine, _send

S = 1_000_000_000
DAY = 86_400 * S
_QTY_EPS = 1e-9


def _fill(fill_id: str, cid: str, ts_event: int, qty: float = 1.0) -> Fill:
    return Fill(ts_event=ts_event, ts_recv=ts_event, client_order_id=cid, fill_id=fill_id,
                instrument="BTC", side="buy", qty=qty, price=100.0, fee=0.0,
                liquidity="taker")  # fmt: skip


# a position the OMS cannot have


@pytest.mark.parametrize("theirs", [math.nan, math.inf, -math.inf])
def test_position_differences_non_finite_oms_position_is_a_difference(
    tmp_path: Path, theirs: float
) -> None:
    engine, _, _, _ = _engine(tmp_path)
    apply_input(engine, T, _fill("f1", _send(engine), T))
    assert engine.portfolio.positions.tolist() == [1.0]
    for positions in ({"BTC": theirs}, {"BTC": 1.0, "ETH": theirs}):
        differences = position_differences(engine, OmsSnapshot([], positions, [], 1))
        assert len(differences) == 1, positions


def test_verdict_nan_position_while_long_reconciliation_kill_stays(tmp_path: Path) -> None:
    """Issue 19, item 7: a NaN position compared equal to anything, which lifted the
    reconciliation kill while the engine was long."""
    engine, _, holder, _ = _engine(tmp_path)
    apply_input(engine, T, _fill("f1", _send(engine), T))
    kill = verdict(["position BTC: engine 1, OMS 0"], holder, T + 1)
    assert kill is not None
    apply_input(engine, T + 1, kill)
    assert engine.risk.state == "HALTED" and holder.held_by_reconciliation()
    for positions in ({"BTC": math.nan}, {"BTC": 1.0, "XRP": math.nan}):
        differences = position_differences(engine, OmsSnapshot([], positions, [], 1))
        command = verdict(differences, holder, T + 2)
        assert command is not None and command.action == "kill", positions
    assert engine.risk.state == "HALTED"


_quantities = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, -1.0, 1.0 + 1e-12, 2.5, 1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ours=st.sampled_from([0.0, 1.0, -1.0, 2.5]),
    theirs=st.dictionaries(st.sampled_from(["BTC", "ETH", "btc", ""]), _quantities, max_size=3),
)
def test_position_differences_empty_only_when_every_oms_position_is_finite_and_equal(
    tmp_path: Path, ours: float, theirs: dict[str, float]
) -> None:
    # mutation-checked: comparing with ``abs(ours - theirs) > eps`` alone (NaN is never
    # greater than anything) lets a NaN position agree
    engine, _, _, _ = _ENGINES.get(tmp_path)
    engine.portfolio.positions[0] = ours
    differences = position_differences(engine, OmsSnapshot([], theirs, [], 1))
    btc = theirs.get("BTC", 0.0)
    agree = math.isfinite(btc) and abs(btc - ours) <= _QTY_EPS
    others = [q for symbol, q in theirs.items() if symbol != "BTC"]
    agree = agree and all(math.isfinite(q) and abs(q) <= _QTY_EPS for q in others)
    assert (differences == []) == agree, (ours, theirs, differences)


class _Engines:
    """One engine per test folder: hypothesis runs the property many times."""

    def __init__(self) -> None:
        self._made: dict[Path, Any] = {}

    def get(self, tmp_path: Path) -> Any:
        if tmp_path not in self._made:
            self._made[tmp_path] = _engine(tmp_path)
        return self._made[tmp_path]


_ENGINES = _Engines()


# the window of missed fills


class _Core:
    """What the reconciler needs of ``LiveCore``: inputs journaled (here: kept) and
    applied."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.last_ts = 0
        self.inputs: list[InputBody] = []

    def inject(self, ts_ns: int, body: InputBody, kind: str) -> None:
        self.inject_all([(ts_ns, body, kind)])

    def inject_all(self, inputs: list[tuple[int, InputBody, str]]) -> None:
        for ts, body, _ in inputs:
            self.last_ts = max(self.last_ts, ts)
            self.inputs.append(body)
            apply_input(self.engine, self.last_ts, body)


class _Oms:
    """Answers a fills question as the contract says: every fill with ``ts_event >=
    since_ns`` (the OMS's own stamps)."""

    def __init__(self, fills: list[Fill], positions: dict[str, float]) -> None:
        self.fills = fills
        self.positions = positions
        self.asked: list[int] = []

    async def fetch(self, since_ns: int, timeout_s: float) -> OmsSnapshot:
        self.asked.append(since_ns)
        fills = [f for f in self.fills if f.ts_event >= since_ns]
        return OmsSnapshot(fills, dict(self.positions), [], 2)


def _reconciler(
    tmp_path: Path, mode: str, engine: Engine, ledger: FillLedger, clock: Callable[[], int],
    fetch: Any,
) -> Reconciler:  # fmt: skip
    path = _config(tmp_path)
    path.write_text(path.read_text().replace('mode = "live"', f'mode = "{mode}"'))
    config, _ = load_config(path)
    return Reconciler(config, engine, ledger, ClaimHolder(engine), clock, Background(), fetch)


@pytest.mark.asyncio
async def test_reconciler_fill_stamped_a_day_ahead_missed_fill_still_recovered(
    tmp_path: Path,
) -> None:
    """Issue 19, defect 8: one fill stamped a day ahead moved the window's start a day
    forward, so the fill made while the daemon was down was never asked for."""
    engine, ledger, _, _ = _engine(tmp_path)
    cid = _send(engine)
    ahead = _fill("f1", cid, T + DAY)  # the OMS's clock (or a forger's) a day ahead
    apply_input(engine, T, ahead)  # received at T
    missed = _fill("f2", cid, T + 5 * S)  # made while the daemon was down
    oms = _Oms([ahead, missed], {"BTC": 2.0})
    reconciler = _reconciler(tmp_path, "live", engine, ledger, lambda: T + 10 * S, oms.fetch)
    core = _Core(engine)
    await reconciler.at_start(core, first_session=False)  # type: ignore[arg-type]
    assert oms.asked and oms.asked[0] <= T
    assert core.inputs[0] == missed
    assert engine.portfolio.positions.tolist() == [2.0]
    assert reconciler.counts["position_differences"] == 0
    assert not any(isinstance(body, Command) and body.action == "kill" for body in core.inputs)


@pytest.mark.asyncio
async def test_reconciler_fill_on_an_untraded_instrument_counted_not_booked(
    tmp_path: Path,
) -> None:
    """Found by review: the OMS answers for the whole account, and a missed fill on an
    instrument this daemon does not trade went to the engine, which halted on it."""
    engine, ledger, _, _ = _engine(tmp_path)
    cid = _send(engine)
    ours = _fill("f1", cid, T + S)
    untraded = msgspec.structs.replace(_fill("f3", cid, T + S), instrument="ETH")
    oms = _Oms([ours, untraded], {"BTC": 1.0})
    reconciler = _reconciler(tmp_path, "live", engine, ledger, lambda: T + 10 * S, oms.fetch)
    core = _Core(engine)
    await reconciler.at_start(core, first_session=False)  # type: ignore[arg-type]
    assert [body for body in core.inputs if isinstance(body, Fill)] == [ours]
    assert reconciler.counts["fills_unknown_instrument"] == 1
    assert engine.portfolio.positions.tolist() == [1.0]
    assert engine.risk.state == "ACTIVE"


@given(
    fills=st.lists(st.tuples(st.integers(0, 10**6), st.integers(-(2**63), 2**63 - 1)), max_size=20),
    now_after=st.integers(-(10**6), 10**6),
    lookback=st.integers(0, 10**6),
)
def test_fill_ledger_window_keyed_on_receipt_times_whatever_the_stamps(
    fills: list[tuple[int, int]], now_after: int, lookback: int
) -> None:
    # mutation-checked: the ledger taking ``max(receipt, fill.ts_event)`` (a peer's
    # stamp) moves the window past a fill made after the last one received
    clock = ReplayClock()
    ledger = FillLedger(clock)
    received = T
    for i, (delay, stamp) in enumerate(fills):
        received += delay
        clock.advance(received)
        ledger(_fill(f"f{i}", "n-s-1", stamp))
    now = received + now_after
    start = ledger.window_start_ns(now, lookback)
    if not fills:
        assert start == 0
    else:
        assert start == max(0, min(received, now) - lookback)
        assert start <= received  # a fill made after the last one received is asked for


def test_fill_ledger_from_a_snapshot_keeps_receipt_times_on_the_new_engines_clock(
    tmp_path: Path,
) -> None:
    """A snapshot kept the bad window start across restarts: it now holds receipt times,
    and the ledger reads the restored engine's clock."""
    engine, ledger, _, _ = _engine(tmp_path)
    apply_input(engine, T, _fill("f1", _send(engine), T + DAY))
    payload = capture_state(engine, {"ledger": ledger})
    (tmp_path / "fresh").mkdir()
    fresh, fresh_ledger, _, _ = _engine(tmp_path / "fresh")
    restore_state(fresh, payload, {"ledger": fresh_ledger})
    assert fresh_ledger.last_receipt_ns == T
    assert fresh_ledger.window_start_ns(T + 10 * S, S) == T - S
    apply_input(fresh, T + 3 * S, _fill("f2", _send(fresh), T + 2 * DAY))
    assert fresh_ledger.last_receipt_ns == T + 3 * S


@pytest.mark.parametrize("mode", ["paper", "shadow"])
@pytest.mark.asyncio
async def test_reconciler_paper_and_shadow_never_ask_the_oms(tmp_path: Path, mode: str) -> None:
    """Issue 19, defect 11: a reconnect in paper or shadow mode started a reconciliation
    nobody answers, which ended in a permanent kill."""
    engine, ledger, _, _ = _engine(tmp_path)
    asked: list[int] = []

    async def nobody(since_ns: int, timeout_s: float) -> OmsSnapshot:
        asked.append(since_ns)
        raise AdapterError("no answer from the OMS")

    reconciler = _reconciler(tmp_path, mode, engine, ledger, lambda: T, nobody)
    core = _Core(engine)
    async with asyncio.TaskGroup() as tasks:
        reconciler.background.tasks = tasks
        await reconciler.at_start(core, first_session=False)  # type: ignore[arg-type]
        await reconciler.at_start(core, first_session=True)  # type: ignore[arg-type]
        reconciler.after_reconnect()
        await asyncio.sleep(0.05)
        reconciler.finish(core)  # type: ignore[arg-type]
        reconciler.retry_if_due(math.inf)
        await asyncio.sleep(0.05)
        reconciler.finish(core)  # type: ignore[arg-type]
    assert asked == [] and core.inputs == []
    assert engine.risk.state == "ACTIVE"
    assert reconciler.counts["failed"] == 0
