"""The run folder of a replay: trades and equity (parquet), metrics (JSON), a PNG plot and
one self-contained HTML page.

Metric definitions (also written into metrics.json):

- returns are changes of account equity on the equity sampling grid over the initial
  cash (well defined at any drawdown);
- Sharpe = mean / std (ddof 1) of those returns x sqrt(periods per year), Sortino uses the
  downside deviation sqrt(mean(min(r, 0)^2)); periods per year = 365 days / grid
  interval (markets trading 24/7, no risk-free rate);
- max drawdown = largest fall from a running peak of equity, as a fraction of the peak;
- hit ratio = share of position-reducing fills whose realized PnL before fees is > 0;
- turnover = traded notional / initial cash.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.events import side_sign
from engine.portfolio import Portfolio
from replay.runner import ReplayRun

YEAR_NS = 365 * 86_400 * 10**9


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
    m = run.engine.market
    ts = np.concatenate(m.sample_ts) if m.sample_ts else np.empty(0, np.int64)
    eq = np.concatenate(m.sample_equity) if m.sample_equity else np.empty(0)
    # close the curve at the last tick, marked at the last mids
    final_ts = run.engine.clock.now_ns()
    final_eq = run.engine.portfolio.equity(m.mids())
    if final_ts and (ts.shape[0] == 0 or final_ts > ts[-1]):
        ts = np.append(ts, final_ts)
        eq = np.append(eq, final_eq)
    peak = np.maximum.accumulate(eq) if eq.shape[0] else eq
    dd = np.where(peak > 0, eq / np.where(peak > 0, peak, 1.0) - 1.0, 0.0)
    return pl.DataFrame({"ts_event": ts.astype(np.int64), "equity": eq, "drawdown": dd})


def compute_metrics(run: ReplayRun, equity: pl.DataFrame, fills: pl.DataFrame) -> dict[str, Any]:
    e = run.engine
    eq = equity["equity"].to_numpy()
    initial = run.config.replay.initial_cash
    interval = run.config.replay.equity_interval_ns
    periods = YEAR_NS / interval if interval else float("nan")
    # returns on the capital committed (initial cash), not on running equity: well
    # defined however deep the drawdown, and additive like the PnL they come from
    rets = np.diff(eq) / initial if eq.shape[0] > 1 and initial > 0 else np.empty(0)
    sharpe = sortino = float("nan")
    if rets.shape[0] > 1 and np.std(rets, ddof=1) > 0:
        sharpe = float(np.mean(rets) / np.std(rets, ddof=1) * math.sqrt(periods))
    downside = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2))) if rets.shape[0] else 0.0
    if downside > 0:
        sortino = float(np.mean(rets) / downside * math.sqrt(periods))
    # hit ratio from an independent pass over the fills
    book = Portfolio(len(e.instruments))
    wins = closes = 0
    for row in fills.iter_rows(named=True):
        i = e.instruments.index[row["instrument"]]
        before_pos = float(book.positions[i])
        realized_before = float(book.realized[i])
        signed = side_sign(row["side"]) * row["qty"]
        book.apply_fill(i, signed, row["price"], 0.0)
        if before_pos != 0.0 and (before_pos > 0) != (signed > 0):
            closes += 1
            wins += float(book.realized[i]) - realized_before > 0
    final_eq = float(eq[-1]) if eq.shape[0] else initial
    mids = e.market.mids()
    positions = {s: float(e.portfolio.positions[i]) for s, i in e.instruments.index.items()}
    return {
        "total_return": final_eq / initial - 1.0 if initial else float("nan"),
        "pnl": final_eq - initial,
        "realized_pnl": float(e.portfolio.realized.sum()),
        "unrealized_pnl": float(e.portfolio.unrealized(mids).sum()),
        "sharpe": sharpe,
        "sortino": sortino,
        "annualisation": f"returns on a {interval / 1e9:g} s equity grid; x sqrt({periods:.0f}) "
        "periods per year (365 days, 24/7); no risk-free rate",
        "max_drawdown": float(-equity["drawdown"].min()) if equity.height else 0.0,
        "num_trades": fills.height,
        "num_orders": e.counters["orders_requested"],
        "hit_ratio": wins / closes if closes else float("nan"),
        "turnover": float(e.portfolio.traded_notional.sum()) / initial if initial else float("nan"),
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
    }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def plot_png(equity: pl.DataFrame, fills: pl.DataFrame, title: str,
             states: list[tuple[int, str]] | None = None) -> bytes:  # fmt: skip
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


def write_report(run: ReplayRun, out_dir: str | Path, config_hash: str = "") -> dict[str, Any]:
    """Write trades.parquet, equity.parquet, metrics.json, report.png and report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fills = fills_frame(run)
    equity = equity_frame(run)
    metrics = compute_metrics(run, equity, fills)
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
    return metrics
