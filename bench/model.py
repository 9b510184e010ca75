"""Model scoring: one-row latency of the compiled tree evaluator next to
``Booster.predict``, and batch rows/s, in one run.

Usage: python bench/model.py [--trees 100] [--leaves 31] [--features 8] [--repeat 5]

The reference is LightGBM's own ``Booster.predict`` on the same model and rows, measured
in the same runs (interleaved) with one thread like ours: one row per call (20,000 calls
ours, 500 LightGBM's per run) and a batch of 1,000,000 rows. The ratios
``Booster.predict / ours`` (time per row) are the figures to compare between machines.
"""

from __future__ import annotations

import argparse
import time

import lightgbm as lgb
import numpy as np
from common import begin, end, median, runs

from engine.signals.trees import CompiledTrees


def per_call_us(fn, rows: np.ndarray, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for k in range(n):
        fn(rows[k % rows.shape[0] : k % rows.shape[0] + 1])
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    started = begin(
        f"model: {args.trees} trees, {args.leaves} leaves, {args.features} features, "
        f"{args.repeat} runs"
    )
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, args.features))
    X[rng.uniform(size=X.shape) < 0.05] = np.nan
    y = (
        np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) + rng.normal(0, 1, X.shape[0]) > 0
    ).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": args.leaves,
        "min_data_in_leaf": 5,
        "verbose": -1,
        "seed": 1,
    }
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=args.trees)
    trees = CompiledTrees.from_text(booster.model_to_string())
    Xq = rng.normal(size=(1000, args.features))
    assert np.max(np.abs(trees.predict(Xq) - booster.predict(Xq))) < 1e-9
    trees.predict(Xq[:1])
    big = rng.normal(size=(1_000_000, args.features))

    def lgb_one(row: np.ndarray) -> np.ndarray:
        return booster.predict(row, num_threads=1)

    ours, theirs, batch, lgb_batch = [], [], [], []
    for _ in range(args.repeat):
        ours.append(per_call_us(trees.predict, Xq, 20_000))
        theirs.append(per_call_us(lgb_one, Xq, 500))
        t0 = time.perf_counter()
        trees.predict(big)
        batch.append(big.shape[0] / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        booster.predict(big, num_threads=1)
        lgb_batch.append(big.shape[0] / (time.perf_counter() - t0))
    print(f"model: {trees.n_trees} trees, {args.leaves} leaves, {args.features} features "
          "(binary, probability)")  # fmt: skip
    print(f"one row, compiled evaluator:          {runs(ours, '.2f')} us")
    print(f"one row, Booster.predict (1 thread):  {runs(theirs, '.1f')} us")
    print(f"batch, compiled evaluator (1 thread): {runs(batch)} rows/s")
    print(f"batch, Booster.predict (1 thread):    {runs(lgb_batch)} rows/s")
    print(f"ratios (medians): one row, Booster.predict / ours = "
          f"{median(theirs) / median(ours):.1f}; batch, ours / Booster.predict = "
          f"{median(batch) / median(lgb_batch):.2f}")  # fmt: skip
    end(started)


if __name__ == "__main__":
    main()
