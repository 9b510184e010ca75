"""Interactive charts for the HTML pages (run report, compare, monitor), drawn by bokeh.

Why bokeh: it zooms, pans and shows values on hover with its own tested JavaScript, and
its core bundle inlined is about 1.3 MB per page (plotly.js inlined is 4.8 MB); the page
opens offline, with no CDN. Only the core bundle is inlined (no widgets, tables or
MathJax). Bokeh is imported only when a page is written (about 1 s of import time).

Large runs: every line is thinned to its envelope (``charts.thin``: the first, min and
max of each of 1,500 equal runs of points, so spikes survive); mids are sampled first at
one per second (``replay.backtest.mids``); fill markers beyond ``MAX_MARKERS`` per
instrument are taken evenly (the tables and trades.parquet keep every fill). A day of
ticks gives a page of a few MB that opens in about a second.

Pages are the same for the same run: bokeh's ids are renumbered in order of appearance.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.pages.thinning import PALETTE, thin

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MAX_MARKERS = 3000
TOOLS = "xpan,xwheel_zoom,xbox_zoom,box_zoom,reset,save"
STATE_COLOURS = {"HALTED": "#c0392b", "REDUCE_ONLY": "#e67e22", "ACTIVE": "#27ae60"}
WIDTH = 1050


@functools.cache
def bokeh_script() -> str:
    """The bokeh core bundle as one inline ``<script>`` (no http(s) source)."""
    from bokeh.resources import Resources

    js = Resources(mode="inline", components=["bokeh"]).render_js()
    return js


def embed(layout: Any, name: str) -> str:
    """A ``<div>`` and the script that draws ``layout`` into it; ``name`` keeps ids unique
    on a page with several charts and the output the same from run to run."""
    from bokeh.embed import json_item

    item = json.dumps(json_item(layout, f"chart-{name}"), separators=(",", ":"))
    ids: dict[str, str] = {}

    def renumber(match: re.Match[str]) -> str:
        new = ids.setdefault(match.group(2), f"{name}{len(ids) + 1}")
        return f'{match.group(1)}"{new}"'

    item = re.sub(r'("(?:id|root_id)":)"(p\d+)"', renumber, item)
    item = item.replace("</", "<\\/")  # the JSON sits inside a <script> element
    return (
        f'<div id="chart-{name}"></div>'
        f'<script type="application/json" id="chart-{name}-data">{item}</script>'
        f"<script>Bokeh.embed.embed_item(JSON.parse(document.getElementById("
        f"'chart-{name}-data').textContent));</script>"
    )


def _ms(ts_ns: npt.NDArray[Any]) -> F64:
    """Bokeh's datetime axis counts milliseconds since the epoch."""
    return np.asarray(ts_ns, dtype=np.float64) / 1e6


def _figure(title: str, y_label: str, height: int, x_range: Any = None, *,
            x_label: str = "") -> Any:  # fmt: skip
    """A panel on a time axis (UTC), or on a numeric one labelled ``x_label``."""
    from bokeh.models import BasicTickFormatter, HoverTool
    from bokeh.plotting import figure

    kwargs: dict[str, Any] = {"x_range": x_range} if x_range is not None else {}
    fig = figure(
        title=title,
        height=height,
        width=WIDTH,
        sizing_mode="stretch_width",
        x_axis_type="linear" if x_label else "datetime",
        tools=TOOLS,
        active_drag="xbox_zoom",
        **kwargs,
    )
    fig.yaxis.axis_label = y_label
    # plain numbers: 1.000e+5 on an equity axis reads badly
    fig.yaxis.formatter = BasicTickFormatter(use_scientific=False)
    fig.yaxis.ticker.desired_num_ticks = max(3, height // 45)
    fig.toolbar.logo = None
    if x_label:
        fig.xaxis.axis_label = x_label
        tips = [(x_label, "@x{0,0.[00]}"), (y_label, "@y{0,0.[000000]}")]
        fig.add_tools(HoverTool(tooltips=tips, mode="vline", name="values"))
        return fig
    fig.add_tools(
        HoverTool(
            tooltips=[("time (UTC)", "@x{%F %T}"), (y_label, "@y{0,0.[000000]}")],
            formatters={"@x": "datetime"},
            mode="vline",
            name="values",
        )
    )
    return fig


def _line(fig: Any, x_ns: npt.NDArray[Any], y: F64, colour: str, *, step: bool = False,
          legend: str = "", numeric: bool = False) -> None:  # fmt: skip
    x = np.asarray(x_ns, np.float64) if numeric else _ms(x_ns)
    x, yy = thin(x, np.asarray(y, np.float64))
    extra: dict[str, Any] = {"legend_label": legend} if legend else {}
    if step:
        fig.step(x, yy, mode="after", line_color=colour, line_width=1.5, **extra)
    else:
        fig.line(x, yy, line_color=colour, line_width=1.3, **extra)


def _state_spans(fig: Any, states: Sequence[tuple[int, str]]) -> None:
    from bokeh.models import Span

    for ts, state in states:
        fig.add_layout(
            Span(location=float(ts) / 1e6, dimension="height", line_dash="dashed",
                 line_color=STATE_COLOURS.get(state, "#000000"), line_width=1)
        )  # fmt: skip


def _evenly(n: int, most: int) -> I64:
    if n <= most:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, most).astype(np.int64))


