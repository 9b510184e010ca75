"""``tradeloop train DATA --ladder --out DIR``: the ladder from the command line.

``run_ladder_command(cfg, source, out)`` is the command once ``tradeloop train`` has read
the config, the data and ``--out`` (``replay.cli.cmd_train``, which also refuses
``--workers``/``--scheduler``: the ladder times each family's fits in this process, and
fits spread over workers would time the pool).
"""

from __future__ import annotations

import time
from pathlib import Path

from engine.config import Config
from replay.files.discovery import DataSource
from replay.research.ladder.result import FamilyResult, Ladder


def run_ladder_command(cfg: Config, source: DataSource | str | Path, out: Path) -> int:
    """Run the ladder on ``source`` into ``out`` and print its table; 0 on success."""
    from replay.research.ladder.run import run_ladder

    started = time.perf_counter()
    ladder = run_ladder(cfg, source, out)
    for line in summary(ladder):
        print(line)
    print(
        f"ladder of {sum(f.trained for f in ladder.families)} families in "
        f"{time.perf_counter() - started:.1f}s: {out / 'ladder.html'}"
    )
    return 0


def _est(f: FamilyResult, key: str, spec: str) -> str:
    e = f.metrics.get(key)
    if e is None or e.value is None:
        return "n/a"
    if e.low is None or e.high is None:
        return format(e.value, spec)
    return f"{e.value:{spec}} [{e.low:{spec}}, {e.high:{spec}}]"


def summary(ladder: Ladder) -> list[str]:
    """One line per family and the recommendation, for the terminal."""
    lines = [
        f"{'family':<14} {'IC [95% CI]':<27} {'AUC':>6} {'vs best p':>9} "
        f"{'net bps':>8} {'train s':>8} {'us/row':>8}"
    ]
    for f in ladder.families:
        if not f.trained:
            lines.append(f"{f.family:<14} not trained: {f.reason}")
            continue
        auc = f.metrics.get("auc")
        p = f.versus_best.p_value if f.versus_best is not None else None
        edge = f.net_edge_bps.value if f.net_edge_bps is not None else None
        lines.append(
            f"{f.family:<14} {_est(f, 'ic', '.4f'):<27} "
            f"{'n/a' if auc is None or auc.value is None else format(auc.value, '.3f'):>6} "
            f"{'-' if p is None else format(p, '.3f'):>9} "
            f"{'n/a' if edge is None else format(edge, '+.2f'):>8} "
            f"{f.training_seconds or 0.0:>8.2f} {f.scoring_us_per_row or 0.0:>8.1f}"
        )
    lines.append(f"recommended: {ladder.recommended} (best IC: {ladder.best}); rule: {ladder.rule}")
    return lines
