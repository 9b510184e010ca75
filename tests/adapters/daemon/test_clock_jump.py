"""Two clocks (issue 19, defect 3): a wall clock that steps forward an hour and back
again neither freezes nor jumps the daemon's time.

Before, the receive clock was the wall clock made non-decreasing (``max(last, now)``): after
the step back it stood still for the length of the step, and the journal carried the hour
ahead into the next session. Signed commands were refused as stale, a dead feed was never
detected, order timeouts and timers stopped. Now receive times run on the monotonic clock
(placed on the wall clock's scale once), each jump of wall minus monotonic is journaled
with a critical Alarm and ``[live] on_clock_jump`` (REDUCE_ONLY here, sticky), and the
journal replays to the same decisions.

The daemon runs without a broker: a fake session whose inbox the test fills, the wall
clock injected into ``ReceiveClock``, the real monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from adapters.daemon.core import ReceiveClock
from adapters.daemon.run import Daemon, run_daemon
from adapters.journal_file import FileJournalReader
from adapters.mqtt.ingest import CommandIn, Connection, MarketData, ReportIn
from engine.clock import monotonic_clock_ns, wall_clock_ns
from engine.events import Command, CommandAction, OrderCancelled, OrderRequest
from engine.journal import ClockJump, ClockJumpRecord, FeedRecord
from engine.ticks import TickBatch
from replay.sessions.parity import parity
from tests.support import FakeSession

S = 1_000_000_000
HOUR = 3600 * S


class Wall:
    """The wall clock, ``offset`` ahead of the host's."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return wall_clock_ns() + self.offset


def test_receive_clock_step_forward_then_back_keeps_moving_and_reports_both_jumps() -> None:
    wall_ns, mono_ns = [1_000 * S], [5 * S]
    clock = ReceiveClock(lambda: wall_ns[0], lambda: mono_ns[0], jump_ns=2 * S)
    assert clock() == 1_000 * S
    mono_ns[0] += S
    wall_ns[0] += S + HOUR  # one second passes and the wall clock steps an hour ahead
    assert clock() == 1_001 * S  # the readings follow the monotonic clock
    [ahead] = clock.jumped()
    assert ahead.step_ns == HOUR and ahead.policy == "reduce_only"
    assert clock.jumped() == []  # reported once
    mono_ns[0] += S
    wall_ns[0] += S - HOUR  # ... and back
    assert clock() == 1_002 * S
    [back] = clock.jumped()
    assert back.step_ns == -HOUR
    mono_ns[0] += S
    wall_ns[0] += S + S  # within ``clock_jump``: a slew, not a jump
    assert clock.jumped() == [] and clock() == 1_003 * S


def test_receive_clock_behind_the_journal_at_start_continues_from_it_with_a_jump() -> None:
    wall_ns, mono_ns = [1_000 * S], [0]
    clock = ReceiveClock(lambda: wall_ns[0], lambda: mono_ns[0], jump_ns=2 * S, policy="halt")
    clock.continue_from(999 * S)  # the journal ends before now: nothing to do
    assert clock() == 1_000 * S and clock.jumped() == []
    clock.continue_from(1_000 * S + HOUR)  # the last session ran an hour ahead
    assert clock() == 1_000 * S + HOUR
    [jump] = clock.jumped()
    assert jump.step_ns == -HOUR and jump.policy == "halt"
    mono_ns[0] += S
    assert clock() == 1_001 * S + HOUR


# the daemon through a step forward and back, and a restart after it


def _config(tmp: Path) -> Path:
    path = tmp / "live.toml"
    path.write_text(f"""
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
name = "tests.integration.test_reliability:Churn"
params = {{ qty = 1.0, every = 2, rest = false }}

[risk]
max_order_qty = 5.0
max_position = 5.0
max_quote_age = "400ms"
warmup = false

[mqtt]
username_env = "TL_TEST_MQTT_USER"
password_env = "TL_TEST_MQTT_PASSWORD"

[live]
node = "n1"
account = "a1"
heartbeat = "50ms"
order_timeout = "400ms"
command_key_env = "TL_TEST_COMMAND_KEY"
metrics_port = 0
explain = false
clock_jump = "2s"
on_clock_jump = "reduce_only"

[journal]
dir = "{(tmp / "journal").as_posix()}"
fsync = "never"
""")
    return path


