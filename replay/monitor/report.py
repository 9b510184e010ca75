"""The model monitor's part of a run folder: ``monitor.json`` (every figure, their
definitions and the history at each check) and ``monitor.png`` (IC and hit ratio over
time, PSI of each series against its calibrated threshold, calibration); and the
monitor page, ``monitor.html`` and ``monitor_page.png``, drawn from ``monitor.json`` with
the trading-state changes and promotions on one timeline (``tradeloop monitor-report``)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.monitor import ModelMonitor
from replay.monitor.charts import monitor_charts
from replay.pages.interactive import bokeh_script

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
    "psi": "sum over the training bins of (w - r) ln(w / r), w and r the window's and "
    "training's bin shares floored at 1e-4, over the last drift_window samples; each series "
    "on its scale first (spreads in whole ticks, prices as their distance from the "
    "sample's mid in ticks, returns as moves in ticks: not the price level) and binned "
    "by value where it takes at most reference_bins values, by quantile otherwise",
    "threshold": "calibrated PSI threshold: on held-out windows of drift_window consecutive "
    "training rows, at most false_alarm_rate of them exceed their threshold on any series; "
    "the stated bound counts the disjoint windows after a correction for their dependence, "
    "and every series' maximum when the thresholds are the maxima",
    "low_ic_threshold": "training's out-of-sample IC minus z(1 - false_alarm_rate) x the "
    "standard error of a window's IC minus training's, 1.06 (1 - IC^2)^2 / (predictions / L "
    "- 3) each, L = horizon / sample_interval predictions per label (overlapping labels "
    "counted); the rate is per window of unchanged data",
    "accuracy_threshold": "training's out-of-sample accuracy A minus z(1 - false_alarm_rate) "
    "x the standard error of a window's hit ratio minus training's, A (1 - A) / (labelled "
    "predictions / L) each (overlapping labels counted as for low_ic), at each window's own "
    "count of labelled predictions; the rate is per window of unchanged data",
    "losing_streak_length": "the shortest run of losing round trips whose chance within "
    "losing_streak_window round trips, each lost with probability 1 - the out-of-sample hit "
    "ratio (averaged over its standard error), is at most false_alarm_rate",
    "share_of_windows_over": "share of this run's full drift windows (one per sample) above "
    "the calibrated thresholds on any series, and above the conventional 0.1 and 0.25",
    "round_trip": "per instrument, flat to flat; a flip closes one and opens the next, its "
    "quantity and fee split pro rata; PnL net of fees",
    "gaps": "two consecutive ticks of one instrument further apart than gap",
    "stale_quotes": "trades printed while the instrument's last quote was older than "
    "stale_quote_age",
    "delayed_quotes": "quotes received more than stale_quote_age after their venue time",
}



def _legend(ax: Any) -> None:
    """A legend only where something is labelled: before the first full window a panel
    has nothing to name, and matplotlib warns on an empty legend."""
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=7)

def monitor_document(
    monitor: ModelMonitor, in_sample: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What ``monitor.json`` holds: the snapshot, the history and the definitions; with
    ``in_sample`` (``engine.signals.in_sample.InSample.to_dict``), the run's overlap with
    the model's training range, which the page states."""
    extra = {"in_sample": in_sample} if in_sample is not None else {}
    return {**monitor.snapshot(), **extra, "history": monitor.history(), "definitions": DEFINITIONS}


