"""What the daemon's helpers share with its consumer loop: the task group their background
work (reconciliation, model switches, snapshot writes) runs in, and a way to wake the
consumer once a result waits for it. Results are applied by the consumer between turns,
never by the background task itself, so every input stays in the journal's order."""

from __future__ import annotations

import asyncio
import contextlib


class Background:
    """The session's task group (None until the session is up) and the consumer's wait."""

    def __init__(self) -> None:
        self.tasks: asyncio.TaskGroup | None = None
        # the consumer's wait for the inbox, while it waits (``wake`` cuts it short)
        self.waiting: asyncio.Timeout | None = None

    def wake(self) -> None:
        """Wake the consumer now, if it waits."""
        waiting = self.waiting
        if waiting is not None and not waiting.expired():  # wake the consumer now
            # a timeout that is expiring (its deadline passed, the consumer not yet
            # resumed) refuses to be rescheduled: the consumer wakes by itself then
            with contextlib.suppress(RuntimeError):
                waiting.reschedule(asyncio.get_running_loop().time())


__all__ = ["Background"]
