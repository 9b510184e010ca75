"""Tick data for the leak checks' tests: leaks planted in quote and trade fields, a lookup
table built on the whole data, and clean data with a strong causal edge. Every generator
is seeded; nothing is read from outside the test's own folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from replay.files.sample_data import START_NS
from replay.research.dataset import QuoteHistory

S = 1_000_000_000


def future_mid_return(frame: pl.DataFrame, quotes: pl.DataFrame, horizon_ns: int) -> np.ndarray:
    """log(mid at the first quote at or after t + horizon / mid at the last quote at or
    before t) for every row of ``frame`` (``ts_event``, ``symbol``), from ``quotes``."""
    out = np.full(frame.height, np.nan)
    ts = frame["ts_event"].to_numpy()
    sym = frame["symbol"].to_numpy()
    q_ts = quotes["ts_event"].to_numpy()
    q_sym = quotes["symbol"].to_numpy()
    q_mid = 0.5 * (quotes["bid"].to_numpy() + quotes["ask"].to_numpy())
    for s in np.unique(sym):
        rows = np.flatnonzero(sym == s)
        qs = np.flatnonzero(q_sym == s)
        now = np.searchsorted(q_ts[qs], ts[rows], side="right") - 1
        fwd = np.searchsorted(q_ts[qs], ts[rows] + horizon_ns, side="left")
        ok = (now >= 0) & (fwd < qs.shape[0])
        out[rows[ok]] = np.log(q_mid[qs[fwd[ok]]] / q_mid[qs[now[ok]]])
    return out


def plant_quote_leak(src: Path, out: Path, strength: float, horizon_ns: int = 2 * S) -> Path:
    """``src`` with every quote's book sizes tilted by its own future mid return over
    ``horizon_ns`` (plus noise): the book imbalance carries the label."""
    out.mkdir(parents=True, exist_ok=True)
    q = pl.read_parquet(src / "quotes.parquet")
    r = np.nan_to_num(future_mid_return(q, q, horizon_ns))
    rng = np.random.default_rng(1)
    imb = np.tanh(strength * r / r.std() + rng.normal(0.0, 1.0, q.height))
    total = (q["bid_size"] + q["ask_size"]).to_numpy()
    q.with_columns(
        pl.Series("bid_size", np.round(total * (1 + imb) / 2, 6) + 1e-5),
        pl.Series("ask_size", np.round(total * (1 - imb) / 2, 6) + 1e-5),
    ).write_parquet(out / "quotes.parquet")
    pl.read_parquet(src / "trades.parquet").write_parquet(out / "trades.parquet")
    return out


def plant_trade_leak(src: Path, out: Path, strength: float, horizon_ns: int = 2 * S) -> Path:
    """``src`` with every trade's side drawn from its own future mid return over
    ``horizon_ns``: buys before rises (the trade-flow feature carries the label)."""
    out.mkdir(parents=True, exist_ok=True)
    q = pl.read_parquet(src / "quotes.parquet")
    t = pl.read_parquet(src / "trades.parquet")
    r = np.nan_to_num(future_mid_return(t, q, horizon_ns))
    rng = np.random.default_rng(2)
    p_buy = 1.0 / (1.0 + np.exp(-strength * r / r.std()))
    buy = rng.uniform(size=t.height) < p_buy
    t.with_columns(pl.Series("side", np.where(buy, "buy", "sell"))).write_parquet(
        out / "trades.parquet"
    )
    q.write_parquet(out / "quotes.parquet")
    return out


def lookup_table_column(data: Path, horizon_ns: int = 2 * S):  # type: ignore[no-untyped-def]
    """A research column that reads a table built once on the whole data: each sampled
    row's future return, keyed by (instrument, time). Recomputing it on truncated data
    changes nothing (the table is fixed), so the causality audit of extra columns passes
    it; only the leak checks can see it."""
    q = pl.read_parquet(data / "quotes.parquet")
    q_ts = q["ts_event"].to_numpy()
    q_mid = 0.5 * (q["bid"].to_numpy() + q["ask"].to_numpy())
    symbols = sorted(set(q["symbol"].to_list()), key=q["symbol"].to_list().index)
    q_inst = np.array([symbols.index(s) for s in q["symbol"].to_list()], np.int32)
    table: dict[tuple[int, int], float] = {}
    for i in np.unique(q_inst):
        m = q_inst == i
        ts, mid = q_ts[m], q_mid[m]
        fwd = np.searchsorted(ts, ts + horizon_ns)
        ok = fwd < ts.shape[0]
        for t, v in zip(ts[ok], np.log(mid[fwd[ok]] / mid[ok]), strict=True):
            table[(int(i), int(t))] = float(v)

    def column(
        quotes: QuoteHistory, row_ts: npt.NDArray[np.int64], row_inst: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.float64]:
        return np.array(
            [table.get((int(i), int(t)), np.nan) for t, i in zip(row_ts, row_inst, strict=True)]
        )

    return column


def _ar1(eps: np.ndarray, phi: float) -> np.ndarray:
    out = np.empty_like(eps)
    x = 0.0
    for k in range(eps.shape[0]):
        x = phi * x + eps[k]
        out[k] = x
    return out


def strong_edge(out: Path, seed: int, minutes: float = 15.0, lead: float = 0.35) -> Path:
    """Two symbols of causal ticks with a strong edge: a latent order-flow pressure
    (AR(1), memory about 2.5 s) tilts book sizes and trade sides and leads the next mid
    moves with a drift of ``lead`` x one interval's noise (the bundled sample: 0.06).
    Nothing reads the future: what the sizes and trades say is known at their time."""
    out.mkdir(parents=True, exist_ok=True)
    quotes, trades = [], []
    for k, (symbol, price) in enumerate((("BTC-USD", 60_000.0), ("ETH-USD", 3_000.0))):
        rng = np.random.default_rng([seed, k])
        n = int(minutes * 60 * 20)
        gaps = np.maximum(np.round(rng.exponential(50e6, n) / 1000.0) * 1000.0, 1000.0)
        ts = START_NS + np.cumsum(gaps).astype(np.int64)
        phi = 0.98
        pressure = _ar1(rng.normal(0, np.sqrt(1 - phi**2), n), phi)
        sigma = 2e-4 * np.sqrt(gaps / 1e9)
        logret = lead * sigma * pressure + sigma * rng.standard_normal(n)
        fair = price * np.exp(np.cumsum(logret))
        bid = np.round(np.floor(fair / 0.01 - 0.5) * 0.01, 2)
        ask = np.round(bid + 0.01, 2)
        base = np.exp(rng.normal(0.0, 0.5, n)) * (50_000.0 / price)
        tilt = 0.8 * pressure
        quotes.append(
            pl.DataFrame(
                {
                    "ts_event": ts,
                    "ts_recv": ts + 150_000,
                    "symbol": symbol,
                    "bid": bid,
                    "ask": ask,
                    "bid_size": np.round(base * np.exp(tilt), 5) + 1e-5,
                    "ask_size": np.round(base * np.exp(-tilt), 5) + 1e-5,
                }
            )
        )
        has = np.flatnonzero(rng.uniform(size=n - 1) < 0.2)
        buy = rng.uniform(size=has.shape[0]) < 1.0 / (1.0 + np.exp(-1.5 * pressure[has]))
        t_ts = ts[has] + np.minimum(1000, ts[has + 1] - ts[has])
        trades.append(
            pl.DataFrame(
                {
                    "ts_event": t_ts,
                    "ts_recv": t_ts + 150_000,
                    "symbol": symbol,
                    "price": np.where(buy, ask[has], bid[has]),
                    "size": np.round(base[has] * 0.2, 5) + 1e-5,
                    "side": np.where(buy, "buy", "sell"),
                }
            )
        )
    pl.concat(quotes).sort("ts_event", maintain_order=True).write_parquet(out / "quotes.parquet")
    pl.concat(trades).sort("ts_event", maintain_order=True).write_parquet(out / "trades.parquet")
    return out
