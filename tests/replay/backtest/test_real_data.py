"""Binance BTCUSDT capture (../shared/data): real bursts, repeated stamps, 0.01 ticks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from engine.instruments import Instrument
from replay.backtest.runner import run_replay
from tests.conftest import make_config

ROWS = 28_040 + 9_757 + 45_134 + 10_147


def test_real_binance_data_replays_without_bad_rows(real_data: Path) -> None:
    cfg = make_config(
        instruments=[
            {"symbol": "BTCUSDT", "venue": "BINANCE", "tick_size": 0.01, "lot_size": 1e-5}
        ],
        strategy={"name": "ema_cross", "params": {"qty": 0.01}},
    )
    run = run_replay(cfg, real_data, progress=False)
    assert run.engine.counters["ticks"] == ROWS
    assert run.bad_rows.total == 0
    assert run.engine.counters["fills"] > 0
    # every fill price is a real touch price on the 0.01 grid
    inst = Instrument(symbol="BTCUSDT", tick_size=0.01)
    assert all(inst.is_on_tick(f.price) for f in run.recorder.fills)


def test_real_binance_data_has_the_quirks_we_claim(real_data: Path) -> None:
    q = pl.read_parquet(real_data / "spot_btcusdt_20240809-quotes.parquet")
    ts = q["ts_event"].to_numpy()
    assert np.all(np.diff(ts) >= 0)
    assert float((np.diff(ts) < 1_000_000).mean()) > 0.3  # bursts: many gaps under 1 ms
    inst = Instrument(symbol="BTCUSDT", tick_size=0.01)
    assert all(inst.is_on_tick(p) for p in q["bid"].head(2000).to_list())
