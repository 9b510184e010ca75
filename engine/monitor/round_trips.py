"""The model's own trades as round trips, from the engine's fills: per instrument, a
position from flat back to flat; a fill that flips the position closes one round trip
and opens the next, its quantity and fee split pro rata (the run report's rule)."""

from __future__ import annotations

from engine.events import Fill, side_sign

# positions are multiples of lot sizes >= 1e-9; the portfolio rounds them at 1e-10 too
_DECIMALS = 10


class RoundTrips:
    """Round-trip count, PnL net of fees and the current and longest losing streaks."""

    def __init__(self) -> None:
        self._position: dict[str, float] = {}
        self._cash: dict[str, float] = {}
        self.fills = 0
        self.closed = 0
        self.wins = 0
        self.pnl = 0.0
        self.losing_streak = 0
        self.longest_losing_streak = 0

    def on_fill(self, fill: Fill) -> list[float]:
        """Book a fill; returns the PnL of each round trip it closed (0, 1 or, never more
        than, 1 per fill)."""
        self.fills += 1
        sym = fill.instrument
        q = side_sign(fill.side) * fill.qty
        pos = self._position.get(sym, 0.0)
        cash = self._cash.get(sym, 0.0)
        closed: list[float] = []
        after = round(pos + q, _DECIMALS)
        if pos != 0.0 and after != 0.0 and (after > 0) != (pos > 0):
            share = abs(pos) / abs(q)  # the part of the fill that takes the position to flat
            closed.append(cash + pos * fill.price - fill.fee * share)
            cash = -(q + pos) * fill.price - fill.fee * (1.0 - share)
        else:
            cash += -q * fill.price - fill.fee
            if after == 0.0:
                closed.append(cash)
                cash = 0.0
        self._position[sym], self._cash[sym] = after, cash
        for pnl in closed:
            self.closed += 1
            self.pnl += pnl
            if pnl > 0:
                self.wins += 1
            if pnl < 0:
                self.losing_streak += 1
                self.longest_losing_streak = max(self.longest_losing_streak, self.losing_streak)
            else:
                self.losing_streak = 0
        return closed

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
