"""Clocks. Time is read only through a clock; nothing else calls ``time.time()``.

Both clocks keep the same timer queue: timers fire in event-time order, ties broken by
the order they were set. A timer due at ``T`` fires after every tick stamped ``<= T``
and before the first tick stamped ``> T``, in replay and live alike.

Time has two jobs. The wall clock (``wall_clock_ns``) stamps: it says what time it is,
and it steps when NTP or an operator sets it. The monotonic clock
(``monotonic_clock_ns``) measures intervals: it never steps. The live daemon's receive
clock (``adapters.daemon.core.ReceiveClock``) reads both: its readings run on the
monotonic clock, placed on the wall clock's scale once, and a change of one against the
other is a jump it reports rather than follows.
"""

from __future__ import annotations

import heapq
import time
from typing import Protocol

import msgspec

from engine.errors import ClockError


def wall_clock_ns() -> int:
    """The wall clock: ns since the epoch (steps when the host's time is set)."""
    return time.time_ns()


def monotonic_clock_ns() -> int:
    """The monotonic clock: ns since an arbitrary point, never stepping back or forward
    (intervals only)."""
    return time.monotonic_ns()


class TimerFired(msgspec.Struct, frozen=True, kw_only=True):
    """A timer came due. ``interval_ns`` is 0 for a one-shot timer."""

    name: str
    ts_event: int
    interval_ns: int = 0


class Clock(Protocol):
    def now_ns(self) -> int: ...
    def set_timer(self, name: str, ts_ns: int, interval_ns: int = 0) -> None: ...
    def cancel_timer(self, name: str) -> None: ...
    def next_timer_ns(self) -> int | None: ...
    def pop_due(self, ts_ns: int) -> list[TimerFired]: ...
    def advance(self, ts_ns: int) -> None: ...


class _TimerQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, int]] = []
        self._seq = 0
        self._live: dict[str, int] = {}  # name -> seq of its current entry

    def set_timer(self, name: str, ts_ns: int, interval_ns: int = 0) -> None:
        """Set (or replace) the timer ``name`` to fire at ``ts_ns``, then every ``interval_ns``."""
        if interval_ns < 0:
            raise ValueError("interval_ns must be >= 0")
        self._seq += 1
        self._live[name] = self._seq
        heapq.heappush(self._heap, (ts_ns, self._seq, name, interval_ns))

    def cancel_timer(self, name: str) -> None:
        self._live.pop(name, None)

    def _drop_cancelled(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)

    def next_timer_ns(self) -> int | None:
        self._drop_cancelled()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, ts_ns: int) -> list[TimerFired]:
        """Remove and return every timer due at or before ``ts_ns``, in firing order."""
        fired: list[TimerFired] = []
        while True:
            self._drop_cancelled()
            if not self._heap or self._heap[0][0] > ts_ns:
                return fired
            due, _, name, interval = heapq.heappop(self._heap)
            fired.append(TimerFired(name=name, ts_event=due, interval_ns=interval))
            if interval:
                self._seq += 1
                self._live[name] = self._seq
                heapq.heappush(self._heap, (due + interval, self._seq, name, interval))
            else:
                self._live.pop(name, None)


class ReplayClock(_TimerQueue):
    """Advanced by the events themselves; never moves backwards."""

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__()
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ts_ns: int) -> None:
        """Move the clock to ``ts_ns``.

        Raises:
            ClockError: ``ts_ns`` is earlier than the current time.
        """
        if ts_ns < self._now:
            raise ClockError(f"replay clock cannot go back from {self._now} to {ts_ns}")
        self._now = ts_ns


class LiveClock(_TimerQueue):
    """Wall-clock time in ns since the epoch; timers are fired by the live driver."""

    def now_ns(self) -> int:
        return wall_clock_ns()

    def advance(self, ts_ns: int) -> None:
        """Wall time moves by itself; the engine's calls are accepted and ignored."""
