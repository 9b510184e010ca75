"""The run folder of a replay: trades and equity (parquet), metrics (JSON), a PNG plot and
one self-contained HTML page.

The figures and their definitions live in ``replay/metrics.py``; metrics.json carries
the definitions (``definitions``) next to the numbers, and says whether and how Sharpe
and Sortino were annualised.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.events import side_sign
from replay import metrics as fig
from replay.monitor_report import write_monitor_report
from replay.runner import ReplayRun


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
    grid = f"{n} periods of {interval / 1e9:g} s spanning {span_ns / 3.6e12:.4g} h"
    if factor is None:
        minimum = f"{min_annualise_span_ns / 3.6e12:.4g} h"
        annualisation = f"not annualised: {grid}, below the minimum {minimum}; see *_per_period"
    else:
        annualisation = (
            f"{grid}: x sqrt({factor**2:.0f} periods per year) (365 days, 24/7); no risk-free rate"
        )
    trips, trips_open = fig.round_trip_pnls(fills)
    final_eq = float(eq[-1]) if eq.shape[0] else initial
    mids = e.market.mids()
    positions = {s: float(e.portfolio.positions[i]) for s, i in e.instruments.index.items()}
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
    }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def plot_png(
    equity: pl.DataFrame,
    fills: pl.DataFrame,
    title: str,
    states: Sequence[tuple[int, str]] | None = None,
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.3, 1.7]})  # fmt: skip
    t = (equity["ts_event"].to_numpy() - (equity["ts_event"][0] if equity.height else 0)) / 3.6e12
    axes[0].plot(t, equity["equity"].to_numpy(), lw=1.0, color="#1f5fa8")
    axes[0].set_ylabel("equity")
    axes[0].set_title(title)
    axes[1].fill_between(
        t, equity["drawdown"].to_numpy() * 100, 0, color="#c0392b", alpha=0.6, lw=0
    )
    axes[1].set_ylabel("drawdown %")
    t0 = equity["ts_event"][0] if equity.height else 0
    for sym in sorted(set(fills["instrument"].to_list())):
        f = fills.filter(pl.col("instrument") == sym)
        notional = f["position_after"].to_numpy() * f["price"].to_numpy()
        axes[2].step((f["ts_event"].to_numpy() - t0) / 3.6e12, notional,
                     where="post", lw=0.8, label=sym)  # fmt: skip
    if fills.height:
        axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("position notional")
    axes[2].set_xlabel("hours since start")
    colours = {"HALTED": "#c0392b", "REDUCE_ONLY": "#e67e22", "ACTIVE": "#27ae60"}
    for ts_state, state in states or []:
        x = (ts_state - t0) / 3.6e12
        for ax in axes:
            ax.axvline(x, color=colours.get(state, "k"), lw=1.2, ls="--")
        axes[0].annotate(state, (x, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                         color=colours.get(state, "k"), rotation=90, va="top", ha="right")  # fmt: skip
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _html(metrics: dict[str, Any], png: bytes, fills: pl.DataFrame, config_hash: str) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, float):
            shown = f"{value:,.6g}"
        elif isinstance(value, dict | list):
            shown = f"<code>{html.escape(json.dumps(_json_safe(value)))}</code>"
        else:
            shown = html.escape(str(value))
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{shown}</td></tr>")
    head = fills.head(50)
    trade_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
        for r in head.iter_rows()
    )
    cols = "".join(f"<th>{html.escape(c)}</th>" for c in head.columns)
    img = base64.b64encode(png).decode()
    state_rows = (
        "".join(
            f"<tr><td>{s['ts_event']}</td><td>{html.escape(s['state'])}</td><td>{html.escape(s['reason'])}</td></tr>"
            for s in metrics.get("trading_states", [])
        )
        or "<tr><td colspan=3>none: ACTIVE throughout</td></tr>"
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tradeloop replay report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}code{{font-size:12px}}</style></head><body>
<h1>tradeloop replay report</h1><p>config sha256 <code>{config_hash}</code></p>
<img alt="equity, drawdown and positions" src="data:image/png;base64,{img}" style="width:100%">
<h2>Trading state changes</h2><table><tr><th>ts_event</th><th>state</th><th>reason</th></tr>{state_rows}</table>
<h2>Metrics</h2><table>{"".join(rows)}</table>
<h2>First {head.height} of {fills.height} fills</h2><table><tr>{cols}</tr>{trade_rows}</table>
</body></html>"""


def write_report(
    run: ReplayRun,
    out_dir: str | Path,
    config_hash: str = "",
    *,
    min_annualise_span_ns: int = fig.DAY_NS,
) -> dict[str, Any]:
    """Write trades.parquet, equity.parquet, metrics.json, report.png and report.html.

    Args:
        run: a finished replay.
        out_dir: the run folder (created).
        config_hash: sha256 of the config, recorded in metrics.json.
        min_annualise_span_ns: shortest span over which Sharpe and Sortino are annualised.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fills = fills_frame(run)
    equity = equity_frame(run)
    metrics = compute_metrics(run, equity, fills, min_annualise_span_ns=min_annualise_span_ns)
    metrics["config_sha256"] = config_hash
    metrics["data_files"] = [{"file": str(p), "bytes": p.stat().st_size} for p in run.files]
    fills.write_parquet(out / "trades.parquet")
    equity.write_parquet(out / "equity.parquet")
    (out / "metrics.json").write_text(
        json.dumps(_json_safe(metrics), indent=2, sort_keys=False) + "\n"
    )
    states = [(e.ts_event, e.state) for e in run.recorder.states]
    png = plot_png(equity, fills, f"replay: {run.config.strategy.name}", states)
    (out / "report.png").write_bytes(png)
    (out / "report.html").write_text(_html(metrics, png, fills, config_hash))
    if run.monitor is not None:
        write_monitor_report(run.monitor, out)
    return metrics
