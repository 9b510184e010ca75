"""The run folder of a replay: trades, round trips and equity (parquet), metrics (JSON),
the config that ran (``config.toml``), an SVG plot and one self-contained HTML page.

The figures and their definitions live in ``replay/backtest/metrics.py``; metrics.json carries
the definitions (``definitions``) and units (``units``) next to the numbers, and says
whether and how Sharpe and Sortino were annualised. Its ``header`` says what ran:
strategy and parameters, model and manifest hash, data range, and the effective-config
hash (of the validated config that ran, as canonical JSON: the copy in the folder
hashes to it). The folder is written into a temporary sibling and renamed into place
at the end, so a failure leaves no half-written run folder.

In sample: when the replayed data overlaps the model's training range (its manifest's
``train_range``), ``header.model.in_sample`` holds the overlap (``engine.signals.in_sample``)
and the page, the monitor page and ``tradeloop replay`` say so in words, with the overlap.
"""

from __future__ import annotations

import html
import json
import math
import os
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl

from engine.errors import ConfigError
from engine.events import side_sign
from engine.instruments import InstrumentTable
from engine.signals.in_sample import in_sample
from replay.backtest import metrics as fig
from replay.backtest.runner import ReplayRun
from replay.files.init_config import config_toml, effective_config_hash
from replay.monitor.report import write_monitor_report
from replay.pages.interactive import bokeh_script

# how each figure of metrics.json counts; the HTML page shows every fraction as a percentage
UNITS = {
    "total_return": "fraction of initial cash",
    "pnl": "currency",
    "realized_pnl": "currency, net of fees",
    "unrealized_pnl": "currency, at the last mids",
    "sharpe": "annualised ratio",
    "sortino": "annualised ratio",
    "sharpe_per_period": "ratio per period",
    "sortino_per_period": "ratio per period",
    "probabilistic_sharpe": "probability (fraction)",
    "max_drawdown": "fraction of the running peak",
    "max_drawdown_cash": "currency",
    "hit_ratio": "fraction of closed round trips",
    "turnover": "multiple of initial cash",
    "fees": "currency",
    "initial_cash": "currency",
    "final_equity": "currency",
    "period_ns": "ns",
    "span_ns": "ns",
    "pnl_by_instrument": "currency (realized net of fees)",
}
_FRACTIONS = ("total_return", "max_drawdown", "hit_ratio", "probabilistic_sharpe")


def fills_frame(run: ReplayRun) -> pl.DataFrame:
    fills = run.recorder.fills
    index = run.engine.instruments.index
    positions = np.zeros(len(index))
    after = []
    for f in fills:
        positions[index[f.instrument]] = round(
            positions[index[f.instrument]] + side_sign(f.side) * f.qty, 10
        )
        after.append(float(positions[index[f.instrument]]))
    return pl.DataFrame(
        {
            "ts_event": [f.ts_event for f in fills],
            "instrument": [f.instrument for f in fills],
            "side": [f.side for f in fills],
            "qty": [f.qty for f in fills],
            "price": [f.price for f in fills],
            "fee": [f.fee for f in fills],
            "liquidity": [f.liquidity for f in fills],
            "client_order_id": [f.client_order_id for f in fills],
            "fill_id": [f.fill_id for f in fills],
            "position_after": after,
        },
        schema={"ts_event": pl.Int64, "instrument": pl.String, "side": pl.String, "qty": pl.Float64,
                "price": pl.Float64, "fee": pl.Float64, "liquidity": pl.String,
                "client_order_id": pl.String, "fill_id": pl.String, "position_after": pl.Float64},
    )  # fmt: skip


def round_trips_frame(fills: pl.DataFrame) -> pl.DataFrame:
    """Every round trip (``metrics.round_trips``: the engine's rule, the monitor's too),
    closed ones in closing order with their PnL (net of fees), then open ones with a null
    close and PnL."""
    closed, still_open = fig.round_trips(fills)
    schema = {
        "instrument": pl.String,
        "direction": pl.String,
        "open_ts": pl.Int64,
        "close_ts": pl.Int64,
        "fills": pl.Int64,
        "max_qty": pl.Float64,
        "pnl": pl.Float64,
    }
    rows = [
        (t.instrument, t.direction, t.open_ts, t.close_ts, t.fills, t.max_qty, t.pnl)
        for t in [*closed, *still_open]
    ]
    return pl.DataFrame(rows, schema=schema, orient="row")


