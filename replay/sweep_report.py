"""The sweep folder: results (parquet), the trials' return matrix (parquet), a summary with
the overfitting statistics and their definitions (JSON), one PNG and one self-contained
HTML page.

The statistics are defined in ``replay/overfitting.py`` (``DEFINITIONS``, copied into
summary.json next to the numbers).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from replay import metrics as fig
from replay import overfitting as ov

if TYPE_CHECKING:  # replay.sweep imports this module to write its results
    from replay.sweep import Block, SweepPlan, TaskOutcome

F64 = npt.NDArray[np.float64]

DEFINITIONS = {
    **ov.DEFINITIONS,
    "block": "one of K consecutive time blocks of equal span over the data "
    "(start_ns <= ts_event < end_ns); every combination is replayed on every block on its "
    "own, starting flat with the initial cash and with features warming up from the block's "
    "first tick (nothing carries over from the block before)",
    "period": fig.DEFINITIONS["period"],
    "returns": fig.DEFINITIONS["returns"],
    "results_metrics": "the scalar figures of a replay's metrics.json (replay/metrics.py), "
    "one row per combination x block",
}


class _Matrix:
    """The trials' per-period returns: blocks stacked in time order, one column a trial."""

    def __init__(self, plan: SweepPlan, blocks: list[Block], outcomes: list[TaskOutcome]):
        by = {(o.combination, o.block): o for o in outcomes}
        n = len(plan.combinations)
        missing = [(c, b.index) for c in range(n) for b in blocks if (c, b.index) not in by]
        if missing:
            raise RuntimeError(f"sweep outcomes missing for (combination, block) {missing[:5]}")
        self.by = by
        parts, ends, block_of, block_perf = [], [], [], []
        for b in blocks:
            first = by[(0, b.index)].period_end_ns
            for c in range(n):
                # one equity grid for all (plan_sweep checks the interval): same periods
                if not np.array_equal(by[(c, b.index)].period_end_ns, first):
                    raise RuntimeError(f"block {b.index}: combinations on different period grids")
            block = np.column_stack([by[(c, b.index)].returns for c in range(n)]).reshape(-1, n)
            parts.append(block)
            ends.append(first)
            block_of.append(np.full(first.shape[0], b.index, dtype=np.int32))
            block_perf.append(ov.performance(block))
        self.returns: F64 = np.vstack(parts)
        self.period_end_ns = np.concatenate(ends)
        self.block_of = np.concatenate(block_of)
        self.block_perf: F64 = np.column_stack(block_perf)  # combinations x blocks
        self.full_perf: F64 = ov.performance(self.returns)


