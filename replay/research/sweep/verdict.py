"""What a sweep's deflated Sharpe ratio and PBO mean, in words, with the thresholds used.

The statistics themselves are ``replay/research/overfitting.py``'s (equal to the papers);
this module reads them:

- ``DSR_SIGNIFICANT`` (0.95): a deflated Sharpe at or above it says the best combination
  beats what the best of N unskilled trials shows by luck (a one-sided 5 % test).
- ``PBO_NOISE`` (0.5): a PBO above it says the in-sample winner lands at or below the
  out-of-sample median in most splits: choosing within the grid by in-sample rank does no
  better than choosing at random (the choice is noise), whatever the best's Sharpe.

Two figures are read together (Bailey and Lopez de Prado): DSR asks whether the idea
beats luck, PBO whether the choice among its variants does. The four cases get four
sentences (``Verdict.headline``).

Trials counted: the sweep's combinations plus ``prior_trials``, the trials run before on
the same data (other grids, earlier ideas): all of them are chances to be lucky, and
leaving them out makes a result look better than it is (``tradeloop sweep
--prior-trials N``). SR0's variance of the trials' Sharpe ratios is this sweep's (the
prior trials' are not known); it needs at least 2 combinations.

Autocorrelated returns: the DSR (like the probabilistic Sharpe) treats the periods as
independent. A strategy that holds positions over many periods has autocorrelated
per-period returns, and then T overstates the evidence. ``autocorrelation_adjusted``
recomputes the DSR with T replaced by the effective number of periods ``T (1 - rho) /
(1 + rho)`` (rho the best's lag-1 autocorrelation, an AR(1) approximation as in Lo 2002,
used only for rho > 0); the verdict reads the smaller of the two.

Measured on pure noise (tests/replay/research/sweep/test_sweep_verdict.py): with
independent trials DSR >= 0.95 in 0.1-0.4 % of sweeps; with trials that move together
(a grid of near neighbours) the DSR falls back to the probabilistic Sharpe of one path
and reaches 0.95 in about 5 % (the test's nominal rate); with autocorrelated returns the
unadjusted DSR passes far more often, the adjusted one within the 5 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from replay.backtest import metrics as fig
from replay.research import overfitting as ov

F64 = npt.NDArray[np.float64]

DSR_SIGNIFICANT = 0.95
PBO_NOISE = 0.5
# trials that move together this much make SR0 small: the DSR is close to one path's PSR
CORRELATED_TRIALS = 0.5


def deflated_sharpe(returns: F64, chosen: int, prior_trials: int = 0) -> ov.DeflatedSharpe:
    """``overfitting.deflated_sharpe`` with ``prior_trials`` more trials counted in SR0
    (their Sharpe variance taken as this sweep's).

    Raises:
        ValueError: ``prior_trials`` < 0, or ``chosen`` not a column.
    """
    if prior_trials < 0:
        raise ValueError(f"prior_trials must be >= 0, got {prior_trials}")
    base = ov.deflated_sharpe(returns, chosen)
    if prior_trials == 0:
        return base
    trials = base.trials + prior_trials
    sr0 = ov.expected_max_sharpe(trials, base.sharpe_variance)
    dsr = fig.probabilistic_sharpe(
        base.sharpe_per_period, base.periods, base.skewness, base.kurtosis, benchmark=sr0
    )
    return replace(base, deflated_sharpe=dsr, expected_max_sharpe=sr0, trials=trials)


def lag1_autocorrelation(series: F64) -> float:
    """The lag-1 autocorrelation of a return series (NaN below 3 periods or without spread)."""
    x = np.asarray(series, np.float64)
    if x.shape[0] < 3:
        return float("nan")
    d = x - x.mean()
    denominator = float(np.dot(d, d))
    return float(np.dot(d[1:], d[:-1]) / denominator) if denominator > 0 else float("nan")


def autocorrelation_adjusted(d: ov.DeflatedSharpe, rho: float) -> float:
    """The DSR with ``T`` replaced by ``T (1 - rho) / (1 + rho)`` for ``rho > 0`` (at
    least 2 periods); the DSR itself otherwise."""
    if not math.isfinite(rho) or rho <= 0:
        return d.deflated_sharpe
    effective = max(2, int(d.periods * (1.0 - rho) / (1.0 + rho)))
    return fig.probabilistic_sharpe(
        d.sharpe_per_period, effective, d.skewness, d.kurtosis, benchmark=d.expected_max_sharpe
    )


@dataclass(frozen=True)
class Verdict:
    """The reading of one sweep: ``significant`` (DSR, adjusted, >= 0.95), ``choice_is_noise``
    (PBO > 0.5), each None when undefined; ``headline`` one sentence, ``sentences`` the
    figures explained with their thresholds."""

    significant: bool | None
    choice_is_noise: bool | None
    headline: str
    sentences: list[str]


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, spec)


def verdict(
    *,
    dsr: float | None,
    dsr_adjusted: float | None,
    rho: float | None,
    pbo: float | None,
    splits: int | None,
    trials: int,
    prior_trials: int,
    correlation: float | None,
) -> Verdict:
    """Read a sweep's DSR and PBO (see the module docstring for the thresholds)."""
    counted = trials + prior_trials
    used = None
    if dsr is not None and math.isfinite(dsr):
        used = (
            dsr
            if dsr_adjusted is None or not math.isfinite(dsr_adjusted)
            else min(dsr, dsr_adjusted)
        )
    significant = None if used is None else used >= DSR_SIGNIFICANT
    noise = None if pbo is None or not math.isfinite(pbo) else pbo > PBO_NOISE
    who = f"{trials} in this sweep" + (
        f" + {prior_trials} run before on the same data" if prior_trials else ""
    )
    sentences = [
        f"Deflated Sharpe {_fmt(dsr)}: the probability that the best combination's true "
        f"Sharpe exceeds the Sharpe that the best of {counted} unskilled trials ({who}) "
        f"would show by luck. At or above {DSR_SIGNIFICANT:g} the result is significant; "
        "below it, the best is within what luck among that many trials yields."
    ]
    if rho is not None and math.isfinite(rho) and rho > 0 and dsr_adjusted is not None:
        sentences.append(
            f"The best's per-period returns are autocorrelated (lag-1 {rho:.2f}): the DSR "
            "takes the periods as independent; with the effective number of periods "
            f"T (1 - rho) / (1 + rho) it is {_fmt(dsr_adjusted)}, and the verdict reads the "
            "smaller."
        )
    if pbo is not None and math.isfinite(pbo):
        sentences.append(
            f"PBO {pbo:.2f}: in {pbo:.0%} of the {splits} ways of splitting the periods into "
            "halves, the combination best on one half ranks at or below the median on the "
            f"other. Above {PBO_NOISE:g} the choice within the grid is noise (picking by "
            "in-sample rank does no better than picking at random); at or below it, the "
            "in-sample winner tends to stay above the median out of sample."
        )
    else:
        sentences.append(
            "PBO undefined (too few periods or combinations): the choice within the grid is not judged."
        )
    if correlation is not None and math.isfinite(correlation) and correlation > CORRELATED_TRIALS:
        sentences.append(
            f"The trials move together (mean pairwise correlation {correlation:.2f}): their "
            "Sharpe ratios differ little, so the luck allowance SR0 is small and the DSR is "
            "close to the probabilistic Sharpe of one path; counted as independent, the "
            f"{counted} trials overstate how many distinct chances there were, but a lucky "
            "path passes for all of them alike."
        )
    sentences.append(
        "These figures judge one price path: a sweep on pure noise reaches DSR 0.95 in up "
        "to about 5 % of runs; trials run before on the same data belong in the count "
        "(--prior-trials)."
    )
    if significant is None:
        headline = "Not judged: the deflated Sharpe is undefined (fewer than 2 periods)."
    elif significant and noise:
        headline = (
            f"The idea works but the choice within the grid is noise: the best beats luck "
            f"among {counted} trials (DSR {_fmt(used)} >= {DSR_SIGNIFICANT:g}), yet its rank "
            f"does not carry out of sample (PBO {_fmt(pbo, '.2f')} > {PBO_NOISE:g}): the "
            "combinations are alike; pick for robustness, not for the top rank."
        )
    elif significant:
        headline = (
            f"Significant, and the choice holds: the best beats luck among {counted} trials "
            f"(DSR {_fmt(used)} >= {DSR_SIGNIFICANT:g}) and in-sample winners stay above "
            f"the median out of sample (PBO {_fmt(pbo, '.2f')})."
            if noise is not None
            else f"Significant: the best beats luck among {counted} trials (DSR {_fmt(used)} "
            f">= {DSR_SIGNIFICANT:g}); PBO undefined."
        )
    elif noise:
        headline = (
            f"Nothing beyond luck: the best is within what luck among {counted} trials "
            f"yields (DSR {_fmt(used)} < {DSR_SIGNIFICANT:g}) and the choice within the grid "
            f"is noise (PBO {_fmt(pbo, '.2f')} > {PBO_NOISE:g})."
        )
    else:
        headline = (
            f"Not significant: the best is within what luck among {counted} trials yields "
            f"(DSR {_fmt(used)} < {DSR_SIGNIFICANT:g}); a low PBO ({_fmt(pbo, '.2f')}) on "
            "one path does not make it real."
        )
    return Verdict(significant, noise, headline, sentences)
