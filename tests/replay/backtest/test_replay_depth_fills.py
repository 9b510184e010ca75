"""Replay with depth files: the runner builds the simulated venue with ``[book]
queue_model`` and the engine hands it the depth rows (``DepthConsumer.on_depth``), also
when no L2 feature is configured. The fills are the same for any batch size, differ from
the top-of-book run on the same ticks, and every passive fill has a trade behind it (only
trades fill a resting order in depth mode), on a generated market and on a real capture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.sim_venue import SimulatedVenue
from engine.clock import TimerFired
from engine.config import Config, config_from_dict
from engine.strategy import NoParams, Strategy
from replay.backtest.runner import ReplayRun, run_replay
from replay.files.depth.command import convert
from replay.files.depth.table import DepthTable
from replay.files.discovery import DataSource

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S
RAW = Path("/work/shared/data/binance-raw")


class Quoter(Strategy):
    """Every 2 s: cancel what is open, join the best bid and the best ask; every fifth
    time also a market order, alternating sides."""

    name = "quoter"

    def __init__(self, symbol: str, qty: float, market_qty: float) -> None:
        super().__init__(NoParams())
        self.symbol, self.qty, self.market_qty = symbol, qty, market_qty
        self.open: list[str] = []
        self.round = 0

    def on_start(self) -> None:
        self.ctx.set_timer("quote", self.ctx.now_ns() + 2 * S, 2 * S)

    def on_timer(self, timer: TimerFired) -> None:
        for oid in self.open:
            self.ctx.cancel(oid)
        self.open = []
        quote = self.ctx.last_quote(self.symbol)
        if quote is None:
            return
        self.round += 1
        self.open.append(self.ctx.submit_limit(self.symbol, "buy", self.qty, quote.bid))
        self.open.append(self.ctx.submit_limit(self.symbol, "sell", self.qty, quote.ask))
        if self.round % 5 == 0:
            side = "buy" if self.round % 10 == 0 else "sell"
            self.ctx.submit_market(self.symbol, side, self.market_qty)


def _config(symbol: str, tick: float) -> Config:
    return config_from_dict(
        {
            "instruments": [{"symbol": symbol, "tick_size": tick, "lot_size": 1e-5}],
            "features": [{"name": "mid", "kind": "mid"}],
            "strategy": {"name": "ema_cross", "params": {"qty": 1.0}},
            "book": {"queue_model": "power", "queue_power": 2.0},
        }
    )


def _write_market(folder: Path, seed: int, steps: int = 400) -> None:
    """A random market on a 1.0 tick: every 100 ms a depth update (the levels within 12
    ticks of the mid, 0 where a side has none) and the quote it implies, and between
    updates a few trades at the touch with a random aggressor (a trade takes size off the
    level it hits in the next update)."""
    rng = np.random.default_rng(seed)
    depth = DepthTable()
    quotes: dict[str, list[object]] = {k: [] for k in ("ts_event", "ts_recv", "symbol", "bid",
                                                       "ask", "bid_size", "ask_size")}  # fmt: skip
    trades: dict[str, list[object]] = {k: [] for k in ("ts_event", "ts_recv", "symbol", "price",
                                                       "size", "side")}  # fmt: skip
    bid = 100.0
    for k in range(steps):
        ts = T0 + k * 100 * MS
        if rng.random() < 0.15:
            bid += float(rng.choice((-1.0, 1.0)))
        ask = bid + float(rng.choice((1.0, 1.0, 2.0)))
        bids, asks = [], []
        for p in np.arange(bid - 12.0, ask + 13.0):
            price = float(p)
            bq = float(rng.integers(1, 8)) if price <= bid else 0.0
            aq = float(rng.integers(1, 8)) if price >= ask else 0.0
            bids.append((price, bq))
            asks.append((price, aq))
        if k == 0:  # a snapshot lists the levels that exist
            bids = [(p, q) for p, q in bids if q > 0]
            asks = [(p, q) for p, q in asks if q > 0]
        depth.add_update(ts_event=ts, ts_recv=ts, symbol="SYN", bids=bids, asks=asks,
                         first_update_id=k + 1, last_update_id=k + 1,
                         prev_update_id=k if k else -1, snapshot=k == 0)  # fmt: skip
        bid_size = dict(bids)[bid]
        ask_size = dict(asks)[ask]
        for c, v in zip(quotes, (ts, ts, "SYN", bid, ask, bid_size, ask_size), strict=True):
            quotes[c].append(v)
        for j in range(int(rng.integers(0, 4))):
            side = int(rng.choice((1, -1)))
            t = ts + (20 + 20 * j) * MS
            for c, v in zip(trades, (t, t, "SYN", ask if side > 0 else bid,
                                     float(rng.integers(1, 6)), side), strict=True):  # fmt: skip
                trades[c].append(v)
    depth.write(folder / "syn-depth.parquet")
    pq.write_table(pa.table(quotes), folder / "syn-quotes.parquet")
    pq.write_table(pa.table(trades), folder / "syn-trades.parquet")


def _fills(run: ReplayRun) -> list[tuple[object, ...]]:
    return [(f.ts_event, f.client_order_id, f.side, f.qty, f.price, f.liquidity)
            for f in run.recorder.fills]  # fmt: skip


def _replay(config: Config, data: Path | DataSource, batch: int, symbol: str,
            qty: float, market_qty: float) -> ReplayRun:  # fmt: skip
    return run_replay(config, data, batch_size=batch, progress=False,
                      strategy=Quoter(symbol, qty, market_qty))  # fmt: skip


def _check(runs: list[ReplayRun], l1: ReplayRun, trades_path: Path) -> None:
    first = _fills(runs[0])
    for run in runs[1:]:
        assert _fills(run) == first
    venue = runs[0].engine.router
    assert isinstance(venue, SimulatedVenue)
    assert runs[0].engine.book_source is not None
    maker = [f for f in runs[0].recorder.fills if f.liquidity == "maker"]
    taker = [f for f in runs[0].recorder.fills if f.liquidity == "taker"]
    assert maker and taker, "the schedule must fill passively and aggressively"
    assert first != _fills(l1), "depth mode must change the fills against the top of book"
    # every passive fill has a trade at or through its price at its stamp, aggressor on the
    # other side: in depth mode only trades fill a resting order
    t = pq.read_table(trades_path).to_pydict()
    aggressor = [1 if s in (1, "buy") else -1 if s in (-1, "sell") else 0 for s in t["side"]]
    prints = list(zip(t["ts_event"], t["price"], aggressor, strict=True))
    for f in maker:
        assert any(ts == f.ts_event and (side < 0 and px <= f.price if f.side == "buy"
                                         else side > 0 and px >= f.price)
                   for ts, px, side in prints), f  # fmt: skip


def test_generated_depth_replay_fills_on_the_queue_for_any_batch_size(tmp_path: Path) -> None:
    _write_market(tmp_path, seed=7)
    config = _config("SYN", 1.0)
    runs = [_replay(config, tmp_path, b, "SYN", 2.0, 4.0) for b in (1, 7, 4096)]
    l1_dir = tmp_path / "l1"
    l1_dir.mkdir()
    for kind in ("quotes", "trades"):
        (l1_dir / f"syn-{kind}.parquet").write_bytes(
            (tmp_path / f"syn-{kind}.parquet").read_bytes()
        )
    l1 = _replay(config, l1_dir, 4096, "SYN", 2.0, 4.0)
    assert l1.engine.book_source is None
    _check(runs, l1, tmp_path / "syn-trades.parquet")


@pytest.mark.skipif(not RAW.exists(), reason=f"real Binance captures not found at {RAW}")
def test_real_capture_replay_fills_on_the_queue_for_any_batch_size(tmp_path: Path) -> None:
    convert([RAW / "spot_btcusdt_20240808.jsonl.gz"], tmp_path)
    first = pq.read_table(tmp_path / "spot_btcusdt_20240808-quotes.parquet", columns=["ts_event"])
    start = int(first.column(0)[0].as_py())
    window = DataSource(path=tmp_path, end_ns=start + 120 * S)
    config = _config("BTCUSDT", 0.01)
    runs = [_replay(config, window, b, "BTCUSDT", 0.01, 0.5) for b in (1, 7, 4096)]
    l1_dir = tmp_path / "l1"
    l1_dir.mkdir()
    for kind in ("quotes", "trades"):
        name = f"spot_btcusdt_20240808-{kind}.parquet"
        (l1_dir / name).write_bytes((tmp_path / name).read_bytes())
    l1 = _replay(config, DataSource(path=l1_dir, end_ns=start + 120 * S), 4096, "BTCUSDT",
                 0.01, 0.5)  # fmt: skip
    _check(runs, l1, tmp_path / "spot_btcusdt_20240808-trades.parquet")
