"""Per-row scoring of every family of the model ladder in the engine, against each
runtime's own one-row call, in one run.

Usage: python bench/models.py [--repeat 5] [--calls 5000] [--features 7]

Each family is fitted here on generated rows (``--features`` columns, a non-linear "up"
label) and served the way the engine serves it: ``LinearModel`` (linear, logistic: numba),
``LightGBMModel`` (a single tree, a random forest, gbdt: the compiled trees), ``OnnxModel``
(SVM, a 2x32 MLP: ONNX Runtime behind the engine's checks). "In the engine" is the
model's ``predict`` on one ``float64[1, k]`` row, the call the loop makes when a batch
holds one tick.

The reference is the runtime's own one-row call on the same row, timed in the same runs
(``--repeat`` runs of ``--calls`` calls each, engine and runtime alternating in chunks
of 250 calls, medians of the runs): scikit-learn's
``predict`` / ``predict_proba`` for linear and logistic; LightGBM's ``Booster.predict``
(one thread) for the trees; ONNX Runtime's ``InferenceSession.run`` on float32 (one
intra-op thread, as the engine's session) for SVM and MLP, with scikit-learn's
``predict_proba`` beside it. The ratio engine / runtime (time per row; below 1: the engine
is faster) is the figure to compare between machines; the goal is at most 1.5 for every
family and at most 50 us per row for the 2x32 MLP.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
from common import begin, end, median
from skl2onnx import to_onnx
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from engine.signals.lightgbm_model import LightGBMModel
from engine.signals.linear import LinearModel, LinearParams
from engine.signals.manifest import LabelSpec, Manifest, TimeRange, sha256_file, write_manifest
from engine.signals.onnx_model import OnnxModel, session_options

Score = Callable[[np.ndarray], Any]


def per_row_us(fn: Score, rows: np.ndarray, calls: int) -> float:
    n = rows.shape[0]
    t0 = time.perf_counter()
    for c in range(calls):
        fn(rows[c % n : c % n + 1])
    return (time.perf_counter() - t0) / calls * 1e6


def data(k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    raw = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] - 0.3 * np.abs(X[:, 3]) + rng.normal(0, 1, n)
    return X, (raw > 0).astype(np.int64)


def lightgbm_folder(root: Path, name: str, booster: lgb.Booster, names: list[str]) -> Path:
    folder = root / name
    folder.mkdir()
    booster.save_model(str(folder / "model.txt"))
    span = TimeRange(start_ns=0, end_ns=1)
    write_manifest(folder, Manifest(name=name, kind="lightgbm", model_file="model.txt",
                                    model_sha256=sha256_file(folder / "model.txt"),
                                    output="probability", feature_names=names,
                                    feature_fingerprint="bench", feature_specs=[],
                                    label=LabelSpec(), train_range=span))  # fmt: skip
    return folder


def onnx_folder(root: Path, name: str, graph: bytes, names: list[str]) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "model.onnx").write_bytes(graph)
    from engine.signals.manifest import OnnxSpec

    spec = OnnxSpec(input="X", output="probabilities", column=1, producer="bench")
    span = TimeRange(start_ns=0, end_ns=1)
    write_manifest(folder, Manifest(name=name, kind="onnx", model_file="model.onnx",
                                    model_sha256=sha256_file(folder / "model.onnx"),
                                    output="probability", feature_names=names,
                                    feature_fingerprint="bench", feature_specs=[],
                                    label=LabelSpec(), train_range=span, onnx=spec))  # fmt: skip
    return folder


def build(k: int, root: Path) -> list[tuple[str, Score, str, Score, list[tuple[str, Score]]]]:
    """(family, engine's predict, runtime name, runtime's one-row call, other references)."""
    names = [f"f{j}" for j in range(k)]
    X, y = data(k, 20_000)
    out: list[tuple[str, Score, str, Score, list[tuple[str, Score]]]] = []

    lin = LinearRegression().fit(X, y.astype(np.float64))
    ours = LinearModel("linear", LinearParams(features=names, weights=lin.coef_.tolist(),
                                              bias=float(lin.intercept_)))  # fmt: skip
    out.append(("linear", ours.predict, "sklearn predict", lin.predict, []))

    logit = LogisticRegression().fit(X, y)
    ours = LinearModel("logistic", LinearParams(features=names, weights=logit.coef_[0].tolist(),
                                                bias=float(logit.intercept_[0]), link="logistic"))  # fmt: skip
    out.append(("logistic", ours.predict, "sklearn predict_proba", logit.predict_proba, []))

    base = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1}
    for family, params, rounds in [
        ("tree", {"num_leaves": 31, "min_data_in_leaf": 20}, 1),
        ("rf", {"boosting": "rf", "num_leaves": 31, "bagging_fraction": 0.632,
                "bagging_freq": 1, "feature_fraction": 0.8}, 100),
        ("gbdt", {"num_leaves": 31, "learning_rate": 0.05}, 100),
    ]:  # fmt: skip
        booster = lgb.train(
            {**base, **params}, lgb.Dataset(X, y, feature_name=names), num_boost_round=rounds
        )
        model = LightGBMModel.load(lightgbm_folder(root, family, booster, names))
        probe = X[:500]
        assert np.max(np.abs(model.predict(probe) - booster.predict(probe))) < 1e-9, family
        out.append((family, model.predict, "LightGBM Booster.predict", booster.predict, []))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        svm = make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(
            X[:3000], y[:3000]
        )
        mlp = make_pipeline(
            StandardScaler(), MLPClassifier((32, 32), max_iter=100, random_state=0)
        ).fit(X, y)
        for family, pipe in [("svm", svm), ("mlp 2x32", mlp)]:
            graph = to_onnx(pipe, X[:1].astype(np.float32), options={"zipmap": False},
                            target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()  # fmt: skip
            model = OnnxModel.load(onnx_folder(root, family.split()[0], graph, names))
            session = ort.InferenceSession(
                graph, session_options(), providers=["CPUExecutionProvider"]
            )

            def ort_run(row: np.ndarray, session: ort.InferenceSession = session) -> Any:
                return session.run(["probabilities"], {"X": row.astype(np.float32)})

            probe = X[:500]
            assert np.max(np.abs(model.predict(probe) - pipe.predict_proba(probe)[:, 1])) < 1e-4, (
                family
            )
            out.append((family, model.predict, "ONNX Runtime run", ort_run,
                        [("sklearn predict_proba", pipe.predict_proba)]))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--features", type=int, default=7)
    args = ap.parse_args()
    started = begin(f"models: per-row scoring, {args.features} features, {args.repeat} runs x "
                    f"{args.calls} one-row calls each (interleaved)")  # fmt: skip
    rows = data(args.features, 1000, seed=9)[0]
    with tempfile.TemporaryDirectory() as tmp:
        families = build(args.features, Path(tmp))
        for _, ours, _, ref, others in families:  # warm up: numba compiles, ORT allocates
            for fn in (ours, ref, *(f for _, f in others)):
                per_row_us(fn, rows, 200)
        times: dict[str, list[list[float]]] = {f[0]: [[], [], []] for f in families}
        for _ in range(args.repeat):
            for family, ours, _, ref, others in families:
                # alternating chunks of 250 calls: a shared machine's load falls on both alike
                chunks = max(args.calls // 250, 1)
                pair = [0.0, 0.0]
                for _ in range(chunks):
                    pair[0] += per_row_us(ours, rows, 250) / chunks
                    pair[1] += per_row_us(ref, rows, 250) / chunks
                times[family][0].append(pair[0])
                times[family][1].append(pair[1])
                for _, fn in others:
                    times[family][2].append(per_row_us(fn, rows, 250))
    print(
        f"{'family':<10} {'engine us/row':>14} {'runtime us/row':>15}  {'ratio':>6}  runtime (other reference)"
    )
    worst = 0.0
    for family, _, ref_name, _, others in families:
        e, r = median(times[family][0]), median(times[family][1])
        worst = max(worst, e / r)
        extra = f"; {others[0][0]} {median(times[family][2]):.1f} us" if others else ""
        print(f"{family:<10} {e:>14.2f} {r:>15.2f}  {e / r:>6.2f}  {ref_name}{extra}")
    mlp = median(times["mlp 2x32"][0])
    print(f"worst ratio engine / runtime: {worst:.2f} (goal <= 1.5); 2x32 MLP in the engine "
          f"{mlp:.1f} us per row (goal <= 50)")  # fmt: skip
    end(started)


if __name__ == "__main__":
    main()
