"""``tradeloop train``: walk-forward training with purging and an embargo, out-of-sample
metrics, and a model folder the engine can load (model file + manifest + report).

Split: the sampled rows' time span is cut into ``folds + 1`` equal blocks; fold k tests
on block k+1 and trains on everything before it (expanding window). A training row's
label looks ``horizon`` ahead, so rows whose label window reaches into the test block
are purged, and rows within ``embargo`` after an earlier test block are dropped. The last
``validation_fraction`` of each training window (purged the same way) drives LightGBM's
early stopping. The final model is fit the same way on every row.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import msgspec
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from engine.config import Config
from engine.errors import LeakageError, ModelError
from engine.features import FeatureSet
from engine.signals.manifest import (
    DataFile,
    FoldReport,
    LabelSpec,
    Manifest,
    TimeRange,
    sha256_file,
    write_manifest,
)
from replay.dataset import Dataset, ExtraColumn, build_dataset

F64 = npt.NDArray[np.float64]


# ---- metrics ---------------------------------------------------------------------------


def _ranks(x: F64) -> F64:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.shape[0])
    ranks[order] = np.arange(x.shape[0], dtype=np.float64)
    # average ranks over ties, so the statistics match the textbook definitions
    xs = x[order]
    start = 0
    for k in range(1, xs.shape[0] + 1):
        if k == xs.shape[0] or xs[k] != xs[start]:
            if k - start > 1:
                ranks[order[start:k]] = (start + k - 1) / 2.0
            start = k
    return ranks


def auc(y: npt.NDArray[np.int64], score: F64) -> float:
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(score)
    return float((r[pos].sum() - n_pos * (n_pos - 1) / 2.0) / (n_pos * n_neg))


def spearman(a: F64, b: F64) -> float:
    if a.shape[0] < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def classification_metrics(
    score: F64, fwd: F64, dead_zone: float, threshold: float
) -> dict[str, float]:
    """Accuracy, precision, recall, AUC on rows outside the dead zone; IC on all rows."""
    labeled = np.abs(fwd) > dead_zone
    y = (fwd[labeled] > 0).astype(np.int64)
    pred = (score[labeled] >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    return {
        "rows": float(score.shape[0]),
        "labeled_rows": float(y.shape[0]),
        "accuracy": float((pred == y).mean()) if y.shape[0] else float("nan"),
        "precision": tp / int(pred.sum()) if pred.sum() else float("nan"),
        "recall": tp / int(y.sum()) if y.sum() else float("nan"),
        "auc": auc(y, score[labeled]),
        "ic": spearman(score, fwd),
    }


# ---- models ----------------------------------------------------------------------------


def fit_logistic(
    X: F64, y: npt.NDArray[np.int64], l2: float = 1.0, iterations: int = 25
) -> tuple[F64, float]:
    """L2-regularised logistic regression by Newton steps on standardised inputs; returns
    weights and bias in the raw feature space."""
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    Z = np.column_stack([(X - mu) / sd, np.ones(X.shape[0])])
    w = np.zeros(Z.shape[1])
    reg = np.full(Z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(Z @ w)))
        grad = Z.T @ (p - y) + reg * w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    weights = w[:-1] / sd
    return weights, float(w[-1] - np.dot(weights, mu))


def _lgb_params(cfg: Config, objective: str) -> dict[str, Any]:
    t = cfg.train
    return {"objective": objective, "num_leaves": t.num_leaves, "learning_rate": t.learning_rate,
            "min_data_in_leaf": t.min_data_in_leaf, "feature_fraction": 0.9, "bagging_fraction": 0.8,
            "bagging_freq": 1, "seed": t.seed, "deterministic": True, "force_row_wise": True,
            "num_threads": 1, "verbose": -1}  # fmt: skip


@dataclass
class _Split:
    train: npt.NDArray[np.int64]
    valid: npt.NDArray[np.int64]


def _train_valid(
    idx: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], frac: float, horizon: int
) -> _Split:
    n_valid = max(1, int(idx.shape[0] * frac))
    valid = idx[-n_valid:]
    train = idx[:-n_valid]
    train = train[ts[train] + horizon < ts[valid[0]]]  # purge labels reaching into validation
    return _Split(train, valid)


class TrainedModel:
    def __init__(self, kind: str, booster: lgb.Booster | None = None,
                 linear: tuple[F64, float] | None = None, best_iteration: int = 0) -> None:  # fmt: skip
        self.kind = kind
        self.booster = booster
        self.linear = linear
        self.best_iteration = best_iteration

    def predict(self, X: F64) -> F64:
        if self.booster is not None:
            return np.asarray(self.booster.predict(X, num_iteration=self.best_iteration or None))
        assert self.linear is not None
        w, b = self.linear
        return 1.0 / (1.0 + np.exp(-(X @ w + b)))


def _fit(cfg: Config, ds: Dataset, split: _Split, kind: str) -> TrainedModel:
    t = cfg.train
    dz = t.dead_zone_bps * 1e-4
    classify = t.label == "classification"

    def rows(idx: npt.NDArray[np.int64]) -> tuple[F64, F64]:
        fwd = ds.forward_return[idx]
        use = idx[np.abs(fwd) > dz] if classify else idx
        target = (
            (ds.forward_return[use] > 0).astype(np.float64)
            if classify
            else ds.forward_return[use] * 1e4
        )
        return ds.X[use], target

    Xtr, ytr = rows(split.train)
    Xva, yva = rows(split.valid)
    if Xtr.shape[0] < 50 or Xva.shape[0] < 10:
        raise ModelError(f"too few training rows ({Xtr.shape[0]} train, {Xva.shape[0]} validation): "
                         "more data or a shorter sample_interval")  # fmt: skip
    if kind == "logistic":
        if not classify:
            raise ModelError("the logistic baseline needs label = 'classification'")
        return TrainedModel("logistic", linear=fit_logistic(Xtr, ytr.astype(np.int64)))
    objective = "binary" if classify else "regression"
    dtrain = lgb.Dataset(Xtr, ytr, feature_name=ds.feature_names, free_raw_data=False)
    dvalid = lgb.Dataset(Xva, yva, reference=dtrain)
    booster = lgb.train(_lgb_params(cfg, objective), dtrain, num_boost_round=t.max_rounds, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(t.early_stopping_rounds, verbose=False)])  # fmt: skip
    return TrainedModel(
        "lightgbm", booster=booster, best_iteration=int(booster.best_iteration or t.max_rounds)
    )


# ---- the pipeline ----------------------------------------------------------------------


@dataclass
class TrainResult:
    manifest: Manifest
    folder: Path
    oos_score: F64
    oos_forward: F64
    baseline_metrics: dict[str, float]


def walk_forward(cfg: Config, ds: Dataset, kind: str, progress: bool | None = None
                 ) -> tuple[list[FoldReport], F64, F64]:  # fmt: skip
    t = cfg.train
    usable = np.flatnonzero(~np.isnan(ds.X).any(axis=1) & ~np.isnan(ds.forward_return))
    ts = ds.ts
    horizon, embargo = t.horizon_ns, t.embargo_ns
    t0, t1 = int(ts[usable[0]]), int(ts[usable[-1]])
    edges = [t0 + (t1 - t0) * k // (t.folds + 1) for k in range(t.folds + 2)]
    edges[-1] = t1 + 1
    folds: list[FoldReport] = []
    scores, forwards = [], []
    dz = t.dead_zone_bps * 1e-4
    threshold = 0.5 if t.label == "classification" else 0.0
    for k in tqdm(range(t.folds), desc=f"walk-forward {kind}", disable=None if progress is None else not progress,
                  leave=False):  # fmt: skip
        test_start, test_end = edges[k + 1], edges[k + 2]
        in_train = usable[ts[usable] + horizon < test_start]
        for end in edges[2 : k + 1]:  # embargo after the end of every earlier test block
            in_train = in_train[~((ts[in_train] >= end) & (ts[in_train] < end + embargo))]
        test = usable[(ts[usable] >= test_start) & (ts[usable] < test_end)]
        if in_train.shape[0] < 100 or test.shape[0] < 10:
            continue
        split = _train_valid(in_train, ts, t.validation_fraction, horizon)
        model = _fit(cfg, ds, split, kind)
        score = model.predict(ds.X[test])
        metrics = classification_metrics(score, ds.forward_return[test], dz, threshold)
        scores.append(score)
        forwards.append(ds.forward_return[test])
        folds.append(FoldReport(
            fold=k, train=TimeRange(start_ns=int(ts[split.train[0]]), end_ns=int(ts[split.train[-1]])),
            validation=TimeRange(start_ns=int(ts[split.valid[0]]), end_ns=int(ts[split.valid[-1]])),
            test=TimeRange(start_ns=int(ts[test[0]]), end_ns=int(ts[test[-1]])),
            train_rows=int(split.train.shape[0]), test_rows=int(test.shape[0]),
            best_iteration=model.best_iteration, metrics=metrics,
        ))  # fmt: skip
    if not folds:
        raise ModelError(
            "no walk-forward fold had enough rows: more data, fewer folds or a shorter sample_interval"
        )
    return folds, np.concatenate(scores), np.concatenate(forwards)


def train(cfg: Config, data: str | Path, out: str | Path, *, extra_columns: dict[str, ExtraColumn] | None = None,
          allow_lookahead: bool = False, progress: bool | None = None) -> TrainResult:  # fmt: skip
    """Build the dataset, evaluate walk-forward, fit the final model, write the model folder.

    Raises:
        LeakageError: an extra column looks ahead (unless ``allow_lookahead``).
        ModelError: not enough data for the split.
    """
    t = cfg.train
    ds = build_dataset(cfg, data, extra_columns=extra_columns, progress=progress)
    if ds.lookahead and not allow_lookahead:
        raise LeakageError(str(data), f"columns {ds.lookahead} change when future data is removed: they look "
                                      "ahead and would score well in research and fail live")  # fmt: skip
    warnings = [
        f"look-ahead column {c!r} (audit failed): results are not achievable live"
        for c in ds.lookahead
    ]
    folds, oos_score, oos_fwd = walk_forward(cfg, ds, t.model, progress)
    dz = t.dead_zone_bps * 1e-4
    threshold = 0.5 if t.label == "classification" else 0.0
    overall = classification_metrics(oos_score, oos_fwd, dz, threshold)
    baseline: dict[str, float] = {}
    if t.model == "lightgbm" and t.label == "classification":
        _, b_score, b_fwd = walk_forward(cfg, ds, "logistic", progress)
        baseline = classification_metrics(b_score, b_fwd, dz, 0.5)
    if overall["auc"] > t.suspicious_auc:
        warnings.append(f"out-of-sample AUC {overall['auc']:.3f} > {t.suspicious_auc}: too good to be true for "
                        "market data; check for leakage")  # fmt: skip
    usable = np.flatnonzero(~np.isnan(ds.X).any(axis=1) & ~np.isnan(ds.forward_return))
    final = _fit(cfg, ds, _train_valid(usable, ds.ts, t.validation_fraction, t.horizon_ns), t.model)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    fs = FeatureSet(list(cfg.features))
    importance: dict[str, float] = {}
    if final.booster is not None:
        model_file = "model.txt"
        final.booster.save_model(str(folder / model_file), num_iteration=final.best_iteration)
        gain = final.booster.feature_importance(
            importance_type="gain", iteration=final.best_iteration
        )
        total = float(gain.sum()) or 1.0
        importance = {n: float(g) / total for n, g in zip(ds.feature_names, gain, strict=True)}
        output = "probability" if t.label == "classification" else "raw"
    else:
        assert final.linear is not None
        model_file = "linear.json"
        w, b = final.linear
        (folder / model_file).write_text(json.dumps({"features": ds.feature_names, "weights": w.tolist(),
                                                     "bias": b, "link": "logistic"}, indent=2) + "\n")  # fmt: skip
        scale = np.nanstd(ds.X[usable], axis=0)
        contrib = np.abs(w) * scale
        importance = {
            n: float(c / (contrib.sum() or 1.0))
            for n, c in zip(ds.feature_names, contrib, strict=True)
        }
        output = "probability"
    manifest = Manifest(
        name=folder.name, kind="lightgbm" if final.booster is not None else "linear", model_file=model_file,
        model_sha256=sha256_file(folder / model_file), output=output, feature_names=ds.feature_names,
        feature_fingerprint=fs.fingerprint, feature_specs=[msgspec.to_builtins(s) for s in cfg.features],
        label=LabelSpec(kind=t.label, horizon_ns=t.horizon_ns, dead_zone_bps=t.dead_zone_bps),
        train_range=TimeRange(start_ns=int(ds.ts[usable[0]]), end_ns=int(ds.ts[usable[-1]])),
        folds=folds, metrics={**{f"oos_{k}": v for k, v in overall.items()},
                              **{f"baseline_logistic_oos_{k}": v for k, v in baseline.items()}},
        feature_importance=importance,
        data_files=[DataFile(path=p.name, sha256=sha256_file(p), bytes=p.stat().st_size) for p in ds.files],
        library_versions={"lightgbm": lgb.__version__, "numpy": np.__version__, "python": platform.python_version(),
                          "tradeloop": _version()},
        warnings=warnings,
    )  # fmt: skip
    write_manifest(folder, manifest)
    _write_report(folder, manifest, oos_score, oos_fwd)
    return TrainResult(manifest, folder, oos_score, oos_fwd, baseline)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tradeloop")
    except PackageNotFoundError:
        return "unknown"


def _write_report(folder: Path, m: Manifest, score: F64, fwd: F64) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(m.feature_importance)
    axes[0].barh(names, [m.feature_importance[n] for n in names], color="#1f5fa8")
    axes[0].set_title("feature importance (final model)")
    deciles = np.quantile(score, np.linspace(0, 1, 11))
    bucket = np.clip(np.searchsorted(deciles, score, side="right") - 1, 0, 9)
    mean_bps = [
        float(np.mean(fwd[bucket == d]) * 1e4) if np.any(bucket == d) else 0.0 for d in range(10)
    ]
    axes[1].bar(range(1, 11), mean_bps, color=["#c0392b" if v < 0 else "#27ae60" for v in mean_bps])
    axes[1].set_title(
        f"out-of-sample forward return by score decile (IC {m.metrics.get('oos_ic', float('nan')):.3f})"
    )
    axes[1].set_xlabel("score decile")
    axes[1].set_ylabel(f"mean forward return over {m.label.horizon_ns / 1e9:g}s, bps")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    png = buf.getvalue()
    (folder / "training_report.png").write_bytes(png)

    def fmt(v: float) -> str:
        return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"

    keys = ["accuracy", "precision", "recall", "auc", "ic", "rows"]
    fold_rows = "".join(
        f"<tr><td>{f.fold}</td><td>{f.train_rows}</td><td>{f.test_rows}</td><td>{f.best_iteration}</td>"
        + "".join(f"<td>{fmt(f.metrics[k])}</td>" for k in keys[:-1])
        + "</tr>"
        for f in m.folds
    )
    overall = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{fmt(v)}</td></tr>" for k, v in m.metrics.items()
    )
    warn = "".join(f"<li><b>{html.escape(w)}</b></li>" for w in m.warnings) or "<li>none</li>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>training report {html.escape(m.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}</style></head><body>
<h1>Training report: {html.escape(m.name)} ({m.kind})</h1>
<p>label: {m.label.kind}, forward mid return over {m.label.horizon_ns / 1e9:g}s, dead zone {m.label.dead_zone_bps} bps;
features {", ".join(m.feature_names)} (fingerprint <code>{m.feature_fingerprint[:16]}</code>);
model sha256 <code>{m.model_sha256[:16]}</code></p>
<h2>Warnings</h2><ul>{warn}</ul>
<img src="data:image/png;base64,{base64.b64encode(png).decode()}" style="width:100%">
<h2>Walk-forward folds (purged, embargoed)</h2><table><tr><th>fold</th><th>train rows</th><th>test rows</th>
<th>best iteration</th>{"".join(f"<th>{k}</th>" for k in keys[:-1])}</tr>{fold_rows}</table>
<h2>Out-of-sample, all folds</h2><table>{overall}</table></body></html>"""
    (folder / "training_report.html").write_text(page)
