"""Model monitor cost: per tick (``observe`` over replay-sized batches of quotes, scored
predictions and drift included) and per check (``performance()``: Spearman IC, hit
ratio, calibration over the window of N scored predictions), with the reference measured
in the same run: ``scipy.stats.spearmanr`` on the same window.

Run: ``.venv/bin/python bench/monitor.py`` (``--window 1000 --repeat 5``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import begin, end, runs
from engine.config import MonitorConfig
from engine.monitor import ModelMonitor
from engine.monitor.stats import reference_bins
from engine.signals.manifest import (
    LabelSpec,
    Manifest,
    MonitorReference,
    ReferenceBins,
    TimeRange,
)
from engine.ticks import TickBatch

FEATURES = 6


def build(window: int) -> ModelMonitor:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20_000, FEATURES + 1))
    bins = [reference_bins(train[:, j], 10) for j in range(FEATURES + 1)]
    rb = [
        ReferenceBins(edges=e.tolist(), fractions=f.tolist(), drift_threshold=1.0) for e, f in bins
    ]
    names = [f"f{j}" for j in range(FEATURES)]
    ref = MonitorReference(rows=20_000, sample_interval_ns=1, label_tolerance_ns=10**9,
                           window=500, configured_false_alarm_rate=0.01,
                           calibration_method="time_blocks", false_alarm_bound=0.01,
                           features=dict(zip(names, rb[:-1], strict=True)), score=rb[-1])  # fmt: skip
    manifest = Manifest(name="bench", kind="lightgbm", model_file="m.txt", model_sha256="0" * 64,
                        output="probability", feature_names=names, feature_fingerprint="f",
                        feature_specs=[], label=LabelSpec(horizon_ns=1000),
                        train_range=TimeRange(start_ns=0, end_ns=1), reference=ref)  # fmt: skip
    cfg = MonitorConfig(window=window, check_every=25, drift_window=500, gap=None)
    return ModelMonitor(config=cfg, manifest=manifest, symbols=("X",), sample_interval_ns=1)


def feed(mon: ModelMonitor, ticks: int, batch: int, seed: int, start_ns: int = 0) -> float:
    """Seconds to observe ``ticks`` quotes in batches of ``batch`` (every quote sampled)."""
    rng = np.random.default_rng(seed)
    ts = start_ns + np.arange(ticks, dtype=np.int64) * 100
    mid = 100 + np.cumsum(rng.normal(0, 0.01, ticks))
    x = rng.normal(size=(ticks, FEATURES))
    score = rng.uniform(size=ticks).round(2)  # ties, as a classifier's few leaves give
    z = np.zeros(ticks, np.int32)
    total = 0.0
    for lo in range(0, ticks, batch):
        hi = min(lo + batch, ticks)
        b = TickBatch.quotes(ts[lo:hi], ts[lo:hi], z[lo:hi], mid[lo:hi] - 0.01,
                             mid[lo:hi] + 0.01, np.ones(hi - lo), np.ones(hi - lo))  # fmt: skip
        t0 = time.perf_counter()
        mon.observe(b, x[lo:hi], score[lo:hi])
        total += time.perf_counter() - t0
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    logging.disable(logging.WARNING)  # the random scores raise IC alarms: not the point
    started = begin(f"monitor: window {a.window}, {a.ticks:,} quotes in batches of {a.batch}")
    per_tick, per_check, reference = [], [], []
    for r in range(a.repeat):
        mon = build(a.window)
        feed(mon, 20_000, a.batch, 99)  # warm-up: jit, full windows
        seconds = feed(mon, a.ticks, a.batch, r, start_ns=20_000 * 100)
        per_tick.append(seconds / a.ticks * 1e6)
        score, real = mon.window_values()
        n = 200
        t0 = time.perf_counter()
        for _ in range(n):
            mon.performance()
        per_check.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for _ in range(n):
            sps.spearmanr(score, real)
        reference.append((time.perf_counter() - t0) / n * 1e6)
        fig = mon.performance()["ic"]
        ref = float(sps.spearmanr(score, real).statistic)
        assert abs(fig - ref) < 1e-12, (fig, ref)
    print(
        f"per tick (observe, checks every 25 scored, drift every sample), us: {runs(per_tick, '.3f')}"
    )
    print(f"per check (performance()), us: {runs(per_check, ',.1f')}")
    print(f"reference: scipy.stats.spearmanr on the same window, us: {runs(reference, ',.1f')}")
    ratio = [c / s for c, s in zip(per_check, reference, strict=True)]
    print(f"ratio per check / spearmanr: {runs(ratio, '.2f')}")
    # per tick against the same run's reference: the machines are shared, and a ratio
    # moves far less with their load than microseconds do
    tick_ratio = [t / s for t, s in zip(per_tick, reference, strict=True)]
    print(f"ratio per tick / spearmanr (x1000): {runs([1000 * r for r in tick_ratio], '.1f')}")
    end(started)


if __name__ == "__main__":
    main()
