"""The sweep's DSR and PBO read in words (``replay/research/sweep/verdict.py``): the
audit's two cases, prior trials counted in the DSR, the verdict's false-positive rate on
pure noise within the stated 5 % over many seeds (independent, correlated and
autocorrelated trials), a planted edge found, and ``tradeloop sweep --prior-trials``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from scipy import signal, stats

from replay.backtest import metrics as fig
from replay.research import overfitting as ov
from replay.research.sweep import verdict as vd
from replay.research.sweep.command import add_sweep_arguments, cmd_sweep
from tests.replay.research.sweep.test_sweep import client, files  # noqa: F401  (fixtures)

_READ = {"rho": None, "dsr_adjusted": None, "splits": 70, "prior_trials": 0, "correlation": 0.2}


def test_verdict_dsr_094_with_pbo_014_is_not_significant() -> None:
    v = vd.verdict(dsr=0.94, pbo=0.14, trials=12, **_READ)  # type: ignore[arg-type]
    assert v.significant is False and v.choice_is_noise is False
    assert v.headline.startswith("Not significant") and "does not make it real" in v.headline
    assert any("At or above 0.95 the result is significant" in t for t in v.sentences)


def test_verdict_dsr_1_with_pbo_053_is_an_idea_that_works_with_a_noisy_choice() -> None:
    v = vd.verdict(dsr=1.0, pbo=0.53, trials=12, **_READ)  # type: ignore[arg-type]
    assert v.significant is True and v.choice_is_noise is True
    assert v.headline.startswith("The idea works but the choice within the grid is noise")
    assert any("Above 0.5 the choice within the grid is noise" in t for t in v.sentences)


def test_verdict_reads_the_smaller_dsr_and_names_correlated_trials() -> None:
    read = {**_READ, "rho": 0.4, "dsr_adjusted": 0.90, "correlation": 0.95}
    v = vd.verdict(dsr=0.97, pbo=0.2, trials=12, **read)  # type: ignore[arg-type]
    assert v.significant is False  # 0.97 unadjusted, 0.90 with the autocorrelation
    assert any("autocorrelated (lag-1 0.40)" in t for t in v.sentences)
    assert any("The trials move together" in t for t in v.sentences)
    both = vd.verdict(dsr=0.99, pbo=None, trials=12, **{**_READ, "splits": None})  # type: ignore[arg-type]
    assert both.significant is True and both.choice_is_noise is None


def _noise(seed: int, periods: int = 600, trials: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((periods, trials)) * 1e-4 + 2e-6


def test_prior_trials_enter_the_deflated_sharpe_as_the_papers_number_of_trials() -> None:
    r = _noise(1)
    best = int(np.argmax(ov.performance(r)))
    assert vd.deflated_sharpe(r, best) == ov.deflated_sharpe(r, best)
    base = ov.deflated_sharpe(r, best)
    previous = base.deflated_sharpe
    for prior in (1, 10, 100, 1000):
        d = vd.deflated_sharpe(r, best, prior)
        n = 8 + prior
        gamma = 0.5772156649015329
        sr0 = math.sqrt(base.sharpe_variance) * (
            (1 - gamma) * stats.norm.ppf(1 - 1 / n) + gamma * stats.norm.ppf(1 - 1 / (n * math.e))
        )
        assert d.trials == n and d.expected_max_sharpe == pytest.approx(sr0, rel=1e-12)
        z = (
            (base.sharpe_per_period - sr0)
            * math.sqrt(base.periods - 1)
            / math.sqrt(
                1
                - base.skewness * base.sharpe_per_period
                + (base.kurtosis - 1) / 4 * base.sharpe_per_period**2
            )
        )
        assert d.deflated_sharpe == pytest.approx(stats.norm.cdf(z), rel=1e-9, abs=1e-12)
        assert d.deflated_sharpe <= previous  # more chances to be lucky: less significant
        previous = d.deflated_sharpe
    with pytest.raises(ValueError, match="prior_trials"):
        vd.deflated_sharpe(r, best, -1)


def _sweeps(seeds: int, *, corr: float, phi: float, drift: float = 0.0, seed: int = 0):
    """Pure-noise (or drifting) sweeps of 12 trials x 1,000 periods: a common factor of
    weight ``corr`` (trials that move together), AR(1) ``phi`` (held positions)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(seeds):
        e = math.sqrt(corr) * rng.standard_normal((1000, 1))
        e = e + math.sqrt(1 - corr) * rng.standard_normal((1000, 12))
        r = signal.lfilter([1.0], [1.0, -phi], e, axis=0) * 1e-4 + drift * 1e-4
        best = int(np.argmax(ov.performance(r)))
        d = vd.deflated_sharpe(r, best)
        rho = vd.lag1_autocorrelation(r[:, best])
        v = vd.verdict(
            dsr=d.deflated_sharpe, dsr_adjusted=vd.autocorrelation_adjusted(d, rho), rho=rho,
            pbo=None, splits=None, trials=12, prior_trials=0, correlation=None,
        )  # fmt: skip
        out.append((d.deflated_sharpe >= vd.DSR_SIGNIFICANT, bool(v.significant)))
    return np.array(out)


