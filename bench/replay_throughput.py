"""Replay throughput of the EMA-cross baseline through the full engine.

Usage: python bench/replay_throughput.py [--hours 24] [--repeat 3]

Generates the default sample (3 symbols) once (in a child process), then replays it ``--repeat`` times and
prints ticks/s of each run, the median, and peak RSS, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.config import load_config
from replay.cli import _default_config_path
from replay.runner import run_replay


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cpus, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args()
    cfg, _ = load_config(_default_config_path())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # generated in a child process so peak RSS below is the replay's alone
        subprocess.run([sys.executable, "-m", "replay.cli", "sample-data", tmp, "--hours", str(args.hours)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"sample: {args.hours} h x 3 symbols generated in {time.perf_counter() - t0:.1f}s")
        rates = []
        for k in range(args.repeat):
            t0 = time.perf_counter()
            run = run_replay(cfg, tmp, batch_size=args.batch_size, progress=False)
            dt = time.perf_counter() - t0
            ticks = run.engine.counters["ticks"]
            rates.append(ticks / dt)
            print(
                f"run {k + 1}: {ticks:,} ticks ({run.engine.counters['fills']} fills) in {dt:.2f}s "
                f"= {ticks / dt:,.0f} ticks/s"
            )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"median: {statistics.median(rates):,.0f} ticks/s; peak RSS {peak_mb:,.0f} MiB")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
