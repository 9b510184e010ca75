"""Same input, same output; and any split of the ticks into batches changes nothing."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from engine.clock import TimerFired
from engine.events import Fill, Signal
from engine.strategy import Strategy
from replay.backtest.report import equity_frame, fills_frame
from replay.backtest.runner import ReplayRun, run_replay
from replay.cli import main
from tests.conftest import make_config


class MakerParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    qty: float = 0.01


class Maker(Strategy):
    """Exercises every cut the loop makes: signals, resting limit orders filled by quotes
    and trades, cancels, a recurring timer and latency."""

    name = "maker"
    Params = MakerParams

    def thresholds(self) -> tuple[float, ...]:
        return (0.0,)

    def on_start(self) -> None:
        assert self.ctx.now_ns() > 0  # replay starts the strategy at the first tick's time
        self.ctx.set_timer("sweep", self.ctx.now_ns() + 3_000_000_000, interval_ns=3_000_000_000)
        self.fills = 0

    def on_signal(self, signal: Signal) -> None:
        q = self.ctx.last_quote(signal.instrument)
        assert q is not None
        inst = self.ctx.instrument(signal.instrument)
        side = "buy" if signal.zone == 1 else "sell"
        price = q.bid if side == "buy" else q.ask
        qty = inst.round_qty(self.params.qty / max(q.bid, 1.0) * 60_000.0)  # type: ignore[attr-defined]
        self.ctx.submit_limit(signal.instrument, side, qty, price)

    def on_timer(self, timer: TimerFired) -> None:
        for sym in ("BTC-USD", "ETH-USD"):
            pos = self.ctx.position(sym)
            if abs(pos) > 0.1 * 60_000 / max((self.ctx.last_quote(sym) or _q).bid, 1.0):
                self.ctx.submit_market(sym, "sell" if pos > 0 else "buy", abs(pos))

    def on_fill(self, fill: Fill) -> None:
        self.fills += 1


class _Q:
    bid = 1.0


_q = _Q()


def _outcome(run: ReplayRun) -> tuple[list[tuple], np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    fills = [tuple(r) for r in fills_frame(run).iter_rows()]
    eq = equity_frame(run)
    return fills, eq["ts_event"].to_numpy(), eq["equity"].to_numpy()


@pytest.mark.parametrize("strategy", ["ema_cross", "maker"])
def test_batch_invariance_sizes_1_7_4096_give_identical_results(
    sample_dir: Path, strategy: str
) -> None:
    cfg = make_config()
    outcomes = []
    for size in (4096, 7, 1):
        strat = Maker(MakerParams()) if strategy == "maker" else None
        run = run_replay(cfg, sample_dir, batch_size=size, progress=False, strategy=strat)
        outcomes.append(
            (_outcome(run), dict(run.engine.counters), run.engine.portfolio.positions.copy())
        )
    (fills, ts, eq), counters, _ = outcomes[0]
    assert len(fills) > 10
    if strategy == "maker":
        assert any(f[6] == "maker" for f in fills)  # resting fills happened
    for (f2, ts2, eq2), c2, _ in outcomes[1:]:
        assert f2 == fills
        assert np.array_equal(ts2, ts)
        assert np.array_equal(eq2, eq)
        assert {k: v for k, v in c2.items()} == counters


def test_replay_twice_gives_byte_identical_files(sample_dir: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert (
            main(
                [
                    "replay",
                    str(sample_dir),
                    "--strategy",
                    "ema_cross",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    for f in ("trades.parquet", "equity.parquet", "metrics.json"):
        a, b = (tmp_path / "a" / f).read_bytes(), (tmp_path / "b" / f).read_bytes()
        assert a == b, f
    assert (tmp_path / "a" / "trades.parquet").stat().st_size > 1000
