"""The risk engine: every order request passes here before it can reach the router.

A refusal is a ``RiskRejected`` event naming the check, its limit and the value that
broke it; nothing is raised into the loop and nothing is dropped. Trading-state changes
are ``TradingState`` events with a reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from engine.events import OrderRequest, RiskRejected, TradingState, TradingStateName, side_sign
from engine.instruments import Instrument
from engine.risk.limits import RiskConfig, RiskLimits


@dataclass(frozen=True, slots=True)
class AccountView:
    """What the checks may read about one instrument at the time of the order."""

    instrument: Instrument
    position: float
    open_qty: float  # signed, on open orders


class RiskEngine:
    """Runs the pre-trade checks and owns the trading state.

    Args:
        config: the ``[risk]`` table.
        symbols: instruments, to resolve per-instrument limits once.
    """

    def __init__(self, config: RiskConfig, symbols: tuple[str, ...]) -> None:
        self.config = config
        self._limits: dict[str, RiskLimits] = {s: config.limits_for(s) for s in symbols}
        self.state: TradingStateName = "ACTIVE"
        self.rejections: Counter[str] = Counter()
        self.passed = 0

    def set_state(self, state: TradingStateName, reason: str, ts_ns: int) -> TradingState | None:
        """Change the trading state; returns the event, or None if already in ``state``."""
        if state == self.state:
            return None
        event = TradingState(ts_event=ts_ns, ts_recv=ts_ns, state=state, previous=self.state,
                             reason=reason)  # fmt: skip
        self.state = state
        return event

    def _reject(self, req: OrderRequest, check: str, limit: float, value: float, reason: str,
                ts_ns: int) -> RiskRejected:  # fmt: skip
        self.rejections[check] += 1
        return RiskRejected(ts_event=ts_ns, ts_recv=ts_ns, client_order_id=req.client_order_id,
                            instrument=req.instrument, check=check, limit=limit, value=value,
                            reason=reason)  # fmt: skip

    def check(self, req: OrderRequest, view: AccountView, ts_ns: int) -> RiskRejected | None:
        """Run every check in order; the first failure is returned as an event."""
        signed = side_sign(req.side) * req.qty
        if req.qty <= 0:
            return self._reject(req, "positive_qty", 0.0, req.qty, "order quantity must be > 0",
                                ts_ns)  # fmt: skip
        if self.state == "HALTED":
            return self._reject(req, "trading_state", 0.0, req.qty, "trading is HALTED", ts_ns)
        if self.state == "REDUCE_ONLY" or req.reduce_only:
            exposure = view.position + view.open_qty
            after = exposure + signed
            if abs(after) > abs(exposure) + 1e-12 or (exposure != 0 and after * exposure < 0):
                check = "reduce_only" if self.state == "REDUCE_ONLY" else "reduce_only_order"
                return self._reject(req, check, abs(exposure), abs(after),
                                    "order would open or flip a position while reducing",
                                    ts_ns)  # fmt: skip
        limits = self._limits[req.instrument]
        if limits.max_order_qty is not None and req.qty > limits.max_order_qty:
            return self._reject(req, "max_order_qty", limits.max_order_qty, req.qty,
                                "order quantity above limit", ts_ns)  # fmt: skip
        inst = view.instrument
        if not self.config.round_to_grid:
            if not inst.is_on_lot(req.qty):
                return self._reject(req, "lot_size", inst.lot_size, req.qty,
                                    "quantity is not a multiple of the lot size", ts_ns)  # fmt: skip
            if req.limit_price is not None and not inst.is_on_tick(req.limit_price):
                return self._reject(req, "tick_size", inst.tick_size, req.limit_price,
                                    "limit price is not on the tick grid", ts_ns)  # fmt: skip
        self.passed += 1
        return None
