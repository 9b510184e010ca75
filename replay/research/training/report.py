"""The training report of a model folder: ``training_report.png`` (feature importance,
out-of-sample forward return by score decile) and ``training_report.html`` (that image,
the data and final fit in sentences, the warnings, every fold's ranges and metrics, the
out-of-sample figures). Times are ISO-8601 UTC to the millisecond."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine.signals.manifest import Estimate, Manifest
from replay.research.training.report_statistics import statistics_html

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def score_deciles(score: F64) -> I64:
    """Each score's decile 0-9 by rank, ties broken by row order: every decile holds a
    tenth of the rows (to one row) however many scores tie, where quantile edges of a
    score with few distinct values repeat and leave empty deciles."""
    n = score.shape[0]
    order = np.lexsort((np.arange(n), score))
    deciles = np.empty(n, np.int64)
    deciles[order] = np.arange(n) * 10 // max(n, 1)
    return deciles


def _write_report(folder: Path, m: Manifest, score: F64, fwd: F64) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(m.feature_importance)
    axes[0].barh(names, [m.feature_importance[n] for n in names], color="#1f5fa8")
    axes[0].set_title("feature importance (final model)")
    bucket = score_deciles(score)
    mean_bps = [
        float(np.mean(fwd[bucket == d]) * 1e4) if np.any(bucket == d) else 0.0 for d in range(10)
    ]
    distinct = np.unique(score).shape[0]
    axes[1].bar(range(1, 11), mean_bps, color=["#c0392b" if v < 0 else "#27ae60" for v in mean_bps])
    axes[1].set_title(
        f"out-of-sample forward return by score decile (IC {_fmt(m.metrics.get('oos_ic'))})"
    )
    axes[1].set_xlabel(
        "score decile (by rank; ties split in time order)"
        if distinct < score.shape[0]
        else "score decile"
    )
    axes[1].set_ylabel(f"mean forward return over {m.label.horizon_ns / 1e9:g}s, bps")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    png = buf.getvalue()
    (folder / "training_report.png").write_bytes(png)

    keys = ["accuracy", "precision", "recall", "auc", "ic"]
    counts = ["labeled_rows", "predicted_up_rows", "purged_rows", "min_data_in_leaf"]
    fold_rows = "".join(
        f"<tr><td>{f.fold}</td><td>{_span(f.train.start_ns, f.train.end_ns)}</td>"
        f"<td>{_span(f.test.start_ns, f.test.end_ns)}</td>"
        f"<td>{f.train_rows:,}</td><td>{f.test_rows:,}</td><td>{f.best_iteration}</td>"
        + "".join(f"<td>{_fmt(f.metrics.get(k))}{_fold_estimate(m, f.fold, k)}</td>" for k in keys)
        + "".join(f"<td>{_count(f.metrics.get(k))}</td>" for k in counts)
        + "</tr>"
        for f in m.folds
    )
    overall = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td>{_estimate_cells(_overall_estimate(m, k))}</tr>"
        for k, v in m.metrics.items()
        if k.startswith(("oos_", "baseline_"))
    )
    data = f"<p>{data_sentences(m)}</p>"
    warn = "".join(f"<li><b>{html.escape(w)}</b></li>" for w in m.warnings) or "<li>none</li>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>training report {html.escape(m.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}</style></head><body>
<h1>Training report: {html.escape(m.name)} ({m.kind})</h1>
<p>label: {m.label.kind}, forward mid return over {m.label.horizon_ns / 1e9:g}s, dead zone {m.label.dead_zone_bps} bps;
features {", ".join(m.feature_names)} (fingerprint <code>{m.feature_fingerprint[:16]}</code>);
model sha256 <code>{m.model_sha256[:16]}</code></p>
<h2>Data and final fit</h2>{data}
<h2>Warnings</h2><ul>{warn}</ul>
{statistics_html(m)}
<img src="data:image/png;base64,{base64.b64encode(png).decode()}" style="width:100%">
<h2>Walk-forward folds (purged by label end, embargoed; times UTC)</h2><table><tr><th>fold</th>
<th>trained on</th><th>tested on</th><th>train rows</th><th>test rows</th><th>best iteration</th>{"".join(f"<th>{k}</th>" for k in keys + counts)}</tr>{fold_rows}</table>
<h2>Out-of-sample, all folds</h2><table><tr><th>metric</th><th>value</th><th>95 % interval</th>
<th>against chance</th></tr>{overall}</table>
<p>n/a: undefined on these rows (no labelled row, one class, no "up" prediction, or a constant score).
Each fold's metric is shown with its 95 % interval and its p-value against chance.</p>
</body></html>"""
    (folder / "training_report.html").write_text(page)


