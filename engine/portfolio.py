"""Positions, average prices, realized and unrealized PnL, fees and cash.

Arrays are indexed by the dense instrument index so numba scans (equity sampling, risk)
read them without conversion.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# positions are multiples of lot sizes >= 1e-9; rounding at 1e-10 removes float dust
# (0.1 + 0.2 - 0.3) without ever merging two distinct lots
_DUST_DECIMALS = 10


class Portfolio:
    """Account state, updated by fills only.

    Args:
        n_instruments: number of instruments (dense indices 0..n-1).
        initial_cash: starting cash in quote currency.
    """

    def __init__(self, n_instruments: int, initial_cash: float = 0.0) -> None:
        self.initial_cash = float(initial_cash)
        self.positions = np.zeros(n_instruments)
        self.avg_price = np.zeros(n_instruments)
        self.realized = np.zeros(n_instruments)
        self.fees = np.zeros(n_instruments)
        self.traded_notional = np.zeros(n_instruments)
        self.cash = np.array([float(initial_cash)])  # 1-element so numba scans see updates

    def apply_fill(self, instrument: int, signed_qty: float, price: float, fee: float) -> None:
        """Book a fill: ``signed_qty`` > 0 buys, < 0 sells."""
        i = instrument
        pos = float(self.positions[i])
        avg = float(self.avg_price[i])
        new = round(pos + signed_qty, _DUST_DECIMALS)
        if pos == 0.0 or (pos > 0) == (signed_qty > 0):
            # opening or adding
            avg = (avg * abs(pos) + price * abs(signed_qty)) / abs(new) if new != 0.0 else 0.0
        else:
            closed = min(abs(signed_qty), abs(pos))
            self.realized[i] += (price - avg) * closed * (1.0 if pos > 0 else -1.0)
            if new == 0.0:
                avg = 0.0
            elif (new > 0) != (pos > 0):
                avg = price  # flipped: the remainder opened at this price
        self.positions[i] = new
        self.avg_price[i] = avg
        self.fees[i] += fee
        self.realized[i] -= fee
        self.traded_notional[i] += abs(signed_qty) * price
        self.cash[0] -= signed_qty * price + fee

    def unrealized(self, mids: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        held = self.positions != 0.0
        out = np.zeros_like(self.positions)
        out[held] = (mids[held] - self.avg_price[held]) * self.positions[held]
        return out

    def equity(self, mids: npt.NDArray[np.float64]) -> float:
        held = self.positions != 0.0
        return float(self.cash[0] + np.sum(self.positions[held] * mids[held]))
