"""Token bucket for order-rate limits, driven by the engine's clock (never the wall clock)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst`` (default: one second's worth).

    Starts full. ``level`` refills by elapsed time and says how many tokens there are;
    ``spend`` takes one (checked separately, so a refused order spends nothing).
    """

    __slots__ = ("_last_ns", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(burst if burst is not None else rate, 1.0)
        self._tokens = self.burst
        self._last_ns: int | None = None

    def level(self, now_ns: int) -> float:
        if self._last_ns is not None and now_ns > self._last_ns:
            self._tokens = min(
                self.burst, self._tokens + (now_ns - self._last_ns) * 1e-9 * self.rate
            )
        if self._last_ns is None or now_ns > self._last_ns:
            self._last_ns = now_ns
        return self._tokens

    def spend(self) -> None:
        """Spend one token after ``level`` showed there is one."""
        self._tokens -= 1.0
