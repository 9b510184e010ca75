"""Per-signal explanation cost: TreeSHAP on one row with our numba explainer, next to
LightGBM's ``pred_contrib`` on one row and to scoring that row with the compiled evaluator.
Also the loop-side cost of handing the explanation to a worker thread (``submit`` only).

Usage: python bench/explain.py [--trees 100] [--leaves 31] [--features 8 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightgbm as lgb
import numpy as np
from replay_throughput import machine

from adapters.explanations import ExplanationJob, explain_line
from engine.signals.explain import TreeExplainer


def per_call_us(fn: Callable[[np.ndarray], Any], rows: np.ndarray, n: int) -> tuple[float, float]:
    # wall and process CPU time: the CPU figure is steadier on a shared machine
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(rows[i % rows.shape[0]])
    return (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6


def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def submit_us(pool: ThreadPoolExecutor, explainer: TreeExplainer, rows: np.ndarray, n: int) -> float:  # fmt: skip
    # what the loop pays to hand one row off; the work itself runs beside it (nogil kernel)
    total = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        future = pool.submit(explainer.explain, rows[i % rows.shape[0]])
        total += time.perf_counter() - t0
        future.result()
    return total / n * 1e6


def run(features: int, trees: int, leaves: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, features))
    X[rng.uniform(size=X.shape) < 0.05] = np.nan
    logit = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2])
    y = (logit + rng.normal(0, 1, X.shape[0]) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": leaves, "min_data_in_leaf": 5,
              "verbose": -1, "seed": 1, "num_threads": 1}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=trees)
    text = booster.model_to_string()
    explainer = TreeExplainer.from_text(text)
    compiled = explainer.trees
    Xq = rng.normal(size=(1000, features))
    Xq[rng.uniform(size=Xq.shape) < 0.05] = np.nan
    diff = np.max(np.abs(explainer.explain_rows(Xq) - booster.predict(Xq, pred_contrib=True)))
    assert diff <= 1e-9, diff
    explainer.explain(Xq[0])  # compiled (or loaded from numba's cache) before timing

    def lgb_contrib(row: np.ndarray) -> Any:
        return booster.predict(row.reshape(1, -1), pred_contrib=True, num_threads=1)

    def score(row: np.ndarray) -> Any:
        return compiled.predict(row.reshape(1, -1))

    names = tuple(f"f{j}" for j in range(features))

    def daemon_line(row: np.ndarray) -> Any:
        # what the daemon's worker does per signal: TreeSHAP, top 5, the raw score, JSON
        job = ExplanationJob(ts_event=1, instrument="X", model="m", version="v", score=0.5,
                             names=names, row=row)  # fmt: skip
        return explain_line(job, explainer)

    ours, theirs, scored, handoff, lines = [], [], [], [], []
    with ThreadPoolExecutor(1, thread_name_prefix="explain") as pool:
        for _ in range(repeat):
            ours.append(per_call_us(explainer.explain, Xq, 5_000))
            theirs.append(per_call_us(lgb_contrib, Xq, 500))
            scored.append(per_call_us(score, Xq, 20_000))
            handoff.append(submit_us(pool, explainer, Xq, 2_000))
            lines.append(per_call_us(daemon_line, Xq, 5_000))
    w_line, c_line = medians(lines)
    (w_ours, c_ours), (w_theirs, c_theirs), (w_score, c_score) = map(medians, (ours, theirs, scored))  # fmt: skip
    print(f"model: {compiled.n_trees} trees, {leaves} leaves, {features} features, binary; "
          f"max depth {explainer.max_depth}; max |ours - pred_contrib| = {diff:.1e}")  # fmt: skip
    print("  one row, median of runs (wall / CPU):")
    print(f"    TreeExplainer.explain:            {w_ours:8.1f} / {c_ours:8.1f} us")
    print(f"    Booster.predict(pred_contrib):    {w_theirs:8.1f} / {c_theirs:8.1f} us   "
          f"LightGBM / ours = {w_theirs / w_ours:.2f} / {c_theirs / c_ours:.2f}")  # fmt: skip
    print(f"    CompiledTrees.predict (scoring):  {w_score:8.2f} / {c_score:8.2f} us   "
          f"ours / scoring = {w_ours / w_score:.0f} / {c_ours / c_score:.0f}")  # fmt: skip
    print(f"    loop-side pool.submit(explain):   {statistics.median(handoff):8.1f} us wall")
    print(f"    daemon's explain_line (per signal): {w_line:6.1f} / {c_line:8.1f} us   "
          f"pred_contrib / ours = {w_theirs / w_line:.2f} / {c_theirs / c_line:.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--features", type=int, nargs="+", default=[8, 30])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    for k in args.features:
        run(k, args.trees, args.leaves, args.repeat)


if __name__ == "__main__":
    main()
