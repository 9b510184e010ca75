"""What ``tradeloop train`` says about its out-of-sample figures: how sure they are
(``significance``), where the model ranks among baselines and what trading it would earn
after costs (``baselines``), as the manifest's ``statistics`` and as warnings.

Warnings (manifest ``warnings``, printed by ``tradeloop train``, listed in the report):

- not significantly better than chance: unless the out-of-sample AUC and IC each have a
  p-value below ``ALPHA`` (1 %) against the circular shift and a 95 % interval above
  their chance level (both metrics must pass, an intersection-union test: its level is
  ``ALPHA`` with no correction for the two; the IC alone where the AUC is undefined);
  also when too few rows allow no shift. The interval condition keeps the verdict from
  contradicting the figures shown beside it. Measured on pure noise (features and
  labels independent, persistent features, labels overlapping 8-fold, 2,400 rows, 4
  folds): 0 of 500 LightGBM models and 3 of 500 logistic models called significant.
- not significantly better than the best baseline: the model's IC minus the best
  baseline's has a bootstrap p-value of ``ALPHA`` or more.
- a negative expected net edge per trade at the strategy's thresholds, or no
  out-of-sample score that reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from engine.config import Config
from engine.signals.manifest import (
    BaselineComparison,
    BaselineScore,
    Estimate,
    FoldSignificance,
    NetEdge,
    OutOfSampleStatistics,
)
from replay.research.dataset import Dataset
from replay.research.training.baselines import (
    Thresholds,
    net_edge,
    signed_features,
    strategy_thresholds,
)
from replay.research.training.families import canonical, output_of, score_threshold
from replay.research.training.folds import FoldSplit
from replay.research.training.significance import (
    ALPHA,
    CONFIDENCE,
    METHOD,
    REPLICATES,
    Resampling,
    block_rows,
    difference,
    ic_figures,
    label_overlap_rows,
    rankings,
    resampling,
    series_figures,
)

F64 = npt.NDArray[np.float64]

NOT_BETTER_THAN_CHANCE = "not significantly better than chance"
NOT_BETTER_THAN_BASELINE = "not significantly better than the best baseline"
NEGATIVE_NET_EDGE = "negative expected net edge per trade"


@dataclass(frozen=True)
class Assessment:
    statistics: OutOfSampleStatistics
    warnings: list[str]


def assess(
    cfg: Config,
    ds: Dataset,
    splits: list[FoldSplit],
    score: F64,
    fwd: F64,
    logistic_score: F64 | None,
    replicates: int = REPLICATES,
    family: str | None = None,
) -> Assessment:
    """Intervals and p-values of the model's out-of-sample metrics (all folds and each),
    the baselines ranked with it, and its net edge per trade at the strategy's
    thresholds. ``score``/``fwd``: the folds' test rows in order, as ``walk_forward``
    returns them; ``logistic_score``: the logistic model's on the same rows, if fit;
    ``family``: the model's (default ``[train] model``), which says whether its scores
    are probabilities or bps."""
    t = cfg.train
    family = canonical(family or t.model)
    rows = np.concatenate([s.test for s in splits])
    bounds = np.concatenate(([0], np.cumsum([s.test.shape[0] for s in splits]))).astype(np.int64)
    overlap = label_overlap_rows(ds.ts[rows], ds.label_end_ns[rows], bounds)
    block = block_rows(overlap, int(rows.shape[0]))
    rs = resampling(bounds, block, t.seed, replicates)
    dead_zone = t.dead_zone_bps * 1e-4
    threshold = score_threshold(family, t.label)
    returns = rankings(fwd, rs)  # sorted once, for every series
    model = series_figures(score, fwd, dead_zone, threshold, rs, returns=returns)
    entries = [_Entry(t.model, "model", model.overall, [], model.ic_influence)]
    if logistic_score is not None:
        logistic = series_figures(
            logistic_score, fwd, dead_zone, 0.5, rs, per_fold=False, returns=returns
        )
        entries.append(_Entry("logistic", "logistic", logistic.overall, [], logistic.ic_influence))
    for name, (signed, signs) in zip(ds.feature_names, signed_features(ds, splits), strict=True):
        ic, psi = ic_figures(signed, fwd, rs, returns)
        entries.append(_Entry(name, "feature", {"ic": ic}, signs, psi))
    # by IC, highest first; an undefined IC last; ties in the order above
    ranked = sorted(entries, key=lambda e: (e.ic is None, -(e.ic or 0.0)))
    baselines = [
        BaselineScore(name=e.name, kind=e.kind, rank=r + 1, metrics=e.metrics, signs=e.signs)
        for r, e in enumerate(ranked)
    ]
    model_rank = ranked.index(entries[0]) + 1
    comparison = _versus_best(entries, rs)
    th = strategy_thresholds(cfg)
    edge: NetEdge | None = None
    note = ""
    if isinstance(th, Thresholds) and output_of(family, t.label) != _label_output(t.label):
        th = (
            f"the {family} model scores the forward return in bps while a classification "
            "label's thresholds are probabilities: the net edge is not computed at them "
            "(set the strategy's upper/lower in bps to trade this model)"
        )
    if isinstance(th, Thresholds):
        spread = (
            ds.spread_bps[rows] if ds.spread_bps.shape[0] == len(ds) else np.zeros(rows.shape[0])
        )
        if ds.spread_bps.shape[0] != len(ds):
            note = "the dataset has no quoted spreads: the spread is counted as 0"
        edge = net_edge(th, cfg.venue.sim.fee_bps, score, fwd, spread, rs)
    else:
        note = th
    statistics = OutOfSampleStatistics(
        method=METHOD,
        alpha=ALPHA,
        confidence=CONFIDENCE,
        replicates=replicates,
        block_rows=block,
        label_overlap_rows=overlap,
        metrics=model.overall,
        folds=[
            FoldSignificance(fold=s.fold, metrics=m)
            for s, m in zip(splits, model.folds, strict=True)
        ],
        baselines=baselines,
        model_rank=model_rank,
        versus_best_baseline=comparison,
        better_than_chance=_better_than_chance(model.overall),
        net_edge=edge,
        net_edge_note=note,
    )
    return Assessment(statistics, assessment_warnings(statistics))


def _label_output(label: str) -> str:
    return "probability" if label == "classification" else "raw"


@dataclass(eq=False)
class _Entry:
    """The model or a baseline: its metrics, a feature's signs per fold, and its IC's
    influence values (for a paired difference)."""

    name: str
    kind: Literal["model", "logistic", "feature"]
    metrics: dict[str, Estimate]
    signs: list[Literal[-1, 1]]
    psi: F64

    @property
    def ic(self) -> float | None:
        return self.metrics["ic"].value


def _versus_best(entries: list[_Entry], rs: Resampling) -> BaselineComparison | None:
    """The model (first entry) against the baseline of highest IC."""
    model, others = entries[0], [e for e in entries[1:] if e.ic is not None]
    if model.ic is None or not others:
        return None
    best = max(others, key=lambda e: e.ic or 0.0)
    diff = difference(model.ic - (best.ic or 0.0), model.psi, best.psi, rs)
    return BaselineComparison(
        baseline=best.name, difference=diff, significant=(diff.p_value or 1.0) < ALPHA
    )


def _better_than_chance(metrics: dict[str, Estimate]) -> bool | None:
    ic, auc = metrics["ic"], metrics["auc"]
    if ic.p_value is None:
        return None
    if auc.value is not None and auc.p_value is None:
        return None
    tested = [ic] + ([auc] if auc.p_value is not None else [])
    return all(
        (e.p_value or 1.0) < ALPHA and e.low is not None and e.low > (e.chance or 0.0)
        for e in tested
    )


def _ci(e: Estimate, spec: str) -> str:
    if e.low is None or e.high is None:
        return "no interval"
    return f"95 % CI {e.low:{spec}} to {e.high:{spec}}"


def _p(e: Estimate) -> str:
    return "p n/a" if e.p_value is None else f"p = {e.p_value:.3f}"


def describe(e: Estimate, spec: str, test: bool = True) -> str:
    """``0.531 (95 % CI 0.512 to 0.550, chance 0.500, p = 0.001)``; without ``test``
    only the interval."""
    if e.value is None:
        return "n/a"
    if not test:
        return f"{e.value:{spec}} ({_ci(e, spec)})"
    chance = "" if e.chance is None else f", chance {e.chance:{spec}}"
    return f"{e.value:{spec}} ({_ci(e, spec)}{chance}, {_p(e)})"


def assessment_warnings(s: OutOfSampleStatistics) -> list[str]:
    """The warnings a user can act on (module docstring)."""
    out: list[str] = []
    auc, ic = s.metrics["auc"], s.metrics["ic"]
    if s.better_than_chance is not True:
        why = (
            f"too few rows per fold for a shift of at least {s.block_rows} rows, so untested"
            if s.better_than_chance is None
            else f"at the {ALPHA:.0%} level, with a 95 % interval above chance"
        )
        out.append(
            f"out-of-sample AUC {describe(auc, '.3f')} and IC {describe(ic, '.4f')}: the model "
            f"is {NOT_BETTER_THAN_CHANCE} ({why}; labels overlap up to {s.label_overlap_rows} "
            f"rows, resampled in blocks of {s.block_rows}); its out-of-sample figures may be "
            "noise: more data, a longer horizon or other features"
        )
    c = s.versus_best_baseline
    if c is not None and not c.significant:
        best = next(b for b in s.baselines if b.name == c.baseline and b.kind != "model")
        kind = "the logistic model" if best.kind == "logistic" else f"feature {best.name!r} alone"
        model_ic = s.metrics["ic"].value
        worse = c.difference.high is not None and c.difference.high < 0
        out.append(
            f"the model is {NOT_BETTER_THAN_BASELINE}, {kind}"
            + (" (it is significantly worse)" if worse else "")
            + f": out-of-sample IC {_num(model_ic, '.4f')} vs "
            f"{_num(best.metrics['ic'].value, '.4f')}, difference "
            f"{describe(c.difference, '+.4f')}; "
            + (
                "trade the feature itself, or find what the model lacks"
                if best.kind == "feature"
                else 'the trees add nothing over it: model = "logistic", or more data'
            )
        )
    e = s.net_edge
    if e is not None and e.trades == 0:
        out.append(
            f"no out-of-sample score reaches the strategy's thresholds (upper {e.upper:g}, lower "
            f"{e.lower:g}): replay of this model would not trade"
        )
    elif e is not None and e.net_edge_bps.value is not None and e.net_edge_bps.value < 0:
        out.append(
            f"{NEGATIVE_NET_EDGE} at the strategy's thresholds (upper {e.upper:g}, lower "
            f"{e.lower:g}): {describe(e.net_edge_bps, '+.2f', test=False)} bps = gross "
            f"{_num(e.gross_edge_bps.value, '+.2f')} bps minus fees 2 x {e.fee_bps:g} bps and "
            f"half the spread 2 x {_num(e.half_spread_bps, '.2f')} bps, over {e.trades:,} of "
            f"{e.rows:,} out-of-sample rows: this model loses money after costs at these "
            "thresholds; wider thresholds, a longer horizon or a cheaper venue"
        )
    return out


def _num(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def summary_lines(s: OutOfSampleStatistics) -> list[str]:
    """What ``tradeloop train`` prints about significance, baselines and costs."""
    m = s.metrics
    lines = [
        f"significance (out of sample, blocks of {s.block_rows} rows, {s.replicates} "
        f"replicates): AUC {describe(m['auc'], '.3f')}, IC {describe(m['ic'], '.4f')}"
    ]
    # the first five and the model
    shown = [b for b in s.baselines if b.rank <= 5 or b.kind == "model"]
    ranking = ", ".join(
        f"{b.rank}. {b.name}{' (model)' if b.kind == 'model' else ''} "
        f"{_num(b.metrics['ic'].value, '.4f')}"
        for b in shown
    )
    lines.append(f"ranked by out-of-sample IC (of {len(s.baselines)}): {ranking}")
    if s.versus_best_baseline is not None:
        c = s.versus_best_baseline
        lines.append(
            f"model minus best baseline ({c.baseline}) IC: {describe(c.difference, '+.4f')}"
        )
    e = s.net_edge
    if e is not None and e.trades:
        lines.append(
            f"net edge per trade at upper {e.upper:g} / lower {e.lower:g}: "
            f"{describe(e.net_edge_bps, '+.2f', test=False)} bps = gross "
            f"{describe(e.gross_edge_bps, '+.2f')} bps minus costs {_num(e.cost_bps, '.2f')} "
            f"bps; {e.trades:,} of {e.rows:,} rows trade"
        )
    elif s.net_edge_note:
        lines.append(f"net edge: {s.net_edge_note}")
    return lines
