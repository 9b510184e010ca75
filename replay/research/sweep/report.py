"""The sweep folder: results (parquet), the trials' return matrix (parquet), a summary with
the overfitting statistics and their definitions (JSON), one PNG and one self-contained
HTML page.

The statistics are defined in ``replay/research/overfitting.py`` (``DEFINITIONS``, copied into
summary.json next to the numbers); what they mean, with the thresholds read, is
``replay/research/sweep/verdict.py``'s (summary.json ``verdict``, the page's first lines).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.errors import SweepError
from replay.backtest import metrics as fig
from replay.research import overfitting as ov
from replay.research.sweep import verdict as vd

if TYPE_CHECKING:
    from replay.research.sweep.plan import Block, SweepPlan
    from replay.research.sweep.trial import TaskOutcome

F64 = npt.NDArray[np.float64]

DEFINITIONS = {
    **ov.DEFINITIONS,
    "block": "one of K consecutive time blocks of equal span over the data "
    "(start_ns <= ts_event < end_ns); every combination is replayed on every block on its "
    "own, starting flat with the initial cash and with features warming up from the block's "
    "first tick (nothing carries over from the block before)",
    "period": fig.DEFINITIONS["period"],
    "returns": fig.DEFINITIONS["returns"],
    "failed": "a trial (one combination on one block) whose replay raised, or whose worker "
    "process died twice while running it alone (the local pool reruns the trials in flight "
    "at a death one at a time, and retries a trial once after its own death; on Dask, the "
    "scheduler's allowed-failures rule); its error text is in results.parquet. "
    "A combination with any failed block is left out of every statistic (trials, deflated "
    "sharpe, PBO, ranks): the statistics count only combinations that succeeded on every "
    "block",
    "resumed": "trials read from the sweep folder (trials/), stored by an earlier run of "
    "the same sweep (same base config content, grid, data files by name, size and "
    "modification time, and folds), and not run again; failed trials are run again",
    "results_metrics": "the scalar figures of a replay's metrics.json (replay/backtest/metrics.py), "
    "one row per combination x block",
    "prior_trials": "trials run before on the same data (tradeloop sweep --prior-trials): "
    "counted in the deflated Sharpe's N with this sweep's combinations (SR0 from this "
    "sweep's Sharpe variance)",
    "deflated_sharpe_autocorrelation_adjusted": "the deflated Sharpe with T replaced by T (1 - "
    "rho) / (1 + rho), rho > 0 the best's lag-1 return autocorrelation (AR(1) approximation, "
    "Lo 2002): periods of held positions are not independent",
    "verdict": f"the reading of DSR and PBO: DSR (the smaller of the two) >= "
    f"{vd.DSR_SIGNIFICANT:g} significant (the best beats luck among the trials counted); "
    f"PBO > {vd.PBO_NOISE:g} the choice within the grid is noise",
}


class _Matrix:
    """The per-period returns of the combinations that succeeded on every block: blocks
    stacked in time order, one column a combination (``combos[j]`` is column j).

    A combination with a failed block has no full-sample series and is left out of every
    statistic; ``failed`` lists the failed tasks.
    """

    def __init__(self, plan: SweepPlan, blocks: list[Block], outcomes: list[TaskOutcome]):
        by = {(o.combination, o.block): o for o in outcomes}
        missing = [
            (c.index, b.index)
            for c in plan.combinations
            for b in blocks
            if (c.index, b.index) not in by
        ]
        if missing:
            raise RuntimeError(f"sweep outcomes missing for (combination, block) {missing[:5]}")
        self.by = by
        self.failed = [o for o in outcomes if o.failed]
        bad = {o.combination for o in self.failed}
        self.combos = [c for c in plan.combinations if c.index not in bad]
        self.column = {c.index: j for j, c in enumerate(self.combos)}
        n = len(self.combos)
        parts, ends, block_of, block_perf = [], [], [], []
        for b in blocks:
            first = by[(self.combos[0].index, b.index)].period_end_ns if n else np.empty(0)
            for c in self.combos:
                # one equity grid for all (plan_sweep checks the interval): same periods
                if not np.array_equal(by[(c.index, b.index)].period_end_ns, first):
                    raise RuntimeError(f"block {b.index}: combinations on different period grids")
            cols = [by[(c.index, b.index)].returns for c in self.combos]
            block = np.column_stack(cols).reshape(-1, n) if n else np.empty((0, 0))
            parts.append(block)
            ends.append(first)
            block_of.append(np.full(first.shape[0], b.index, dtype=np.int32))
            block_perf.append(ov.performance(block))
        self.returns: F64 = np.vstack(parts) if n else np.empty((0, 0))
        self.period_end_ns = np.concatenate(ends).astype(np.int64)
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
    plan: SweepPlan, blocks: list[Block], matrix: _Matrix, ranks: ov.BlockRanks | None
) -> pl.DataFrame:
    """One row per combination x block (a trial): the grid values, the block, the status
    (``ok`` or ``failed`` with the error text) and the metrics.

    ``performance`` is the trial's own Sharpe per period (null when it failed);
    ``rank_in_block`` ranks it among the combinations that succeeded on every block (null
    for a combination left out of the statistics)."""
    rows = [(c, b) for c in plan.combinations for b in blocks]
    outcomes = [matrix.by[(c.index, b.index)] for c, b in rows]
    columns: dict[str, pl.Series] = {
        "combination": pl.Series([c.index for c, _ in rows], dtype=pl.Int32),
        "block": pl.Series([b.index for _, b in rows], dtype=pl.Int32),
        "trial_id": pl.Series([o.trial_id for o in outcomes], dtype=pl.String),
        "status": pl.Series(["failed" if o.failed else "ok" for o in outcomes], dtype=pl.String),
        "error": pl.Series([o.error for o in outcomes], dtype=pl.String),
        "block_start_ns": pl.Series([b.start_ns for _, b in rows], dtype=pl.Int64),
        "block_end_ns": pl.Series([b.end_ns for _, b in rows], dtype=pl.Int64),
        "params": pl.Series([json.dumps(c.values) for c, _ in rows], dtype=pl.String),
    }
    for key in plan.grid:
        columns[key] = _param_column(key, [c.values[key] for c, _ in rows])
    columns["performance"] = pl.Series(
        [None if o.failed else float(ov.performance(o.returns)[0]) for o in outcomes],
        dtype=pl.Float64,
    )

    def rank(c: int, b: int) -> float | None:
        j = matrix.column.get(c)
        return None if j is None or ranks is None else float(ranks.ranks[j, b])

    columns["rank_in_block"] = pl.Series(
        [rank(c.index, b.index) for c, b in rows], dtype=pl.Float64
    )
    metric_names: list[str] = []
    for o in outcomes:
        metric_names += [k for k in o.metrics if k not in metric_names]
    for name in metric_names:
        if name in columns:
            continue
        values = [o.metrics.get(name) for o in outcomes]
        columns[name] = pl.Series(name, values, strict=False)
    return pl.DataFrame(columns)


def returns_frame(matrix: _Matrix) -> pl.DataFrame:
    """The T x N return matrix behind the full-sample statistics and PBO (the
    combinations that succeeded on every block)."""
    data: dict[str, Any] = {"block": matrix.block_of, "period_end_ns": matrix.period_end_ns}
    for j, c in enumerate(matrix.combos):
        data[f"combination_{c.index}"] = matrix.returns[:, j]
    return pl.DataFrame(data)


def _failures(plan: SweepPlan, matrix: _Matrix) -> dict[str, Any]:
    return {
        "tasks": len(matrix.failed),
        "combinations": len(plan.combinations) - len(matrix.combos),
        "errors": [
            {
                "combination": o.combination,
                "block": o.block,
                "label": plan.combinations[o.combination].label,
                "error": o.error,
            }
            for o in matrix.failed[:20]
        ],
    }


def summarise(
    plan: SweepPlan,
    blocks: list[Block],
    matrix: _Matrix,
    *,
    partitions: int,
    run: dict[str, Any],
    prior_trials: int = 0,
) -> tuple[dict[str, Any], ov.BlockRanks, ov.Pbo | None]:
    # positions (columns of the matrix) here; combination indices in what is written
    n = len(matrix.combos)
    periods = matrix.returns.shape[0]
    best = int(np.argmax(_ranked(matrix.full_perf)))
    chosen = matrix.combos[best]
    dsr = vd.deflated_sharpe(matrix.returns, best, prior_trials) if periods >= 2 else None
    rho = vd.lag1_autocorrelation(matrix.returns[:, best]) if periods >= 2 else None
    dsr_adjusted = None if dsr is None or rho is None else vd.autocorrelation_adjusted(dsr, rho)
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
            "in_sample_winners": [matrix.combos[int(j)].index for j in pbo.chosen_in_sample],
            "out_of_sample_ranks": pbo.out_of_sample_rank,
        }
    metrics = [matrix.by[(chosen.index, b.index)].metrics for b in blocks]
    correlation = ov.mean_pairwise_correlation(matrix.returns)
    reading = vd.verdict(
        dsr=None if dsr is None else dsr.deflated_sharpe,
        dsr_adjusted=dsr_adjusted,
        rho=rho,
        pbo=None if pbo is None else pbo.pbo,
        splits=None if pbo is None else pbo.splits,
        trials=n,
        prior_trials=prior_trials,
        correlation=correlation,
    )
    summary = {
        "verdict": {
            "headline": reading.headline,
            "significant": reading.significant,
            "choice_is_noise": reading.choice_is_noise,
            "sentences": reading.sentences,
            "thresholds": {"deflated_sharpe": vd.DSR_SIGNIFICANT, "pbo": vd.PBO_NOISE},
        },
        "trials": n,
        "prior_trials": prior_trials,
        "trials_counted": n + prior_trials,
        "combinations": len(plan.combinations),
        "failed": _failures(plan, matrix),
        "folds": len(blocks),
        "periods": periods,
        "best": {
            "combination": chosen.index,
            "label": chosen.label,
            "params": chosen.values,
            "sharpe_per_period": float(matrix.full_perf[best]),
            "deflated_sharpe": None if dsr is None else dsr.deflated_sharpe,
            "deflated_sharpe_autocorrelation_adjusted": dsr_adjusted,
            "returns_lag1_autocorrelation": rho,
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
                "winner": matrix.combos[int(ranks.winners[k])].index,
                "winner_label": matrix.combos[int(ranks.winners[k])].label,
            }
            for k, b in enumerate(blocks)
        ],
        "winner_ranks": ranks.winner_ranks,
        "winner_next_block_rank": ranks.winner_next_block_rank,
        "mean_pairwise_correlation": correlation,
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
    """The whole label, wrapped at its commas (or anywhere, for a long key) into lines of
    about ``width`` characters: a cut label hides which combination a row is."""
    parts = [p.strip() for p in label.split(",")]
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            lines.extend(textwrap.wrap(part, width, break_on_hyphens=False) or [part])
    return "\n".join(lines)


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
    ax.set_ylabel(_short(ky, 30), fontsize=8)
    ax.set_xlabel(_short(kx, 30), fontsize=8)
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

    n = len(matrix.combos)
    pos = matrix.column[best]  # best is a combination index; its column in the matrix
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
        ax.set_yticks(range(n), [_short(matrix.combos[i].label, 40) for i in order], fontsize=7)
    ax.add_patch(_box(len(blocks), int(np.flatnonzero(order == pos)[0])))
    ax.set_title("sharpe per period by block (rows: best first)", fontsize=10)
    # over the whole grid, a failed combination a blank cell
    perf_all = np.full(len(plan.combinations), np.nan)
    perf_all[[c.index for c in matrix.combos]] = matrix.full_perf
    _grid_panel(axes[0, 1], plan, perf_all, best)
    ax = axes[1, 0]
    cumulative = np.cumsum(matrix.returns, axis=0)
    ax.plot(cumulative, color="#999999", lw=0.5, alpha=0.6)
    ax.plot(
        cumulative[:, pos], color="#1f5fa8", lw=1.5, label=_short(plan.combinations[best].label)
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
    failed = summary["failed"]
    head = [
        ("best combination", html.escape(best["label"])),
        ("trials (combinations counted)", _number(summary["trials"])),
        (
            "failed",
            f"{failed['tasks']} of {summary['run'].get('tasks', '?')} combination x block "
            f"trials; {failed['combinations']} of {summary['combinations']} combinations left "
            "out of every statistic",
        ),
        (
            "resumed",
            f"{_number(summary['run'].get('tasks_resumed', 0))} trials read from an earlier "
            f"run, {_number(summary['run'].get('tasks_run', '?'))} run now",
        ),
        ("blocks x periods", f"{summary['folds']} x {_number(summary['periods'])} in all"),
        ("sharpe per period, full sample", _number(best["sharpe_per_period"])),
        ("probabilistic sharpe (vs 0)", _number(best["probabilistic_sharpe"], ".3f")),
        ("expected max sharpe of the trials (SR0)", _number(best["expected_max_sharpe"])),
        (
            f"deflated sharpe ({summary['trials_counted']} trials counted"
            + (
                f", {summary['prior_trials']} of them before this sweep"
                if summary["prior_trials"]
                else ""
            )
            + ")",
            _number(best["deflated_sharpe"], ".3f")
            + f" (>= {vd.DSR_SIGNIFICANT:g}: significant); with autocorrelated periods "
            + _number(best["deflated_sharpe_autocorrelation_adjusted"], ".3f"),
        ),
        (
            "probability of backtest overfitting",
            f"{pbo['value']:.3f} over {pbo['splits']} splits (S = {pbo['partitions']}; > "
            f"{vd.PBO_NOISE:g}: the choice within the grid is noise)"
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
    failed_rows = "".join(
        f"<tr><td>{o.combination}</td><td>{o.block + 1}</td>"
        f"<td>{html.escape(plan.combinations[o.combination].label)}</td>"
        f"<td><pre>{html.escape(o.error or '')}</pre></td></tr>"
        for o in matrix.failed[:50]
    )
    failed_section = (
        f"<h2>Failed trials ({len(matrix.failed)}"
        f"{', first 50' if len(matrix.failed) > 50 else ''})</h2><table><tr><th>#</th>"
        f"<th>block</th><th>combination</th><th>error</th></tr>{failed_rows}</table>"
        if matrix.failed
        else ""
    )
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
        f"<tr><td>{matrix.combos[i].index}</td><td>{html.escape(matrix.combos[i].label)}</td>"
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
<h2 id="verdict">What this says</h2><p><b>{html.escape(summary["verdict"]["headline"])}</b></p>
<ul>{"".join(f"<li>{html.escape(t)}</li>" for t in summary["verdict"]["sentences"])}</ul>
<table>{head_rows}</table>
<img alt="sharpe by block and over the grid, cumulative returns, CSCV logits" src="data:image/png;base64,{img}" style="width:100%">
<h2>Blocks</h2><table><tr><th>block</th><th>start</th><th>end</th><th>periods</th><th>best in block</th>
<th>rank here of the previous block's best</th><th>rank of the overall best</th></tr>{block_rows}</table>
<h2>Top {len(order)} of {summary["trials"]} combinations (sharpe per period)</h2>
<table><tr><th>#</th><th>combination</th><th>full sample</th>{block_heads}</tr>{combo_rows}</table>
{failed_section}
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
    prior_trials: int = 0,
) -> dict[str, Any]:
    """Write results.parquet, returns.parquet, summary.json, report.png and report.html.

    ``prior_trials``: trials run before on the same data, counted in the deflated
    Sharpe's number of trials (``replay/research/sweep/verdict.py``).

    The statistics are over the combinations that succeeded on every block; the failed
    trials are rows of results.parquet (status ``failed``, the error text) and are
    counted in the summary and on the page.

    Returns:
        The summary (as written, NaN as None).

    Raises:
        SweepError: no combination succeeded on every block (results.parquet and a
            summary.json with the failures are written first).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = _Matrix(plan, blocks, outcomes)
    if not matrix.combos:
        results_frame(plan, blocks, matrix, None).write_parquet(out / "results.parquet")
        failed = _failures(plan, matrix)
        summary = {"trials": 0, "combinations": len(plan.combinations), "failed": failed}
        summary["run"] = run or {}
        (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
        first = failed["errors"][0]
        raise SweepError(
            f"every combination failed ({failed['tasks']} trials); the first: combination "
            f"{first['combination']}, block {first['block'] + 1}: "
            f"{str(first['error']).splitlines()[0]} (all in {out / 'results.parquet'})"
        )
    summary, ranks, pbo = summarise(
        plan, blocks, matrix, partitions=partitions, run=run or {}, prior_trials=prior_trials
    )
    results_frame(plan, blocks, matrix, ranks).write_parquet(out / "results.parquet")
    returns_frame(matrix).write_parquet(out / "returns.parquet")
    summary = _json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = plot_png(plan, blocks, matrix, summary["best"]["combination"], pbo)
    (out / "report.png").write_bytes(png)
    (out / "report.html").write_text(_html(summary, plan, matrix, png))
    return summary  # type: ignore[no-any-return]
