"""Overfitting statistics of a parameter sweep, as plain numpy functions of the trials'
per-period returns.

- The deflated Sharpe ratio (Bailey and Lopez de Prado 2014, "The Deflated Sharpe
  Ratio"): the probabilistic Sharpe ratio of the chosen trial measured against the
  Sharpe ratio the best of N unskilled trials would show by luck.
- The probability of backtest overfitting by combinatorially symmetric cross-validation
  (Bailey, Borwein, Lopez de Prado and Zhu 2015, "The Probability of Backtest
  Overfitting").
- Per-block ranks: whether the best trial of one time block stays good in the others.

``replay/research/sweep/command.py`` applies them to a finished sweep; each is tested against independent
computations on small matrices. ``DEFINITIONS`` states them in words and is written into
summary.json.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from replay.backtest import metrics as fig

F64 = npt.NDArray[np.float64]

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()

DEFINITIONS = {
    "trials": "N, the number of grid combinations (that succeeded on every block); each is "
    "counted as one independent "
    "trial. Neighbouring combinations are correlated, so the effective number of "
    "independent trials is smaller than N (mean_pairwise_correlation gives the "
    "correlation of the trials' returns for judging how much)",
    "performance": "per-period Sharpe ratio of a return series: mean / standard deviation "
    "(ddof 1), no risk-free rate; a series without spread (e.g. a trial that never "
    "trades) counts as 0 so that it can be ranked",
    "full_sample_returns": "a trial's per-period returns of every block, concatenated in "
    "time order (each block is an independent replay starting flat from the initial cash)",
    "best_combination": "the combination with the highest full-sample performance (first "
    "one on a tie)",
    "expected_max_sharpe": "SR0 = sqrt(V) ((1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e))), "
    "g the Euler-Mascheroni constant, Z^-1 the standard normal quantile, V the variance "
    "(ddof 1) of the N trials' full-sample per-period Sharpe ratios: the expected maximum "
    "Sharpe of N unskilled trials (Bailey and Lopez de Prado 2014, eq. for E[max SR]); 0 "
    "when N = 1",
    "deflated_sharpe": "DSR = Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - "
    "1) / 4 SR^2)): the probabilistic Sharpe ratio of the best combination against SR0, SR "
    "its full-sample per-period Sharpe, T its number of periods, skew and (non-excess) "
    "kurtosis population moments of its returns; the probability that its true Sharpe "
    "exceeds what selection among N trials yields by luck (0.95 is the usual bar)",
    "pbo": "probability of backtest overfitting by combinatorially symmetric "
    "cross-validation: the T x N matrix of full-sample returns (periods x trials) is cut "
    "into S contiguous submatrices of floor(T / S) periods (the earliest T mod S periods "
    "are dropped); for each of the C(S, S/2) ways to pick S/2 of them as in-sample (the "
    "rest, in time order, out-of-sample), the trial with the best in-sample performance "
    "(first on a tie) is ranked among all N by out-of-sample performance, r from 1 "
    "(worst) to N (best), ties sharing their average rank; w = r / (N + 1), logit = "
    "ln(w / (1 - w)); PBO = the fraction of splits with logit <= 0, i.e. where the "
    "in-sample winner does no better than the out-of-sample median",
    "partitions": "S, even; the requested S (default 8) is lowered to the largest even "
    "number that leaves at least 2 periods per submatrix; PBO is null below 4 periods or "
    "2 trials",
    "block_ranks": "rank of a combination's performance within one block among all N "
    "combinations, 1 = best, ties sharing their average rank",
    "winner_ranks": "K x K: row b is the combination best in block b, column c its rank in "
    "block c (the diagonal is 1)",
    "winner_next_block_rank": "for each block b after the first, the rank in block b of "
    "the combination best in block b - 1 (what a walk-forward choice would have got)",
}


def performance(returns: F64) -> F64:
    """Per-period Sharpe of each column of ``returns`` (periods x trials); 0 without spread.

    Returns:
        One value per column; NaN for every column below two periods.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.shape[0] < 2:
        return np.full(r.shape[1], np.nan)
    mean = r.mean(axis=0)
    std = r.std(axis=0, ddof=1)
    # a column of equal values has a float std of ~1e-17, not 0: compare with its scale
    flat = std <= 1e-12 * np.maximum(np.abs(mean), 1e-300)
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, std))


def expected_max_sharpe(trials: int, sharpe_variance: float) -> float:
    """Expected maximum per-period Sharpe of ``trials`` unskilled trials (Bailey and Lopez
    de Prado 2014), from the variance of the trials' Sharpe ratios; 0 for one trial."""
    if trials < 1:
        raise ValueError("trials must be >= 1")
    if trials == 1:
        return 0.0
    if not math.isfinite(sharpe_variance) or sharpe_variance < 0:
        return float("nan")
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (trials * math.e))
    return math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


