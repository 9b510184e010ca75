"""Report figures equal independent numpy computations on hand-made paths and tiny replays."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from engine.clock import TimerFired
from engine.events import Quote
from engine.strategy import Strategy
from replay.backtest import metrics as fig
from replay.backtest.report import compute_metrics, equity_frame, fills_frame, write_report
from replay.backtest.runner import ReplayRun, run_replay
from tests.conftest import make_config

T0 = 1_700_000_000_000_000_000
S = 10**9
INITIAL = 100_000.0
FEE_BPS = 2.0


class ScriptParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    orders: dict[int, float] = {}  # quote number -> signed BTC-USD quantity, sent on it
    buy_after_ns: int = 0  # also buy 10 by a timer this long after the first tick


class Script(Strategy):
    """Sends a market order on given quotes; it fills 250 us later at that quote."""

    name = "script"
    Params = ScriptParams

    def on_start(self) -> None:
        self.seen = 0
        if self.params.buy_after_ns:  # type: ignore[attr-defined]
            self.ctx.set_timer("buy", self.ctx.now_ns() + self.params.buy_after_ns)  # type: ignore[attr-defined]

    def on_timer(self, timer: TimerFired) -> None:
        self.ctx.submit_market("BTC-USD", "buy", 10.0)

    def on_quote(self, quote: Quote) -> None:
        qty = self.params.orders.get(self.seen, 0.0)  # type: ignore[attr-defined]
        self.seen += 1
        if qty:
            self.ctx.submit_market("BTC-USD", "buy" if qty > 0 else "sell", abs(qty))


def _replay(
    root: Path, quotes: list[tuple[float, float]], orders: dict[int, float], buy_after_ns: int = 0
) -> ReplayRun:
    """Quotes (seconds after T0, mid) with a 2.0 spread; a 1 s equity grid."""
    root.mkdir(exist_ok=True)
    pl.DataFrame(
        {
            "ts_event": [T0 + round(t * S) for t, _ in quotes],
            "symbol": "BTC-USD",
            "bid": [m - 1.0 for _, m in quotes],
            "ask": [m + 1.0 for _, m in quotes],
            "bid_size": 1e6,
            "ask_size": 1e6,
        }
    ).write_parquet(root / "quotes.parquet")
    cfg = make_config(
        features=[{"name": "mid", "kind": "mid"}],
        model=None,
        risk={"max_order_qty": 1000.0, "warmup": False},
        venue={"sim": {"latency": "250us", "fee_bps": FEE_BPS}},
        replay={"equity_interval": "1s", "initial_cash": INITIAL},
    )
    script = Script(ScriptParams(orders=orders, buy_after_ns=buy_after_ns))
    return run_replay(cfg, root, progress=False, strategy=script)


def _oracle_curve(
    quotes: list[tuple[float, float]], fills: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Equity at every 1 s grid point g from the first tick's to the one after the last
    tick: cash after the fills stamped before g plus position x the last mid before g."""
    q_ts = np.array([T0 + round(t * S) for t, _ in quotes])
    mids = np.array([m for _, m in quotes])
    f_ts = fills["ts_event"].to_numpy()
    signed = np.where(fills["side"].to_numpy() == "buy", 1.0, -1.0) * fills["qty"].to_numpy()
    flows = -signed * fills["price"].to_numpy() - fills["fee"].to_numpy()
    grid = np.arange(q_ts[0] - q_ts[0] % S, q_ts[-1] - q_ts[-1] % S + S + 1, S)
    curve = []
    for g in grid:
        done = f_ts < g
        seen = q_ts < g
        mark = mids[seen][-1] if seen.any() else 0.0
        curve.append(INITIAL + flows[done].sum() + signed[done].sum() * mark)
    return grid, np.array(curve)


# quiet stretches of several seconds, a position held through them, marks moving
QUOTES = [(0.5, 100.0), (3.2, 110.0), (3.7, 90.0), (9.9, 120.0), (10.0, 95.0), (12.25, 97.0)]
ORDERS = {0: 10.0, 3: -25.0, 4: 15.0}  # long 10, flip to short 15 at 9.9, flat at 10.0


