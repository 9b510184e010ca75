"""What reading the features at a hook's own tick costs (no look-ahead in per-tick hooks).

Usage: python bench/hook_reads.py [--ticks 200000] [--repeat 5]

Two figures, each with a reference measured in the same run:
1. The one-tick pass of the live loop: ``Engine.process_batch`` of a one-tick batch (a
   quiet tick, EMA-cross strategy), median over the ticks. Reference: ``FeatureSet.update``
   of the same one-tick batch on a state of its own. The ratio pass / update is the
   figure to compare between runs and commits (a one-tick batch records no walk).
2. A replay of micro-batches of 4096 ticks with a strategy that reads ``ctx.features`` in
   every ``on_quote`` (the slow path the look-ahead fix changed), against the same replay
   with a strategy that reacts to signals only. Ratio: per-tick reader / signals only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import begin, end, median

from engine.config import load_config
from engine.events import Quote
from engine.ticks import TickBatch
from replay.backtest.runner import build_engine, run_loop, tick_batches
from replay.files.readers import BadRowCounts
from replay.files.sample_data import generate
from strategies.ema_cross import EmaCross

CONFIG = Path(__file__).resolve().parents[1] / "replay" / "default_config.toml"


class Reader(EmaCross):
    """The EMA cross, reading every feature of the quote's instrument at every quote."""

    name = "reader"

    def on_quote(self, quote: Quote) -> None:
        self.reads = getattr(self, "reads", 0) + len(self.ctx.features(quote.instrument))


def _ticks(folder: Path, n: int) -> TickBatch:
    config, _ = load_config(CONFIG)
    engine, _, _ = build_engine(config)
    batches, _ = tick_batches(config, folder, engine.instruments, BadRowCounts(), 65_536)
    ticks = TickBatch.concat(list(batches))
    return ticks.slice(0, min(n, len(ticks)))


def one_tick_pass(ticks: TickBatch) -> tuple[float, float]:
    """Median µs of ``process_batch`` of one tick, and of ``FeatureSet.update`` alone."""
    config, _ = load_config(CONFIG)
    engine, _, _ = build_engine(config)
    state = engine.features.new_state(len(engine.instruments))
    passes, updates = [], []
    clock = time.perf_counter_ns
    for i in range(len(ticks)):
        one = ticks.slice(i, i + 1)
        t0 = clock()
        engine.process_batch(one)
        t1 = clock()
        engine.features.update(one, state)
        t2 = clock()
        passes.append(t1 - t0)
        updates.append(t2 - t1)
    return median(passes) / 1e3, median(updates) / 1e3


def replay_seconds(ticks: TickBatch, reader: bool) -> float:
    config, _ = load_config(CONFIG)
    params = EmaCross.Params(notional=10_000.0)  # the bundled config's
    strategy = Reader(params) if reader else EmaCross(params)
    engine, _, _ = build_engine(config, strategy=strategy)
    pieces = [ticks.slice(a, min(a + 4096, len(ticks))) for a in range(0, len(ticks), 4096)]
    t0 = time.perf_counter()
    run_loop(engine.run(iter(pieces)))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    started = begin("hook reads: features at the hook's own tick")
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), symbols=2, hours=2.0, quote_interval_ms=50.0, seed=3)
        ticks = _ticks(Path(tmp), args.ticks)
    print(f"{len(ticks):,} ticks, {int(np.sum(ticks.kind == 0)):,} quotes")
    one_tick_pass(ticks.slice(0, 2_000))  # compile and warm
    replay_seconds(ticks.slice(0, 10_000), True)
    ratios, passes, updates, slow = [], [], [], []
    for _ in range(args.repeat):
        p, u = one_tick_pass(ticks.slice(0, 20_000))
        passes.append(p)
        updates.append(u)
        ratios.append(p / u)
        signals_only = replay_seconds(ticks, False)
        reader = replay_seconds(ticks, True)
        slow.append(reader / signals_only)
    print(f"one-tick pass: {median(passes):.1f} µs; FeatureSet.update alone "
          f"{median(updates):.1f} µs; ratio pass / update {median(ratios):.2f} "
          f"(runs {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    print(f"replay, 4096-tick batches: per-tick features reader / signals only "
          f"{median(slow):.2f} (runs {', '.join(f'{r:.2f}' for r in slow)})")  # fmt: skip
    end(started)


if __name__ == "__main__":
    main()