def _ranked(perf: F64) -> F64:
    """Performance with NaN (fewer than 2 periods) ranked last."""
    return np.where(np.isnan(perf), -np.inf, perf)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating | np.integer):
        return _json_safe(obj.item())
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _param_column(name: str, values: list[Any]) -> pl.Series:
    try:
        return pl.Series(name, values, strict=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        return pl.Series(name, [json.dumps(v) for v in values], dtype=pl.String)


def results_frame(
    plan: SweepPlan, blocks: list[Block], matrix: _Matrix, ranks: ov.BlockRanks
) -> pl.DataFrame:
    """One row per combination x block: the grid values, the block and the metrics."""
    rows = [(c, b) for c in plan.combinations for b in blocks]
    columns: dict[str, pl.Series] = {
        "combination": pl.Series([c.index for c, _ in rows], dtype=pl.Int32),
        "block": pl.Series([b.index for _, b in rows], dtype=pl.Int32),
        "block_start_ns": pl.Series([b.start_ns for _, b in rows], dtype=pl.Int64),
        "block_end_ns": pl.Series([b.end_ns for _, b in rows], dtype=pl.Int64),
        "params": pl.Series([json.dumps(c.values) for c, _ in rows], dtype=pl.String),
    }
    for key in plan.grid:
        columns[key] = _param_column(key, [c.values[key] for c, _ in rows])
    columns["performance"] = pl.Series(
        [float(matrix.block_perf[c.index, b.index]) for c, b in rows], dtype=pl.Float64
    )
    columns["rank_in_block"] = pl.Series(
        [float(ranks.ranks[c.index, b.index]) for c, b in rows], dtype=pl.Float64
    )
    metric_names = list(matrix.by[(0, blocks[0].index)].metrics)
    for name in metric_names:
        values = [matrix.by[(c.index, b.index)].metrics.get(name) for c, b in rows]
        columns[name] = pl.Series(name, values, strict=False)
    return pl.DataFrame(columns)


def returns_frame(plan: SweepPlan, matrix: _Matrix) -> pl.DataFrame:
    """The T x N return matrix behind the full-sample statistics and PBO."""
    data: dict[str, Any] = {"block": matrix.block_of, "period_end_ns": matrix.period_end_ns}
    for c in plan.combinations:
        data[f"combination_{c.index}"] = matrix.returns[:, c.index]
    return pl.DataFrame(data)


def summarise(
    plan: SweepPlan,
    blocks: list[Block],
    matrix: _Matrix,
    *,
    partitions: int,
    run: dict[str, Any],
) -> tuple[dict[str, Any], ov.BlockRanks, ov.Pbo | None]:
    n = len(plan.combinations)
    periods = matrix.returns.shape[0]
    best = int(np.argmax(_ranked(matrix.full_perf)))
    chosen = plan.combinations[best]
    dsr = ov.deflated_sharpe(matrix.returns, best) if periods >= 2 else None
    ranks = ov.block_ranks(np.nan_to_num(matrix.block_perf, nan=-np.inf), best)
    usable = ov.usable_partitions(periods, partitions)
    pbo: ov.Pbo | None = None
    if n < 2:
        pbo_out: dict[str, Any] = {"value": None, "reason": "one combination: nothing to select"}
    elif usable is None:
        pbo_out = {"value": None, "reason": f"{periods} periods: at least 4 are needed"}
    else:
        pbo = ov.cscv_pbo(matrix.returns, usable)
        pbo_out = {
            "value": pbo.pbo,
            "partitions": pbo.partitions,
            "partitions_requested": partitions,
            "splits": pbo.splits,
            "periods_used": pbo.periods_used,
            "periods_dropped": pbo.periods_dropped,
            "logit_median": float(np.median(pbo.logits)),
            "logits": pbo.logits,
            "in_sample_winners": pbo.chosen_in_sample,
            "out_of_sample_ranks": pbo.out_of_sample_rank,
        }
    metrics = [matrix.by[(best, b.index)].metrics for b in blocks]
    summary = {
        "trials": n,
        "folds": len(blocks),
        "periods": periods,
        "best": {
            "combination": best,
            "label": chosen.label,
            "params": chosen.values,
            "sharpe_per_period": float(matrix.full_perf[best]),
            "deflated_sharpe": None if dsr is None else dsr.deflated_sharpe,
            "probabilistic_sharpe": None if dsr is None else dsr.probabilistic_sharpe,
            "expected_max_sharpe": None if dsr is None else dsr.expected_max_sharpe,
            "sharpe_variance_across_trials": None if dsr is None else dsr.sharpe_variance,
            "returns_skewness": None if dsr is None else dsr.skewness,
            "returns_kurtosis": None if dsr is None else dsr.kurtosis,
            "total_return_per_block": [m.get("total_return") for m in metrics],
            "num_trades_per_block": [m.get("num_trades") for m in metrics],
            "block_ranks": ranks.chosen,
        },
        "pbo": pbo_out,
        "blocks": [
            {
                "block": b.index,
                "start_ns": b.start_ns,
                "end_ns": b.end_ns,
                "start": _iso(b.start_ns),
                "end": _iso(b.end_ns),
                "periods": int(np.sum(matrix.block_of == b.index)),
                "winner": int(ranks.winners[k]),
                "winner_label": plan.combinations[int(ranks.winners[k])].label,
            }
            for k, b in enumerate(blocks)
        ],
        "winner_ranks": ranks.winner_ranks,
        "winner_next_block_rank": ranks.winner_next_block_rank,
        "mean_pairwise_correlation": ov.mean_pairwise_correlation(matrix.returns),
        "grid": plan.grid,
        "config_file": plan.config_file,
        "config_sha256": plan.config_sha256,
        "grid_file": plan.grid_file,
        "grid_sha256": plan.grid_sha256,
        "run": run,
        "definitions": DEFINITIONS,
    }
    return summary, ranks, pbo


def _short(label: str, width: int = 48) -> str:
    return label if len(label) <= width else label[: width - 3] + "..."


def _grid_panel(ax: Any, plan: SweepPlan, perf: F64, best: int) -> None:
    """Full-sample Sharpe over the grid: a heatmap of the two keys with most values (best
    over any other keys), a line for a one-key grid."""
    keys = sorted(plan.grid, key=lambda k: -len(plan.grid[k]))
    texts = {k: [json.dumps(v) for v in plan.grid[k]] for k in keys}
    if len(keys) == 1:
        k = keys[0]
        ax.plot(range(len(texts[k])), perf, marker="o", color="#1f5fa8")
        ax.set_xticks(range(len(texts[k])), texts[k], rotation=45, fontsize=8)
        ax.set_xlabel(k)
        ax.set_ylabel("sharpe per period (full sample)")
        ax.set_title("full-sample sharpe over the grid")
        return
    ky, kx = keys[0], keys[1]
    cells = np.full((len(texts[ky]), len(texts[kx])), np.nan)
    for c in plan.combinations:
        i = texts[ky].index(json.dumps(c.values[ky]))
        j = texts[kx].index(json.dumps(c.values[kx]))
        if np.isnan(cells[i, j]) or perf[c.index] > cells[i, j]:
            cells[i, j] = perf[c.index]
    image = ax.imshow(cells, cmap="RdYlGn", aspect="auto")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    ax.set_yticks(range(len(texts[ky])), texts[ky], fontsize=8)
    ax.set_xticks(range(len(texts[kx])), texts[kx], fontsize=8, rotation=45)
    ax.set_ylabel(_short(ky, 30))
    ax.set_xlabel(_short(kx, 30))
    chosen = plan.combinations[best].values
    ax.add_patch(
        _box(texts[kx].index(json.dumps(chosen[kx])), texts[ky].index(json.dumps(chosen[ky])))
    )
    others = " (best over the other keys)" if len(keys) > 2 else ""
    ax.set_title(f"full-sample sharpe per period{others}", fontsize=10)


def _box(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="#1f5fa8", lw=2.5)


def plot_png(
    plan: SweepPlan, blocks: list[Block], matrix: _Matrix, best: int, pbo: ov.Pbo | None
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(plan.combinations)
    order = np.argsort(-_ranked(matrix.full_perf), kind="stable")
    fig_, axes = plt.subplots(2, 2, figsize=(13, max(8.0, 4 + 0.18 * min(n, 40))))
    ax = axes[0, 0]
    table = np.column_stack([matrix.block_perf, matrix.full_perf])[order]
    image = ax.imshow(table, cmap="RdYlGn", aspect="auto", interpolation="nearest")
    fig_.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(
        range(len(blocks) + 1),
        [f"block {b.index + 1}" for b in blocks] + ["all"],
        fontsize=8,
        rotation=45,
    )
    if n <= 40:
        ax.set_yticks(range(n), [_short(plan.combinations[i].label) for i in order], fontsize=7)
    ax.add_patch(_box(len(blocks), int(np.flatnonzero(order == best)[0])))
    ax.set_title("sharpe per period by block (rows: best first)", fontsize=10)
    _grid_panel(axes[0, 1], plan, matrix.full_perf, best)
    ax = axes[1, 0]
    cumulative = np.cumsum(matrix.returns, axis=0)
    ax.plot(cumulative, color="#999999", lw=0.5, alpha=0.6)
    ax.plot(
        cumulative[:, best], color="#1f5fa8", lw=1.5, label=_short(plan.combinations[best].label)
    )
    for k in range(1, len(blocks)):
        ax.axvline(int(np.searchsorted(matrix.block_of, k)), color="k", ls="--", lw=0.8)
    ax.set_xlabel("period (blocks concatenated)")
    ax.set_ylabel("cumulative return (of initial cash)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("every trial (grey) and the best (blue)", fontsize=10)
    ax = axes[1, 1]
    if pbo is not None:
        ax.hist(pbo.logits, bins=min(30, max(5, pbo.splits // 3)), color="#7f8c8d")
        ax.axvline(0.0, color="#c0392b", lw=1.5)
        ax.set_xlabel("logit of the in-sample winner's out-of-sample rank")
        ax.set_ylabel("splits")
        ax.set_title(
            f"CSCV: PBO = {pbo.pbo:.2f} ({pbo.splits} splits, S = {pbo.partitions})", fontsize=10
        )
    else:
        ax.text(0.5, 0.5, "PBO not defined (see summary.json)", ha="center", va="center")
        ax.set_axis_off()
    for a in axes[1]:
        a.grid(alpha=0.2)
    fig_.tight_layout()
    buf = io.BytesIO()
    fig_.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig_)
    return buf.getvalue()


def _number(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return format(value, spec)
    return html.escape(str(value))


def _html(summary: dict[str, Any], plan: SweepPlan, matrix: _Matrix, png: bytes) -> str:
    best = summary["best"]
    pbo = summary["pbo"]
    head = [
        ("best combination", html.escape(best["label"])),
        ("trials (combinations)", _number(summary["trials"])),
        ("blocks x periods", f"{summary['folds']} x {_number(summary['periods'])} in all"),
        ("sharpe per period, full sample", _number(best["sharpe_per_period"])),
        ("probabilistic sharpe (vs 0)", _number(best["probabilistic_sharpe"], ".3f")),
        ("expected max sharpe of the trials (SR0)", _number(best["expected_max_sharpe"])),
        (f"deflated sharpe ({summary['trials']} trials)", _number(best["deflated_sharpe"], ".3f")),
        (
            "probability of backtest overfitting",
            f"{pbo['value']:.3f} over {pbo['splits']} splits (S = {pbo['partitions']})"
            if pbo["value"] is not None
            else f"n/a: {html.escape(pbo['reason'])}",
        ),
        (
            "ranks of the best in each block",
            ", ".join(_number(r, "g") for r in best["block_ranks"]),
        ),
        (
            "mean pairwise correlation of the trials",
            _number(summary["mean_pairwise_correlation"], ".3f"),
        ),
    ]
    head_rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in head)
    block_rows = "".join(
        f"<tr><td>{b['block'] + 1}</td><td>{b['start']}</td><td>{b['end']}</td>"
        f"<td>{b['periods']}</td><td>{html.escape(b['winner_label'])}</td>"
        f"<td>{_number(summary['winner_next_block_rank'][k - 1], 'g') if k else ''}</td>"
        f"<td>{_number(best['block_ranks'][k], 'g')}</td></tr>"
        for k, b in enumerate(summary["blocks"])
    )
    order = np.argsort(-_ranked(matrix.full_perf), kind="stable")[:30]
    block_heads = "".join(f"<th>block {k + 1}</th>" for k in range(summary["folds"]))
    combo_rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(plan.combinations[i].label)}</td>"
        f"<td>{_number(float(matrix.full_perf[i]))}</td>"
        + "".join(f"<td>{_number(float(v))}</td>" for v in matrix.block_perf[i])
        + "</tr>"
        for i in order
    )
    definitions = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
        for k, v in summary["definitions"].items()
    )
    img = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tradeloop sweep report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}dd{{margin:0 0 .6em 1.5em;font-size:13px}}</style></head><body>
<h1>tradeloop sweep report</h1>
<p>config <code>{html.escape(plan.config_file)}</code> sha256 <code>{plan.config_sha256}</code>;
grid <code>{html.escape(plan.grid_file)}</code> sha256 <code>{plan.grid_sha256}</code></p>
<table>{head_rows}</table>
<img alt="sharpe by block and over the grid, cumulative returns, CSCV logits" src="data:image/png;base64,{img}" style="width:100%">
<h2>Blocks</h2><table><tr><th>block</th><th>start</th><th>end</th><th>periods</th><th>best in block</th>
<th>rank here of the previous block's best</th><th>rank of the overall best</th></tr>{block_rows}</table>
<h2>Top {len(order)} of {summary["trials"]} combinations (sharpe per period)</h2>
<table><tr><th>#</th><th>combination</th><th>full sample</th>{block_heads}</tr>{combo_rows}</table>
<h2>Definitions</h2><dl>{definitions}</dl>
</body></html>"""


def write_sweep(
    plan: SweepPlan,
    blocks: list[Block],
    outcomes: list[TaskOutcome],
    out_dir: str | Path,
    *,
    partitions: int = 8,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write results.parquet, returns.parquet, summary.json, report.png and report.html.

    Returns:
        The summary (as written, NaN as None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = _Matrix(plan, blocks, outcomes)
    summary, ranks, pbo = summarise(plan, blocks, matrix, partitions=partitions, run=run or {})
    results_frame(plan, blocks, matrix, ranks).write_parquet(out / "results.parquet")
    returns_frame(plan, matrix).write_parquet(out / "returns.parquet")
    summary = _json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = plot_png(plan, blocks, matrix, summary["best"]["combination"], pbo)
    (out / "report.png").write_bytes(png)
    (out / "report.html").write_text(_html(summary, plan, matrix, png))
    return summary  # type: ignore[no-any-return]
