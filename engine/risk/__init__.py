"""Pre-trade risk gates and the trading state (ACTIVE, REDUCE_ONLY, HALTED)."""

from engine.risk.engine import AccountView, RiskEngine
from engine.risk.limits import RiskConfig, RiskLimits

__all__ = ["AccountView", "RiskConfig", "RiskEngine", "RiskLimits"]
