"""A signed operator command is acted on once, and only while fresh.

The signature proves who wrote a command, not when or how often it arrives: the command
topic is QoS 1 (a redelivery is normal) and a captured message can be published again.
``rollback`` is not idempotent (each moves the champion one version further back) and a
replayed ``resume`` would clear a later kill, so the ingest refuses, after the signature
verified:

- a command whose ``ts_event`` is more than ``max_age_ns`` from the receive clock, either
  way (the operator's machine and the daemon's have clocks of their own): ``stale`` or
  ``future``;
- a command equal to one accepted before (same action, target, stage, issuer, reason and
  ``ts_event``; a redelivery or a replay carries the same payload): ``duplicate``;
- a command naming an issuer the daemon keeps for its own commands (``daemon``,
  ``reconciliation``): ``reserved_issuer``. Their claims are lifted by reconciliation
  (``engine.trading_state``), so an operator's kill must never be filed under them.

A command is remembered until it would be refused as stale anyway (its ``ts_event`` plus
``max_age_ns`` is behind the receive clock), so the memory holds only commands whose
``ts_event`` lies within ``max_age_ns`` of the clock: at most the commands accepted in
``2 * max_age_ns`` of receive time (about 200 bytes each).

After a restart the daemon primes the guard with the commands its journal applied: the
guard is an engine sink (``__call__``), so the rebuild's own application of each
journaled command remembers it, and it is a snapshot extra, so a rebuild that starts
from a snapshot keeps what the snapshot's commands left in it.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Final, Literal

import msgspec

from engine.config import LiveConfig
from engine.events import Command, Event
from engine.trading_state import DAEMON, RECONCILIATION

Refusal = Literal["stale", "future", "duplicate", "reserved_issuer"]

DEFAULT_MAX_AGE_NS: Final = LiveConfig().command_max_age_ns
"""``[live] command_max_age`` of a config that does not set it."""

_encoder = msgspec.msgpack.Encoder()


def command_digest(command: Command) -> bytes:
    """What makes two commands the same: SHA-256 of the fields an operator signs that
    change what it does or when it was issued. ``ts_recv`` is left out: it is the
    receiver's stamp, not part of the command's identity."""
    key = (
        command.action,
        command.target,
        command.stage,
        command.issuer,
        command.reason,
        command.ts_event,
    )
    return hashlib.sha256(_encoder.encode(key)).digest()


class CommandGuard:
    """Refuses stale, future-dated and repeated operator commands.

    Args:
        max_age_ns: how far a command's ``ts_event`` may be from the receive clock, in
            either direction; also how long past its ``ts_event`` a command is
            remembered.

    Raises:
        ValueError: ``max_age_ns`` is not positive.
    """

    def __init__(self, max_age_ns: int = DEFAULT_MAX_AGE_NS) -> None:
        if max_age_ns <= 0:
            raise ValueError(f"max_age_ns must be > 0, got {max_age_ns}")
        self.max_age_ns = max_age_ns
        self._now = 0  # the latest receive time seen; never goes back
        self._expiry: dict[bytes, int] = {}  # digest -> ts_event + max_age_ns
        self._heap: list[tuple[int, bytes]] = []  # the same entries, soonest expiry first

    def __len__(self) -> int:
        return len(self._expiry)

    def check(self, command: Command, ts_recv: int) -> Refusal | None:
        """Why ``command``, received at ``ts_recv``, must not be applied; None if it may,
        and then it is remembered (a second copy is a ``duplicate``)."""
        if command.issuer in (DAEMON, RECONCILIATION):
            return "reserved_issuer"
        self.expire(ts_recv)
        # judged on the latest time seen, not a clock that stepped back (or another host's,
        # after a failover) behind what was already forgotten: a forgotten command must be
        # stale, or its copy would pass as new
        ts_recv = max(ts_recv, self._now)
        ts_event = command.ts_event
        if ts_recv - ts_event > self.max_age_ns:
            return "stale"
        if ts_event - ts_recv > self.max_age_ns:
            return "future"
        digest = command_digest(command)
        if digest in self._expiry:
            return "duplicate"
        self._add(digest, ts_event + self.max_age_ns)
        return None

    def remember(self, command: Command, ts_recv: int) -> None:
        """Count ``command`` as accepted at ``ts_recv`` (a journaled command, after a
        restart): a copy received later within the window is a ``duplicate``."""
        self.expire(ts_recv)
        self._remember(command)

    def __call__(self, event: Event) -> None:
        """As an engine sink: remember every command the engine applies, so a rebuild
        from the journal primes the guard. Time does not move here (a command's own
        stamp is not the receive clock); ``expire`` or the next ``check`` drops what
        has aged out."""
        if isinstance(event, Command):
            self._remember(event)

    def expire(self, now_ns: int) -> None:
        """Forget the commands that a copy received at ``now_ns`` or later would be
        refused for as stale anyway."""
        now = self._now = max(self._now, now_ns)
        heap = self._heap
        expiry = self._expiry
        while heap and heap[0][0] < now:
            _, digest = heapq.heappop(heap)
            del expiry[digest]

    def _remember(self, command: Command) -> None:
        until = command.ts_event + self.max_age_ns
        if until < self._now:
            return  # already refused as stale
        digest = command_digest(command)
        if digest not in self._expiry:
            self._add(digest, until)

    def _add(self, digest: bytes, until: int) -> None:
        self._expiry[digest] = until
        heapq.heappush(self._heap, (until, digest))
