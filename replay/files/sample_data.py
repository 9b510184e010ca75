"""Deterministic synthetic tick data with a real, modest predictive relation.

Per symbol: quote arrivals are a Poisson stream whose rate follows a slow log-normal
regime (bursts and lulls); a latent order-flow "pressure" (AR(1)) tilts the displayed
book sizes and the side of trades, and leads the next mid moves. A model that reads book
imbalance or trade-flow imbalance can therefore predict short-horizon returns a little
better than chance, and no better: most of each move is noise. Prices sit on each
instrument's tick grid; spreads vary between 1 and 4 ticks with volatility.

``regime_change_at`` (a share of the span) makes a second regime from that point on: the
pressure's lead on the mid inverts (book and trade-flow imbalance now predict the
opposite move, as strongly) and spreads widen by ``REGIME_SPREAD_TICKS``. Arrivals, sizes
and trades are drawn exactly as without it, so the first regime's rows are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from numba import njit

START_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
# a second regime's spreads widen by this many ticks: well outside the first regime's
# 1 to 4, so a spread feature's training bins see it at once
REGIME_SPREAD_TICKS = 3


@dataclass(frozen=True)
class SampleSymbol:
    symbol: str
    price: float
    tick_size: float
    lot_size: float
    vol_bps_per_sqrt_s: float  # per-second volatility of the fair price, in bps


SYMBOLS = (
    SampleSymbol("BTC-USD", 60_000.0, 0.01, 1e-5, 1.6),
    SampleSymbol("ETH-USD", 3_000.0, 0.01, 1e-4, 2.0),
    SampleSymbol("SOL-USD", 150.0, 0.001, 1e-3, 2.8),
)


@njit(cache=True)
def _ar1(eps, phi):  # type: ignore[no-untyped-def]
    out = np.empty_like(eps)
    x = 0.0
    for t in range(eps.shape[0]):
        x = phi * x + eps[t]
        out[t] = x
    return out


def _decimals(step: float) -> int:
    return max(0, round(-np.log10(step)) + 1)


def generate_symbol(spec: SampleSymbol, index: int, hours: float, quote_interval_ms: float,
                    seed: int, regime_change_at: float | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
    rng = np.random.default_rng([seed, index])
    n = int(hours * 3600 * 1000 / quote_interval_ms)
    # bursty arrivals: exponential gaps scaled by a slow log-normal regime
    regime = np.exp(_ar1(rng.normal(0, 0.02, n), 0.999) * 1.0)
    gaps_ns = rng.exponential(quote_interval_ms * 1e6, n) * regime / regime.mean()
    gaps_ns = np.maximum(
        np.round(gaps_ns / 1000.0) * 1000.0, 0.0
    )  # microsecond stamps, ties allowed
    ts = START_NS + np.cumsum(gaps_ns).astype(np.int64)
    # latent pressure, unit variance
    phi = 0.98
    pressure = _ar1(rng.normal(0, np.sqrt(1 - phi**2), n), phi)
    dt_s = np.maximum(gaps_ns, 1.0) / 1e9
    sigma = spec.vol_bps_per_sqrt_s * 1e-4 * np.sqrt(dt_s) * np.sqrt(regime)
    # the pressure leads the next moves with a drift worth 6% of one interval's noise:
    # over the pressure's ~50-quote memory that is a real edge, but a small one
    drift = 0.06 * sigma * pressure
    changed = np.zeros(n, np.bool_)
    if regime_change_at is not None:
        changed = ts >= START_NS + int(hours * 3600e9 * regime_change_at)
        drift = np.where(changed, -drift, drift)
    logret = drift + sigma * rng.standard_normal(n)
    fair = spec.price * np.exp(np.cumsum(logret))
    spread_ticks = 1 + np.minimum(3, rng.poisson(0.4 * regime))
    if regime_change_at is not None:
        spread_ticks = spread_ticks + REGIME_SPREAD_TICKS * changed
    tick = spec.tick_size
    bid_ticks = np.floor(fair / tick - spread_ticks / 2.0)
    dec = _decimals(tick)
    bid = np.round(bid_ticks * tick, dec)
    ask = np.round((bid_ticks + spread_ticks) * tick, dec)
    base = np.exp(rng.normal(0.0, 0.6, n)) * (50_000.0 / spec.price)
    tilt = 0.5 * pressure
    lot_dec = _decimals(spec.lot_size)
    bid_size = np.maximum(
        np.round(base * np.exp(tilt) * rng.uniform(0.5, 1.5, n), lot_dec), spec.lot_size
    )
    ask_size = np.maximum(
        np.round(base * np.exp(-tilt) * rng.uniform(0.5, 1.5, n), lot_dec), spec.lot_size
    )
    quotes = pl.DataFrame({
        "ts_event": ts, "ts_recv": ts + 150_000, "symbol": spec.symbol,
        "bid": bid, "ask": ask, "bid_size": bid_size, "ask_size": ask_size,
    })  # fmt: skip
    # trades: after about a fifth of quotes, at the touch, side tilted by pressure
    has_trade = rng.uniform(size=n) < 0.2 * np.clip(regime, 0.3, 3.0)
    k = np.flatnonzero(has_trade[:-1])
    p_buy = 1.0 / (1.0 + np.exp(-1.2 * pressure[k]))
    buy = rng.uniform(size=k.shape[0]) < p_buy
    t_trade = ts[k] + np.minimum(
        rng.integers(1, 1000, k.shape[0]) * 1000, np.maximum(ts[k + 1] - ts[k], 0)
    )
    t_trade = np.minimum(t_trade, ts[k + 1])
    size = np.maximum(np.round(np.exp(rng.normal(-1.0, 1.0, k.shape[0])) * base[k] * 0.2, lot_dec),
                      spec.lot_size)  # fmt: skip
    trades = pl.DataFrame({
        "ts_event": t_trade, "ts_recv": t_trade + 150_000, "symbol": spec.symbol,
        "price": np.where(buy, ask[k], bid[k]), "size": size,
        "side": np.where(buy, "buy", "sell"),
    })  # fmt: skip
    return quotes, trades


def generate(out_dir: str | Path, *, symbols: int = 3, hours: float = 24.0,
             quote_interval_ms: float = 50.0, seed: int = 7,
             regime_change_at: float | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write ``quotes.parquet`` and ``trades.parquet`` (all symbols, time-ordered).

    Same arguments, same bytes.

    Args:
        regime_change_at: share of the span (0 to 1) after which the second regime holds:
            the order-flow pressure's lead on the mid inverts and spreads widen by
            ``REGIME_SPREAD_TICKS``. None (the default): one regime throughout.

    Raises:
        ValueError: an argument out of range.
    """
    if not 1 <= symbols <= len(SYMBOLS):
        raise ValueError(f"symbols must be 1..{len(SYMBOLS)}")
    if hours <= 0 or quote_interval_ms <= 0:
        raise ValueError("hours and quote_interval_ms must be > 0")
    if regime_change_at is not None and not 0.0 <= regime_change_at <= 1.0:
        raise ValueError("regime_change_at must be in [0, 1]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [
        generate_symbol(s, i, hours, quote_interval_ms, seed, regime_change_at)
        for i, s in enumerate(SYMBOLS[:symbols])
    ]
    quotes = pl.concat([q for q, _ in parts]).sort("ts_event", maintain_order=True)
    trades = pl.concat([t for _, t in parts]).sort("ts_event", maintain_order=True)
    qp, tp = out / "quotes.parquet", out / "trades.parquet"
    quotes.write_parquet(qp)
    trades.write_parquet(tp)
    return qp, tp


def instruments_toml(symbols: int = 3) -> str:
    return "".join(
        f'[[instruments]]\nsymbol = "{s.symbol}"\nvenue = "SIM"\ntick_size = {s.tick_size}\nlot_size = {s.lot_size}\n\n'
        for s in SYMBOLS[:symbols]
    )


def split_by_time(
    src: str | Path, train_dir: str | Path, holdout_dir: str | Path, fraction: float
) -> int:
    """Split a sample folder in time: the first ``fraction`` of its span for training, the
    rest held out. Returns the cut time (ns); rows at or after it are held out."""
    src = Path(src)
    quotes = pl.read_parquet(src / "quotes.parquet")
    trades = pl.read_parquet(src / "trades.parquet")
    t0, t1 = int(quotes["ts_event"].min()), int(quotes["ts_event"].max())
    cut = t0 + int((t1 - t0) * fraction)
    for folder, keep in (
        (Path(train_dir), pl.col("ts_event") < cut),
        (Path(holdout_dir), pl.col("ts_event") >= cut),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        quotes.filter(keep).write_parquet(folder / "quotes.parquet")
        trades.filter(keep).write_parquet(folder / "trades.parquet")
    return cut
