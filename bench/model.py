"""Model scoring: one-row latency of the compiled tree evaluator next to
``Booster.predict``, and batch rows/s, in one run.

Usage: python bench/model.py [--trees 100] [--leaves 31] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightgbm as lgb
import numpy as np
from replay_throughput import machine

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
    ours, theirs, batch = [], [], []
    for _ in range(args.repeat):
        ours.append(per_call_us(trees.predict, Xq, 20_000))
        theirs.append(per_call_us(booster.predict, Xq, 500))
        big = rng.normal(size=(1_000_000, args.features))
        t0 = time.perf_counter()
        trees.predict(big)
        batch.append(big.shape[0] / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    booster.predict(big, num_threads=1)
    lgb_batch = big.shape[0] / (time.perf_counter() - t0)
    print(
        f"model: {trees.n_trees} trees, {args.leaves} leaves, {args.features} features (binary, probability)"
    )
    print(
        f"one row, compiled evaluator: median {statistics.median(ours):.2f} us (runs {', '.join(f'{v:.2f}' for v in ours)})"
    )
    print(f"one row, Booster.predict:    median {statistics.median(theirs):.1f} us "
          f"({statistics.median(theirs) / statistics.median(ours):.0f}x slower)")  # fmt: skip
    print(f"batch, compiled evaluator (1 thread): median {statistics.median(batch):,.0f} rows/s; "
          f"Booster.predict 1 thread: {lgb_batch:,.0f} rows/s")  # fmt: skip
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
