import pytest

from engine.clock import LiveClock, ReplayClock
from engine.errors import ClockError


def test_timers_fire_in_time_order_ties_in_set_order() -> None:
    clock = ReplayClock()
    clock.set_timer("c", 30)
    clock.set_timer("a", 10)
    clock.set_timer("b", 10)
    assert clock.next_timer_ns() == 10
    fired = clock.pop_due(30)
    assert [(f.name, f.ts_event) for f in fired] == [("a", 10), ("b", 10), ("c", 30)]
    assert clock.next_timer_ns() is None


def test_timer_recurring_fires_each_interval_and_can_be_cancelled() -> None:
    clock = ReplayClock()
    clock.set_timer("bar", 100, interval_ns=50)
    assert [f.ts_event for f in clock.pop_due(220)] == [100, 150, 200]
    assert clock.next_timer_ns() == 250
    clock.cancel_timer("bar")
    assert clock.next_timer_ns() is None
    assert clock.pop_due(10_000) == []


def test_timer_reset_replaces_previous_schedule() -> None:
    clock = ReplayClock()
    clock.set_timer("t", 100)
    clock.set_timer("t", 300)
    assert [f.ts_event for f in clock.pop_due(1000)] == [300]


def test_replay_clock_never_goes_back() -> None:
    clock = ReplayClock(start_ns=100)
    clock.advance(100)
    with pytest.raises(ClockError):
        clock.advance(99)


def test_live_clock_reads_wall_time() -> None:
    import time

    before = time.time_ns()
    now = LiveClock().now_ns()
    assert before <= now <= time.time_ns()
