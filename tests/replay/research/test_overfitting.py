"""Overfitting statistics against hand computations and independent implementations
(scipy, itertools loops) on small matrices with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from replay.research import overfitting as ov


def _sharpe(x: np.ndarray) -> float:
    return float(np.mean(x) / np.std(x, ddof=1))


def test_cscv_pbo_two_partitions_by_hand_counts_median_as_overfit() -> None:
    # halves A = rows 0-1, B = rows 2-3; Sharpe of (a, b) = (a + b) / (sqrt(2) |a - b|)
    m = np.array(
        [
            [1.0, 0.0, -1.0],
            [3.0, 1.0, 0.0],
            [-3.0, 1.0, 0.0],
            [-1.0, 2.0, 1.0],
        ]
    )
    # A: SR = [1.414, 0.707, -0.707]; B: SR = [-1.414, 2.121, 0.707]
    # train A -> trial 0, worst of 3 in B: r = 1, w = 1/4, logit = ln(1/3)
    # train B -> trial 1, 2nd of 3 in A: r = 2, w = 1/2, logit = 0 (counts as overfit)
    result = ov.cscv_pbo(m, partitions=2)
    assert result.splits == 2
    assert list(result.chosen_in_sample) == [0, 1]
    assert list(result.out_of_sample_rank) == [1.0, 2.0]
    assert result.logits == pytest.approx([math.log(1 / 3), 0.0], abs=1e-15)
    assert result.pbo == 1.0


def test_cscv_pbo_trial_better_in_every_period_is_zero() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 1.0, (400, 9))
    m = noise.copy()
    m[:, 4] = np.max(noise, axis=1) + 0.5  # better than every other trial in every period
    result = ov.cscv_pbo(m, partitions=8)
    assert result.splits == math.comb(8, 4) == 70
    assert set(result.chosen_in_sample) == {4}
    # always the best out of sample: r = N, logit = ln(N)
    assert result.logits == pytest.approx(np.full(70, math.log(9)))
    assert result.pbo == 0.0


def _pbo_oracle(m: np.ndarray, s: int) -> float:
    """CSCV written out with loops and scipy's ranks."""
    t, n = m.shape
    size = t // s
    m = m[t - size * s :]
    parts = [m[k * size : (k + 1) * size] for k in range(s)]
    below = 0
    total = 0
    for train in itertools.combinations(range(s), s // 2):
        test = [k for k in range(s) if k not in train]
        is_rows = np.vstack([parts[k] for k in train])
        oos_rows = np.vstack([parts[k] for k in test])
        is_perf = [_sharpe(is_rows[:, j]) for j in range(n)]
        best = is_perf.index(max(is_perf))
        oos = stats.rankdata([_sharpe(oos_rows[:, j]) for j in range(n)])
        w = oos[best] / (n + 1)
        below += math.log(w / (1 - w)) <= 0
        total += 1
    return below / total


def test_cscv_pbo_of_pure_noise_is_near_half_and_matches_oracle() -> None:
    values = []
    for seed in range(12):
        m = np.random.default_rng(seed).normal(0.0, 0.01, (203, 16))  # 3 rows dropped
        result = ov.cscv_pbo(m, partitions=8)
        assert result.periods_dropped == 3
        assert result.pbo == pytest.approx(_pbo_oracle(m, 8), abs=1e-15)
        values.append(result.pbo)
    # each estimate is noisy (splits share data); their mean sits at 1/2
    assert 0.35 < float(np.mean(values)) < 0.65


def test_deflated_sharpe_matches_scipy_computation() -> None:
    rng = np.random.default_rng(5)
    m = rng.standard_t(5, (500, 7)) * 0.01 + 0.0005 * np.arange(7)
    result = ov.deflated_sharpe(m, 6)
    sharpes = np.array([_sharpe(m[:, j]) for j in range(7)])
    v = np.var(sharpes, ddof=1)
    g = 0.5772156649015329
    sr0 = math.sqrt(v) * (
        (1 - g) * stats.norm.ppf(1 - 1 / 7) + g * stats.norm.ppf(1 - 1 / (7 * math.e))
    )
    x = m[:, 6]
    sr = sharpes[6]
    skew = stats.skew(x)
    kurt = stats.kurtosis(x, fisher=False)
    z = (sr - sr0) * math.sqrt(499) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert result.trials == 7
    assert result.periods == 500
    assert result.expected_max_sharpe == pytest.approx(sr0, rel=1e-12)
    assert result.sharpe_per_period == pytest.approx(sr, rel=1e-12)
    assert result.deflated_sharpe == pytest.approx(stats.norm.cdf(z), rel=1e-9)
    assert result.deflated_sharpe < result.probabilistic_sharpe


def test_deflated_sharpe_of_best_noise_trial_is_low_where_its_psr_is_high() -> None:
    deflated, undeflated = [], []
    for seed in range(20):
        m = np.random.default_rng(100 + seed).normal(0.0, 0.01, (1000, 50))
        best = int(np.argmax(ov.performance(m)))
        result = ov.deflated_sharpe(m, best)
        deflated.append(result.deflated_sharpe)
        undeflated.append(result.probabilistic_sharpe)
    # the best of 50 noise trials looks significant undeflated, and not once deflated
    assert float(np.median(undeflated)) > 0.95
    assert max(deflated) < 0.95
    assert float(np.median(deflated)) < 0.8


def test_deflated_sharpe_one_trial_is_its_probabilistic_sharpe() -> None:
    m = np.random.default_rng(3).normal(0.001, 0.01, (300, 1))
    result = ov.deflated_sharpe(m, 0)
    assert result.expected_max_sharpe == 0.0
    assert result.deflated_sharpe == result.probabilistic_sharpe


def test_performance_without_spread_is_zero_and_short_series_nan() -> None:
    m = np.array([[0.0, 0.01, 0.002], [0.0, 0.01, -0.001], [0.0, 0.01, 0.004]])
    perf = ov.performance(m)
    assert perf[0] == 0.0 and perf[1] == 0.0
    assert perf[2] == pytest.approx(_sharpe(m[:, 2]))
    assert np.isnan(ov.performance(m[:1])).all()


def test_usable_partitions_lowers_to_even_with_two_periods_each() -> None:
    assert ov.usable_partitions(1000, 8) == 8
    assert ov.usable_partitions(13, 8) == 6
    assert ov.usable_partitions(9, 7) == 4
    assert ov.usable_partitions(4, 8) == 2
    assert ov.usable_partitions(3, 8) is None


def test_block_ranks_by_hand() -> None:
    # combinations x blocks
    perf = np.array(
        [
            [0.3, 0.1, 0.0],
            [0.2, 0.5, 0.2],
            [0.1, 0.1, 0.4],
        ]
    )
    result = ov.block_ranks(perf, chosen=1)
    assert result.ranks.tolist() == [[1, 2.5, 3], [2, 1, 2], [3, 2.5, 1]]
    assert result.chosen.tolist() == [2, 1, 2]
    assert result.winners.tolist() == [0, 1, 2]
    assert result.winner_ranks.tolist() == [[1, 2.5, 3], [2, 1, 2], [3, 2.5, 1]]
    assert result.winner_next_block_rank.tolist() == [2.5, 2]