def equity_frame(run: ReplayRun) -> pl.DataFrame:
    """Equity and drawdown on every point of the equity grid (see ``metrics.complete_grid``)."""
    m = run.engine.market
    ts = np.concatenate(m.sample_ts) if m.sample_ts else np.empty(0, np.int64)
    eq = np.concatenate(m.sample_equity) if m.sample_equity else np.empty(0)
    ts, eq = fig.complete_grid(
        ts,
        eq,
        run.config.replay.equity_interval_ns,
        run.engine.clock.now_ns(),
        run.engine.portfolio.equity(m.mids()),
    )
    dd = fig.drawdown(eq, run.config.replay.initial_cash)
    return pl.DataFrame({"ts_event": ts, "equity": eq, "drawdown": dd})


def compute_metrics(
    run: ReplayRun,
    equity: pl.DataFrame,
    fills: pl.DataFrame,
    *,
    min_annualise_span_ns: int = fig.DAY_NS,
) -> dict[str, Any]:
    """The run's figures; Sharpe and Sortino are annualised only over a span of at least
    ``min_annualise_span_ns`` (else null, with the per-period figures and their count)."""
    e = run.engine
    eq = equity["equity"].to_numpy()
    ts = equity["ts_event"].to_numpy()
    initial = run.config.replay.initial_cash
    interval = run.config.replay.equity_interval_ns
    rets = fig.period_returns(eq, initial) if interval > 0 else np.empty(0)
    n = rets.shape[0]
    span_ns = int(ts[-1] - ts[0]) if n else 0
    sharpe = fig.sharpe_ratio(rets)
    sortino = fig.sortino_ratio(rets)
    skew, kurt = fig.skewness_kurtosis(rets)
    factor = fig.annualisation_factor(n, span_ns, min_annualise_span_ns)
    grid = f"{n} periods of {interval / 1e9:g} s spanning {_hours(span_ns)}"
    if factor is None:
        minimum = _hours(min_annualise_span_ns)
        annualisation = f"not annualised: {grid}, below the minimum {minimum}; see *_per_period"
    else:
        annualisation = (
            f"{grid}: x sqrt({factor**2:.0f} periods per year) (365 days, 24/7); no risk-free rate"
        )
    trips, trips_open = fig.round_trip_pnls(fills)
    final_eq = float(eq[-1]) if eq.shape[0] else initial
    mids = e.market.mids()
    positions = {s: float(e.portfolio.positions[i]) for s, i in e.instruments.index.items()}
    unrealized = e.portfolio.unrealized(mids)
    by_instrument = {
        s: {
            "pnl": float(e.portfolio.realized[i] + unrealized[i]),
            "realized": float(e.portfolio.realized[i]),
            "unrealized": float(unrealized[i]),
            "fees": float(e.portfolio.fees[i]),
            "fills": int((fills["instrument"] == s).sum()) if fills.height else 0,
        }
        for s, i in e.instruments.index.items()
        if fills.height and (fills["instrument"] == s).any()
    }
    return {
        "total_return": final_eq / initial - 1.0 if initial else float("nan"),
        "pnl": final_eq - initial,
        "realized_pnl": float(e.portfolio.realized.sum()),
        "unrealized_pnl": float(e.portfolio.unrealized(mids).sum()),
        "sharpe": sharpe * factor if factor is not None else float("nan"),
        "sortino": sortino * factor if factor is not None else float("nan"),
        "annualised": factor is not None,
        "annualisation": annualisation,
        "sharpe_per_period": sharpe,
        "sortino_per_period": sortino,
        "periods": n,
        "period_ns": interval,
        "span_ns": span_ns,
        "probabilistic_sharpe": fig.probabilistic_sharpe(sharpe, n, skew, kurt),
        "returns_skewness": skew,
        "returns_kurtosis": kurt,
        "max_drawdown": float(-np.min(equity["drawdown"].to_numpy())) if equity.height else 0.0,
        "max_drawdown_cash": fig.max_drawdown_cash(eq, initial),
        "num_trades": fills.height,
        "num_orders": e.counters["orders_requested"],
        "round_trips": int(trips.shape[0]),
        "round_trips_open": trips_open,
        "hit_ratio": float(np.mean(trips > 0)) if trips.shape[0] else float("nan"),
        "turnover": fig.turnover(fills, initial),
        "fees": float(e.portfolio.fees.sum()),
        "initial_cash": initial,
        "final_equity": final_eq,
        "final_positions": positions,
        "pnl_by_instrument": by_instrument,
        "ticks": e.counters["ticks"],
        "signals": e.counters["signals"],
        "risk_rejections": dict(sorted(e.risk.rejections.items())),
        "trading_states": [
            {"ts_event": s.ts_event, "state": s.state, "previous": s.previous, "reason": s.reason}
            for s in run.recorder.states
        ],
        "bad_rows_skipped": dict(sorted(run.bad_rows.by_reason.items())),
        "feature_overflows": e.features.overflow_counts(e.feature_state),
        "counters": dict(sorted(e.counters.items())),
        "definitions": {**fig.DEFINITIONS, "min_annualise_span_ns": min_annualise_span_ns},
        "units": UNITS,
    }