def iso_utc(ns: int) -> str:
    """ISO-8601 UTC to the millisecond (``2026-12-07T04:39:04.123Z``) of a time in ns."""
    t = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 1_000_000 % 1000:03d}Z"


def _span(start_ns: int, end_ns: int) -> str:
    return f"{iso_utc(start_ns)}<br>to {iso_utc(end_ns)}"


def _rows(v: float | None, one: str, many: str) -> str:
    """``1 row``, ``7,210 rows``, ``no rows`` (``n/a`` rows when unknown)."""
    if v is None:
        return f"n/a {many}"
    n = int(v)
    return f"no {many}" if n == 0 else (f"1 {one}" if n == 1 else f"{n:,} {many}")


def data_sentences(m: Manifest) -> str:
    """The data and the final fit in plain sentences, times in ISO-8601 UTC."""
    mx = m.metrics
    late = mx.get("data_late_label_rows")
    iterations = mx.get("final_iterations")
    family = m.family or m.kind
    parts = [
        f"The data gave {_rows(mx.get('data_rows'), 'sampled row', 'sampled rows')}; "
        f"{_count(mx.get('data_usable_rows'))} of them are usable (every feature and a label)"
        f" and {_rows(mx.get('data_unlabeled_rows'), 'row has', 'rows have')} every feature "
        "but no label.",
        f"{_rows(late, 'row was', 'rows were').capitalize()} dropped for a late label (the "
        f"forward quote more than {_seconds(mx.get('data_label_tolerance_ns'))} after "
        f"t + {m.label.horizon_ns / 1e9:g}s).",
        f"The final {html.escape(family)} model was refit on all "
        f"{_rows(mx.get('final_fit_rows'), 'fit row', 'fit rows')}, from "
        f"{iso_utc(m.train_range.start_ns)} to {iso_utc(m.train_range.end_ns)} (UTC)",
    ]
    if iterations:
        parts[-1] += (
            f", with {_count(iterations)} iterations (the median of the folds' early-stopped "
            "best, or the family's fixed count)"
        )
    if mx.get("final_min_data_in_leaf") is not None:
        parts[-1] += f" and min_data_in_leaf {_count(mx.get('final_min_data_in_leaf'))}"
    parts[-1] += "."
    return " ".join(parts)


def _fmt(v: float | None) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    return "n/a" if v is None or v != v else f"{v:.4f}"


def _count(v: float | None) -> str:
    return "n/a" if v is None else f"{int(v):,}"


def _seconds(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1e9:g}s"


def _overall_estimate(m: Manifest, key: str) -> Estimate | None:
    """The ``Estimate`` of a manifest metric (``oos_auc``, ``baseline_logistic_oos_ic``)."""
    st = m.statistics
    if st is None:
        return None
    if key.startswith("oos_"):
        return st.metrics.get(key.removeprefix("oos_"))
    if key.startswith("baseline_logistic_oos_"):
        for b in st.baselines:
            if b.kind == "logistic":
                return b.metrics.get(key.removeprefix("baseline_logistic_oos_"))
    return None


def _estimate_cells(e: Estimate | None) -> str:
    if e is None:
        return ""
    ci = "n/a" if e.low is None or e.high is None else f"{e.low:.4f} to {e.high:.4f}"
    chance = "" if e.chance is None else f"chance {e.chance:.4f}, "
    p = "p n/a" if e.p_value is None else f"p = {e.p_value:.3f}"
    return f"<td>{ci}</td><td>{chance}{p}</td>"


def _fold_estimate(m: Manifest, fold: int, key: str) -> str:
    st = m.statistics
    if st is None:
        return ""
    for f in st.folds:
        if f.fold == fold and key in f.metrics:
            e = f.metrics[key]
            if e.low is None or e.high is None:
                return ""
            p = "" if e.p_value is None else f", p {e.p_value:.3f}"
            return f"<br><small>{e.low:.3f} to {e.high:.3f}{p}</small>"
    return ""