def write_monitor_report(
    monitor: ModelMonitor, out_dir: str | Path, *, in_sample: dict[str, Any] | None = None
) -> list[Path]:
    """Write ``monitor.json`` and ``monitor.png`` into ``out_dir``; returns their paths.
    Same run, same bytes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = monitor_document(monitor, in_sample)
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
    _legend(ax)
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
    _legend(ax)
    ax = axes[2]
    buckets = [b for b in doc["performance"]["calibration"] if b["rows"]]
    if buckets:
        ax.plot([b["mean_score"] for b in buckets], [b["realized"] for b in buckets], "o-",
                color="#1f5fa8")  # fmt: skip
        if doc["output"] == "probability":
            lo = min(b["mean_score"] for b in buckets)
            hi = max(b["mean_score"] for b in buckets)
            ax.plot([lo, hi], [lo, hi], color="#888", ls=":", label="perfect calibration")
            _legend(ax)
    ax.set_title(f"calibration ({doc['performance']['calibration_realized']})")
    ax.set_xlabel("mean score in bucket")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


def write_monitor_page(
    doc: dict[str, Any],
    out_dir: str | Path,
    *,
    states: list[dict[str, Any]] | None = None,
    promotions: list[dict[str, Any]] | None = None,
    title: str = "",
) -> list[Path]:
    """Write ``monitor.html`` (self-contained: the figure inlined) and ``monitor_page.png``
    into ``out_dir`` from a ``monitor.json`` document; returns their paths.

    Args:
        doc: what ``monitor_document`` returns (or ``monitor.json`` read back).
        states: trading-state changes, each with ``ts_event``, ``state`` and ``reason``.
        promotions: model promotions and rollbacks, each with ``ts_ns``, ``action``,
            ``alias``, ``version`` and ``reason``.
        title: the page's heading (what was monitored).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = _clean(doc)
    states = list(states or [])
    promotions = list(promotions or [])
    png = _plot_page(doc, states, promotions)
    png_path = out / "monitor_page.png"
    png_path.write_bytes(png)
    html_path = out / "monitor.html"
    html_path.write_text(_page_html(doc, states, promotions, png, title))
    return [html_path, png_path]


def _origin(doc: dict[str, Any], states: list[dict[str, Any]]) -> int:
    times = [p["ts"] for p in doc["history"]["performance"][:1]]
    times += [d["ts"] for d in doc["history"]["drift"][:1]]
    times += [a["ts"] for a in doc["alarms"]["events"]] + [s["ts_event"] for s in states]
    return min(times) if times else 0