def _hours(ns: int) -> str:
    """A span in hours, to the second where it is not whole (``23 h 59 min 49 s``): a span
    a few seconds short of a minimum must not read as the minimum itself."""
    seconds = int(ns // 10**9)
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    if m == 0 and sec == 0 and ns % 10**9 == 0:
        return f"{h} h"
    return f"{h} h {m} min {sec} s" if sec or ns % 10**9 else f"{h} h {m} min"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


# position panels drawn; more instruments than this are listed in the last panel's title
_MAX_POSITION_PANELS = 6
_MAX_OUTLINED_FILLS = 400


def plot_svg(
    equity: pl.DataFrame,
    fills: pl.DataFrame,
    title: str,
    states: Sequence[tuple[int, str]] | None = None,
) -> str:
    """Equity, drawdown (%) and one position panel per traded instrument (most fills
    first): a step line of the position's notional at its fill price, from flat at the
    start to the last position at the end, long shaded green and short red; trading-state
    changes as dashed lines. An SVG document (``replay.backtest.charts``: no matplotlib)."""
    from replay.backtest.charts import Panel, Series, chart

    symbols: list[str] = []
    if fills.height:
        counts = fills["instrument"].value_counts()
        symbols = [
            s
            for _, s in sorted(
                zip(
                    (-counts["count"].cast(pl.Int64)).to_list(),
                    counts["instrument"].to_list(),
                    strict=True,
                )
            )
        ]
    shown = symbols[:_MAX_POSITION_PANELS]
    t0 = equity["ts_event"][0] if equity.height else 0
    t = (equity["ts_event"].to_numpy() - t0) / 3.6e12
    t_end = float(t[-1]) if equity.height else 0.0
    colours = {"HALTED": "#c0392b", "REDUCE_ONLY": "#e67e22", "ACTIVE": "#27ae60"}
    markers = [((ts - t0) / 3.6e12, colours.get(state, "#000"), "") for ts, state in states or []]
    panels = [
        Panel(
            [Series(t, equity["equity"].to_numpy().astype(np.float64))],
            "equity",
            height=230,
            markers=[
                (x, c, state) for (x, c, _), (_, state) in zip(markers, states or [], strict=True)
            ],
        ),
        Panel(
            [
                Series(
                    t,
                    equity["drawdown"].to_numpy().astype(np.float64) * 100,
                    "#c0392b",
                    fill="#c0392b",
                )
            ],
            "drawdown %",
            height=100,
            markers=markers,
        ),
    ]
    for sym in shown:
        f = fills.filter(pl.col("instrument") == sym)
        # the position held between fills is the level, not a line towards the next fill
        x = np.concatenate([[0.0], (f["ts_event"].to_numpy() - t0) / 3.6e12, [t_end]])
        notional = f["position_after"].to_numpy() * f["price"].to_numpy()
        y = np.concatenate([[0.0], notional, notional[-1:]]).astype(np.float64)
        outline = "#333333" if f.height <= _MAX_OUTLINED_FILLS else "none"
        panels.append(Panel([Series(x, y, outline, step=True, fill="sign")], f"{sym} notional",
                            height=80, markers=markers))  # fmt: skip
    if not shown:
        panels.append(Panel([], "position", height=60, note="no fills"))
    elif len(symbols) > len(shown):
        panels[-1].note = f"{len(symbols) - len(shown)} more instruments traded: see trades.parquet"
    return chart(panels, title=title, x_label="hours since start", x_range=(0.0, max(t_end, 1e-9)))


def monitor_alarms_line(run: ReplayRun, out: Path) -> str:
    """One line for the terminal on the model monitor's alarms ("" when none): they are in
    the run folder and on the monitor page; -v logs each as it fires."""
    if run.monitor is None or not run.monitor.alarms:
        return ""
    counts = Counter(a["kind"] for a in run.monitor.alarms)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    return (
        f"model monitor: {len(run.monitor.alarms)} alarms ({kinds}) in {out / 'monitor.json'}; "
        f"its page: tradeloop monitor-report {out} --out {out / 'monitor'} (-v logs them)"
    )


def iso_time(ts_ns: int | None, digits: int = 3) -> str:
    """``2024-08-08T23:54:14.087Z`` (UTC); ``digits`` of the second (0, 3, 6 or 9)."""
    if ts_ns is None:
        return ""
    seconds, ns = divmod(int(ts_ns), 10**9)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{ns:09d}"[:digits]
    return text + "Z"


def _decimals(step: float) -> int:
    """Decimals that show every multiple of ``step`` (0.01 -> 2, 0.5 -> 1, 1e-05 -> 5)."""
    for d in range(13):
        if abs(round(step, d) - step) <= step * 1e-9:
            return d
    return 12


def readable_fills(fills: pl.DataFrame, instruments: InstrumentTable) -> pl.DataFrame:
    """Fills for a person: ISO times, quantities on the lot and prices on the tick grid of
    their instrument, fees to 1e-4 of the quote currency; all as text."""
    rows = []
    for r in fills.iter_rows(named=True):
        inst = instruments.by_symbol(r["instrument"])
        price_dp, qty_dp = _decimals(inst.tick_size), _decimals(inst.lot_size)
        rows.append(
            {
                "time (UTC)": iso_time(r["ts_event"]),
                "instrument": r["instrument"],
                "side": r["side"],
                "qty": f"{inst.round_qty(r['qty']):,.{qty_dp}f}",
                "price": f"{inst.round_price(r['price']):,.{price_dp}f}",
                "fee": f"{r['fee']:,.4f}",
                "liquidity": r["liquidity"],
                "position after": f"{r['position_after']:,.{qty_dp}f}",
            }
        )
    columns = [
        "time (UTC)",
        "instrument",
        "side",
        "qty",
        "price",
        "fee",
        "liquidity",
        "position after",
    ]
    return pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String))


