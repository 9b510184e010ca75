"""Pre-trade risk gates and the trading state (ACTIVE, REDUCE_ONLY, HALTED)."""

from engine.risk.engine import CHECKS, RiskEngine
from engine.risk.limits import RiskConfig, RiskLimits

__all__ = ["CHECKS", "RiskConfig", "RiskEngine", "RiskLimits"]
