"""Round trips: the one rule that pairs fills into trades, for the monitor (the model's own
trades, the losing-streak alarm) and for the run report and its metrics (through
``round_trips_of``, the batch form).

The rule (``replay.backtest.metrics.DEFINITIONS["round_trip"]`` states it for readers): per
instrument, a round trip runs from a flat position back to flat. Fills that open, add to
or partly reduce the position belong to the open trip; the fill that takes it to flat
closes it. A fill that goes through zero (a flip) is split pro rata by quantity: the
share up to flat, with that share of its fee, closes the trip; the rest, with the rest
of the fee, opens the next one in the other direction at the same time. A trip's PnL is
the sum of its cash flows, fees included: for a closed trip that is its realized PnL
under any lot-matching convention (FIFO, average cost), because every lot it opened was
closed inside it; no lots are matched here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from engine.events import Fill, side_sign

# positions are multiples of lot sizes >= 1e-9; the portfolio rounds them at 1e-10 too,
# so a position is flat here exactly when the portfolio's is
_DECIMALS = 10

Direction = Literal["long", "short"]


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One round trip.

    Attributes:
        instrument: the instrument's symbol.
        direction: ``"long"`` or ``"short"``, the sign of its position.
        open_ts: ``ts_event`` of the fill that opened it (a flip's, for a trip a flip
            opened).
        close_ts: ``ts_event`` of the fill that closed it; None while open.
        fills: fills that belong to it (a flip counts in both trips it touches).
        max_qty: largest absolute position it reached.
        cash_flow: its cash flows so far, fees included (a flip's split pro rata); for a
            closed trip, its PnL net of fees.
        position: the position still open (0.0 for a closed trip).
    """

    instrument: str
    direction: Direction
    open_ts: int
    close_ts: int | None
    fills: int
    max_qty: float
    cash_flow: float
    position: float

    @property
    def pnl(self) -> float | None:
        """PnL net of fees of a closed trip; None while open (its value depends on a mark)."""
        return self.cash_flow if self.close_ts is not None else None


@dataclass(slots=True)
class _Open:
    direction: Direction
    open_ts: int
    fills: int
    max_qty: float
    cash_flow: float


class RoundTrips:
    """Books fills one at a time into round trips (module docstring), and keeps the round
    trip count, PnL net of fees and the current and longest losing streaks.

    Closed trips are returned as they close, not kept: a daemon runs for weeks.
    """

    def __init__(self) -> None:
        self._position: dict[str, float] = {}
        self._open: dict[str, _Open] = {}
        self.fills = 0
        self.closed = 0
        self.wins = 0
        self.pnl = 0.0
        self.losing_streak = 0
        self.longest_losing_streak = 0

    def on_fill(self, fill: Fill) -> list[float]:
        """Book a fill; returns the PnL of each round trip it closed (none or one)."""
        trips = self.add(
            fill.instrument, side_sign(fill.side) * fill.qty, fill.price, fill.fee, fill.ts_event
        )
        return [t.cash_flow for t in trips]

    def add(
        self, instrument: str, signed_qty: float, price: float, fee: float, ts_event: int = 0
    ) -> list[RoundTrip]:
        """Book a fill (``signed_qty`` > 0 buys); returns the round trips it closed: none,
        or one (a close to flat, or the closing share of a flip)."""
        self.fills += 1
        before = self._position.get(instrument, 0.0)
        after = round(before + signed_qty, _DECIMALS)
        self._position[instrument] = after
        trip = self._open.get(instrument)
        if trip is None:
            # from flat (a fill that leaves a flat position flat, below the rounding,
            # still opens a record: its cash belongs to the next trip, never vanishes)
            trip = self._open[instrument] = _Open(
                "long" if signed_qty > 0 else "short", ts_event, 0, 0.0, 0.0
            )
        flow = signed_qty * price + fee  # cash paid, fee included
        if before == 0.0 or (after != 0.0 and (after > 0) == (before > 0)):
            # opens, adds or partly reduces
            trip.cash_flow -= flow
            trip.fills += 1
            trip.max_qty = max(trip.max_qty, abs(after))
            return []
        # to flat, or through it: the share up to flat closes this trip
        closing = 1.0 if after == 0.0 else abs(before) / abs(signed_qty)
        done = RoundTrip(
            instrument=instrument,
            direction=trip.direction,
            open_ts=trip.open_ts,
            close_ts=ts_event,
            fills=trip.fills + 1,
            max_qty=trip.max_qty,
            cash_flow=trip.cash_flow - closing * flow,
            position=0.0,
        )
        # removed and added again, so ``open_trips`` lists trips in the order they opened
        del self._open[instrument]
        if after != 0.0:
            self._open[instrument] = _Open(
                "long" if after > 0 else "short", ts_event, 1, abs(after), -(1.0 - closing) * flow
            )
        self._count(done.cash_flow)
        return [done]

    def _count(self, pnl: float) -> None:
        self.closed += 1
        self.pnl += pnl
        if pnl > 0:
            self.wins += 1
        if pnl < 0:
            self.losing_streak += 1
            self.longest_losing_streak = max(self.longest_losing_streak, self.losing_streak)
        else:
            self.losing_streak = 0

    def open_trips(self) -> list[RoundTrip]:
        """The trips still open, in the order they opened."""
        return [
            RoundTrip(
                instrument=symbol,
                direction=t.direction,
                open_ts=t.open_ts,
                close_ts=None,
                fills=t.fills,
                max_qty=t.max_qty,
                cash_flow=t.cash_flow,
                position=self._position[symbol],
            )
            for symbol, t in self._open.items()
        ]

    def snapshot(self) -> dict[str, float | int | None]:
        return {
            "fills": self.fills,
            "round_trips": self.closed,
            "wins": self.wins,
            "hit_ratio": self.wins / self.closed if self.closed else None,
            "pnl": self.pnl,
            "losing_streak": self.losing_streak,
            "longest_losing_streak": self.longest_losing_streak,
        }


def round_trips_of(
    fills: Iterable[tuple[str, float, float, float, int]],
) -> tuple[list[RoundTrip], list[RoundTrip]]:
    """The batch form: every round trip of a sequence of fills, through ``RoundTrips``.

    Args:
        fills: ``(instrument, signed_qty, price, fee, ts_event)`` in fill order.

    Returns:
        The closed trips in closing order, and the open ones in opening order.
    """
    book = RoundTrips()
    closed: list[RoundTrip] = []
    for instrument, signed_qty, price, fee, ts_event in fills:
        closed += book.add(instrument, signed_qty, price, fee, ts_event)
    return closed, book.open_trips()
