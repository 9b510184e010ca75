"""``tradeloop compare RUN RUN... --out page.html``: replay run folders side by side on one
self-contained page: what ran (strategy, parameters, model, data range, config hash),
the headline metrics in one table, and the equity curves overlaid in one chart.

Curves are drawn as return on initial cash against hours since each run's start, so
runs with different cash or over different dates can be laid over each other; the
table says which dates each run covers. Runs over different data windows are not
comparable: the page says so at its top, naming each window (a baseline over a whole
sample beside a model over its last third compared two different things). A model
replayed over its own training range is marked in sample.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.errors import DataError
from replay.pages.interactive import bokeh_script, embed, returns_layout

# (label, how to show the run's value); fractions are shown in %
_ROWS: tuple[tuple[str, str], ...] = (
    ("strategy", "header.strategy"),
    ("parameters", "header.strategy_params"),
    ("model", "header.model"),
    ("in sample", "header.model.in_sample"),
    ("data from (UTC)", "header.data_from"),
    ("data to (UTC)", "header.data_to"),
    ("span (hours)", "header.data_span_hours"),
    ("effective config sha256", "header.effective_config_sha256"),
    ("ticks", "ticks"),
    ("total return %", "total_return"),
    ("PnL", "pnl"),
    ("fees", "fees"),
    ("Sharpe (annualised)", "sharpe"),
    ("Sharpe per period", "sharpe_per_period"),
    ("periods", "periods"),
    ("probabilistic Sharpe %", "probabilistic_sharpe"),
    ("max drawdown %", "max_drawdown"),
    ("fills", "num_trades"),
    ("round trips", "round_trips"),
    ("hit ratio %", "hit_ratio"),
    ("turnover (x cash)", "turnover"),
)
_PERCENT = {"total_return", "probabilistic_sharpe", "max_drawdown", "hit_ratio"}


def read_run(folder: Path) -> tuple[dict[str, Any], pl.DataFrame]:
    """A run folder's ``metrics.json`` and ``equity.parquet``.

    Raises:
        DataError: not a replay run folder, or its files cannot be read.
    """
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(str(folder), "not a replay run folder (no metrics.json)")
    try:
        metrics = json.loads(metrics_path.read_text())
        equity = pl.read_parquet(folder / "equity.parquet", columns=["ts_event", "equity"])
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise DataError(str(folder), f"cannot read the run: {exc}") from exc
    return metrics, equity


def _value(metrics: dict[str, Any], key: str) -> Any:
    value: Any = metrics
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _shown(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    name = key.rsplit(".", 1)[-1]
    if name == "in_sample" and isinstance(value, dict):
        return f"yes: {value.get('share_of_run', 0.0):.0%} of the data (see its report)"
    if name == "model" and isinstance(value, dict):
        return f"{value.get('kind', '')} {value.get('name', '')}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if name in _PERCENT:
        return f"{value * 100:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.2f}"


def _names(runs: Sequence[Path]) -> list[str]:
    """Short column names: the folder names, with their parents where two are alike."""
    names = [r.name or str(r) for r in runs]
    if len(set(names)) < len(names):
        names = [str(r) for r in runs]
    return names


def compare_page(runs: Sequence[Path]) -> str:
    """The comparison page's HTML.

    Raises:
        DataError: a folder is not a run folder.
    """
    if not runs:
        raise DataError("RUN", "give at least one run folder")
    loaded = [read_run(r) for r in runs]
    names = _names(runs)
    curves = {}
    for (metrics, equity), name in zip(loaded, names, strict=True):
        if not equity.height:
            continue
        ts = equity["ts_event"].to_numpy()
        cash = float(metrics.get("initial_cash") or equity["equity"][0] or 1.0)
        curves[name] = (
            (ts - ts[0]) / 3.6e12,
            (equity["equity"].to_numpy().astype(np.float64) / cash - 1.0) * 100,
        )
    charts = embed(
        returns_layout(curves, "equity curves (drag to zoom, hover for values)"), "compare"
    )
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f"<td>{html.escape(_shown(key, _value(m, key)))}</td>" for m, _ in loaded)
        + "</tr>"
        for label, key in _ROWS
    )
    where = "".join(f"<li><code>{html.escape(str(r))}</code></li>" for r in runs)
    windows = [(_value(m, "header.data_from"), _value(m, "header.data_to")) for m, _ in loaded]
    if len(set(windows)) > 1:
        named = "; ".join(
            f"{html.escape(n)}: {html.escape(str(a))} to {html.escape(str(b))}"
            for n, (a, b) in zip(names, windows, strict=True)
        )
        window_note = (
            '<p id="different-data" style="color:#c0392b"><b>These runs cover different '
            f"data ({named}): their figures are not comparable. Replay them over the same "
            "window (tradeloop replay --start/--end).</b></p>"
        )
    elif len(runs) > 1:
        window_note = (
            f'<p id="same-data">All {len(runs)} runs cover the same data window, '
            f"{html.escape(str(windows[0][0]))} to {html.escape(str(windows[0][1]))}.</p>"
        )
    else:
        window_note = ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tradeloop compare</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}}td{{font-variant-numeric:tabular-nums}}</style>
{bokeh_script()}</head><body>
<h1>tradeloop: {len(runs)} runs side by side</h1><ul>{where}</ul>{window_note}
{charts}
<h2>Metrics</h2><p>fractions in %; Sharpe is annualised only where the run's span allowed it (see each run's report)</p>
<table><tr><th></th>{head}</tr>{body}</table>
</body></html>
"""


def write_compare_page(runs: Sequence[Path], out: Path) -> Path:
    """Write the comparison page to ``out`` (atomically: a failure leaves no half page).

    Raises:
        DataError: a folder is not a run folder.
    """
    page = compare_page(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page)
    os.replace(tmp, out)
    return out
