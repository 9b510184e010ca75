"""Feature kernels: batch-path throughput and per-tick streaming cost, with references.

Usage: python bench/features.py [--ticks 10000000] [--repeat 5] [--stream-ticks 200000]

An 8-feature set over synthetic ticks (3 instruments, 85% quotes / 15% trades):
1. batch path: ``FeatureSet.update`` over chunks of 1,000,000 ticks (ticks/s), with
   instruments in parallel (what ``FeatureSet.compute`` does) and serial (the live loop);
2. streaming: ``FeatureSet.update`` called from Python with a batch of one tick
   (what a daemon does when one quote arrives), and ``StreamingFeatures.push``,
   the scalar entry point for that case (microseconds per tick).

References measured in the same run, on the same ticks:

- batch: polars (lazy, all its threads) computing the same eight features over the same
  ticks in one frame: mid forward-filled per instrument, spread_bps, book imbalance,
  microprice, ``ewm_mean(span=100)``, a 5 s ``rolling_mean_by``/``rolling_std_by``
  z-score, a 5 s ``rolling_sum_by`` trade-flow imbalance and a lag-10 log return, each
  ``.over("instrument")``. The same work, not bit-equal values (warm-up and NaN rules
  differ); the ratio is ours (parallel, both cores as polars) / polars;
- streaming: a bare numba-compiled function called from Python with the same ten scalars
  (the floor of any compiled per-tick entry point), and a bare Python function with ten
  arguments.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from common import begin, end, median, runs
from numba import njit

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


def polars_frame(data: TickBatch) -> pl.DataFrame:
    frame = pl.DataFrame({
        "ts": pl.Series(data.ts_event).cast(pl.Datetime("ns")), "instrument": data.instrument,
        "kind": data.kind, "bid": data.bid, "ask": data.ask, "bid_size": data.bid_size,
        "ask_size": data.ask_size, "price": data.price, "size": data.size, "side": data.side,
    })  # fmt: skip
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None))


def polars_features(frame: pl.DataFrame) -> pl.DataFrame:
    bid, ask, bsz, asz = pl.col("bid"), pl.col("ask"), pl.col("bid_size"), pl.col("ask_size")
    mid = pl.col("mid")
    return (
        frame.lazy()
        .with_columns(
            mid=((bid + ask) / 2).forward_fill().over("instrument"),
            spread=(ask - bid) / ((bid + ask) / 2) * 1e4,
            imb=(bsz - asz) / (bsz + asz),
            micro=(bid * asz + ask * bsz) / (bsz + asz),
            signed=(pl.col("side").cast(pl.Float64) * pl.col("size")).fill_null(0.0),
            traded=pl.col("size").fill_null(0.0),
        )
        .with_columns(
            ema=mid.ewm_mean(span=100, adjust=False, ignore_nulls=True).over("instrument"),
            z_mid=((mid - mid.rolling_mean_by("ts", "5s")) / mid.rolling_std_by("ts", "5s")).over(
                "instrument"
            ),
            flow=(
                pl.col("signed").rolling_sum_by("ts", "5s")
                / pl.col("traded").rolling_sum_by("ts", "5s")
            ).over("instrument"),
            ret=(mid / mid.shift(10)).log().over("instrument"),
        )
        .collect()
    )


@njit
def _bare_njit(ts, instrument, kind, bid, ask, bid_size, ask_size, price, size, side):  # type: ignore[no-untyped-def]
    return bid


def _bare_python(ts, instrument, kind, bid, ask, bid_size, ask_size, price, size, side):  # type: ignore[no-untyped-def]
    return bid


def per_call_us(fn, rows: list[tuple], repeat: int) -> list[float]:  # type: ignore[type-arg, no-untyped-def]
    costs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for r in rows:
            fn(*r)
        costs.append((time.perf_counter() - t0) / len(rows) * 1e6)
    return costs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stream-ticks", type=int, default=200_000)
    args = ap.parse_args()
    started = begin(
        f"features: {args.ticks:,} ticks x {len(SPECS)} features, {args.repeat} runs; "
        f"streaming {args.stream_ticks:,} ticks x 3 runs"
    )
    fs = FeatureSet(SPECS)
    data = synthetic(args.ticks)
    frame = polars_frame(data)
    chunk = 1_000_000
    fs.update(data.slice(0, 1000), fs.new_state(3))  # load the cached kernels
    fs.update(data.slice(0, 100_000), fs.new_state(3), parallel=True)
    polars_features(frame.head(10_000))

    def ours(parallel: bool) -> float:
        state = fs.new_state(3)
        t0 = time.perf_counter()
        for start in range(0, args.ticks, chunk):
            fs.update(data.slice(start, min(start + chunk, args.ticks)), state, parallel=parallel)
        return time.perf_counter() - t0

    # interleaved, so that a burst of load on the shared machine falls on all three alike
    parallel_rates, serial_rates, polars_rates = [], [], []
    for k in range(args.repeat):
        dp, ds = ours(True), ours(False)
        t0 = time.perf_counter()
        polars_features(frame)
        dpl = time.perf_counter() - t0
        parallel_rates.append(args.ticks / dp)
        serial_rates.append(args.ticks / ds)
        polars_rates.append(args.ticks / dpl)
        print(f"batch run {k + 1}: parallel {dp:.3f}s, serial {ds:.3f}s, polars {dpl:.3f}s")
    del frame
    print(f"batch, parallel over instruments (FeatureSet.compute): {runs(parallel_rates)} ticks/s")
    print(f"batch, serial (the live loop's setting):               {runs(serial_rates)} ticks/s")
    print(f"batch, polars, same 8 features ({pl.thread_pool_size()} threads):         "
          f"{runs(polars_rates)} ticks/s")  # fmt: skip
    p, s_, pl_ = median(parallel_rates), median(serial_rates), median(polars_rates)
    print(f"ratios (medians): ours parallel / polars = {p / pl_:.2f}; ours serial / polars = "
          f"{s_ / pl_:.2f}")  # fmt: skip

    n = args.stream_ticks
    one = [data.slice(i, i + 1) for i in range(n)]
    update_us = []
    for _ in range(3):
        state = fs.new_state(3)
        t0 = time.perf_counter()
        for b in one:
            fs.update(b, state)
        update_us.append((time.perf_counter() - t0) / n * 1e6)
    rows = [(int(data.ts_event[i]), int(data.instrument[i]), int(data.kind[i]), float(data.bid[i]),
             float(data.ask[i]), float(data.bid_size[i]), float(data.ask_size[i]), float(data.price[i]),
             float(data.size[i]), int(data.side[i])) for i in range(n)]  # fmt: skip
    _bare_njit(*rows[0])
    push_us, njit_us, python_us = [], [], []
    for _ in range(3):
        push_us += per_call_us(StreamingFeatures(fs, 3).push, rows, 1)
        njit_us += per_call_us(_bare_njit, rows, 1)
        python_us += per_call_us(_bare_python, rows, 1)
    print(f"streaming, FeatureSet.update with a 1-tick batch: {runs(update_us, '.2f')} us/tick")
    print(f"streaming, StreamingFeatures.push (10 scalars):   {runs(push_us, '.2f')} us/tick")
    print(f"reference, bare numba function, same 10 scalars:  {runs(njit_us, '.3f')} us/call")
    print(f"reference, bare Python function, 10 arguments:    {runs(python_us, '.3f')} us/call")
    print(f"ratios (medians): push / bare numba call = {median(push_us) / median(njit_us):.1f}; "
          f"update(1 tick) / bare numba call = {median(update_us) / median(njit_us):.1f}")  # fmt: skip

    # marginal cost of each kernel on one instrument's quotes (mid alone is the baseline,
    # measured in the same run: the deltas are their own reference)
    quotes_only = data.take(
        np.flatnonzero((data.kind == 0) & (data.instrument == 0))[:2_000_000].astype(np.int64)
    )
    base = None
    for spec in [None, *SPECS[1:]]:
        fs1 = FeatureSet([SPECS[0]] + ([spec] if spec else []))
        fs1.update(quotes_only.slice(0, 10), fs1.new_state(3))
        cost = median([_timed(fs1, quotes_only) for _ in range(3)]) / len(quotes_only) * 1e9
        base = cost if base is None else base
        label = "mid alone" if spec is None else f"+ {spec.kind}"
        print(f"kernel cost {label:>28}: {cost:6.1f} ns/tick ({cost - base:+.1f}), median of 3")
    end(started)


def _timed(fs: FeatureSet, batch: TickBatch) -> float:
    state = fs.new_state(3)
    t0 = time.perf_counter()
    fs.update(batch, state)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