@contextlib.asynccontextmanager
async def _running(config: Path, clock: ReceiveClock) -> AsyncIterator[tuple[Daemon, FakeSession]]:
    session = FakeSession()
    stop = asyncio.Event()
    built: list[Daemon] = []
    run = run_daemon(
        config,
        stop=stop,
        receive_clock=clock,
        session_factory=lambda *args: session,  # type: ignore[arg-type,return-value]
        on_ready=built.append,
    )
    task = asyncio.create_task(run)
    await _until(lambda: bool(built) and built[0].core is not None and not task.done())
    daemon = built[0]
    await session.inbox.put(Connection(connected=True, ts_recv=clock(), reason="connected"))
    try:
        yield daemon, session
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def _until(what: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.01)


async def _beats(daemon: Daemon, n: int) -> None:
    start = daemon.heartbeat_seq
    await _until(lambda: daemon.heartbeat_seq >= start + n)


def _quote(clock: ReceiveClock, wall: Callable[[], int]) -> MarketData:
    ts = clock()
    one = np.array([ts], np.int64)
    batch = TickBatch.quotes(np.array([wall()], np.int64), one, np.zeros(1, np.int32),
                             np.array([100.0]), np.array([100.5]), np.ones(1), np.ones(1))  # fmt: skip
    return MarketData(batch=batch, ts_recv=ts, messages=1)


async def _command(
    daemon: Daemon, session: FakeSession, clock: ReceiveClock, action: CommandAction, ts: int
) -> None:
    """A command signed at ``ts`` (the operator's clock), checked as the ingest checks
    it (``CommandGuard.check`` on the receive time), then in the inbox."""
    command = Command(ts_event=ts, ts_recv=ts, action=action, issuer="ops", reason="clock test")
    received = clock()
    assert daemon.command_guard.check(command, received) is None  # fresh: not refused
    await session.inbox.put(CommandIn(command=command, ts_recv=received))


async def _resume(
    daemon: Daemon, session: FakeSession, clock: ReceiveClock, wall: Callable[[], int]
) -> None:
    """A fresh quote (the feed is back), then the operator's resume signed at the right
    time: ACTIVE."""
    await session.inbox.put(_quote(clock, wall))
    await _command(daemon, session, clock, "resume", wall_clock_ns())
    await _until(lambda: daemon.engine.risk.state == "ACTIVE")


async def _trade_until_timeout_and_dead_feed(
    daemon: Daemon, session: FakeSession, clock: ReceiveClock, wall: Callable[[], int]
) -> None:
    """Quotes make a market order (one every two quotes) nobody answers: UNKNOWN after
    ``order_timeout``; no quote after them: the feed is lost after ``max_quote_age``."""
    engine = daemon.engine
    unknown, lost = engine.counters["orders_unknown"], engine.counters["market_data_lost"]
    sent = len(session.orders)
    for _ in range(2):
        await session.inbox.put(_quote(clock, wall))
    await _until(lambda: len(session.orders) > sent)
    await _until(lambda: engine.counters["orders_unknown"] > unknown, timeout=5)
    await _until(lambda: engine.counters["market_data_lost"] > lost, timeout=5)
    order = next(o for o in reversed(session.orders) if isinstance(o, OrderRequest))
    ts = clock()  # the venue answers at last: the order is settled
    done = OrderCancelled(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id)
    await session.inbox.put(ReportIn(report=done, ts_recv=ts))
    await _until(lambda: engine.risk.trading.claim("automatic") == "ACTIVE")