def run_header(run: ReplayRun, equity: pl.DataFrame) -> dict[str, Any]:
    """What ran: strategy and its validated parameters, model and its manifest hash, the
    data range and files, the effective-config hash."""
    cfg = run.config
    strategy = run.engine.strategy
    params = msgspec.to_builtins(getattr(strategy, "params", None)) or dict(cfg.strategy.params)
    model: dict[str, Any] | None = None
    if cfg.model is not None:
        manifest = getattr(run.engine.model, "manifest", None)
        # a trained folder says what it is (engine.plugins.load_model): report that, not
        # the config's [model] kind and name, which --model does not replace
        kind = getattr(manifest, "kind", None) or cfg.model.kind
        name = getattr(run.engine.model, "name", None) or cfg.model.name
        model = {"kind": kind, "name": name, "path": cfg.model.path}
        model["manifest_sha256"] = _manifest_sha(cfg.model.path)
        model["model_sha256"] = getattr(manifest, "model_sha256", None)
        source = run.model_source
        if source is not None:
            model["registry"] = {
                "registry": source.registry,
                "ref": source.ref,
                "version": source.version,
                "stage": source.stage,
                "max_position_share": source.share,
                "audit_seq": source.audit_seq,
            }
    symbols = list(run.engine.instruments.symbols)
    seen = {f.instrument for f in run.recorder.fills}
    seen |= run.mids.seen() if run.mids is not None else set(symbols)
    ts = equity["ts_event"]
    first = int(ts[0]) if equity.height else None
    last = run.engine.clock.now_ns() or None
    if model is not None:
        manifest = getattr(run.engine.model, "manifest", None)
        overlap = (
            in_sample(manifest, first, last)
            if manifest is not None and first is not None and last is not None
            else None
        )
        model["in_sample"] = None if overlap is None else overlap.to_dict()
    return {
        "strategy": cfg.strategy.name,
        "strategy_params": params,
        "model": model,
        "data_from": iso_time(first, 0) if first is not None else None,
        "data_to": iso_time(last, 0) if last is not None else None,
        "data_span_hours": (last - first) / 3.6e12 if first is not None and last else 0.0,
        # the instruments of the data (a quote or a fill); configured ones the data never
        # named are listed apart, so a header never names a market the run did not see
        "instruments": [s for s in symbols if s in seen],
        "instruments_without_data": [s for s in symbols if s not in seen],
        "effective_config_sha256": effective_config_hash(cfg),
        "config_file": "config.toml",
    }


