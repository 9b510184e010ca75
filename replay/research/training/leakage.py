"""Leak checks of ``tradeloop train`` that do not care how a leak got in: they read only the
model's out-of-sample scores and the prices, so a leak through a research column, a lookup
table built on the whole data or a tick field written with knowledge of the future is
judged alike, for any model.

Two checks, each named; a failed check stops training with ``LeakageError`` unless
``[train] allow_failed_leak_checks`` names it (then the model is written with a warning,
and the manifest's ``leak_checks`` records the failure and that it was allowed).

``implausible_score``: an out-of-sample AUC above ``[train] suspicious_auc`` (0.9). At a
horizon of seconds to minutes no real market edge comes near it (real order-book edges
measured here: AUC 0.55-0.7); a leak of the label does (1.000 through a lookup table
built on the whole data).

``label_end``: information that stops where the label stops. The label is the mid return
over ``[t, t + h]``. A causal score knows only the past at ``t``; what it says about a
future price move fades with the move's distance from ``t`` and cannot know where the
label happens to end. A leak of the label (a column, a lookup table, a quote or trade
field carrying the future return) knows exactly that: it predicts the label's last part
as well as its first, and nothing after it. The test takes the scores' rank correlation
(Spearman, as the IC) with three returns of equal length ``h / 2``: the label's first
half ``[t, t + h/2]`` (``ic_first``), its last half ``[t + h/2, t + h]``
(``ic_inside``) and the half-horizon right after it ``[t + h, t + 3h/2]``
(``ic_outside``); ``drop = ic_inside - ic_outside`` and ``ratio = drop / ic_first``
(signed as ``ic_first``).

- What a causal score can show: if its predicted drift fades as a mixture of
  exponentials in the lag (any time constants, positive weights: the edges of AR-type
  order-flow and mean-reversion signals), the three ICs fall geometrically with a
  factor ``x = exp(-h / (2 tau))`` per half-horizon, so ``ratio = x (1 - x) <= 1/4``
  (at ``x = 1/2``; over a mixture the ratio of two linear functionals is largest at one
  exponential). A score that carries the label itself shows 1.0 (first and last half
  alike, nothing after); the planted leaks of the tests 0.5-0.75. Simulated at the worst
  time constant, the ratio stays at 0.25 from IC 0.15 to 0.6 (three equal-length
  returns: no small-signal approximation needed).
- The rule: a leak when ``excess = drop - CAUSAL_MAX_RATIO x |ic_first|`` (1/4) is
  significantly positive: ``z = excess / se >= LABEL_END_MIN_Z`` (4). ``se`` by batch
  means: the rows are cut into time blocks of at least ``BLOCK_HORIZONS`` (10) horizons
  (so overlapping labels and an autocorrelated score stay within a block), ``excess`` is
  a mean of per-row products of standardised ranks, and its variance is estimated from
  the block sums. With fewer than ``LABEL_END_MIN_BLOCKS`` (20) blocks the check is
  ``not_run``. Under the null (a causal fading edge) ``E[excess] <= 0``, so the
  false-alarm rate is at most the tail beyond 4 of ``t`` with ``blocks - 1`` degrees of
  freedom: 4e-4 at 20 blocks (3e-5 for a normal z), less for any edge but the worst.

Assumptions, stated: the score's knowledge of future moves fades smoothly with the lag
(a causal edge timed to end at exactly ``h``, e.g. a scheduled event, would fail the
check); rows whose increments read a quote later than the label tolerance (a data gap)
are left out. Power (measured in tests/replay/research/test_leak_checks.py): a leak
carried by one field at its own time (a quote's sizes, a column of the tick file, a
lookup table) shows a ratio of 0.5-0.75 and is found on 15 minutes of two instruments
from an IC of about 0.4 (z 6 and more); a leak smeared over a window as long as the
horizon (trade sides carrying the future, read through a 2 s trade-flow feature) fades
linearly to nothing at ``h``, shows about 1/3, just above the causal bound, and needs
hours of data to be significant; a leak of a future much longer than ``h`` does not stop
at the label's end: when strong, ``implausible_score`` sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from engine.config import Config
from engine.errors import LeakageError
from engine.signals.manifest import LeakCheck
from replay.research.dataset import Dataset, QuoteHistory, forward_labels
from replay.research.training.folds import FoldSplit
from replay.research.training.metrics import Metrics

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CAUSAL_MAX_RATIO = 0.25
LABEL_END_MIN_Z = 4.0
LABEL_END_MIN_BLOCKS = 20
BLOCK_HORIZONS = 10
# at most this many blocks: more add nothing to the variance estimate but cost nothing
# either; the cap keeps blocks long on a long sample (dependence beyond 10 horizons)
MAX_BLOCKS = 200

IMPLAUSIBLE_RULE = (
    "out-of-sample AUC above [train] suspicious_auc ({limit:g}): no real edge at a horizon "
    "of seconds to minutes comes near it; a leaked label does"
)
LABEL_END_RULE = (
    "the scores' rank correlation with the label's last half-horizon exceeds that with the "
    f"half-horizon after the label ends by more than a causal fading edge can show "
    f"({CAUSAL_MAX_RATIO:g} x that with the label's first half), with z >= "
    f"{LABEL_END_MIN_Z:g} (batch means over "
    f">= {LABEL_END_MIN_BLOCKS} time blocks of >= {BLOCK_HORIZONS} horizons): a causal score "
    "cannot know where the label ends"
)


def average_ranks(x: F64) -> F64:
    """Ranks 0..n-1 with ties given their average rank (vectorised)."""
    n = x.shape[0]
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    cuts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    starts, ends = cuts[:-1], cuts[1:]
    ranks = np.empty(n)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def _standard_ranks(x: F64) -> F64 | None:
    r = average_ranks(x)
    sd = r.std()
    return None if sd == 0 else (r - r.mean()) / sd


@dataclass(frozen=True)
class LabelEndTest:
    """What the label-end test measured (``None``: undefined, e.g. a constant score).

    ``blocks``: the time blocks of the batch-means variance; ``z``: of ``excess``;
    ``leak`` is None when the test could not run (fewer than ``LABEL_END_MIN_BLOCKS``
    blocks, or an undefined IC).
    """

    rows: int
    blocks: int
    block_ns: int
    ic_label: float | None = None
    ic_first: float | None = None
    ic_inside: float | None = None
    ic_outside: float | None = None
    drop: float | None = None
    ratio: float | None = None
    excess: float | None = None
    z: float | None = None
    leak: bool | None = None

    def statistics(self) -> dict[str, float | int | None]:
        names = (
            "rows",
            "blocks",
            "block_ns",
            "ic_label",
            "ic_first",
            "ic_inside",
            "ic_outside",
            "drop",
            "ratio",
            "excess",
            "z",
        )
        return {k: getattr(self, k) for k in names}


def half_horizon_returns(
    quotes: QuoteHistory,
    ts: I64,
    instrument: npt.NDArray[np.int32],
    horizon_ns: int,
    tolerance_ns: int,
) -> tuple[F64, F64, F64, F64]:
    """Per row: the label return over ``[t, t + h]``, its first half ``[t, t + h/2]``, its
    last half ``[t + h/2, t + h]`` and the half after it ``[t + h, t + 3h/2]`` (log mid
    returns, each end read at the first quote at or after it, as the label; NaN when any
    end reads a quote more than ``tolerance_ns`` late, or none at all)."""
    half = horizon_ns // 2
    first, label, beyond = (
        forward_labels(quotes, ts, instrument, u, tolerance_ns).returns
        for u in (half, horizon_ns, horizon_ns + half)
    )
    return label, first, label - first, beyond - label


def label_end_test(
    score: F64, ts: I64, returns: tuple[F64, F64, F64, F64], horizon_ns: int
) -> LabelEndTest:
    """The label-end test on rows in time order (see the module docstring).

    Args:
        score: out-of-sample scores; ``ts`` their rows' times (non-decreasing).
        returns: ``half_horizon_returns`` of the same rows (label, first half, last
            half, the half after).
    """
    ok = np.isfinite(score)
    for r in returns:
        ok &= np.isfinite(r)
    rows = int(ok.sum())
    t = ts[ok]
    span = int(t[-1] - t[0]) if rows else 0
    block_ns = max(BLOCK_HORIZONS * horizon_ns, span // MAX_BLOCKS + 1)
    blocks = (t - t[0]) // block_ns if rows else np.empty(0, np.int64)
    n_blocks = int(np.unique(blocks).shape[0])
    ranked = [_standard_ranks(a[ok]) if rows >= 3 else None for a in (score, *returns)]
    zs, zl, zf, zi, zo = ranked
    if zs is None or zl is None or zf is None or zi is None or zo is None:
        return LabelEndTest(rows, n_blocks, block_ns)
    # Spearman = the mean product of standardised ranks, so each statistic is a mean of
    # per-row terms and its variance can be taken from block sums
    ic_first = float(np.mean(zs * zf))
    sign = 1.0 if ic_first >= 0 else -1.0
    contrib = sign * zs * (zi - zo - CAUSAL_MAX_RATIO * zf)
    excess = float(contrib.mean())
    drop = float(np.mean(sign * zs * (zi - zo)))
    measured = LabelEndTest(
        rows,
        n_blocks,
        block_ns,
        float(np.mean(zs * zl)),
        ic_first,
        float(np.mean(zs * zi)),
        float(np.mean(zs * zo)),
        drop,
        drop / abs(ic_first) if ic_first != 0 else None,
        excess,
    )
    if n_blocks < LABEL_END_MIN_BLOCKS:
        return measured
    # batch means of a ratio estimator: block sums S_b over block sizes n_b, the mean
    # sum(S) / sum(n); its variance from the residuals S_b - mean * n_b
    _, inverse = np.unique(blocks, return_inverse=True)
    sums = np.bincount(inverse, weights=contrib)
    sizes = np.bincount(inverse).astype(np.float64)
    resid = sums - excess * sizes
    var = n_blocks / (n_blocks - 1) * float(np.sum(resid * resid)) / float(sizes.sum()) ** 2
    se = float(np.sqrt(var))
    if se == 0:
        return replace(measured, leak=excess > 0)
    z = excess / se
    return replace(measured, z=z, leak=z >= LABEL_END_MIN_Z)


@dataclass(frozen=True)
class LeakScreen:
    """Every leak check's outcome (for the manifest) and the warnings to print."""

    checks: list[LeakCheck]
    warnings: list[str]


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def screen_leaks(
    cfg: Config,
    ds: Dataset,
    splits: list[FoldSplit],
    oos_score: F64,
    overall: Metrics,
    source: str,
) -> LeakScreen:
    """Run both leak checks on the walk-forward's out-of-sample scores (``oos_score``, the
    folds' test rows in fold order) and stop training on a failure not allowed by name.

    Raises:
        LeakageError: a check failed and ``[train] allow_failed_leak_checks`` does not
            name it (the message names the check, what it measured, and the key).
    """
    t = cfg.train
    allowed = set(t.allow_failed_leak_checks)
    checks: list[LeakCheck] = []
    warnings: list[str] = []

    auc = overall.get("auc")
    implausible = auc is not None and auc > t.suspicious_auc
    checks.append(
        LeakCheck(
            name="implausible_score",
            outcome="failed" if implausible else ("passed" if auc is not None else "not_run"),
            allowed=implausible and "implausible_score" in allowed,
            rule=IMPLAUSIBLE_RULE.format(limit=t.suspicious_auc),
            detail=f"out-of-sample AUC {_fmt(auc)}" if auc is not None else "AUC undefined",
            statistics={"auc": auc, "limit": t.suspicious_auc},
        )
    )

    rows = np.concatenate([s.test for s in splits]) if splits else np.empty(0, np.int64)
    order = np.argsort(ds.ts[rows], kind="stable")
    rows, score = rows[order], oos_score[order]
    returns = half_horizon_returns(
        ds.quotes, ds.ts[rows], ds.instrument[rows], t.horizon_ns, ds.label_tolerance_ns
    )
    test = label_end_test(score, ds.ts[rows], returns, t.horizon_ns)
    measured = (
        f"IC with the label {_fmt(test.ic_label)}; with its first half-horizon "
        f"{_fmt(test.ic_first)}, its last {_fmt(test.ic_inside)}, the one after it "
        f"{_fmt(test.ic_outside)}: drop {_fmt(test.drop)} = {_fmt(test.ratio, '.2f')} x the "
        f"first half's (a causal fading edge: at most {CAUSAL_MAX_RATIO:g} x), excess z "
        f"{_fmt(test.z, '.1f')} (limit "
        f"{LABEL_END_MIN_Z:g}) over {test.blocks} blocks of {test.block_ns / 1e9:g}s "
        f"({test.rows:,} rows)"
    )
    outcome: Literal["passed", "failed", "not_run"]
    if test.leak is None:
        outcome, detail = (
            "not_run",
            (f"{measured}: fewer than {LABEL_END_MIN_BLOCKS} blocks or an undefined IC"),
        )
        warnings.append(
            f"leak check 'label_end' not run: {test.blocks} time blocks of "
            f"{test.block_ns / 1e9:g}s out of sample (< {LABEL_END_MIN_BLOCKS}) or an undefined "
            "IC: a leak of the label would not be seen (more data or a shorter horizon)"
        )
    else:
        outcome, detail = ("failed" if test.leak else "passed"), measured
    checks.append(
        LeakCheck(
            name="label_end",
            outcome=outcome,
            allowed=bool(test.leak) and "label_end" in allowed,
            rule=LABEL_END_RULE,
            detail=detail,
            statistics=test.statistics(),
        )
    )

    for c in checks:
        if c.outcome != "failed":
            continue
        what = (
            f"leak check 'label_end' failed: {c.detail}: the scores know where the label "
            "ends, as only a leak of the label can (a column, a lookup table or a tick field "
            "that carries the future)"
            if c.name == "label_end"
            else f"leak check 'implausible_score' failed: {c.detail} > {t.suspicious_auc:g}, "
            "too good to be true for market data at a trading horizon"
        )
        if not c.allowed:
            raise LeakageError(
                source,
                f"{what}. The model was not written. If the edge is real, let this check "
                f'through by name: [train] allow_failed_leak_checks = ["{c.name}"] (recorded '
                "in the manifest)",
            )
        warnings.append(
            f"{what}; allowed by [train] allow_failed_leak_checks: results are probably "
            "not achievable live"
        )
    return LeakScreen(checks, warnings)