@pytest.mark.asyncio
async def test_wall_clock_hour_step_forward_and_back_then_restarts_time_keeps_moving_parity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_TEST_MQTT_USER", "u")
    monkeypatch.setenv("TL_TEST_MQTT_PASSWORD", "p")
    monkeypatch.setenv("TL_TEST_COMMAND_KEY", "k")
    config = _config(tmp_path)
    journal = tmp_path / "journal"
    wall = Wall()
    clock = ReceiveClock(wall, jump_ns=2 * S, policy="reduce_only")
    async with _running(config, clock) as (daemon, session):
        engine = daemon.engine
        await _beats(daemon, 2)
        wall.offset = HOUR  # NTP steps the wall clock an hour ahead...
        await _beats(daemon, 3)
        wall.offset = 0  # ... and back
        await _beats(daemon, 3)
        # the policy, as the engine's own claim (the feed, silent, claims HALTED too)
        assert engine.risk.trading.claim("automatic") == "REDUCE_ONLY"
        # the engine's time kept moving with the monotonic clock
        t0, m0 = engine.clock.now_ns(), monotonic_clock_ns()
        await _beats(daemon, 4)
        moved = engine.clock.now_ns() - t0
        assert moved > 0 and abs(moved - (monotonic_clock_ns() - m0)) < 2 * S
        assert abs(engine.clock.now_ns() - wall_clock_ns()) < 5 * S
        # the operator's resume, signed at the right time, is accepted
        await _resume(daemon, session, clock, wall)
        await _trade_until_timeout_and_dead_feed(daemon, session, clock, wall)
        # a kill signed at the right time is accepted
        await _command(daemon, session, clock, "kill", wall_clock_ns())
        await _until(lambda: engine.risk.trading.claim("operator") == "HALTED")
        first_end = engine.clock.now_ns()
    jumps = [r for r in FileJournalReader(journal) if isinstance(r, ClockJumpRecord)]
    assert [round(j.jump.step_ns / S) for j in jumps] == [3600, -3600]
    assert all(isinstance(j.jump, ClockJump) and j.jump.policy == "reduce_only" for j in jumps)

    # a restart after it: no hour ahead, no jump at start, everything still runs
    clock = ReceiveClock(wall, jump_ns=2 * S, policy="reduce_only")
    async with _running(config, clock) as (daemon, session):
        engine = daemon.engine
        await _beats(daemon, 2)
        assert first_end <= daemon.start_ns and abs(daemon.start_ns - wall_clock_ns()) < 5 * S
        assert engine.risk.trading.claim("operator") == "HALTED"  # the kill persists
        await _resume(daemon, session, clock, wall)
        await _trade_until_timeout_and_dead_feed(daemon, session, clock, wall)
        await _command(daemon, session, clock, "kill", wall_clock_ns())
        await _until(lambda: engine.risk.state == "HALTED")
    records = list(FileJournalReader(journal))
    assert sum(isinstance(r, ClockJumpRecord) for r in records) == 2  # none at the restart
    second_end = records[-1].ts_recv

    # a restart on a wall clock an hour behind the journal: time continues from the
    # journal (never back), and the jump is journaled at the first heartbeat
    wall.offset = -HOUR
    clock = ReceiveClock(wall, jump_ns=2 * S, policy="reduce_only")
    async with _running(config, clock) as (daemon, session):
        await _beats(daemon, 2)
        assert daemon.engine.clock.now_ns() >= second_end
        assert daemon.engine.risk.trading.claim("automatic") == "REDUCE_ONLY"
    records = list(FileJournalReader(journal))
    at_start = [r.jump for r in records if isinstance(r, ClockJumpRecord)]
    assert len(at_start) == 3 and round(at_start[-1].step_ns / S) == -3600
    assert sum(isinstance(r, FeedRecord) and r.feed.status == "lost" for r in records) >= 2
    ts = [r.ts_recv for r in records]
    assert ts == sorted(ts)
    sessions = sorted(p.stem.removeprefix("session-") for p in journal.glob("session-*.json"))
    assert len(sessions) == 3
    for session_id in sessions:
        result = parity(journal, session=session_id)
        assert result.ok, result.differences[:5]
