from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config, config_from_dict
from replay.files.sample_data import generate


def _real_data_dir() -> Path:
    candidates = (
        [Path(os.environ["TRADELOOP_REAL_DATA"])] if "TRADELOOP_REAL_DATA" in os.environ else []
    )
    candidates += [
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance",
        Path("/work/shared/data/binance"),
    ]
    return next((c for c in candidates if c.exists()), candidates[0])


REAL_DATA = _real_data_dir()

# the snapshots' HMAC key (``[journal] snapshot_key_env``'s default): the daemons the tests
# run (and the daemon processes they start) write and load snapshots; a test of the
# keyless case removes it with ``monkeypatch.delenv``
SNAPSHOT_TEST_KEY = "tests-snapshot-hmac-key-0123456789abcdef"
os.environ.setdefault("TRADELOOP_SNAPSHOT_KEY", SNAPSHOT_TEST_KEY)

BASE_CONFIG: dict[str, Any] = {
    "mode": "replay",
    "instruments": [
        {"symbol": "BTC-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-5},
        {"symbol": "ETH-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-4},
    ],
    "features": [
        {"name": "mid", "kind": "mid"},
        {"name": "ema_fast", "kind": "ema", "input": "mid", "span": 20},
        {"name": "ema_slow", "kind": "ema", "input": "mid", "span": 100},
    ],
    "model": {
        "kind": "linear",
        "name": "ema_diff",
        "params": {"features": ["ema_fast", "ema_slow"], "weights": [1.0, -1.0]},
    },
    "strategy": {"name": "ema_cross", "params": {"notional": 10_000.0}},
    "risk": {"max_order_qty": 1000.0},
    "venue": {"sim": {"latency": "250us", "fee_bps": 1.0}},
    "replay": {"batch_size": 4096, "equity_interval": "1s", "initial_cash": 100_000.0},
}


def make_config(**overrides: Any) -> Config:
    """The base test config with top-level sections replaced or merged (dicts merge)."""
    data = copy.deepcopy(BASE_CONFIG)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(data)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two symbols, 15 minutes of synthetic ticks (quotes and trades)."""
    out = tmp_path_factory.mktemp("sample")
    generate(out, symbols=2, hours=0.25, quote_interval_ms=50.0, seed=11)
    return out


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.exists():
        pytest.skip(
            f"real market data not present at {REAL_DATA} (only in the project's CI workspace)"
        )
    return REAL_DATA
