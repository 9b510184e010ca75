"""The monitor page's interactive charts (``replay.pages.interactive``: bokeh, inlined):
rolling IC and hit ratio against their training figures and the low-IC threshold; drift
as each series' PSI over its calibrated threshold; and the alarms, trading-state changes
and promotions as markers whose hover gives the message. One shared UTC time axis, so
zooming into an alarm shows the figures that raised it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from replay.pages.interactive import WIDTH, embed
from replay.pages.thinning import PALETTE, thin

_ROWS = ("promotions", "trading state", "gap", "drift", "low_ic", "accuracy", "losing_streak")


def _evenly(n: int, most: int = 2_000) -> list[int]:
    if n <= most:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, most).astype(int).tolist()))


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def monitor_charts(
    doc: dict[str, Any], states: list[dict[str, Any]], promotions: list[dict[str, Any]]
) -> str:
    """The charts as an HTML fragment (the page inlines bokeh's script once)."""
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, HoverTool, Span
    from bokeh.plotting import figure

    common: dict[str, Any] = {
        "width": WIDTH,
        "sizing_mode": "stretch_width",
        "x_axis_type": "datetime",
        "tools": "xpan,xwheel_zoom,xbox_zoom,reset,save",
        "active_drag": "xbox_zoom",
    }
    perf_fig = figure(title="rolling IC and hit ratio; dotted: training's out-of-sample figures, "
                      "dashed: the low-IC alarm threshold (drag to zoom; hover for values)",
                      height=260, **common)  # fmt: skip
    perf = doc["history"]["performance"]
    if perf:
        # rolling figures move slowly: every k-th check keeps their shape on a light page
        keep = _evenly(len(perf))
        src = ColumnDataSource({
            "x": np.array([perf[i]["ts"] for i in keep], np.float64) / 1e6,
            "ic": np.array([_nan(perf[i]["ic"]) for i in keep]),
            "hit": np.array([_nan(perf[i]["hit_ratio"]) for i in keep]),
        })  # fmt: skip
        ic = perf_fig.line("x", "ic", source=src, color=PALETTE[0], legend_label="IC")
        perf_fig.line("x", "hit", source=src, color=PALETTE[2], legend_label="hit ratio")
        perf_fig.add_tools(HoverTool(renderers=[ic], mode="vline", formatters={"@x": "datetime"},
                                     tooltips=[("time (UTC)", "@x{%F %T}"), ("IC", "@ic{0.0000}"),
                                               ("hit ratio", "@hit{0.0000}")]))  # fmt: skip
    for key, colour, dash in (("oos_ic", PALETTE[0], "dotted"),
                              ("oos_accuracy", PALETTE[2], "dotted")):  # fmt: skip
        value = doc["training"].get(key)
        if value is not None:
            perf_fig.add_layout(Span(location=value, dimension="width", line_color=colour,
                                     line_dash=dash))  # fmt: skip
    threshold = doc["alarms"].get("calibration", {}).get("low_ic", {}).get("threshold")
    if threshold is not None:
        perf_fig.add_layout(Span(location=threshold, dimension="width", line_color="#c0392b",
                                 line_dash="dashed"))  # fmt: skip
    perf_fig.yaxis.axis_label = "IC, hit ratio"
    drift_fig = figure(title="drift: PSI / calibrated threshold (above 1: drifted)", height=240,
                       x_range=perf_fig.x_range, **common)  # fmt: skip
    drift = doc["history"]["drift"]
    series = doc["drift"].get("series", {})
    if drift:
        x = np.array([d["ts"] for d in drift], np.float64) / 1e6
        for k, name in enumerate(series):
            limit = series[name]["threshold"]
            ratio = np.array([_nan(d["psi"].get(name)) / limit if limit else math.nan
                              for d in drift])  # fmt: skip
            # the envelope (every local max kept): a drift spike must not vanish
            tx, ty = thin(x, ratio)
            drift_fig.line(tx, ty, color=PALETTE[k % len(PALETTE)], legend_label=name)
        drift_fig.add_layout(Span(location=1.0, dimension="width", line_color="#c0392b",
                                  line_dash="dashed"))  # fmt: skip
    drift_fig.yaxis.axis_label = "PSI / threshold"
    events_fig = figure(title="alarms (red: acting, orange: notify), state changes, promotions",
                        height=230, y_range=list(_ROWS), x_range=perf_fig.x_range, **common)  # fmt: skip
    rows: dict[str, list[Any]] = {"x": [], "row": [], "what": [], "detail": [], "colour": []}
    for a in doc["alarms"]["events"]:
        rows["x"].append(a["ts"] / 1e6)
        rows["row"].append(a["kind"] if a["kind"] in _ROWS else _ROWS[-1])
        rows["what"].append(f"{a['kind']} ({a['action']})")
        rows["detail"].append(a["message"])
        rows["colour"].append("#c0392b" if a["action"] != "notify" else "#e67e22")
    for s in states:
        rows["x"].append(s["ts_event"] / 1e6)
        rows["row"].append("trading state")
        rows["what"].append(s["state"])
        rows["detail"].append(s.get("reason", ""))
        rows["colour"].append("#8e44ad")
    for p in promotions:
        rows["x"].append(p["ts_ns"] / 1e6)
        rows["row"].append("promotions")
        rows["what"].append(f"{p['action']} {p.get('alias') or ''} {p['version'][:12]}")
        rows["detail"].append(p.get("reason", ""))
        rows["colour"].append("#16a085")
    marks = events_fig.scatter("x", "row", source=ColumnDataSource(rows), size=9,
                               color="colour", marker="inverted_triangle")  # fmt: skip
    events_fig.add_tools(HoverTool(renderers=[marks], formatters={"@x": "datetime"},
                                   tooltips=[("time (UTC)", "@x{%F %T}"), ("event", "@what"),
                                             ("detail", "@detail")]))  # fmt: skip
    for fig in (perf_fig, drift_fig):
        if fig.legend:
            fig.legend.click_policy = "hide"
            fig.legend.label_text_font_size = "8pt"
    for fig in (perf_fig, drift_fig, events_fig):
        fig.toolbar.logo = None
    return embed(column(perf_fig, drift_fig, events_fig, sizing_mode="stretch_width"), "monitor")
