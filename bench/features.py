"""Feature kernels: batch-path throughput and per-tick streaming cost.

Usage: python bench/features.py [--ticks 10000000] [--repeat 5]

An 8-feature set over synthetic ticks (3 instruments, 85% quotes / 15% trades):
1. batch path: ``FeatureSet.update`` over chunks of 1,000,000 ticks (ticks/s), with
   instruments in parallel (what ``FeatureSet.compute`` does) and serial (the live loop);
2. streaming: ``FeatureSet.update`` called from Python with a batch of one tick
   (what a daemon does when one quote arrives), and ``StreamingFeatures.push``,
   the scalar entry point for that case (microseconds per tick).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from replay_throughput import machine

from engine.features import FeatureSet, FeatureSpec
from engine.features.streaming import StreamingFeatures
from engine.ticks import TickBatch

SPECS = [
    FeatureSpec(name="mid", kind="mid"),
    FeatureSpec(name="spread", kind="spread_bps"),
    FeatureSpec(name="imb", kind="book_imbalance"),
    FeatureSpec(name="micro", kind="microprice"),
    FeatureSpec(name="ema", kind="ema", input="mid", span=100),
    FeatureSpec(name="z_mid", kind="zscore", input="mid", window="5s"),
    FeatureSpec(name="flow", kind="trade_flow_imbalance", window="5s"),
    FeatureSpec(name="ret", kind="log_return", input="mid", lag=10),
]


def synthetic(n: int, seed: int = 1) -> TickBatch:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.exponential(2e6, n)).astype(np.int64)
    inst = rng.integers(0, 3, n).astype(np.int32)
    kind = (rng.uniform(size=n) < 0.15).astype(np.int8)
    mid = 60_000.0 + np.cumsum(rng.normal(0, 0.5, n))
    half = rng.choice([0.005, 0.01, 0.015], n)
    q = kind == 0
    nan = np.full(n, np.nan)
    return TickBatch(
        ts, ts, inst, kind,
        np.where(q, mid - half, nan), np.where(q, mid + half, nan),
        np.where(q, rng.uniform(0.1, 5, n), nan), np.where(q, rng.uniform(0.1, 5, n), nan),
        np.where(q, nan, mid), np.where(q, nan, rng.uniform(0.001, 1, n)),
        np.where(q, 0, rng.choice([-1, 1], n)).astype(np.int8),
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stream-ticks", type=int, default=200_000)
    args = ap.parse_args()
    fs = FeatureSet(SPECS)
    data = synthetic(args.ticks)
    chunk = 1_000_000
    fs.update(data.slice(0, 1000), fs.new_state(3))  # load the cached kernels
    fs.update(data.slice(0, 100_000), fs.new_state(3), parallel=True)
    for parallel in (True, False):
        label = (
            "parallel over instruments (FeatureSet.compute)"
            if parallel
            else "serial (the live loop's setting)"
        )
        rates = []
        for k in range(args.repeat):
            state = fs.new_state(3)
            t0 = time.perf_counter()
            for start in range(0, args.ticks, chunk):
                fs.update(
                    data.slice(start, min(start + chunk, args.ticks)), state, parallel=parallel
                )
            dt = time.perf_counter() - t0
            rates.append(args.ticks / dt)
            print(f"batch run {k + 1}, {label}: {args.ticks:,} ticks x {len(SPECS)} features "
                  f"in {dt:.3f}s = {args.ticks / dt:,.0f} ticks/s")  # fmt: skip
        print(f"batch median, {label}: {statistics.median(rates):,.0f} ticks/s")

    n = args.stream_ticks
    one = [data.slice(i, i + 1) for i in range(n)]
    costs = []
    for _ in range(3):
        state = fs.new_state(3)
        t0 = time.perf_counter()
        for b in one:
            fs.update(b, state)
        costs.append((time.perf_counter() - t0) / n * 1e6)
    print(
        f"streaming, FeatureSet.update with a 1-tick batch: median {statistics.median(costs):.2f} us/tick"
    )

    rows = [(int(data.ts_event[i]), int(data.instrument[i]), int(data.kind[i]), float(data.bid[i]),
             float(data.ask[i]), float(data.bid_size[i]), float(data.ask_size[i]), float(data.price[i]),
             float(data.size[i]), int(data.side[i])) for i in range(n)]  # fmt: skip
    costs = []
    for _ in range(3):
        stream = StreamingFeatures(fs, 3)
        push = stream.push
        t0 = time.perf_counter()
        for r in rows:
            push(*r)
        costs.append((time.perf_counter() - t0) / n * 1e6)
    print(
        f"streaming, StreamingFeatures.push (scalars): median {statistics.median(costs):.2f} us/tick"
    )
    # marginal cost of each kernel on one instrument's quotes (mid alone is the baseline)
    quotes_only = data.take(
        np.flatnonzero((data.kind == 0) & (data.instrument == 0))[:2_000_000].astype(np.int64)
    )
    base = None
    for spec in [None, *SPECS[1:]]:
        fs1 = FeatureSet([SPECS[0]] + ([spec] if spec else []))
        fs1.update(quotes_only.slice(0, 10), fs1.new_state(3))
        best = min(_timed(fs1, quotes_only) for _ in range(3)) / len(quotes_only) * 1e9
        base = best if base is None else base
        label = "mid alone" if spec is None else f"+ {spec.kind}"
        print(f"kernel cost {label:>28}: {best:6.1f} ns/tick ({best - base:+.1f})")
    print(f"machine: {machine()}")


def _timed(fs: FeatureSet, batch: TickBatch) -> float:
    state = fs.new_state(3)
    t0 = time.perf_counter()
    fs.update(batch, state)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
