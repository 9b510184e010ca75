"""Replay throughput of the EMA-cross baseline through the full engine, with references.

Usage: python bench/replay_throughput.py [--hours 24] [--repeat 3] [--batch-size N]

Generates the default sample (3 symbols) once, in a child process so that the peak RSS
printed is the replay's own. Then, ``--repeat`` times and interleaved so that the load
of a shared machine falls on all three alike, it times on the same files:

- the replay: ``run_replay`` with the bundled config (read, validate, merge, features,
  model, strategy, risk, simulated venue), ticks/s;
- polars reading the same two parquet files into memory (``pl.read_parquet``), rows/s:
  the floor of getting the data off disk;
- a bare numba loop of the same EMA-cross arithmetic (two tick EMAs per instrument on
  mid, sign change = one crossing) over the merged tick stream's mid (NaN on trades),
  arrays already in memory, ticks/s: the floor of the strategy's own arithmetic (each
  run takes the median of 11 passes).

The ratios (replay / reference, in rows per second over the same rows) are the figures
to compare between machines.

Usage with a model: python bench/replay_throughput.py --with-model [--hours 6]
[--dead-band 0 0.02] [--repeat 3]

The demo's model replay against the EMA baseline in one run: the sample split as the demo
splits it (the first two thirds to train on, the last third held out), the bundled ML
config's LightGBM model trained on the first part (``tradeloop train``, once), then
interleaved runs on the held-out third of the EMA-cross baseline (bundled config) and of
the model with the ML threshold strategy at each ``--dead-band``. Prints ticks/s, signals,
orders and fills of each, and the ratio model / baseline (goal: at least 0.5).
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from common import begin, end, machine, median, runs
from numba import njit

from engine.config import load_config
from replay.backtest.runner import run_replay
from replay.cli import _default_config_path

# one pass of the bare loop takes tens of milliseconds, short enough for one preemption
# on a loaded machine to double it: each run times it this many times and takes the median
LOOP_PASSES = 11

__all__ = ["machine"]  # bench/journal.py, explain.py, sweep.py, live_latency.py import it here


@njit(nogil=True)
def ema_cross_loop(code, mid, n_instruments, fast_span, slow_span):  # type: ignore[no-untyped-def]
    # the engine's tick EMA (alpha = 2 / (span + 1), seeded with the first value, NaN until
    # `span` values) and the strategy's sign rule; trades carry NaN and are skipped
    fast_alpha = 2.0 / (fast_span + 1.0)
    slow_alpha = 2.0 / (slow_span + 1.0)
    fast = np.zeros(n_instruments)
    slow = np.zeros(n_instruments)
    count = np.zeros(n_instruments, np.int64)
    side = np.zeros(n_instruments, np.int64)
    crossings = 0
    for t in range(mid.shape[0]):
        x = mid[t]
        if math.isnan(x):
            continue
        i = code[t]
        if count[i] == 0:
            fast[i] = x
            slow[i] = x
        else:
            fast[i] += fast_alpha * (x - fast[i])
            slow[i] += slow_alpha * (x - slow[i])
        count[i] += 1
        if count[i] >= slow_span and count[i] >= fast_span:
            s = 1 if fast[i] >= slow[i] else -1
            if s != side[i]:
                side[i] = s
                crossings += 1
    return crossings


def merged_mid(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    quotes = pl.read_parquet(
        folder / "quotes.parquet", columns=["ts_event", "symbol", "bid", "ask"]
    )
    trades = pl.read_parquet(folder / "trades.parquet", columns=["ts_event", "symbol"])
    ticks = pl.concat(
        [
            quotes.select("ts_event", "symbol", mid=(pl.col("bid") + pl.col("ask")) / 2.0),
            trades.select("ts_event", "symbol", mid=pl.lit(float("nan"))),
        ]
    ).sort("ts_event", maintain_order=True)
    code = (ticks["symbol"].rank("dense").cast(pl.Int64) - 1).to_numpy()
    return np.ascontiguousarray(code), np.ascontiguousarray(ticks["mid"].to_numpy())


def polars_read(folder: Path) -> int:
    q = pl.read_parquet(folder / "quotes.parquet")
    t = pl.read_parquet(folder / "trades.parquet")
    return q.height + t.height


def model_replay(hours: float, repeat: int, bands: list[float]) -> None:
    """The demo's held-out replay with its model against the EMA baseline, in one run."""
    import tomllib
    from importlib import resources

    from engine.config import config_from_dict
    from replay.files.sample_data import split_by_time

    started = begin(f"model replay: {hours} h sample, held-out third, {repeat} runs, "
                    f"dead bands {bands}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "replay.cli", "sample-data", str(root / "data"),
                        "--hours", str(hours)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        split_by_time(root / "data", root / "train", root / "holdout", 2 / 3)
        subprocess.run([sys.executable, "-m", "replay.cli", "train", str(root / "train"), "--out",
                        str(root / "model")], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"sample, split and training: {time.perf_counter() - t0:.0f}s")
        baseline, _ = load_config(_default_config_path())
        doc = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
        doc["model"]["path"] = str(root / "model")
        configs = {"ema baseline": baseline}
        for band in bands:
            doc["strategy"]["params"]["dead_band"] = band
            configs[f"model, dead band {band:g}"] = config_from_dict(doc)
        holdout = root / "holdout"
        for cfg in configs.values():  # numba compiles and caches outside the timed runs
            run_replay(cfg, holdout, progress=False)
        rates: dict[str, list[float]] = {name: [] for name in configs}
        facts: dict[str, str] = {}
        for k in range(repeat):
            for name, cfg in configs.items():
                t0 = time.perf_counter()
                run = run_replay(cfg, holdout, progress=False)
                dt = time.perf_counter() - t0
                c = run.engine.counters
                rates[name].append(c["ticks"] / dt)
                facts[name] = (f"{c['ticks']:,} ticks, {c['signals']:,} signals, "
                               f"{c['orders_sent']:,} orders, {len(run.recorder.fills):,} fills")  # fmt: skip
                print(
                    f"run {k + 1}: {name}: {facts[name]} in {dt:.2f}s = {c['ticks'] / dt:,.0f} ticks/s"
                )
    base = median(rates["ema baseline"])
    for name in configs:
        print(f"{name:<24} {runs(rates[name])} ticks/s; {facts[name]}")
    for name in list(configs)[1:]:
        print(
            f"ratio {name} / ema baseline (medians): {median(rates[name]) / base:.3f} (goal >= 0.5)"
        )
    end(started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument(
        "--with-model", action="store_true", help="the model replay against the baseline"
    )
    ap.add_argument("--dead-band", type=float, nargs="+", default=[0.0, 0.02])
    args = ap.parse_args()
    if args.with_model:
        model_replay(args.hours, args.repeat, args.dead_band)
        return
    started = begin(f"replay throughput: {args.hours} h sample, {args.repeat} runs")
    cfg, _ = load_config(_default_config_path())
    spans = {f.name: f.span for f in cfg.features if f.kind == "ema"}
    fast_span, slow_span = int(spans["ema_fast"]), int(spans["ema_slow"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "replay.cli", "sample-data", tmp, "--hours", str(args.hours)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"sample: {args.hours} h x 3 symbols generated in {time.perf_counter() - t0:.1f}s")
        engine_rates, polars_rates, loop_rates = [], [], []
        peak_mb = 0.0
        code = mid = None
        crossings = signals = 0
        for k in range(args.repeat):
            t0 = time.perf_counter()
            run = run_replay(cfg, tmp, batch_size=args.batch_size, progress=False)
            dt = time.perf_counter() - t0
            ticks = run.engine.counters["ticks"]
            engine_rates.append(ticks / dt)
            print(f"run {k + 1}: replay {ticks:,} ticks ({run.engine.counters['signals']:,} signals, "
                  f"{run.engine.counters['fills']:,} fills) in {dt:.2f}s = {ticks / dt:,.0f} ticks/s")  # fmt: skip
            signals = run.engine.counters["signals"]
            del run
            if code is None:
                # the replay's own peak, before the references load anything
                peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                code, mid = merged_mid(folder)
                ema_cross_loop(code[:1000], mid[:1000], 3, fast_span, slow_span)  # compile
            t0 = time.perf_counter()
            rows = polars_read(folder)
            dt = time.perf_counter() - t0
            polars_rates.append(rows / dt)
            passes = []
            for _ in range(LOOP_PASSES):
                t0 = time.perf_counter()
                crossings = ema_cross_loop(code, mid, 3, fast_span, slow_span)
                passes.append(time.perf_counter() - t0)
            dt_loop = median(passes)
            loop_rates.append(mid.shape[0] / dt_loop)
            print(f"       polars.read_parquet {rows:,} rows in {dt:.2f}s = {rows / dt:,.0f} rows/s; "
                  f"numba EMA-cross loop {mid.shape[0]:,} ticks ({crossings:,} crossings) in "
                  f"{dt_loop:.3f}s (median of {LOOP_PASSES}) = {mid.shape[0] / dt_loop:,.0f} ticks/s")  # fmt: skip
    e, p, n = median(engine_rates), median(polars_rates), median(loop_rates)
    print(f"replay:              {runs(engine_rates)} ticks/s; peak RSS {peak_mb:,.0f} MiB")
    print(f"polars read_parquet: {runs(polars_rates)} rows/s")
    print(f"numba EMA-cross:     {runs(loop_rates)} ticks/s")
    same = "equal to" if crossings == signals else "DIFFERENT from"
    print(f"the loop's crossings ({crossings:,}) are {same} the replay's signals ({signals:,})")
    print(f"ratios (medians): replay / polars read = {e / p:.3f}; replay / bare numba loop = {e / n:.4f} "
          f"(1 / {n / e:,.0f})")  # fmt: skip
    end(started)


if __name__ == "__main__":
    main()