def _plot_page(
    doc: dict[str, Any], states: list[dict[str, Any]], promotions: list[dict[str, Any]]
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = _origin(doc, states)
    fig, axes = plt.subplots(2, 2, figsize=(14, 8))
    ax = axes[0][0]
    perf = doc["history"]["performance"]
    if perf:
        minutes = [(p["ts"] - t0) / 60e9 for p in perf]
        ax.plot(minutes, [_nan(p["ic"]) for p in perf], label="IC", color="#1f5fa8")
        ax.plot(minutes, [_nan(p["hit_ratio"]) for p in perf], label="hit ratio", color="#27ae60")
    for key, color, name in (("oos_ic", "#1f5fa8", "IC"), ("oos_accuracy", "#27ae60", "accuracy")):
        value = doc["training"].get(key)
        if value is not None:
            ax.axhline(value, color=color, ls=":", label=f"training {name} (out of sample)")
    low_ic = doc["alarms"].get("calibration", {}).get("low_ic", {})
    if low_ic.get("threshold") is not None:
        ax.axhline(low_ic["threshold"], color="#c0392b", ls="--", label="low-IC threshold")
    ax.axhline(0.0, color="#888", lw=0.5)
    ax.set_title(f"rolling IC and hit ratio (last {doc['window']} scored predictions)")
    ax.set_xlabel("minutes")
    _legend(ax)
    ax = axes[0][1]
    buckets = [b for b in doc["performance"]["calibration"] if b["rows"]]
    if buckets:
        ax.plot([b["mean_score"] for b in buckets], [b["realized"] for b in buckets], "o-",
                color="#1f5fa8", label="last window")  # fmt: skip
        if doc["output"] == "probability":
            lo = min(b["mean_score"] for b in buckets)
            hi = max(b["mean_score"] for b in buckets)
            ax.plot([lo, hi], [lo, hi], color="#888", ls=":", label="perfect calibration")
        _legend(ax)
    ax.set_title(f"calibration ({doc['performance']['calibration_realized']})")
    ax.set_xlabel("mean score in bucket")
    ax = axes[1][0]
    drift = doc["history"]["drift"]
    series = doc["drift"].get("series", {})
    if drift:
        minutes = [(d["ts"] - t0) / 60e9 for d in drift]
        for k, name in enumerate(series):
            threshold = series[name]["threshold"]
            ratio = [_nan(d["psi"][name]) / threshold if threshold else math.nan for d in drift]
            ax.plot(minutes, ratio, label=name, color=plt.get_cmap("tab10")(k % 10), lw=0.8)
        ax.axhline(1.0, color="#c0392b", ls="--", label="calibrated threshold")
    ax.set_title("drift: PSI / calibrated threshold, per series")
    ax.set_xlabel("minutes")
    _legend(ax)
    ax = axes[1][1]
    rows = ["promotions", "trading state", *_KINDS]
    for a in doc["alarms"]["events"]:
        y = rows.index(a["kind"]) if a["kind"] in rows else len(rows) - 1
        ax.plot(
            (a["ts"] - t0) / 60e9, y, "v", color="#c0392b" if a["action"] != "notify" else "#e67e22"
        )
    for s in states:
        ax.plot((s["ts_event"] - t0) / 60e9, 1, "s", color="#8e44ad")
        ax.annotate(s["state"], ((s["ts_event"] - t0) / 60e9, 1), fontsize=7, rotation=30)
    for p in promotions:
        ax.plot((p["ts_ns"] - t0) / 60e9, 0, "^", color="#16a085")
    if perf or drift:  # the run's span, not just the events'
        ax.set_xlim(axes[0][0].get_xlim() if perf else axes[1][0].get_xlim())
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_title("alarms (red: acting, orange: notify), state changes, promotions")
    ax.set_xlabel("minutes")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


_KINDS = ("gap", "drift", "low_ic", "accuracy", "losing_streak")


def alarm_rates_text(alarms: dict[str, Any]) -> list[str]:
    """The low-IC, accuracy and losing-streak alarms in words: how each threshold was set
    and the false-alarm rate it states (``engine.monitor.alarms``), with the share of this
    run's checks below the IC and accuracy thresholds; nothing for a document from before
    they were stated."""
    cal = alarms.get("calibration")
    if not cal:
        return ["low IC and losing streak: no stated false-alarm rate in this monitor "
                "document (fixed thresholds; retrain and replay for calibrated ones)"]  # fmt: skip
    ic, streak = cal["low_ic"], cal["losing_streak"]
    lines = [f"low IC: {ic['note']}"]
    if ic.get("share_of_checks_below") is not None:
        lines[-1] += (
            f"; this run: IC below the threshold at {ic['share_of_checks_below']:.3g} of "
            f"{ic['checks']} checks (neighbouring checks share most of their window)"
        )
    acc = cal.get("accuracy")
    if acc is not None:
        lines.append(f"accuracy: {acc['note']}")
        if acc.get("share_of_checks_below") is not None:
            lines[-1] += (
                f"; this run: hit ratio below the threshold at "
                f"{acc['share_of_checks_below']:.3g} of {acc['checks']} checks"
            )
    lines.append(f"losing streak: {streak['note']}")
    return lines


def calibration_text(drift: dict[str, Any]) -> str:
    """How the drift thresholds were calibrated and the false-alarm bound they state, from
    the snapshot's ``drift`` part (``engine.monitor.drift``; the manifest's
    ``MonitorReference``): held-out time blocks state a bound per window; thresholds
    taken in sample (manifests from before) or a document that does not say state none."""
    method = drift.get("calibration_method")
    bound = drift.get("stated_false_alarm_bound")
    rate = drift.get("configured_false_alarm_rate")
    if method == "time_blocks" and bound is not None:
        text = (
            f"calibration: held-out time blocks, {drift.get('calibration_windows')} training "
            f"windows ({drift.get('independent_calibration_windows')} disjoint)"
        )
        effective = drift.get("effective_calibration_windows")
        if effective is not None and effective != drift.get("independent_calibration_windows"):
            text += f", {effective} independent after the dependence correction"
        text += f"; stated false-alarm bound {bound:.3g} per window of unchanged data"
        if rate is not None and bound > rate + 1e-12:
            text += (
                f", above the configured {rate:g}: too few disjoint training windows for "
                "it; train on more data"
            )
        return text
    if method == "in_sample":
        return (
            "calibration: in sample (thresholds taken on the rows their bins were counted "
            "on, a manifest from before held-out calibration): no stated bound; retrain"
        )
    return "calibration: not recorded in this monitor document: no stated bound; retrain"


def _in_sample_line(doc: dict[str, Any]) -> str:
    """The run's overlap with the model's training range, when it has one."""
    overlap = doc.get("in_sample")
    if not overlap:
        return ""
    text = html.escape(overlap["text"])
    return f'\n<p id="in-sample"><b style="color:#c0392b">{text}</b></p>'


_SCALE_WORDS = {
    "none": "as it comes",
    "price_offset": "distance from the mid, ticks",
    "price_ticks": "ticks",
    "return_ticks": "move in ticks",
    "relative_ticks": "ticks at the mid",
    "bps_ticks": "ticks",
}


def _scale(series: dict[str, Any]) -> str:
    scale = series.get("scale")
    if scale is None:  # a document from before scales
        return "as it comes"
    words = _SCALE_WORDS.get(scale, scale)
    if series.get("bins") == 1:
        return f"{words} (constant: not monitored)"
    return f"{words}, by value" if series.get("binning") == "values" else words


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f"<p>{empty}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page_html(
    doc: dict[str, Any],
    states: list[dict[str, Any]],
    promotions: list[dict[str, Any]],
    png: bytes,
    title: str,
) -> str:
    perf = doc["performance"]
    drift = doc["drift"]
    figures = _table(
        ["figure", "last window", "training (out of sample)"],
        [
            ["IC", perf["ic"], doc["training"].get("oos_ic")],
            ["hit ratio", perf["hit_ratio"], doc["training"].get("oos_accuracy")],
            ["Brier score", perf["brier"], None],
            ["expected calibration error", perf["ece"], None],
            ["scored predictions", doc["predictions"]["scored"], None],
        ],
        "",
    )
    calibration = _table(
        ["score from", "score to", "rows", "mean score", "realized"],
        [[b["low"], b["high"], b["rows"], b["mean_score"], b["realized"]]
         for b in perf["calibration"]],
        "no calibration buckets",
    )  # fmt: skip
    series = drift.get("series", {})
    drift_rows = [
        [name, _scale(s), s["psi"], s["max_psi"], s["threshold"],
         "yes" if s["threshold"] is not None and (s["max_psi"] or 0.0) > s["threshold"] else "no",
         s["training_conventional_false_alarm_rates"].get("0.1"),
         s["training_conventional_false_alarm_rates"].get("0.25")]
        for name, s in series.items()
    ]  # fmt: skip
    drift_note = (
        f"over the last {drift['window']} samples; thresholds calibrated on training windows "
        f"for a family false-alarm rate of {drift['configured_false_alarm_rate']:g} "
        f"(measured on training: {_fmt(drift['training_false_alarm_rate'])}); the "
        "conventional 0.1 / 0.25 columns give how often training windows exceed them"
        if drift.get("enabled") and "window" in drift
        else "drift monitoring off (the model's manifest has no reference bins)"
    )
    calibration_note = (
        f'<p id="drift-calibration">{html.escape(calibration_text(drift))}</p>'
        if drift.get("enabled") and "window" in drift
        else ""
    )
    drift_table = _table(
        ["series", "binned on", "PSI now", "max PSI", "calibrated threshold", "exceeded",
         "training windows > 0.1", "training windows > 0.25"],
        drift_rows, "no drift figures",
    )  # fmt: skip
    alarm_rates = "".join(
        f"<li>{html.escape(line)}</li>" for line in alarm_rates_text(doc["alarms"])
    )
    timeline = sorted(
        [(a["ts"], "alarm", f"{a['kind']} ({a['action']})", a["message"])
         for a in doc["alarms"]["events"]]
        + [(s["ts_event"], "trading state", s["state"], s.get("reason", "")) for s in states]
        + [(p["ts_ns"], p["action"], f"{p.get('alias') or ''} {p['version'][:12]}",
            p.get("reason", "")) for p in promotions],
        key=lambda r: r[0],
    )  # fmt: skip
    events = _table(
        ["time (UTC)", "event", "what", "detail"],
        [[_when(t), k, w, d] for t, k, w, d in timeline],
        "no alarms, state changes or promotions",
    )
    image = base64.b64encode(png).decode()
    heading = html.escape(title or f"model monitor: {doc['model']}")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{heading}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}}</style>
{bokeh_script()}</head><body>
<h1>{heading}</h1>{_in_sample_line(doc)}
<p>model {html.escape(str(doc["model"]))} ({html.escape(str(doc["output"]))}), horizon {doc["horizon_ns"] / 1e9:g} s, window {doc["window"]} scored predictions, checked every {doc["check_every"]}</p>
{monitor_charts(doc, states, promotions)}
<p>The four figures as a still image (with the calibration curve):</p>
<img alt="monitor figures" src="data:image/png;base64,{image}">
<h2 id="performance">Rolling IC and accuracy</h2>{figures}
<h2 id="calibration">Calibration</h2><p>realized: {html.escape(perf["calibration_realized"])}</p>{calibration}
<h2 id="alarm-rates">Alarm thresholds and their false-alarm rates</h2><ul>{alarm_rates}</ul>
<h2 id="drift">Drift per feature</h2><p>{drift_note}</p>{calibration_note}{drift_table}
<h2 id="timeline">Alarms, trading-state changes and promotions</h2>{events}
</body></html>
"""