@dataclass(frozen=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio of one chosen trial and what went into it."""

    deflated_sharpe: float
    probabilistic_sharpe: float  # against 0, the same trial undeflated
    sharpe_per_period: float
    expected_max_sharpe: float
    sharpe_variance: float
    trials: int
    periods: int
    skewness: float
    kurtosis: float


def deflated_sharpe(returns: F64, chosen: int) -> DeflatedSharpe:
    """Deflated Sharpe ratio of column ``chosen`` of ``returns`` (periods x trials).

    Raises:
        ValueError: ``chosen`` is not a column.
    """
    r = np.asarray(returns, dtype=np.float64)
    trials = r.shape[1]
    if not 0 <= chosen < trials:
        raise ValueError(f"chosen trial {chosen} not in 0..{trials - 1}")
    sharpes = performance(r)
    variance = float(np.var(sharpes, ddof=1)) if trials > 1 else 0.0
    sr0 = expected_max_sharpe(trials, variance)
    series = r[:, chosen]
    sr = float(sharpes[chosen])
    skew, kurt = fig.skewness_kurtosis(series)
    n = series.shape[0]
    return DeflatedSharpe(
        deflated_sharpe=fig.probabilistic_sharpe(sr, n, skew, kurt, benchmark=sr0),
        probabilistic_sharpe=fig.probabilistic_sharpe(sr, n, skew, kurt),
        sharpe_per_period=sr,
        expected_max_sharpe=sr0,
        sharpe_variance=variance,
        trials=trials,
        periods=n,
        skewness=skew,
        kurtosis=kurt,
    )


def _average_rank(values: F64, index: int) -> float:
    """Rank of ``values[index]`` among ``values``, 1 = lowest, ties sharing their average."""
    v = values[index]
    below = int(np.sum(values < v))
    equal = int(np.sum(values == v))
    return below + (equal + 1) / 2.0


def ranks_descending(values: F64) -> F64:
    """Rank of every value, 1 = highest, ties sharing their average rank."""
    n = values.shape[0]
    return np.array([n + 1 - _average_rank(values, i) for i in range(n)], dtype=np.float64)


def usable_partitions(periods: int, requested: int) -> int | None:
    """The largest even S <= ``requested`` with at least 2 periods per submatrix; None if
    there is none (fewer than 4 periods)."""
    s = requested - requested % 2
    while s >= 2 and periods // s < 2:
        s -= 2
    return s if s >= 2 else None


@dataclass(frozen=True)
class Pbo:
    """Probability of backtest overfitting by CSCV, with every split's logit."""

    pbo: float
    partitions: int
    splits: int
    periods_used: int
    periods_dropped: int
    logits: F64
    chosen_in_sample: npt.NDArray[np.int64]  # the in-sample winner of each split
    out_of_sample_rank: F64  # its rank r (1 = worst .. N = best) out of sample


def cscv_pbo(returns: F64, partitions: int = 8) -> Pbo:
    """Probability of backtest overfitting of the trials in ``returns`` (periods x trials).

    Args:
        returns: per-period returns, one column per trial, rows in time order.
        partitions: S, even, >= 2; use ``usable_partitions`` to fit it to the periods.

    Raises:
        ValueError: S odd or < 2, fewer than 2 trials, or fewer than 2 periods per
            submatrix.
    """
    r = np.asarray(returns, dtype=np.float64)
    periods, trials = r.shape
    if partitions < 2 or partitions % 2:
        raise ValueError(f"partitions must be even and >= 2, got {partitions}")
    if trials < 2:
        raise ValueError("PBO needs at least 2 trials")
    size = periods // partitions
    if size < 2:
        raise ValueError(f"{periods} periods leave fewer than 2 per submatrix of {partitions}")
    dropped = periods - size * partitions
    parts = r[dropped:].reshape(partitions, size, trials)
    everything = set(range(partitions))
    logits, winners, ranks = [], [], []
    for chosen in itertools.combinations(range(partitions), partitions // 2):
        rest = sorted(everything - set(chosen))
        in_sample = performance(parts[list(chosen)].reshape(-1, trials))
        out_of_sample = performance(parts[rest].reshape(-1, trials))
        best = int(np.argmax(in_sample))
        rank = _average_rank(out_of_sample, best)
        w = rank / (trials + 1)
        logits.append(math.log(w / (1.0 - w)))
        winners.append(best)
        ranks.append(rank)
    lam = np.array(logits)
    return Pbo(
        pbo=float(np.mean(lam <= 0.0)),
        partitions=partitions,
        splits=lam.shape[0],
        periods_used=size * partitions,
        periods_dropped=dropped,
        logits=lam,
        chosen_in_sample=np.array(winners, dtype=np.int64),
        out_of_sample_rank=np.array(ranks),
    )


@dataclass(frozen=True)
class BlockRanks:
    """How combinations rank block by block (1 = best)."""

    ranks: F64  # combinations x blocks
    chosen: F64  # the chosen combination's rank in each block
    winners: npt.NDArray[np.int64]  # best combination of each block
    winner_ranks: F64  # blocks x blocks: row b's winner ranked in column c
    winner_next_block_rank: F64  # blocks - 1


def block_ranks(block_performance: F64, chosen: int) -> BlockRanks:
    """Ranks of every combination in every block from a combinations x blocks matrix of
    performance (e.g. per-block per-period Sharpe)."""
    perf = np.asarray(block_performance, dtype=np.float64)
    blocks = perf.shape[1]
    ranks = np.column_stack([ranks_descending(perf[:, b]) for b in range(blocks)])
    winners = np.array([int(np.argmax(perf[:, b])) for b in range(blocks)], dtype=np.int64)
    winner_ranks = ranks[winners, :]
    next_rank = np.array([ranks[winners[b - 1], b] for b in range(1, blocks)], dtype=np.float64)
    return BlockRanks(ranks, ranks[chosen, :], winners, winner_ranks, next_rank)


def mean_pairwise_correlation(returns: F64) -> float:
    """Mean correlation of the returns of every pair of trials that have spread; NaN below
    two such trials."""
    r = np.asarray(returns, dtype=np.float64)
    keep = r.std(axis=0) > 0
    if r.shape[0] < 2 or int(keep.sum()) < 2:
        return float("nan")
    c = np.atleast_2d(np.corrcoef(r[:, keep], rowvar=False))
    upper = c[np.triu_indices_from(c, k=1)]
    return float(np.mean(upper))