def _registry_text(source: dict[str, Any] | None) -> str:
    """Which registry version ran, at which stage and share of ``max_position``."""
    if source is None:
        return ""
    return (
        f"; registry {html.escape(source['registry'])} {html.escape(source['ref'])} = version "
        f"<code>{html.escape(source['version'])}</code>, stage {html.escape(source['stage'])} "
        f"({source['max_position_share'] * 100:g} % of max_position)"
    )


def _in_sample_rows(model: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The headline's in-sample warning (a model whose training range the data overlaps)."""
    overlap = None if model is None else model.get("in_sample")
    if overlap is None:
        return []
    text = html.escape(overlap["text"])
    return [("IN SAMPLE", f'<b id="in-sample" style="color:#c0392b">{text}</b>')]


def _manifest_sha(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        text = (Path(path) / "manifest.sha256").read_text()
    except OSError:
        return None
    return text.split()[0] if text.split() else None


def _shown(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if key in _FRACTIONS and isinstance(value, float):
        return f"{value * 100:,.2f} %"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, dict | list):
        return f"<code>{html.escape(json.dumps(_json_safe(value)))}</code>"
    return html.escape(str(value))


def _table(frame: pl.DataFrame, empty: str) -> str:
    if frame.height == 0:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r)
        + "</tr>"
        for r in frame.iter_rows()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def interactive_charts(
    equity: pl.DataFrame,
    fills: pl.DataFrame,
    mids: dict[str, tuple[Any, Any]],
    states: Sequence[tuple[int, str]],
    end_ns: int | None,
) -> str:
    """The page's charts (``replay.pages.interactive``): equity, drawdown, and per
    instrument its mid price with the fills marked and its position as a step line."""
    from replay.pages.interactive import embed, fills_by_symbol, run_layout

    by_symbol = fills_by_symbol(
        fills["ts_event"].to_numpy(),
        fills["instrument"].to_list(),
        fills["side"].to_list(),
        fills["qty"].to_numpy(),
        fills["price"].to_numpy(),
        fills["position_after"].to_numpy(),
    )
    layout = run_layout(
        equity["ts_event"].to_numpy(),
        equity["equity"].to_numpy().astype(np.float64),
        equity["drawdown"].to_numpy().astype(np.float64),
        by_symbol,
        mids,
        states,
        end_ns=end_ns,
    )
    return embed(layout, "run")


def _html(
    metrics: dict[str, Any],
    charts: str,
    fills: pl.DataFrame,
    trips: pl.DataFrame,
    instruments: InstrumentTable,
) -> str:
    h = metrics["header"]
    model = h["model"]
    model_text = (
        "none"
        if model is None
        else f"{html.escape(model['kind'])} {html.escape(model['name'])}"
        + (
            f", manifest sha256 <code>{model['manifest_sha256']}</code>"
            if model["manifest_sha256"]
            else ", no manifest"
        )
        + _registry_text(model.get("registry"))
    )
    if metrics.get("annualised"):
        sharpe = f"{_shown('sharpe', metrics['sharpe'])} (annualised over the real span)"
    else:
        sharpe = (
            f"{_shown('sharpe_per_period', metrics['sharpe_per_period'])} per period over "
            f"{metrics['periods']:,} periods (span below the minimum: not annualised)"
        )
    headline = [
        (
            "strategy",
            f"{html.escape(h['strategy'])} <code>{html.escape(json.dumps(h['strategy_params']))}</code>",
        ),
        ("model", model_text),
        *_in_sample_rows(model),
        ("data", f"{h['data_from']} to {h['data_to']} ({h['data_span_hours']:.2f} h)"),
        ("instruments", html.escape(", ".join(h["instruments"]) or "none")),
        ("effective config sha256", f"<code>{h['effective_config_sha256']}</code> (config.toml)"),
        ("total return", _shown("total_return", metrics["total_return"]) + " of initial cash"),
        ("PnL", f"{metrics['pnl']:,.2f} (fees {metrics['fees']:,.2f})"),
        ("Sharpe", sharpe),
        (
            "probabilistic Sharpe",
            _shown("probabilistic_sharpe", metrics["probabilistic_sharpe"])
            + " confidence that the true Sharpe > 0",
        ),
        (
            "max drawdown",
            f"{_shown('max_drawdown', metrics['max_drawdown'])} of the peak ({metrics['max_drawdown_cash']:,.2f})",
        ),
        (
            "round trips",
            f"{metrics['round_trips']:,} closed, hit ratio {_shown('hit_ratio', metrics['hit_ratio'])}",
        ),
        ("turnover", f"{_shown('turnover', metrics['turnover'])} x initial cash"),
    ]
    head_rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in headline)
    units = metrics.get("units", {})
    rows = []
    for key, value in metrics.items():
        if key in ("header", "definitions", "units"):
            continue
        unit = " %" if key in _FRACTIONS else ""
        unit_text = html.escape(units.get(key, "")) + (" (shown in %)" if unit else "")
        rows.append(
            f"<tr><th>{html.escape(key)}</th><td>{_shown(key, value)}</td><td>{unit_text}</td></tr>"
        )
    by_inst = pl.DataFrame(
        [
            {
                "instrument": s,
                **{k: (f"{v:,.2f}" if isinstance(v, float) else str(v)) for k, v in d.items()},
            }
            for s, d in metrics["pnl_by_instrument"].items()
        ]
    )
    shown_trips = (
        trips.head(100)
        .with_columns(
            pl.col("open_ts").map_elements(iso_time, return_dtype=pl.String).alias("open (UTC)"),
            pl.col("close_ts").map_elements(iso_time, return_dtype=pl.String).alias("close (UTC)"),
            pl.col("pnl").round(2),
        )
        .select("instrument", "direction", "open (UTC)", "close (UTC)", "fills", "max_qty", "pnl")
    )
    shown_fills = readable_fills(fills.head(100), instruments)
    state_rows = (
        "".join(
            f"<tr><td>{iso_time(s['ts_event'])}</td><td>{html.escape(s['state'])}</td><td>{html.escape(s['reason'])}</td></tr>"
            for s in metrics.get("trading_states", [])
        )
        or "<tr><td colspan=3>none: ACTIVE throughout</td></tr>"
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tradeloop replay report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}code{{font-size:12px}}</style>
{bokeh_script()}</head><body>
<h1>tradeloop replay report</h1><table>{head_rows}</table>
<p>Charts: drag across a chart to zoom into that time range (all charts follow); the toolbar beside each chart switches to pan or wheel zoom, and reset goes back; hover for values and for each fill. Mids are sampled once a second and long lines thinned to their envelope (every min and max kept), so the page stays light; report.svg is the same run as a still image.</p>
{charts}
<h2>PnL per instrument</h2><p>currency; realized is net of fees, unrealized at the last mid</p>{_table(by_inst, "no fills")}
<h2>Round trips ({trips.height:,}; first {shown_trips.height})</h2><p>flat to flat per instrument; PnL net of fees, in currency</p>{_table(shown_trips, "no round trip")}
<h2>Trading state changes</h2><table><tr><th>time (UTC)</th><th>state</th><th>reason</th></tr>{state_rows}</table>
<h2>Fills (first {shown_fills.height} of {fills.height:,})</h2>{_table(shown_fills, "no fills")}
<h2>Metrics</h2><p>fractions are shown as %; metrics.json holds them as fractions, with their units and definitions</p><table>{"".join(rows)}</table>
</body></html>"""


def write_report(
    run: ReplayRun,
    out_dir: str | Path,
    config_hash: str = "",
    *,
    min_annualise_span_ns: int = fig.DAY_NS,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the run folder: trades.parquet, round_trips.parquet, equity.parquet,
    metrics.json, config.toml, report.svg and report.html (and the monitor's files).

    Everything is written into a temporary sibling folder that is renamed to
    ``out_dir`` at the end: a failure leaves no half-written run folder, and an earlier
    run folder there is replaced only once the new one is complete.

    Args:
        run: a finished replay.
        out_dir: the run folder.
        config_hash: sha256 of the config file's bytes, recorded in metrics.json
            (``config_file_sha256``); what ran is ``header.effective_config_sha256``.
        min_annualise_span_ns: shortest span over which Sharpe and Sortino are annualised.
        notes: how the data was read (skipped files, formats, units, inferred
            instruments), recorded in metrics.json.

    Raises:
        ConfigError: ``out_dir`` exists and is neither empty nor a run folder.
    """
    out = Path(out_dir)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "metrics.json").exists())
    ):
        raise ConfigError(str(out), "exists and is not a run folder: pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    # a plain mkdir (not mkdtemp's 0700) so the folder gets the user's usual permissions
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    tmp.mkdir()
    try:
        metrics = _write_files(run, tmp, config_hash, min_annualise_span_ns, notes)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics


def _replace_dir(new: Path, out: Path) -> None:
    """Put folder ``new`` at ``out``; an old ``out`` is moved aside first and removed
    after (a rename cannot replace a non-empty folder)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _write_files(
    run: ReplayRun,
    out: Path,
    config_hash: str,
    min_annualise_span_ns: int,
    notes: Sequence[str],
) -> dict[str, Any]:
    fills = fills_frame(run)
    equity = equity_frame(run)
    trips = round_trips_frame(fills)
    metrics = compute_metrics(run, equity, fills, min_annualise_span_ns=min_annualise_span_ns)
    header = run_header(run, equity)
    metrics = {"header": header, **metrics}
    metrics["config_sha256"] = header["effective_config_sha256"]
    metrics["config_file_sha256"] = config_hash
    metrics["data_files"] = [{"file": str(p), "bytes": p.stat().st_size} for p in run.files]
    metrics["data_notes"] = list(notes)
    fills.write_parquet(out / "trades.parquet")
    trips.write_parquet(out / "round_trips.parquet")
    equity.write_parquet(out / "equity.parquet")
    (out / "config.toml").write_text(
        config_toml(
            run.config,
            "The effective config of this run (defaults and inferred instruments included):\n"
            f"sha256 {header['effective_config_sha256']} of its canonical JSON.\n"
            "Replay it with: tradeloop replay DATA --config config.toml --out RUN",
        )
    )
    (out / "metrics.json").write_text(
        json.dumps(_json_safe(metrics), indent=2, sort_keys=False) + "\n"
    )
    states = [(e.ts_event, e.state) for e in run.recorder.states]
    title = f"replay: {run.config.strategy.name}, {header['data_from']} to {header['data_to']}"
    svg = plot_svg(equity, fills, title, states)
    (out / "report.svg").write_text(svg)
    mids = run.mids.series() if run.mids is not None else {}
    charts = interactive_charts(equity, fills, mids, states, run.engine.clock.now_ns() or None)
    (out / "report.html").write_text(_html(metrics, charts, fills, trips, run.engine.instruments))
    if run.monitor is not None:
        model = header["model"] or {}
        write_monitor_report(run.monitor, out, in_sample=model.get("in_sample"))
    return metrics
