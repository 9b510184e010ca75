"""Walk-forward training folds/s: serial (``tradeloop train``'s default) vs the process pool
vs a Dask LocalCluster, 2 workers each, on the same folds in one run.

Usage: cd bench && ../.venv/bin/python train_folds.py [--hours 2] [--symbols 2] [--folds 4]
       [--workers 2] [--repeat 3]

Generates the sample, builds the dataset (features and labels) and the purged folds once,
with the bundled ML config (``[train]`` defaults: LightGBM, early stopping, the logistic
baseline per fold). Then it runs the folds' work, a fold being its LightGBM fit and test
metrics and the logistic baseline's fit and scores:

- serial: ``walk_forward`` for the model, then for the baseline, in this process (what
  ``tradeloop train`` does without ``--workers``);
- process pool: ``walk_forward_on_executor`` with ``workers``, each run a fresh pool (the
  forkserver's imports on the first run, a fold's arrays pickled to its worker);
- Dask LocalCluster: the same on a cluster of ``workers`` processes; the matrix is
  scattered once per run; the first run's time includes the cluster's start, later runs
  reuse the warm workers.

Folds/s is folds over wall time; the ratio is the variant's folds/s over the serial's.
Every variant's fold reports and out-of-sample scores must be bit-identical to serial's.
The dataset build and the final refit (both in the parent whatever the executor) are
timed apart, to say what share of a whole ``tradeloop train`` the executor can speed up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path

import msgspec
import numpy as np
from common import begin, end, median, runs, seconds

from engine.config import config_from_dict
from replay.files.sample_data import SYMBOLS, generate
from replay.research.dataset import build_dataset
from replay.research.sweep.executor import dask_client
from replay.research.training.fit import _fit
from replay.research.training.folds import _fit_rows, usable_rows, walk_forward_splits
from replay.research.training.run import final_iterations
from replay.research.training.walk_forward import (
    WalkForward,
    _fold_task,
    walk_forward,
    walk_forward_on_executor,
)
from replay.research.training.worker import run_fold


def _bits(wf: WalkForward) -> bytes:
    """Fold reports and scores as bytes: equal only if bit-identical."""
    baseline = wf.baseline_score.tobytes() if wf.baseline_score is not None else b""
    return msgspec.json.encode(wf.folds) + wf.score.tobytes() + baseline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--symbols", type=int, default=2)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per variant (median)")
    args = ap.parse_args()
    started = begin("walk-forward folds: serial vs process pool vs Dask LocalCluster")
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = [
        {"symbol": s.symbol, "venue": "SIM", "tick_size": s.tick_size, "lot_size": s.lot_size}
        for s in SYMBOLS[: args.symbols]
    ]
    data["train"]["folds"] = args.folds
    cfg = config_from_dict(data)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp), symbols=args.symbols, hours=args.hours)
        t1 = time.perf_counter()
        ds = build_dataset(cfg, tmp, progress=False)
        build_s = time.perf_counter() - t1
    splits, skipped = walk_forward_splits(cfg, ds)
    n = len(splits)
    print(
        f"sample {args.hours} h x {args.symbols} symbols: {len(ds):,} rows x "
        f"{ds.X.shape[1]} features, {n} folds ({len(skipped)} skipped), training rows per "
        f"fold {', '.join(f'{s.train.shape[0]:,}' for s in splits)}; generated in "
        f"{t1 - t0:.1f}s, dataset built in {build_s:.1f}s (in the parent, every variant)"
    )

    serial_runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        folds, score, fwd = walk_forward(cfg, ds, "lightgbm", splits, progress=False)
        _, b_score, _ = walk_forward(cfg, ds, "logistic", splits, progress=False)
        serial_runs.append(time.perf_counter() - t0)
    reference = _bits(WalkForward(folds, score, fwd, b_score))
    serial = median(serial_runs)
    print(f"serial:                   {n / serial:6.2f} folds/s  {runs(serial_runs, '.2f')} s")

    # each fold's own time in this process: the bound on N workers is the longest worker's
    # share when folds go longest first (what walk_forward_on_executor does)
    target = (ds.forward_return > 0).astype(np.float64)
    fold_s = {}
    for s in splits:
        task = _fold_task(cfg, ds, s, ("lightgbm", "logistic"), target, ship=True)
        fold_s[s.fold] = seconds(lambda task=task: run_fold(task))
    loads = [0.0] * args.workers
    rows = {s.fold: s.train.shape[0] for s in splits}
    for fold in sorted(fold_s, key=lambda f: -rows[f]):
        loads[loads.index(min(loads))] += fold_s[fold]
    bound = sum(fold_s.values()) / max(loads)
    print(
        f"folds one by one: {', '.join(f'{v:.2f}' for v in fold_s.values())} s; "
        f"{args.workers} workers at that speed, longest first: at most {bound:.2f}x serial"
    )

    pool_runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        wf = walk_forward_on_executor(cfg, ds, splits, workers=args.workers, progress=False)
        pool_runs.append(time.perf_counter() - t0)
        if _bits(wf) != reference:
            raise AssertionError("the process pool and the serial path differ")
    pool = median(pool_runs)
    print(
        f"process pool, {args.workers} workers: {n / pool:6.2f} folds/s  {runs(pool_runs, '.2f')} s "
        "(each a fresh pool; the first also starts the forkserver)"
    )

    t0 = time.perf_counter()
    with dask_client(workers=args.workers) as client:
        client.wait_for_workers(args.workers)
        start = time.perf_counter() - t0
        dask_runs = []
        for _ in range(args.repeat + 1):
            t0 = time.perf_counter()
            wf = walk_forward_on_executor(cfg, ds, splits, client=client, progress=False)
            dask_runs.append(time.perf_counter() - t0)
            if _bits(wf) != reference:
                raise AssertionError("the LocalCluster and the serial path differ")
    cold = start + dask_runs[0]
    warm = median(dask_runs[1:])
    print(
        f"LocalCluster, {args.workers} workers: {n / cold:6.2f} folds/s  end to end (cluster "
        f"start {start:.1f}s + first run {dask_runs[0]:.2f}s)"
    )
    print(
        f"LocalCluster, warm:       {n / warm:6.2f} folds/s  {runs(dask_runs[1:], '.2f')} s "
        "(workers up)"
    )
    print(
        f"ratio to serial (folds/s): process pool {serial / pool:.2f}, LocalCluster end to end "
        f"{serial / cold:.2f}, warm {serial / warm:.2f}; bound {bound:.2f}"
    )

    fit_rows = _fit_rows(cfg, ds, usable_rows(ds))
    t0 = time.perf_counter()
    _fit(cfg, ds, "lightgbm", fit_rows, None, final_iterations(folds))
    refit_s = time.perf_counter() - t0
    share = serial / (build_s + serial + refit_s)
    print(
        f"in the parent whatever the executor: dataset {build_s:.2f}s, final refit "
        f"{refit_s:.2f}s; the folds are {share:.0%} of the three serially"
    )
    assert np.isfinite(score).all()
    end(started)


if __name__ == "__main__":
    main()