def test_equity_frame_quiet_stretches_are_filled_with_the_equity_then(tmp_path: Path) -> None:
    run = _replay(tmp_path / "d", QUOTES, ORDERS)
    fills = fills_frame(run)
    assert fills.height == 3
    grid, expected = _oracle_curve(QUOTES, fills)
    got = equity_frame(run)
    assert got["ts_event"].to_list() == grid.tolist()
    np.testing.assert_allclose(got["equity"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert got["equity"][-1] == run.engine.portfolio.equity(run.engine.market.mids())


def test_equity_frame_last_tick_on_a_grid_point_keeps_its_effect(tmp_path: Path) -> None:
    # the sampler records 10 s with the equity before the tick at 10 s; the curve must
    # still end at the account after it
    quotes = [(1.0, 100.0), (9.5, 110.0), (10.0, 130.0)]
    run = _replay(tmp_path / "d", quotes, {0: 10.0})
    grid, expected = _oracle_curve(quotes, fills_frame(run))
    got = equity_frame(run)
    assert got["ts_event"].to_list() == grid.tolist()
    np.testing.assert_allclose(got["equity"].to_numpy(), expected, rtol=0, atol=1e-9)


def test_equity_frame_fill_between_ticks_in_a_quiet_stretch_shows_at_its_time(
    tmp_path: Path,
) -> None:
    quotes = [(0.5, 100.0), (10.5, 100.0), (12.25, 100.0)]
    run = _replay(tmp_path / "d", quotes, {}, buy_after_ns=round(4.7 * S))  # fills at 5.2 s
    fills = fills_frame(run)
    assert fills.height == 1
    _, expected = _oracle_curve(quotes, fills)
    np.testing.assert_allclose(equity_frame(run)["equity"].to_numpy(), expected, atol=1e-9)


def _returns_oracle(curve: np.ndarray) -> np.ndarray:
    return np.diff(curve) / INITIAL


def _psr_by_hand(r: np.ndarray) -> float:
    n = len(r)
    mean = sum(r) / n
    sd1 = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
    m2 = sum((x - mean) ** 2 for x in r) / n
    skew = sum((x - mean) ** 3 for x in r) / n / m2**1.5
    kurt = sum((x - mean) ** 4 for x in r) / n / m2**2
    sr = mean / sd1
    z = sr * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_report_short_span_gives_per_period_sharpe_and_no_annualised_one(tmp_path: Path) -> None:
    run = _replay(tmp_path / "d", QUOTES, ORDERS)
    written = write_report(run, tmp_path / "r")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    _, curve = _oracle_curve(QUOTES, fills_frame(run))
    r = _returns_oracle(curve)
    assert metrics["sharpe"] is None and metrics["sortino"] is None
    assert metrics["annualised"] is False and "not annualised" in metrics["annualisation"]
    assert metrics["periods"] == len(r) == 13
    assert metrics["sharpe_per_period"] == pytest.approx(np.mean(r) / np.std(r, ddof=1))
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    assert metrics["sortino_per_period"] == pytest.approx(np.mean(r) / downside)
    assert metrics["probabilistic_sharpe"] == pytest.approx(_psr_by_hand(r))
    assert math.isnan(written["sharpe"])  # the CLI formats the in-memory float


def test_report_annualises_over_the_real_span_at_or_above_the_minimum(tmp_path: Path) -> None:
    run = _replay(tmp_path / "d", QUOTES, ORDERS)
    metrics = write_report(run, tmp_path / "r", min_annualise_span_ns=13 * S)
    _, curve = _oracle_curve(QUOTES, fills_frame(run))
    r = _returns_oracle(curve)
    per_year = len(r) / (13 * S / (365 * 86_400 * S))
    assert metrics["annualised"] is True and metrics["span_ns"] == 13 * S
    assert metrics["sharpe"] == pytest.approx(np.mean(r) / np.std(r, ddof=1) * np.sqrt(per_year))
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    assert metrics["sortino"] == pytest.approx(np.mean(r) / downside * np.sqrt(per_year))


def test_report_drawdown_hit_ratio_and_turnover_equal_numpy(tmp_path: Path) -> None:
    run = _replay(tmp_path / "d", QUOTES, ORDERS)
    metrics = write_report(run, tmp_path / "r")
    fills = fills_frame(run)
    _, curve = _oracle_curve(QUOTES, fills)
    peak = np.maximum(np.maximum.accumulate(curve), INITIAL)
    assert metrics["max_drawdown"] == pytest.approx(np.max(1 - curve / peak))
    assert metrics["max_drawdown_cash"] == pytest.approx(np.max(peak - curve))
    equity = pl.read_parquet(tmp_path / "r" / "equity.parquet")
    np.testing.assert_allclose(equity["drawdown"].to_numpy(), curve / peak - 1, atol=1e-15)
    # trip 1: long 10 at 101 (quote 0), closed by the flip at 119 (quote 3); trip 2: short
    # 15 from 119, closed at 96 (quote 4); fees 2 bps of each notional, the flip's pro rata
    fee = FEE_BPS * 1e-4
    trip1 = 10 * (119 - 101) - fee * (10 * 101 + 10 * 119)
    trip2 = 15 * (119 - 96) - fee * (15 * 119 + 15 * 96)
    np.testing.assert_allclose(fig.round_trip_pnls(fills)[0], [trip1, trip2])
    assert metrics["round_trips"] == 2 and metrics["hit_ratio"] == 1.0
    notional = 10 * 101 + 25 * 119 + 15 * 96
    assert metrics["turnover"] == pytest.approx(notional / INITIAL)


def _fills(rows: list[tuple[str, str, float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["instrument", "side", "qty", "price", "fee"], orient="row"
    ).with_columns(pl.col("qty", "price", "fee").cast(pl.Float64))


def test_hit_ratio_counts_round_trips_net_of_fees(tmp_path: Path) -> None:
    run = _replay(tmp_path / "d", QUOTES, {})
    fills = _fills(
        [
            ("BTC-USD", "buy", 2.0, 100.0, 0.5),
            ("ETH-USD", "sell", 1.0, 50.0, 0.1),
            ("BTC-USD", "sell", 1.0, 99.0, 0.5),  # a losing partial close ...
            ("BTC-USD", "sell", 1.0, 102.0, 0.5),  # ... a winning one: trip +1.0 - 1.5 fees
            ("ETH-USD", "buy", 1.0, 49.0, 0.1),  # +1.0 - 0.2 fees: a win
            ("BTC-USD", "buy", 1.0, 100.0, 0.1),
            ("BTC-USD", "sell", 3.0, 101.0, 0.3),  # flip: +1.0 - 0.1 - 0.1 closes a win
            ("BTC-USD", "buy", 2.0, 102.0, 0.0),  # short 2 at 101 - 0.2 fee: a loss
            ("ETH-USD", "buy", 1.0, 10.0, 0.0),  # still open
        ]
    )
    pnls, still_open = fig.round_trip_pnls(fills)
    np.testing.assert_allclose(pnls, [-0.5, 0.8, 0.8, -2.2])
    assert still_open == 1
    equity = equity_frame(run)
    metrics = compute_metrics(run, equity, fills)
    assert metrics["hit_ratio"] == 0.5 and metrics["round_trips"] == 4
    assert metrics["round_trips_open"] == 1


@pytest.mark.parametrize(
    ("path", "initial", "expected"),
    [
        ([90.0, 95.0, 92.0], 100.0, 0.10),  # below the initial cash from the first sample
        ([100.0, 120.0, 60.0, 130.0, 65.0], 100.0, 0.50),
        ([100.0, 101.0, 102.0], 100.0, 0.0),
    ],
)
def test_drawdown_peak_starts_at_initial_cash(
    path: list[float], initial: float, expected: float
) -> None:
    eq = np.array(path)
    peak = np.maximum(np.maximum.accumulate(np.r_[initial, eq]), initial)[1:]
    np.testing.assert_allclose(fig.drawdown(eq, initial), eq / peak - 1)
    assert -fig.drawdown(eq, initial).min() == pytest.approx(expected)
    assert fig.max_drawdown_cash(eq, initial) == pytest.approx(np.max(peak - eq))


def test_complete_grid_carries_the_last_sample_forward_and_closes_after_the_last_tick() -> None:
    ts, eq = fig.complete_grid(
        np.array([0, 1, 11]) * S, np.array([5.0, 6.0, 7.0]), S, int(12.25 * S), 8.0
    )
    assert ts.tolist() == [k * S for k in range(14)]
    assert eq.tolist() == [5.0] + [6.0] * 10 + [7.0] * 2 + [8.0]
    ts, eq = fig.complete_grid(np.empty(0, np.int64), np.empty(0), 0, 7 * S, 3.0)
    assert ts.tolist() == [7 * S] and eq.tolist() == [3.0]


def test_sharpe_sortino_and_moments_equal_numpy_on_a_hand_path() -> None:
    curve = np.array([100.0, 101.0, 100.5, 102.0, 101.0, 103.5, 103.0])
    r = fig.period_returns(curve, 100.0)
    np.testing.assert_allclose(r, np.diff(curve) / 100.0)
    assert fig.sharpe_ratio(r) == pytest.approx(r.mean() / r.std(ddof=1))
    assert fig.sortino_ratio(r) == pytest.approx(r.mean() / np.sqrt(np.mean(np.minimum(r, 0) ** 2)))
    skew, kurt = fig.skewness_kurtosis(r)
    c = r - r.mean()
    assert skew == pytest.approx(np.mean(c**3) / np.mean(c**2) ** 1.5)
    assert kurt == pytest.approx(np.mean(c**4) / np.mean(c**2) ** 2)
    assert math.isnan(fig.sharpe_ratio(np.array([0.01])))
    assert math.isnan(fig.sortino_ratio(np.array([0.01, 0.02])))


def test_probabilistic_sharpe_equals_a_hand_computation() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.005, -0.01, 0.02, 0.015, -0.004])
    sr = fig.sharpe_ratio(r)
    skew, kurt = fig.skewness_kurtosis(r)
    assert fig.probabilistic_sharpe(sr, len(r), skew, kurt) == pytest.approx(_psr_by_hand(r))
    # normal returns (skew 0, kurtosis 3): Phi(SR sqrt(n - 1) / sqrt(1 + SR^2 / 2))
    z = 0.1 * math.sqrt(99) / math.sqrt(1 + 0.1**2 / 2)
    expected = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert fig.probabilistic_sharpe(0.1, 100, 0.0, 3.0) == pytest.approx(expected, rel=1e-12)
    assert fig.probabilistic_sharpe(0.0, 100, -1.0, 9.0) == 0.5
    assert math.isnan(fig.probabilistic_sharpe(0.1, 1, 0.0, 3.0))


def test_annualisation_factor_only_at_or_above_the_minimum_span() -> None:
    day = 86_400 * S
    assert fig.annualisation_factor(86_400, day, day) == pytest.approx(math.sqrt(86_400 * 365))
    assert fig.annualisation_factor(86_399, day - S, day) is None
    assert fig.annualisation_factor(0, 0, 0) is None
