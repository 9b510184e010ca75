"""A 12-combination sweep: a plain serial loop vs Dask LocalCluster with 1 and 2 workers.

Usage: python bench/sweep.py [--hours 2] [--folds 2] [--repeat 1]

Generates the sample (3 symbols), plans a 4 x 3 grid of the EMA-cross baseline (fast EMA
span x notional) over the bundled config and splits the data into ``--folds`` blocks,
once. Then, in the same run, it times the same tasks (12 combinations x folds blocks):

- serial: ``evaluate`` called in a loop in this process (no Dask);
- Dask with 1 and 2 single-threaded worker processes: the tasks' time (``run_tasks``:
  submission to the last result) of warm runs, the first (cold) run and the cluster's
  start-up apart: a fresh worker process pays its imports and numba compilation once.

It prints the machine and the ratios serial / Dask.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from replay_throughput import machine

from replay.cli import _default_config_path
from replay.sample_data import generate
from replay.sweep import dask_client, evaluate, make_tasks, plan_sweep, run_tasks, split_blocks

GRID = '"features[1].span" = [100, 200, 400, 800]\n"strategy.params.notional" = [5000.0, 10000.0, 20000.0]\n'


def _bits(metrics: dict[str, float | int | bool]) -> dict[str, str]:
    """Metrics compared bit for bit (NaN equal to NaN)."""
    return {k: repr(v) for k, v in metrics.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="warm timed runs per variant (median)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root / "data", symbols=3, hours=args.hours)
        (root / "grid.toml").write_text(GRID)
        plan = plan_sweep(_default_config_path(), root / "grid.toml")
        blocks = split_blocks(root / "data", args.folds, root / "blocks")
        tasks = make_tasks(plan, blocks)
        print(
            f"sample {args.hours} h x 3 symbols, {len(plan.combinations)} combinations x "
            f"{len(blocks)} blocks = {len(tasks)} tasks; prepared in {time.perf_counter() - t0:.1f}s"
        )

        evaluate(tasks[0])  # this process's numba compilation, not the loop's
        serial = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            outcomes = [evaluate(t) for t in tasks]
            serial.append(time.perf_counter() - t0)
        ticks = sum(int(o.metrics["ticks"]) for o in outcomes)
        s = statistics.median(serial)
        print(
            f"serial loop:      {s:7.2f}s, warm (median of {len(serial)}; {ticks / s:,.0f} ticks/s)"
        )

        timed = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            with dask_client(workers=workers) as client:
                client.wait_for_workers(workers)
                start = time.perf_counter() - t0
                runs = []
                for _ in range(args.repeat + 1):
                    t0 = time.perf_counter()
                    got = run_tasks(client, tasks, progress=False)
                    runs.append(time.perf_counter() - t0)
            if [_bits(o.metrics) for o in got] != [_bits(o.metrics) for o in outcomes]:
                raise AssertionError("Dask and the serial loop gave different metrics")
            timed[workers] = statistics.median(runs[1:])
            print(
                f"dask {workers} worker{'s' if workers > 1 else ' '}:   {timed[workers]:7.2f}s tasks, "
                f"warm (median of {len(runs) - 1}); cold run {runs[0]:.2f}s (imports and numba "
                f"compilation in each worker); cluster start {start:.1f}s"
            )
        print(
            f"ratios: serial / 1 worker = {s / timed[1]:.2f}, serial / 2 workers = "
            f"{s / timed[2]:.2f}, 1 worker / 2 workers = {timed[1] / timed[2]:.2f}"
        )


if __name__ == "__main__":
    main()
