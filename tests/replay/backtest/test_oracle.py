"""The engine's EMA-cross trades and PnL equal an independent numpy computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from replay.backtest.report import fills_frame
from replay.backtest.runner import run_replay
from tests.conftest import make_config

FAST, SLOW, QTY, LATENCY_NS, FEE_BPS = 10, 40, 1.0, 1_000_000, 2.0


def _write_data(root: Path, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n = 3000
    gaps = rng.choice([0, 100_000, 400_000, 2_000_000, 5_000_000], n, p=[0.1, 0.3, 0.3, 0.2, 0.1])
    ts = 1_700_000_000_000_000_000 + np.cumsum(gaps)
    mid_ticks = 1_000_000 + np.cumsum(rng.choice([-2, -1, 0, 1, 2], n))
    spread = rng.choice([1, 2], n)
    bid = np.round((mid_ticks - spread) * 0.01 / 2 * 2, 2)
    ask = np.round(bid + spread * 0.01, 2)
    quotes = pl.DataFrame(
        {
            "ts_event": ts,
            "symbol": "BTC-USD",
            "bid": bid,
            "ask": ask,
            "bid_size": 1e6,
            "ask_size": 1e6,
        }
    )
    k = np.sort(rng.choice(n, 500, replace=False))
    trades = pl.DataFrame(
        {
            "ts_event": ts[k] + 50_000,
            "symbol": "BTC-USD",
            "price": ask[k],
            "size": 0.5,
            "side": "buy",
        }
    ).sort("ts_event")
    quotes.write_parquet(root / "quotes.parquet")
    trades.write_csv(root / "trades.csv")
    return quotes, trades


# cash must be > 0 (config validation); the oracle starts from the same amount
INITIAL_CASH = 100_000.0


def _oracle(
    quotes: pl.DataFrame, last_tick_ts: int
) -> tuple[list[tuple[int, str, float, float]], float]:
    ts = quotes["ts_event"].to_numpy()
    bid = quotes["bid"].to_numpy()
    ask = quotes["ask"].to_numpy()
    mid = (bid + ask) / 2

    def ema(span: int) -> np.ndarray:
        out = np.full(mid.shape[0], np.nan)
        alpha = 2.0 / (span + 1.0)
        e = mid[0]
        for i in range(mid.shape[0]):
            e = mid[0] if i == 0 else e + alpha * (mid[i] - e)
            if i + 1 >= span:
                out[i] = e
        return out

    score = ema(FAST) - ema(SLOW)
    zone = np.where(np.isnan(score), -1, (score >= 0).astype(int))
    sent = 0.0
    fills: list[tuple[int, str, float, float]] = []
    cash = INITIAL_CASH
    last = -1
    for i in range(mid.shape[0]):
        if zone[i] != last and zone[i] >= 0:
            target = QTY if zone[i] == 1 else -QTY
            delta = target - sent
            sent += delta
            arrival = int(ts[i]) + LATENCY_NS
            if arrival <= last_tick_ts:
                j = int(np.searchsorted(ts, arrival, side="right")) - 1
                price = ask[j] if delta > 0 else bid[j]
                fills.append((arrival, "buy" if delta > 0 else "sell", abs(delta), float(price)))
                cash -= delta * price + abs(delta) * price * FEE_BPS * 1e-4
        last = zone[i]
    position = sum(q if s == "buy" else -q for _, s, q, _ in fills)
    return fills, cash + position * mid[-1]


@pytest.mark.parametrize("seed", [1, 2])
def test_ema_cross_trades_and_pnl_equal_numpy_oracle(tmp_path: Path, seed: int) -> None:
    quotes, trades = _write_data(tmp_path, seed)
    cfg = make_config(
        instruments=[{"symbol": "BTC-USD", "tick_size": 0.01, "lot_size": 1e-5}],
        features=[
            {"name": "mid", "kind": "mid"},
            {"name": "ema_fast", "kind": "ema", "input": "mid", "span": FAST},
            {"name": "ema_slow", "kind": "ema", "input": "mid", "span": SLOW},
        ],
        strategy={"name": "ema_cross", "params": {"qty": QTY}},
        venue={"sim": {"latency": LATENCY_NS, "fee_bps": FEE_BPS}},
        replay={"initial_cash": INITIAL_CASH, "batch_size": 333},
    )
    run = run_replay(cfg, tmp_path, progress=False)
    last_tick = max(int(quotes["ts_event"].max()), int(trades["ts_event"].max()))
    expected_fills, expected_equity = _oracle(quotes, last_tick)
    got = [
        (r["ts_event"], r["side"], r["qty"], r["price"])
        for r in fills_frame(run).iter_rows(named=True)
    ]
    assert len(expected_fills) > 20  # the data must make the strategy trade
    assert got == expected_fills
    equity = run.engine.portfolio.equity(run.engine.market.mids())
    assert equity == pytest.approx(expected_equity, rel=1e-12, abs=1e-6)
