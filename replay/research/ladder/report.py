"""``ladder.json`` and ``ladder.html``: the ladder's comparison, written for a reader.

The HTML is one self-contained file (inline CSS and SVG, no script, no network): the
recommendation and its rule first, then one row per family, simplest first, with every
figure's 95 % interval, the IC intervals drawn side by side, the folds every family was
evaluated on, and each family's warnings.
"""

from __future__ import annotations

import html
from pathlib import Path

import msgspec

from engine.signals.manifest import Estimate
from replay.research.ladder.result import FamilyResult, Ladder

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
tr.rec{background:#eaf6ea}tr.worse{color:#888}
.box{background:#f7f7fb;border-left:4px solid #1f5fa8;padding:.6em 1em}
small{color:#666}
"""


def write_ladder(folder: Path, ladder: Ladder) -> None:
    """Write ``ladder.json`` (the ``Ladder`` struct) and ``ladder.html``."""
    data = msgspec.json.format(msgspec.json.encode(ladder), indent=2) + b"\n"
    (folder / "ladder.json").write_bytes(data)
    (folder / "ladder.html").write_text(ladder_html(ladder))


def read_ladder(folder: Path) -> Ladder:
    return msgspec.json.decode((folder / "ladder.json").read_bytes(), type=Ladder)


def _num(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _figure(e: Estimate | None, spec: str) -> str:
    if e is None or e.value is None:
        return "n/a"
    ci = (
        ""
        if e.low is None or e.high is None
        else f"<br><small>[{e.low:{spec}}, {e.high:{spec}}]</small>"
    )
    return f"{e.value:{spec}}{ci}"


def _p(e: Estimate | None) -> str:
    return "" if e is None or e.p_value is None else f"<br><small>p = {e.p_value:.3f}</small>"


def _verdict(f: FamilyResult, ladder: Ladder) -> str:
    if f.family == ladder.best:
        return "best"
    if f.significantly_worse is None:
        return "n/a"
    return "significantly worse" if f.significantly_worse else "not significantly worse"


def _row(f: FamilyResult, ladder: Ladder) -> str:
    e = html.escape
    if not f.trained:
        return (
            f"<tr class=worse><td class=l><b>{e(f.family)}</b></td>"
            f"<td class=l colspan=10>not trained: {e(f.reason)}</td></tr>"
        )
    cls = "rec" if f.family == ladder.recommended else ("worse" if f.significantly_worse else "")
    edge = (
        _figure(f.net_edge_bps, "+.2f") + f"<br><small>{f.trades:,} trades</small>"
        if f.net_edge_bps is not None and f.trades
        else f"<small>{e(f.net_edge_note or 'no trade at the thresholds')}</small>"
    )
    m = f.metrics
    return (
        f"<tr class='{cls}'><td class=l><b>{e(f.family)}</b><br><small>{e(f.fits)}</small></td>"
        f"<td class=l>{e(f.kind)}<br><small>{e(f.output)}</small></td>"
        f"<td>{_figure(m.get('ic'), '.4f')}{_p(m.get('ic'))}</td>"
        f"<td>{_figure(m.get('auc'), '.3f')}</td>"
        f"<td>{_figure(m.get('accuracy'), '.3f')}</td>"
        f"<td>{_figure(f.versus_best, '+.4f')}{_p(f.versus_best)}<br><small>{_verdict(f, ladder)}</small></td>"
        f"<td>{edge}</td>"
        f"<td>{_num(f.training_seconds, '.2f')}<br><small>folds {_num(f.walk_forward_seconds, '.2f')}"
        f" + final {_num(f.final_fit_seconds, '.2f')}</small></td>"
        f"<td>{_num(f.scoring_us_per_row, '.1f')}<br><small>{e(f.scorer)}</small></td>"
        f"<td class=l><small>{e(f.explanation)}</small></td>"
        f"<td>{len(f.warnings)}</td></tr>"
    )


def _ic_chart(ladder: Ladder) -> str:
    """The IC of each family with its interval, on one axis (inline SVG)."""
    rows = [
        (f.family, f.metrics["ic"])
        for f in ladder.families
        if f.trained and "ic" in f.metrics and f.metrics["ic"].value is not None
    ]
    if not rows:
        return ""
    values = [v for _, e in rows for v in (e.low, e.high, e.value, 0.0) if v is not None]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    width, left, step = 640, 120, 24

    def x(v: float) -> float:
        return left + (v - lo) / span * (width - left - 20)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{step * len(rows) + 30}'>",
        f"<line x1='{x(0):.1f}' y1='0' x2='{x(0):.1f}' y2='{step * len(rows)}' stroke='#999' stroke-dasharray='3'/>",
    ]
    for i, (name, est) in enumerate(rows):
        y = step * i + 12
        colour = "#2a7d2a" if name == ladder.recommended else "#1f5fa8"
        parts.append(f"<text x='0' y='{y + 4}' font-size='12'>{html.escape(name)}</text>")
        if est.low is not None and est.high is not None:
            parts.append(
                f"<line x1='{x(est.low):.1f}' y1='{y}' x2='{x(est.high):.1f}' y2='{y}' stroke='{colour}' stroke-width='2'/>"
            )
        assert est.value is not None
        parts.append(f"<circle cx='{x(est.value):.1f}' cy='{y}' r='4' fill='{colour}'/>")
    parts.append(
        f"<text x='{left}' y='{step * len(rows) + 20}' font-size='11'>IC {lo:.3f}</text>"
        f"<text x='{width - 80}' y='{step * len(rows) + 20}' font-size='11'>{hi:.3f}</text></svg>"
        "<br><small>out-of-sample IC and its 95 % interval per family; dashed: IC 0; green: "
        "the recommended family</small>"
    )
    return "".join(parts)


def ladder_html(ladder: Ladder) -> str:
    e = html.escape
    rec = ladder.recommended or "none"
    best = ladder.best or "none"
    head = (
        "<tr><th class=l>family</th><th class=l>served as</th><th>IC [95 % CI]</th>"
        "<th>AUC</th><th>accuracy</th><th>IC(best) − IC</th><th>net edge/trade, bps</th>"
        "<th>training s</th><th>scoring µs/row</th><th class=l>a decision is explained by</th>"
        "<th>warnings</th></tr>"
    )
    folds = "".join(
        f"<tr><td>{f.fold}</td><td>{f.train_rows:,}</td><td>{f.validation_rows:,}</td>"
        f"<td>{f.test_rows:,}</td><td class=l>{f.test_start_utc} to {f.test_end_utc}</td></tr>"
        for f in ladder.folds
    )
    warnings = "".join(
        f"<h3>{e(f.family)}</h3><ul>" + "".join(f"<li>{e(w)}</li>" for w in f.warnings) + "</ul>"
        for f in ladder.families
        if f.warnings
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>model ladder</title>
<style>{_CSS}</style></head><body>
<h1>Model ladder</h1>
<p class=box><b>Recommended: {e(rec)}</b> (best out-of-sample IC: {e(best)}).<br>
<small>Rule: {e(ladder.rule)}.</small></p>
<p>Data <code>{e(ladder.data)}</code>, {ladder.label} label over {ladder.horizon_ns / 1e9:g} s,
a row every {ladder.sample_interval_ns / 1e9:g} s: {ladder.dataset_rows:,} rows in the
dataset, of which {ladder.test_rows:,} are out-of-sample test rows, the same for every family.
Intervals: circular block bootstrap in blocks of {ladder.block_rows} rows (labels overlap up
to {ladder.label_overlap_rows} rows), {ladder.replicates} replicates; p-values of IC against
chance by circular shift. Written {ladder.created_utc}; times measured on {e(ladder.machine)}.</p>
{_ic_chart(ladder)}
<table>{head}{"".join(_row(f, ladder) for f in ladder.families)}</table>
<p><small>Scores of the linear family are forward returns in bps (its thresholds are in
bps); the others' are probabilities for a classification label. Training time: the
walk-forward fits plus the final fit, one thread. Scoring: the served model called on one
row at a time.</small></p>
<h2>Folds (every family)</h2>
<table><tr><th>fold</th><th>training rows</th><th>validation rows</th><th>test rows</th>
<th class=l>test block</th></tr>{folds}</table>
<h2>Warnings</h2>{warnings or "<p>none</p>"}
</body></html>
"""
