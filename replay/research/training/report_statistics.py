"""The training report's sections on the manifest's ``statistics``: significance against
chance, the baselines ranked with the model, and the net edge per trade after costs."""

from __future__ import annotations

import html

from engine.signals.manifest import Estimate, Manifest, OutOfSampleStatistics

METRIC_ORDER = ("auc", "ic", "accuracy", "precision", "recall")


def _v(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def _row(name: str, e: Estimate, spec: str = ".4f") -> str:
    ci = "n/a" if e.low is None or e.high is None else f"{e.low:{spec}} to {e.high:{spec}}"
    p = "n/a" if e.p_value is None else f"{e.p_value:.3f}"
    return (
        f"<tr><th>{html.escape(name)}</th><td>{_v(e.value, spec)}</td><td>{ci}</td>"
        f"<td>{_v(e.chance, spec)}</td><td>{p}</td></tr>"
    )


HEAD = "<tr><th></th><th>value</th><th>95 % interval</th><th>chance</th><th>p (one-sided)</th></tr>"


def _verdict(s: OutOfSampleStatistics) -> str:
    if s.better_than_chance is None:
        return "untested: too few rows per fold for a shift of at least one block"
    if s.better_than_chance:
        return f"yes: AUC and IC each with p &lt; {s.alpha:g} and a 95 % interval above chance"
    return (
        f"<b>no</b>: not both AUC and IC with p &lt; {s.alpha:g} and a 95 % interval above chance"
    )


def _significance(s: OutOfSampleStatistics) -> str:
    rows = "".join(_row(k, s.metrics[k]) for k in METRIC_ORDER if k in s.metrics)
    return (
        "<h2>Significance (out of sample)</h2>"
        f"<p>Better than chance: {_verdict(s)}. Labels overlap up to {s.label_overlap_rows} "
        f"rows; blocks of {s.block_rows} rows, {s.replicates} replicates.</p>"
        f"<table>{HEAD}{rows}</table><p><small>{html.escape(s.method)}</small></p>"
    )


def _baselines(s: OutOfSampleStatistics) -> str:
    if not s.baselines:
        return ""
    lines = []
    for b in s.baselines:
        ic = b.metrics["ic"]
        auc = b.metrics.get("auc")
        ci = "n/a" if ic.low is None or ic.high is None else f"{ic.low:.4f} to {ic.high:.4f}"
        p = "n/a" if ic.p_value is None else f"{ic.p_value:.3f}"
        signs = " ".join("+" if x > 0 else "-" for x in b.signs)
        name = f"<b>{html.escape(b.name)}</b>" if b.kind == "model" else html.escape(b.name)
        lines.append(
            f"<tr><td>{b.rank}</td><td>{name}</td><td>{b.kind}</td><td>{_v(ic.value)}</td>"
            f"<td>{ci}</td><td>{p}</td><td>{_v(None if auc is None else auc.value)}</td>"
            f"<td>{signs}</td></tr>"
        )
    versus = ""
    c = s.versus_best_baseline
    if c is not None:
        d = c.difference
        ci = "n/a" if d.low is None or d.high is None else f"{d.low:+.4f} to {d.high:+.4f}"
        word = "significantly better" if c.significant else "<b>not significantly better</b>"
        versus = (
            f"<p>The model's IC minus the best baseline's ({html.escape(c.baseline)}): "
            f"{_v(d.value, '+.4f')} (95 % interval {ci}, p = {_v(d.p_value, '.3f')}, "
            f"resampled pairwise): {word} than the best baseline. The best baseline is "
            "picked on these same test rows, which flatters it.</p>"
        )
    return (
        "<h2>Baselines on the same out-of-sample rows, ranked by IC</h2>"
        f"<p>The model ranks {s.model_rank} of {len(s.baselines)}. A feature baseline is the "
        "feature alone as the score, its sign per fold chosen on that fold's training rows.</p>"
        "<table><tr><th>rank</th><th>score</th><th>kind</th><th>IC</th><th>95 % interval</th>"
        "<th>p against chance</th><th>AUC</th><th>sign per fold</th></tr>"
        f"{''.join(lines)}</table>{versus}"
    )


def _costs(s: OutOfSampleStatistics) -> str:
    e = s.net_edge
    if e is None:
        return f"<h2>Net edge per trade after costs</h2><p>{html.escape(s.net_edge_note)}</p>"
    note = f"<p>{html.escape(s.net_edge_note)}</p>" if s.net_edge_note else ""
    short = "" if e.allow_short else " (no shorts)"
    facts = (
        f"<p>Strategy thresholds: long at or above {e.upper:g}, short below {e.lower:g}{short}; "
        f"{e.trades:,} of {e.rows:,} out-of-sample rows trade ({e.long_trades:,} long, "
        f"{e.short_trades:,} short); taker fee {e.fee_bps:g} bps a side, mean half spread "
        f"{_v(e.half_spread_bps, '.3f')} bps, mean cost {_v(e.cost_bps, '.3f')} bps a trade.</p>"
    )
    table = ""
    if e.trades:
        table = (
            f"<table>{HEAD}{_row('gross edge, bps', e.gross_edge_bps, '+.3f')}"
            f"{_row('net edge, bps', e.net_edge_bps, '+.3f')}</table>"
        )
    return (
        "<h2>Net edge per trade after costs</h2>"
        f"{facts}{table}{note}<p><small>{html.escape(e.formula)}</small></p>"
    )


def statistics_html(m: Manifest) -> str:
    """The sections, or nothing for a manifest from before significance testing."""
    s = m.statistics
    if s is None:
        return ""
    return _significance(s) + _baselines(s) + _costs(s)