def run_layout(
    equity_ts: I64,
    equity: F64,
    drawdown: F64,
    fills: dict[str, dict[str, Any]],
    mids: dict[str, tuple[I64, F64]],
    states: Sequence[tuple[int, str]] = (),
    *,
    end_ns: int | None = None,
    max_instruments: int = 6,
) -> Any:
    """Equity, drawdown, then per instrument (most fills first): its mid price with the
    fills marked (buys green up, sells red down; hover: time, side, qty, price, position
    after) and its position as a step line on its own scale. One shared time axis.

    ``fills``: per symbol, arrays ``ts``, ``side`` (+1/-1), ``qty``, ``price``,
    ``position``; ``mids``: per symbol, times and mids.
    """
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, HoverTool

    top = _figure("equity (hover for values; drag to zoom in time, reset to undo)",
                  "equity", 240)  # fmt: skip
    x_range = top.x_range
    _line(top, equity_ts, equity, PALETTE[0])
    _state_spans(top, states)
    down = _figure("drawdown", "drawdown %", 130, x_range)
    _line(down, equity_ts, drawdown * 100, PALETTE[1])
    _state_spans(down, states)
    panels = [top, down]
    symbols = sorted(fills, key=lambda s: (-len(fills[s]["ts"]), s))
    symbols += sorted(s for s in mids if s not in fills)
    end = end_ns if end_ns is not None else (int(equity_ts[-1]) if len(equity_ts) else None)
    for k, sym in enumerate(symbols[:max_instruments]):
        colour = PALETTE[k % len(PALETTE)]
        f = fills.get(sym)
        traded = f is not None and len(f["ts"]) > 0
        title = f"{sym}: mid price and fills" if traded else f"{sym}: mid price (no fills)"
        price = _figure(title, f"{sym} price", 200, x_range)
        if sym in mids:
            _line(price, mids[sym][0], mids[sym][1], "#555555")
        if f is not None and len(f["ts"]):
            keep = _evenly(len(f["ts"]), MAX_MARKERS)
            for sign, marker, mcolour, label in ((1, "triangle", "#27ae60", "buy"),
                                                 (-1, "inverted_triangle", "#c0392b", "sell")):  # fmt: skip
                sel = keep[f["side"][keep] == sign]
                if not len(sel):
                    continue
                src = ColumnDataSource(
                    {"x": _ms(f["ts"][sel]), "y": f["price"][sel], "qty": f["qty"][sel],
                     "position": f["position"][sel]}
                )  # fmt: skip
                r = price.scatter("x", "y", source=src, marker=marker, size=8,
                                  fill_color=mcolour, line_color=mcolour, legend_label=label)  # fmt: skip
                price.add_tools(
                    HoverTool(
                        renderers=[r],
                        tooltips=[("fill", label), ("time (UTC)", "@x{%F %T.%3N}"),
                                  ("qty", "@qty{0,0.[000000]}"), ("price", "@y{0,0.[000000]}"),
                                  ("position after", "@position{0,0.[000000]}")],
                        formatters={"@x": "datetime"},
                    )
                )  # fmt: skip
            price.legend.location = "top_left"
            price.legend.click_policy = "hide"
        panels.append(price)
        if f is None or not traded:
            continue  # flat throughout: no position panel
        pos = _figure(f"{sym}: position", f"{sym} qty", 150, x_range)
        # flat before the first fill, the last position held to the end
        first = int(equity_ts[0]) if len(equity_ts) else int(f["ts"][0])
        last = max(end or 0, int(f["ts"][-1]))
        x = np.concatenate([[first], f["ts"], [last]]).astype(np.int64)
        y = np.concatenate([[0.0], f["position"], f["position"][-1:]])
        _line(pos, x, y, colour, step=True)
        panels.append(pos)
    return column(*panels, sizing_mode="stretch_width")


def fills_by_symbol(
    ts: I64, instrument: Sequence[str], side: Sequence[str], qty: F64, price: F64, position: F64
) -> dict[str, dict[str, Any]]:
    """Split fill columns by instrument into the arrays ``run_layout`` takes."""
    names = np.asarray(instrument, dtype=object)
    signs = np.where(np.asarray(side, dtype=object) == "buy", 1, -1).astype(np.int8)
    out: dict[str, dict[str, Any]] = {}
    for sym in sorted(set(names.tolist())):
        sel = names == sym
        out[sym] = {"ts": np.asarray(ts)[sel], "side": signs[sel], "qty": np.asarray(qty)[sel],
                    "price": np.asarray(price)[sel], "position": np.asarray(position)[sel]}  # fmt: skip
    return out


def returns_layout(curves: dict[str, tuple[F64, F64]], title: str) -> Any:
    """Several runs' return curves over hours since each run's start (``tradeloop
    compare``: runs over different windows still share the axis)."""
    label = "hours since each run's start"
    fig = _figure(title, "return on initial cash %", 340, x_label=label)
    for k, (name, (hours, pct)) in enumerate(curves.items()):
        _line(fig, hours, pct, PALETTE[k % len(PALETTE)], legend=name, numeric=True)
    if curves:
        fig.legend.location = "top_left"
        fig.legend.click_policy = "hide"
    return fig
