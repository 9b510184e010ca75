"""Performance figures of a replay as plain numpy functions of an equity curve and fills.

``replay/backtest/report.py`` applies them to a finished run; each is tested against an
independent computation on hand-made paths. ``DEFINITIONS`` states them in words and is
written into metrics.json.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.monitor.round_trips import RoundTrip, round_trips_of

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

YEAR_NS = 365 * 86_400 * 10**9  # markets trading 24/7: a year is 365 calendar days
DAY_NS = 86_400 * 10**9

DEFINITIONS = {
    "period": "one interval of the equity grid (replay.equity_interval); the grid is "
    "complete from the first grid point at or before the first tick to the first grid "
    "point after the last tick, equity at a grid point being the account after everything "
    "stamped before it (a fill between two ticks of a quiet stretch shows from the "
    "stretch's first grid point on: a limit of the engine's sampler)",
    "returns": "change of equity over one period / initial cash",
    "sharpe_per_period": "mean / standard deviation (ddof 1) of the period returns; no "
    "risk-free rate",
    "sortino_per_period": "mean / sqrt(mean(min(r, 0)^2)) of the period returns",
    "annualisation": "x sqrt(periods per year), periods per year = periods / (span in "
    "365-day years); only when the span reaches the minimum, else sharpe and sortino are "
    "null and only the per-period figures are given",
    "probabilistic_sharpe": "P(true per-period Sharpe > 0) = Phi((SR - 0) sqrt(n - 1) / "
    "sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)) (Bailey and Lopez de Prado 2012), SR "
    "the per-period Sharpe, n the periods, skew and (non-excess) kurtosis population "
    "moments of the returns",
    "max_drawdown": "largest fall of equity below its running peak, the peak starting at "
    "the initial cash, as a fraction of the peak (max_drawdown_cash: in currency)",
    "round_trip": "per instrument, a position from flat back to flat; a fill that flips "
    "the position closes one round trip and opens the next, its quantity and fee split "
    "pro rata; PnL = the trip's cash flows including all its fees",
    "hit_ratio": "closed round trips with PnL > 0 / closed round trips",
    "turnover": "traded notional (sum of qty x price over all fills) / initial cash",
}


def complete_grid(
    sample_ts: I64, sample_equity: F64, interval_ns: int, final_ts_ns: int, final_equity: float
) -> tuple[I64, F64]:
    """The equity curve on every grid point, from the engine's sparse samples.

    The sampler (``engine/market.py``, ``_update_market``) records at most one sample per
    tick: at the first tick stamped at or after the pending grid point ``g`` it records
    ``g`` with the equity just before that tick, then sets the pending point to the first
    grid point after the tick. Carry-forward rule: a grid point the sampler skipped lies
    in a stretch without ticks, where no mark changed, so it takes the last sample before
    it. That is exact for market moves; a fill or other change between two ticks (an
    order reaching the venue in a quiet stretch) shows from the first skipped grid point
    on, up to one gap too early, because the sampler dates its value at the pending point
    rather than at the next tick. The curve closes at the first grid point after the last
    tick with ``final_equity``: the value the sampler would have recorded there.

    Args:
        sample_ts: grid points the sampler recorded, increasing.
        sample_equity: equity at those points.
        interval_ns: grid interval; 0 means no sampling (the curve is the closing point).
        final_ts_ns: ``ts_event`` of the last tick, 0 if there was none.
        final_equity: equity after the last tick.

    Returns:
        ``(ts, equity)`` on a grid of step ``interval_ns`` without holes.
    """
    if final_ts_ns == 0:
        return sample_ts.astype(np.int64), sample_equity.astype(np.float64)
    if interval_ns <= 0 or sample_ts.shape[0] == 0:
        return np.array([final_ts_ns], np.int64), np.array([final_equity])
    close_ts = final_ts_ns - final_ts_ns % interval_ns + interval_ns
    ts = np.arange(int(sample_ts[0]), close_ts + 1, interval_ns, dtype=np.int64)
    last_sample = np.searchsorted(sample_ts, ts, side="right") - 1
    equity = sample_equity[last_sample].astype(np.float64)
    equity[-1] = final_equity
    return ts, equity


def drawdown(equity: F64, initial_cash: float) -> F64:
    """Fraction below the running peak, the peak starting at ``initial_cash`` (<= 0).

    Zero where the peak is not positive (a fraction of it means nothing there).
    """
    peak = np.maximum(np.maximum.accumulate(equity), initial_cash) if equity.shape[0] else equity
    safe = np.where(peak > 0, peak, 1.0)
    return np.where(peak > 0, equity / safe - 1.0, 0.0)


def max_drawdown_cash(equity: F64, initial_cash: float) -> float:
    """Largest fall below the running peak (peak starting at ``initial_cash``), in currency."""
    if equity.shape[0] == 0:
        return 0.0
    peak = np.maximum(np.maximum.accumulate(equity), initial_cash)
    return float(np.max(peak - equity))


def period_returns(equity: F64, initial_cash: float) -> F64:
    """Equity changes per period over the initial cash.

    On the capital committed rather than running equity: well defined however deep the
    drawdown, and additive like the PnL they come from.
    """
    if equity.shape[0] < 2 or initial_cash <= 0:
        return np.empty(0)
    return np.diff(equity) / initial_cash


def sharpe_ratio(returns: F64) -> float:
    """Per-period Sharpe: mean / std (ddof 1); NaN below two returns or at zero spread."""
    if returns.shape[0] < 2:
        return float("nan")
    std = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / std if std > 0 else float("nan")


def sortino_ratio(returns: F64) -> float:
    """Per-period Sortino: mean / sqrt(mean(min(r, 0)^2)); NaN without a loss."""
    if returns.shape[0] == 0:
        return float("nan")
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    return float(np.mean(returns)) / downside if downside > 0 else float("nan")


def skewness_kurtosis(returns: F64) -> tuple[float, float]:
    """Population skewness and (non-excess, normal = 3) kurtosis; NaN at zero spread."""
    if returns.shape[0] == 0:
        return float("nan"), float("nan")
    centred = returns - np.mean(returns)
    var = float(np.mean(centred**2))
    if var <= 0:
        return float("nan"), float("nan")
    return (
        float(np.mean(centred**3)) / var**1.5,
        float(np.mean(centred**4)) / var**2,
    )


def probabilistic_sharpe(
    sharpe: float, n: int, skewness: float, kurtosis: float, benchmark: float = 0.0
) -> float:
    """Probability that the true per-period Sharpe exceeds ``benchmark``.

    Bailey and Lopez de Prado (2012), "The Sharpe Ratio Efficient Frontier": the observed
    ``sharpe`` over ``n`` returns is asymptotically normal with a variance that grows with
    negative skew and fat tails.

    Returns:
        A probability, or NaN when ``n < 2`` or the moments are undefined.
    """
    if n < 2 or not all(map(math.isfinite, (sharpe, skewness, kurtosis))):
        return float("nan")
    var = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if var <= 0:
        return float("nan")
    z = (sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(var)
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def annualisation_factor(periods: int, span_ns: int, min_span_ns: int) -> float | None:
    """sqrt(periods per year) over the real span, or None below ``min_span_ns``."""
    if periods == 0 or span_ns <= 0 or span_ns < min_span_ns:
        return None
    return math.sqrt(periods / (span_ns / YEAR_NS))


def round_trips(fills: pl.DataFrame) -> tuple[list[RoundTrip], list[RoundTrip]]:
    """Closed round trips in closing order and open ones in opening order, by the engine's
    rule (``engine.monitor.round_trips``, the monitor's too; ``DEFINITIONS["round_trip"]``).

    Args:
        fills: columns ``instrument``, ``side`` ("buy"/"sell"), ``qty``, ``price``,
            ``fee`` and optionally ``ts_event``, in fill order.
    """
    ts = (
        fills["ts_event"] if "ts_event" in fills.columns else pl.repeat(0, fills.height, eager=True)
    )
    rows = zip(
        fills["instrument"].to_list(),
        (
            q if side == "buy" else -q
            for side, q in zip(fills["side"].to_list(), fills["qty"].to_list(), strict=True)
        ),
        fills["price"].to_list(),
        fills["fee"].to_list(),
        ts.to_list(),
        strict=True,
    )
    return round_trips_of(rows)


def round_trip_pnls(fills: pl.DataFrame) -> tuple[F64, int]:
    """PnL of each closed round trip, in closing order, and the number still open.

    Args:
        fills: as ``round_trips``.
    """
    closed, still_open = round_trips(fills)
    return np.array([t.cash_flow for t in closed], dtype=np.float64), len(still_open)


def turnover(fills: pl.DataFrame, initial_cash: float) -> float:
    """Traded notional over the initial cash; NaN without initial cash."""
    if initial_cash <= 0:
        return float("nan")
    return float(np.sum(fills["qty"].to_numpy() * fills["price"].to_numpy())) / initial_cash