@pytest.mark.parametrize(("corr", "phi"), [(0.0, 0.0), (0.9, 0.0), (0.9, 0.6)])
def test_verdict_false_positives_on_pure_noise_within_the_stated_five_percent(
    corr: float, phi: float
) -> None:
    # Wrong change that fails it: read the unadjusted DSR (the autocorrelated case then
    # says "significant" in about 20 % of noise sweeps)
    seeds = 400
    said = _sweeps(seeds, corr=corr, phi=phi, seed=int(corr * 10 + phi * 100))
    bound = stats.binom.ppf(0.999, seeds, 0.05)
    assert said[:, 1].sum() <= bound
    if phi > 0:
        assert said[:, 0].sum() > 2 * bound  # the unadjusted DSR: far beyond its 5 %


def test_verdict_finds_a_planted_edge() -> None:
    said = _sweeps(50, corr=0.9, phi=0.0, drift=0.15, seed=5)
    assert said[:, 1].mean() >= 0.95


def test_autocorrelation_adjustment_is_the_effective_periods_psr() -> None:
    r = _noise(3)[:, :1]
    d = ov.deflated_sharpe(np.column_stack([r, _noise(4)[:, :1]]), 0)
    assert vd.autocorrelation_adjusted(d, -0.3) == d.deflated_sharpe  # only rho > 0
    t_eff = int(d.periods * 0.5 / 1.5)
    expected = fig.probabilistic_sharpe(
        d.sharpe_per_period, t_eff, d.skewness, d.kurtosis, benchmark=d.expected_max_sharpe
    )
    assert vd.autocorrelation_adjusted(d, 0.5) == expected


def test_cmd_sweep_prior_trials_are_counted_and_the_report_says_what_it_means(
    client: Client,  # noqa: F811
    files: dict[str, Path],  # noqa: F811
    sample_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    grid = tmp_path / "grid.toml"
    grid.write_text('"features[1].span" = [10, 40]\n')
    argv = [str(sample_dir), "--config", str(files["base"]), "--grid", str(grid), "--out",
            str(tmp_path / "out"), "--folds", "2", "--scheduler", client.scheduler.address]  # fmt: skip
    assert cmd_sweep(parser.parse_args(argv)) == 0
    first = json.loads((tmp_path / "out" / "summary.json").read_text())
    capsys.readouterr()
    assert cmd_sweep(parser.parse_args([*argv, "--prior-trials", "50"])) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["prior_trials"] == 50 and summary["trials_counted"] == 52
    assert "of 52 trials" in printed and summary["verdict"]["headline"] in printed
    assert summary["run"]["tasks_resumed"] == 4  # counting differently reruns nothing
    assert summary["best"]["expected_max_sharpe"] > first["best"]["expected_max_sharpe"]
    assert summary["best"]["deflated_sharpe"] <= first["best"]["deflated_sharpe"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="verdict"' in page and "52 trials counted, 50 of them before this sweep" in page
    assert "At or above 0.95 the result is significant" in page
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--prior-trials", "-1"])
