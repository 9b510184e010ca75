"""Sweep trials/s: the local process pool (the default) vs a 2-worker Dask LocalCluster,
with a serial loop as reference, in one run.

Usage: python bench/sweep.py [--hours 2] [--folds 2] [--workers 2] [--repeat 2]

Generates the sample (3 symbols), plans a 4 x 3 grid of the EMA-cross baseline (fast EMA
span x notional) over the bundled config and splits the data into ``--folds`` blocks,
once. Then it runs the same trials (12 combinations x folds blocks) with:

- serial: ``evaluate`` in a loop in this process (warm: numba compiled beforehand);
- process pool: ``run_on_pool`` as ``tradeloop sweep`` runs it, each run a fresh pool
  (start, imports and numba cache loads in each worker included: what a user pays);
- Dask LocalCluster: ``run_on_dask`` on a cluster of the same size; the first run's
  time includes the cluster's start, later runs reuse the warm workers.

Trials/s is trials over wall time. "End to end" includes start-up (what one
``tradeloop sweep`` pays); "steady" leaves it out: for the pool, the extra trials of a run
three times as long; for the cluster, runs on workers already up. The ratios are process
pool / LocalCluster in trials/s. Every variant's metrics must be bit-identical to the
serial loop's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from replay_throughput import machine

from replay.cli import _default_config_path
from replay.files.sample_data import generate
from replay.research.sweep.executor import dask_client, run_on_dask, run_on_pool
from replay.research.sweep.plan import data_fingerprint, plan_sweep, split_blocks
from replay.research.sweep.trial import SweepTask, TaskOutcome, evaluate, make_tasks

GRID = '"features[1].span" = [100, 200, 400, 800]\n"strategy.params.notional" = [5000.0, 10000.0, 20000.0]\n'


def _bits(outcomes: list[TaskOutcome]) -> list[tuple[str, dict[str, str], bytes]]:
    """Outcomes compared bit for bit (NaN equal to NaN), in trial order."""
    return [
        (o.trial_id, {k: repr(v) for k, v in o.metrics.items()}, o.returns.tobytes())
        for o in sorted(outcomes, key=lambda o: o.trial_id)
    ]


def _collect(run: object) -> tuple[list[TaskOutcome], float]:
    got: list[TaskOutcome] = []

    def done(task: SweepTask, outcome: TaskOutcome) -> None:
        if outcome.failed:
            raise AssertionError(f"trial {task.trial_id} failed: {outcome.error}")
        got.append(outcome)

    t0 = time.perf_counter()
    run(done)  # type: ignore[operator]
    return got, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per variant (median)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root / "data", symbols=3, hours=args.hours)
        (root / "grid.toml").write_text(GRID)
        plan = plan_sweep(_default_config_path(), root / "grid.toml")
        blocks = split_blocks(root / "data", args.folds, root / "blocks")
        tasks = make_tasks(plan, blocks, data_fingerprint(root / "data"))
        n = len(tasks)
        print(
            f"sample {args.hours} h x 3 symbols, {len(plan.combinations)} combinations x "
            f"{len(blocks)} blocks = {n} trials; prepared in {time.perf_counter() - t0:.1f}s"
        )

        evaluate(tasks[0])  # this process's numba compilation, not the loop's
        serial_runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            reference = [evaluate(t) for t in tasks]
            serial_runs.append(time.perf_counter() - t0)
        serial = statistics.median(serial_runs)
        ticks = sum(int(o.metrics["ticks"]) for o in reference)
        print(
            f"serial loop:            {serial:6.2f}s  {n / serial:5.2f} trials/s  warm, median "
            f"of {len(serial_runs)} ({ticks / serial:,.0f} ticks/s)"
        )

        pool_runs = []
        for _ in range(args.repeat):
            got, took = _collect(lambda done: run_on_pool(tasks, args.workers, done))
            if _bits(got) != _bits(reference):
                raise AssertionError("the process pool and the serial loop differ")
            pool_runs.append(took)
        pool = statistics.median(pool_runs)
        print(
            f"process pool, {args.workers} workers: {pool:6.2f}s  {n / pool:5.2f} trials/s  end to "
            f"end, median of {len(pool_runs)} (each a fresh pool: start and imports included)"
        )

        # steady state: the extra trials of a run three times as long, start-up cancelled out
        triple, took3 = _collect(
            lambda done: run_on_pool([*tasks, *tasks, *tasks], args.workers, done)
        )
        if len(triple) != 3 * n:
            raise AssertionError("the tripled pool run lost trials")
        marginal = (took3 - pool) / (2 * n)
        print(
            f"process pool, steady:   {marginal * n:6.2f}s  {1 / marginal:5.2f} trials/s  the "
            f"{2 * n} extra trials of a {3 * n}-trial run ({took3:.2f}s)"
        )

        t0 = time.perf_counter()
        with dask_client(workers=args.workers) as client:
            client.wait_for_workers(args.workers)
            start = time.perf_counter() - t0
            dask_runs = []
            for _ in range(args.repeat + 1):
                got, took = _collect(lambda done: run_on_dask(client, tasks, done))
                if _bits(got) != _bits(reference):
                    raise AssertionError("the LocalCluster and the serial loop differ")
                dask_runs.append(took)
        cold = start + dask_runs[0]
        warm = statistics.median(dask_runs[1:])
        print(
            f"LocalCluster, {args.workers} workers: {cold:6.2f}s  {n / cold:5.2f} trials/s  end to "
            f"end (cluster start {start:.1f}s + first run {dask_runs[0]:.2f}s)"
        )
        print(
            f"LocalCluster, warm:     {warm:6.2f}s  {n / warm:5.2f} trials/s  workers already "
            f"up and compiled, median of {len(dask_runs) - 1}"
        )
        print(
            f"ratio process pool / LocalCluster (trials/s): end to end {cold / pool:.2f}, "
            f"steady {warm / (marginal * n):.2f}; pool / serial: end to end "
            f"{serial / pool:.2f}, steady {serial / (marginal * n):.2f}"
        )


if __name__ == "__main__":
    main()
