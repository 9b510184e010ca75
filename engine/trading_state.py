"""The trading state: who may restrict trading, who may lift it, and what the engine does.

Every holder that can restrict trading holds its own *claim* (the state it asks for).
The effective state is the most severe claim: ``HALTED`` > ``REDUCE_ONLY`` > ``ACTIVE``.
A holder only ever changes its own claim, so a state set by one holder can never be
lowered by another; the ranking decides which holder is named as the cause when several
claim the same state, and who may clear what:

==============  ====  ======================================================
source          rank  claims and clears
==============  ====  ======================================================
operator        6     ``kill`` (HALTED), ``reduce_only``; ``resume`` clears every
                      claim (the operator's word is final; a condition that still
                      holds, such as a stale feed, claims again at its next check)
shutdown        5     the daemon's own ``kill`` at a graceful stop (issuer
                      ``daemon``, reason ``SHUTDOWN_REASON``); cleared at the next
                      start by reconciliation's ``resume`` once the OMS agrees
reconciliation  4     its ``kill`` when positions differ from the OMS's or the OMS
                      does not answer; cleared by its own ``resume``, which clears
                      the ``shutdown`` claim too and nothing else
daemon          3     the daemon's other commands (``reduce_only`` when its outbox
                      had no room for orders); cleared only by an operator
loss_limit      2     a daily-loss or drawdown breach; cleared only by ``resume``
data_loss       1     market data lost or stale; cleared when data is back
automatic       0     the engine's own alarms (a strategy that raised, a fill on
                      an unknown order, an order without an answer, a wall-clock
                      jump); cleared by the engine when the condition ends, or by
                      ``resume``
==============  ====  ======================================================

Commands name their issuer; ``command_source`` maps an issuer to the claim it holds, so
a restart that rebuilds the claims from the journal (or restores them from a snapshot)
restores who holds what, not only the state. A holder's kill is left only by a
``resume`` that clears it: a ``reduce_only`` from the same holder while it is killed is
refused.
"""

from __future__ import annotations

from typing import Final, Literal

from engine.events import TradingState, TradingStateName

Source = Literal[
    "operator", "shutdown", "reconciliation", "daemon", "loss_limit", "data_loss", "automatic"
]

# highest rank first (the table above)
SOURCES: tuple[Source, ...] = (
    "operator", "shutdown", "reconciliation", "daemon", "loss_limit", "data_loss", "automatic"
)  # fmt: skip
SEVERITY: dict[TradingStateName, int] = {"ACTIVE": 0, "REDUCE_ONLY": 1, "HALTED": 2}

RECONCILIATION: Final = "reconciliation"
"""Issuer of the commands reconciliation journals."""
DAEMON: Final = "daemon"
"""Issuer of the commands the daemon makes itself (its stop, a full outbox)."""
SHUTDOWN_REASON: Final = "daemon shutdown"
"""Reason of the daemon's own kill at a graceful stop (lifted at the next start once the
OMS agrees)."""

# what a ``resume`` from each holder clears: the operator's clears every claim; the others
# only what they hold (reconciliation also the previous session's shutdown kill, which it
# exists to lift once the OMS agrees)
LIFTS: Final[dict[Source, tuple[Source, ...]]] = {
    "operator": SOURCES,
    "shutdown": ("shutdown",),
    "reconciliation": ("reconciliation", "shutdown"),
    "daemon": ("daemon",),
}


def command_source(issuer: str, reason: str) -> Source:
    """The claim a command's issuer holds: ``reconciliation``, the daemon's ``shutdown``
    kill, the ``daemon``'s other commands, or else the ``operator``."""
    if issuer == RECONCILIATION:
        return "reconciliation"
    if issuer == DAEMON:
        return "shutdown" if reason == SHUTDOWN_REASON else "daemon"
    return "operator"


class TradingStateMachine:
    """Holds one claim per source and derives the effective trading state from them."""

    def __init__(self) -> None:
        self._claims: dict[Source, TradingStateName] = dict.fromkeys(SOURCES, "ACTIVE")
        self._reasons: dict[Source, str] = dict.fromkeys(SOURCES, "")
        self.state: TradingStateName = "ACTIVE"
        self.source: Source | None = None  # the highest-ranked source claiming ``state``

    def claim(self, source: Source) -> TradingStateName:
        """The state ``source`` currently asks for."""
        return self._claims[source]

    def claims(self) -> dict[Source, TradingStateName]:
        return dict(self._claims)

    def reason(self, source: Source) -> str:
        """Why ``source`` claims what it claims ("" when it claims nothing)."""
        return self._reasons[source]

    def is_killed(self, source: Source = "operator") -> bool:
        """``source`` holds a kill (only a ``resume`` that clears it leaves it)."""
        return self._claims[source] == "HALTED"

    def request(
        self, source: Source, state: TradingStateName, reason: str, ts_ns: int
    ) -> TradingState | None:
        """Set ``source``'s claim to ``state``; returns the event if the effective state
        or its cause changed, else None.

        A command holder's kill (operator, shutdown, reconciliation, daemon) is not
        lowered by this call: use ``resume``.
        """
        if source in LIFTS and self.is_killed(source) and state != "HALTED":
            return None
        self._claims[source] = state
        self._reasons[source] = reason
        return self._settle(source, reason, ts_ns)

    def resume(self, reason: str, ts_ns: int, by: Source = "operator") -> TradingState | None:
        """A ``resume`` from ``by``: the operator's clears every claim; another holder's
        only its own (``LIFTS``)."""
        for source in LIFTS.get(by, (by,)):
            self._claims[source] = "ACTIVE"
            self._reasons[source] = ""
        return self._settle(by, reason, ts_ns)

    def _settle(self, requester: Source, reason: str, ts_ns: int) -> TradingState | None:
        state: TradingStateName = "ACTIVE"
        cause: Source | None = None
        for source in SOURCES:  # highest rank first: it is named when claims tie
            claimed = self._claims[source]
            if SEVERITY[claimed] > SEVERITY[state]:
                state, cause = claimed, source
        if state == self.state and cause == self.source:
            return None
        previous = self.state
        self.state, self.source = state, cause
        if state == previous:
            return None  # same state, another source now holds it: nothing to announce
        if cause is not None and cause != requester:
            reason = f"{reason}; {cause} still claims {state}: {self._reasons[cause]}"
        return TradingState(
            ts_event=ts_ns,
            ts_recv=ts_ns,
            state=state,
            previous=previous,
            reason=reason,
            source=cause or requester,
        )
