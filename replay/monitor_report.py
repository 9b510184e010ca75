"""The model monitor's part of a run folder: ``monitor.json`` (every figure, their
definitions and the history at each check) and ``monitor.png`` (IC and hit ratio over
time, PSI of each series against its calibrated threshold, calibration)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from engine.monitor import ModelMonitor

DEFINITIONS = {
    "sampling": "the first quote of each instrument in every sample_interval whose features "
    "and score are all defined (training's rows)",
    "realized": "log mid return from the last quote at or before t to the first quote at or "
    "after t + horizon (training's label); a forward quote later than t + horizon + "
    "label_tolerance drops the prediction (late_labels)",
    "ic": "Spearman rank correlation of score and realized return over the last `window` "
    "scored predictions",
    "hit_ratio": "share of the window's predictions outside the label's dead zone whose "
    "direction (score >= 0.5 for probabilities, >= 0 otherwise) matches the realized sign "
    "(training's out-of-sample accuracy)",
    "brier": "mean (probability - outcome)^2, outcome 1 for an up move (probability models)",
    "ece": "expected calibration error: sum over score buckets (edges: the training score's "
    "quantiles) of rows share x |mean probability - up frequency|",
    "psi": "sum over the training quantile bins of (w - r) ln(w / r), w and r the window's and "
    "training's bin shares floored at 1e-4, over the last drift_window samples",
    "threshold": "calibrated PSI threshold: on windows of drift_window consecutive training "
    "rows, at most false_alarm_rate of them exceed their threshold on any series",
    "share_of_windows_over": "share of this run's full drift windows (one per sample) above "
    "the calibrated thresholds on any series, and above the conventional 0.1 and 0.25",
    "round_trip": "per instrument, flat to flat; a flip closes one and opens the next, its "
    "quantity and fee split pro rata; PnL net of fees",
    "gaps": "two consecutive ticks of one instrument further apart than gap",
    "stale_quotes": "trades printed while the instrument's last quote was older than "
    "stale_quote_age",
    "delayed_quotes": "quotes received more than stale_quote_age after their venue time",
}


def monitor_document(monitor: ModelMonitor) -> dict[str, Any]:
    """What ``monitor.json`` holds: the snapshot, the history and the definitions."""
    return {**monitor.snapshot(), "history": monitor.history(), "definitions": DEFINITIONS}


def write_monitor_report(monitor: ModelMonitor, out_dir: str | Path) -> list[Path]:
    """Write ``monitor.json`` and ``monitor.png`` into ``out_dir``; returns their paths.
    Same run, same bytes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = monitor_document(monitor)
    path = out / "monitor.json"
    path.write_text(json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n")
    png = out / "monitor.png"
    png.write_bytes(_plot(doc))
    return [path, png]


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _plot(doc: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    perf = doc["history"]["performance"]
    t0 = perf[0]["ts"] if perf else 0
    ax = axes[0]
    if perf:
        minutes = [(p["ts"] - t0) / 60e9 for p in perf]
        ax.plot(minutes, [_nan(p["ic"]) for p in perf], label="IC", color="#1f5fa8")
        ax.plot(minutes, [_nan(p["hit_ratio"]) for p in perf], label="hit ratio", color="#27ae60")
    oos_ic = doc["training"].get("oos_ic")
    if oos_ic is not None:
        ax.axhline(oos_ic, color="#1f5fa8", ls=":", label="training IC (out of sample)")
    ax.axhline(0.0, color="#888", lw=0.5)
    ax.set_title(f"rolling figures over the last {doc['window']} scored predictions")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=7)
    ax = axes[1]
    drift = doc["history"]["drift"]
    series = doc["drift"].get("series", {})
    if drift:
        d0 = drift[0]["ts"]
        minutes = [(d["ts"] - d0) / 60e9 for d in drift]
        for k, name in enumerate(series):
            ratio = [
                d["psi"][name] / series[name]["threshold"]
                if series[name]["threshold"]
                else float("nan")
                for d in drift
            ]
            ax.plot(minutes, ratio, label=name, color=plt.get_cmap("tab10")(k % 10), lw=0.8)
        ax.axhline(1.0, color="#c0392b", ls="--", label="calibrated threshold")
    ax.set_title("PSI / calibrated threshold, per series")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=7)
    ax = axes[2]
    buckets = [b for b in doc["performance"]["calibration"] if b["rows"]]
    if buckets:
        ax.plot([b["mean_score"] for b in buckets], [b["realized"] for b in buckets], "o-",
                color="#1f5fa8")  # fmt: skip
        if doc["output"] == "probability":
            lo = min(b["mean_score"] for b in buckets)
            hi = max(b["mean_score"] for b in buckets)
            ax.plot([lo, hi], [lo, hi], color="#888", ls=":", label="perfect calibration")
            ax.legend(fontsize=7)
    ax.set_title(f"calibration ({doc['performance']['calibration_realized']})")
    ax.set_xlabel("mean score in bucket")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x
