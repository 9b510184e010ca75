"""The ladder's comparison: every family's out-of-sample figures on the same rows with
their intervals, and the recommendation.

All families are scored on the same walk-forward test rows (the same folds), so one
resampling (``significance.resampling``: circular blocks within each fold, blocks
covering the label overlap) serves them all, and differences are paired: the same
blocks for both series.

The rule (``RULE``): the primary figure is the out-of-sample IC (Spearman of score and
forward return: defined for every family and both label kinds, where AUC and accuracy
need a class and a probability threshold). The best family has the highest IC. A family
is significantly worse than the best when the paired block bootstrap of ``IC(best) -
IC(family)`` puts at most ``ALPHA`` of its replicates at or below 0 (one-sided p-value
``(1 + #{d* <= 0}) / (1 + replicates)`` below ``ALPHA``). The recommendation is the first
family in ladder order (simplest first) that is not significantly worse: complexity has
to earn its place by a margin the data can tell from noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.signals.manifest import Estimate
from replay.research.training.significance import (
    ALPHA,
    Resampling,
    difference,
    ic_figures,
    rankings,
)

F64 = npt.NDArray[np.float64]

PRIMARY = "ic"
RULE = (
    "primary figure: out-of-sample IC; best: the highest IC; a family is significantly "
    "worse than the best when the one-sided paired block-bootstrap p-value of IC(best) - "
    f"IC(family) is below {ALPHA:g}; recommended: the simplest family (ladder order) not "
    "significantly worse than the best"
)


@dataclass(frozen=True)
class Scored:
    """One trained family's out-of-sample scores (in the folds' row order) and its other
    figures on these rows (``metrics``: the manifest's, from the same resampling: the
    assessment draws it from the same rows, blocks and seed)."""

    family: str
    score: F64
    metrics: dict[str, Estimate] = field(default_factory=dict)


@dataclass(frozen=True)
class Compared:
    """One family's figures with intervals, and its difference from the best."""

    family: str
    metrics: dict[str, Estimate]
    versus_best: Estimate | None  # IC(best) - IC(this); None for an undefined IC
    significantly_worse: bool | None


@dataclass(frozen=True)
class Comparison:
    families: list[Compared]
    best: str | None
    recommended: str | None


def compare(scored: list[Scored], fwd: F64, rs: Resampling) -> Comparison:
    """Figures of every family on the same rows, the best, and the recommendation
    (module docstring); ``scored`` in ladder order."""
    returns = rankings(fwd, rs, per_fold=False)
    # the IC and its influence values (for the paired differences); the other figures
    # as the assessment measured them
    figures = [ic_figures(s.score, fwd, rs, returns) for s in scored]
    metrics = [{**s.metrics, PRIMARY: ic} for s, (ic, _) in zip(scored, figures, strict=True)]
    ics = [m[PRIMARY].value for m in metrics]
    defined = [i for i, v in enumerate(ics) if v is not None]
    if not defined:
        undefined = [
            Compared(s.family, m, None, None) for s, m in zip(scored, metrics, strict=True)
        ]
        return Comparison(undefined, None, None)
    # the highest IC; a tie goes to the simpler family
    b = max(defined, key=lambda i: (ics[i], -i))
    best_ic = ics[b]
    assert best_ic is not None
    out: list[Compared] = []
    for i, s in enumerate(scored):
        ic = ics[i]
        if ic is None:
            out.append(Compared(s.family, metrics[i], None, None))
            continue
        d = difference(best_ic - ic, figures[b][1], figures[i][1], rs)
        worse = i != b and (d.p_value or 1.0) < ALPHA
        out.append(Compared(s.family, metrics[i], d, worse))
    recommended = next(c.family for c in out if c.significantly_worse is False)
    return Comparison(out, scored[b].family, recommended)
