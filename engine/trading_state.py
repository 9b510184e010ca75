"""The trading state: who may restrict trading, who may lift it, and what the engine does.

Every source that can restrict trading holds its own *claim* (the state it asks for).
The effective state is the most severe claim: ``HALTED`` > ``REDUCE_ONLY`` > ``ACTIVE``.
A source only ever changes its own claim, so a state set by one source can never be
lowered by another; the ranking decides which source is named as the cause when several
claim the same state, and who may clear what:

==========  ====  ==========================================================
source      rank  claims and clears
==========  ====  ==========================================================
operator    3     ``kill`` (HALTED), ``reduce_only``; ``resume`` clears every
                  claim (the operator's word is final; a condition that still
                  holds, such as a stale feed, claims again at its next check)
loss_limit  2     a daily-loss or drawdown breach; cleared only by ``resume``
data_loss   1     market data lost or stale; cleared when data is back
automatic   0     the engine's own alarms (a strategy that raised, a fill on
                  an unknown order, an order without an answer); cleared by
                  the engine when the condition ends, or by ``resume``
==========  ====  ==========================================================

A kill is left only by ``resume``: an operator ``reduce_only`` while killed is refused.
"""

from __future__ import annotations

from typing import Literal

from engine.events import TradingState, TradingStateName

Source = Literal["operator", "loss_limit", "data_loss", "automatic"]

SOURCES: tuple[Source, ...] = ("operator", "loss_limit", "data_loss", "automatic")
RANK: dict[Source, int] = {"operator": 3, "loss_limit": 2, "data_loss": 1, "automatic": 0}
SEVERITY: dict[TradingStateName, int] = {"ACTIVE": 0, "REDUCE_ONLY": 1, "HALTED": 2}


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

    def is_killed(self) -> bool:
        """An operator kill is in force (only ``resume`` leaves it)."""
        return self._claims["operator"] == "HALTED"

    def request(
        self, source: Source, state: TradingStateName, reason: str, ts_ns: int
    ) -> TradingState | None:
        """Set ``source``'s claim to ``state``; returns the event if the effective state
        or its cause changed, else None.

        An operator claim of HALTED (a kill) is not lowered by this call: use
        ``resume``.
        """
        if source == "operator" and self.is_killed() and state != "HALTED":
            return None
        self._claims[source] = state
        self._reasons[source] = reason
        return self._settle(source, reason, ts_ns)

    def resume(self, reason: str, ts_ns: int) -> TradingState | None:
        """The operator's ``resume``: clears every claim."""
        for source in SOURCES:
            self._claims[source] = "ACTIVE"
            self._reasons[source] = ""
        return self._settle("operator", reason, ts_ns)

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
