"""Baselines beside the model, and what trading its scores would earn after costs.

Baselines, scored on the model's own out-of-sample rows and folds:

- each feature alone as the score, with a sign per fold chosen on that fold's training
  rows (its fit and early-stopping rows: the sign of the feature's Spearman correlation
  with the forward return there, + when that is 0 or undefined), never on its test rows;
- the logistic model fit on the same folds (beside a LightGBM classifier).

They are ranked with the model by out-of-sample IC. The best baseline is picked on those
same test rows, which flatters it: the model is held against the best of several scores
chosen after the fact, a test that errs against the model.

The net edge per trade, from out-of-sample scores and realised forward returns at the
strategy's thresholds (``NET_EDGE_FORMULA``): a trade is a round trip over the label's
horizon with market orders, paying the taker fee and half the spread on the way in and
on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from engine.config import Config
from engine.errors import PluginLoadError
from engine.plugins import load_strategy
from engine.signals.manifest import NetEdge
from replay.research.dataset import Dataset
from replay.research.training.folds import FoldSplit
from replay.research.training.metrics import rank_correlation, ranking
from replay.research.training.significance import Resampling, _ratio, estimate

F64 = npt.NDArray[np.float64]

NET_EDGE_FORMULA = (
    "a row whose out-of-sample score is at or above upper is a long (d = +1), one below "
    "lower a short (d = -1, when the strategy may go short); each is one trade, in at the "
    "touch at the decision row and out at the touch one label horizon later, with market "
    "orders: net = d * r * 1e4 - 2 * fee_bps - 2 * spread_bps / 2, where r is the forward "
    "mid log-return over the horizon (the label) and spread_bps the quoted spread at the "
    "decision row (taken for the exit too); the net edge per trade is the mean of net "
    "over the trades, the gross edge the mean of d * r * 1e4"
)


def signed_features(ds: Dataset, splits: list[FoldSplit]) -> list[tuple[F64, list[Literal[-1, 1]]]]:
    """Per feature: the feature over the folds' test rows (in order), each fold's rows
    times the sign of the feature's Spearman correlation with the forward return on that
    fold's fit rows (+1 when 0 or undefined); and those signs."""
    k = ds.X.shape[1]
    scores: list[list[F64]] = [[] for _ in range(k)]
    signs: list[list[Literal[-1, 1]]] = [[] for _ in range(k)]
    for s in splits:
        fit = np.concatenate([s.train, s.validation])
        returns = ranking(ds.forward_return[fit]).ranks
        for j in range(k):
            rho = rank_correlation(ranking(ds.X[fit, j]).ranks, returns)
            sign: Literal[-1, 1] = -1 if rho is not None and rho < 0 else 1
            signs[j].append(sign)
            scores[j].append(sign * ds.X[s.test, j])
    return [(np.concatenate(scores[j]), signs[j]) for j in range(k)]


@dataclass(frozen=True)
class Thresholds:
    """Where the configured strategy trades: a score at or above ``upper`` is a long, one
    below ``lower`` a short (if ``allow_short``)."""

    upper: float
    lower: float
    allow_short: bool


def strategy_thresholds(cfg: Config) -> Thresholds | str:
    """The ``[strategy]``'s ``upper``/``lower`` params (the ``ml_threshold`` strategy's, or
    any strategy whose params have both), or why there are none."""
    try:
        params = load_strategy(cfg.strategy).params
    except PluginLoadError as exc:
        return f"the strategy could not be loaded ({exc}): no thresholds to trade at"
    upper, lower = getattr(params, "upper", None), getattr(params, "lower", None)
    if not isinstance(upper, int | float) or not isinstance(lower, int | float):
        return (
            f"strategy {cfg.strategy.name!r} has no upper/lower score thresholds (as "
            "ml_threshold has): the net edge per trade is not computed"
        )
    return Thresholds(float(upper), float(lower), bool(getattr(params, "allow_short", True)))


def net_edge(
    th: Thresholds, fee_bps: float, score: F64, fwd: F64, spread_bps: F64, rs: Resampling
) -> NetEdge:
    """The expected net edge per trade (``NET_EDGE_FORMULA``) with its interval; chance
    and p-value from the circular shift (a rotation keeps the trades and their costs and
    moves the returns under them, so the net edge's test is the gross edge's)."""
    d = np.where(score >= th.upper, 1.0, 0.0)
    if th.allow_short:
        d = np.where(score < th.lower, -1.0, d)
    trade = (d != 0).astype(np.float64)
    n = int(trade.sum())
    gross = d * fwd * 1e4
    cost = trade * (2.0 * fee_bps + spread_bps)
    base = NetEdge(
        formula=NET_EDGE_FORMULA,
        upper=th.upper,
        lower=th.lower,
        allow_short=th.allow_short,
        fee_bps=fee_bps,
        rows=int(score.shape[0]),
        trades=n,
        long_trades=int((d > 0).sum()),
        short_trades=int((d < 0).sum()),
    )
    if n == 0:
        return base
    mean_cost = float(cost.sum() / n)
    gross_value = float(gross.sum() / n)
    count, g_sum, net_sum = (s.sum(axis=1) for s in rs.sums(trade, gross, gross - cost))
    null = None
    if rs.shiftable.any():
        null = rs.cross(d, fwd * 1e4).sum(axis=1) / n
    return msgspec.structs.replace(
        base,
        half_spread_bps=float(spread_bps[trade > 0].mean() / 2.0),
        cost_bps=mean_cost,
        gross_edge_bps=estimate(gross_value, _ratio(g_sum, count), null),
        net_edge_bps=estimate(
            gross_value - mean_cost,
            _ratio(net_sum, count),
            None if null is None else null - mean_cost,
        ),
    )
