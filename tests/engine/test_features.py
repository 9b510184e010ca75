"""Kernels against independent numpy computations; warm-up; stability; bad configs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from engine.errors import ConfigError
from engine.features import FeatureSet, FeatureSpec
from engine.ticks import TickBatch

S = FeatureSpec
T0 = 1_700_000_000_000_000_000


def quotes(mid: np.ndarray, ts: np.ndarray | None = None, half: float = 0.005) -> TickBatch:
    n = mid.shape[0]
    ts = T0 + np.arange(n, dtype=np.int64) * 1_000_000 if ts is None else ts
    return TickBatch.quotes(
        ts, ts, np.zeros(n, np.int32), mid - half, mid + half, np.ones(n), np.ones(n)
    )


def compute(specs: list[FeatureSpec], batch: TickBatch) -> np.ndarray:
    fs = FeatureSet([S(name="mid", kind="mid"), *specs])
    return fs.update(batch, fs.new_state(1))[:, 1:]


def irregular_ts(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return T0 + np.cumsum(rng.choice([0, 100_000, 1_000_000, 7_000_000, 50_000_000], n)).astype(
        np.int64
    )


def segment_starts(ts: np.ndarray, span: int) -> np.ndarray:
    """Per row, the index of the first row of its segment: a segment starts after a gap
    longer than ``span`` (where a time feature forgets the past and warms up again)."""
    new = np.r_[True, np.diff(ts) > span]
    return np.maximum.accumulate(np.where(new, np.arange(ts.shape[0]), 0))


def test_raw_quote_features_match_formulas() -> None:
    n = 50
    rng = np.random.default_rng(0)
    bid = 100 + rng.uniform(0, 1, n)
    ask = bid + rng.uniform(0.01, 0.1, n)
    bs, as_ = rng.uniform(0, 3, n), rng.uniform(0, 3, n)
    ts = T0 + np.arange(n, dtype=np.int64)
    b = TickBatch.quotes(ts, ts, np.zeros(n, np.int32), bid, ask, bs, as_)
    fs = FeatureSet(
        [
            S(name="m", kind="mid"),
            S(name="s", kind="spread_bps"),
            S(name="mp", kind="microprice"),
            S(name="i", kind="book_imbalance"),
        ]
    )
    out = fs.update(b, fs.new_state(1))
    np.testing.assert_allclose(out[:, 0], (bid + ask) / 2, rtol=1e-15)
    np.testing.assert_allclose(out[:, 1], (ask - bid) / ((bid + ask) / 2) * 1e4, rtol=1e-12)
    np.testing.assert_allclose(out[:, 2], (bid * as_ + ask * bs) / (bs + as_), rtol=1e-12)
    np.testing.assert_allclose(out[:, 3], (bs - as_) / (bs + as_), rtol=1e-12)


def test_ema_ticks_matches_polars_ewm_and_warms_after_span() -> None:
    rng = np.random.default_rng(1)
    mid = 100 + np.cumsum(rng.normal(0, 0.1, 300))
    out = compute([S(name="e", kind="ema", input="mid", span=20)], quotes(mid))[:, 0]
    ref = pl.Series(mid).ewm_mean(span=20, adjust=False).to_numpy()
    assert np.isnan(out[:19]).all()
    np.testing.assert_allclose(out[19:], ref[19:], rtol=1e-12)


def ema_time_oracle(ts: np.ndarray, x: np.ndarray, h: int) -> np.ndarray:
    """Closed form of the half-life EMA after each update, from scratch for every row,
    over the rows since the last gap longer than ``h`` (the EMA restarts there).

    Equal timestamps: the input's value at a time is its last update there, so the EMA
    after row t is that of the series with one value per timestamp (the last one, up to t).
    Weight of x_k = (1 - d_k) * prod_{l > k} d_l; the first value keeps prod_{l > 0} d_l.
    """
    out = np.empty(ts.shape[0])
    seg = segment_starts(ts, h)
    for t in range(ts.shape[0]):
        a = seg[t]
        last = a + np.flatnonzero(np.r_[ts[a + 1 : t + 1] != ts[a:t], True])  # each stamp's last
        u, v = ts[last], x[last]
        d = np.exp(-math.log(2.0) * np.diff(u) / h)
        tail = np.r_[np.cumprod(d[::-1])[::-1], 1.0]  # prod_{l > k} d_l for k = 0..m-1
        w = np.r_[tail[0], (1 - d) * tail[1:]]
        out[t] = float(np.dot(w, v))
    return out


def test_ema_time_half_life_handles_irregular_gaps_exactly() -> None:
    rng = np.random.default_rng(2)
    n = 400
    ts = irregular_ts(n, 2)
    mid = 100 + np.cumsum(rng.normal(0, 0.1, n))
    h = 20_000_000
    out = compute([S(name="e", kind="ema", input="mid", half_life=h)], quotes(mid, ts))[:, 0]
    ref = ema_time_oracle(ts, mid, h)
    # 50 ms gaps in the stream are longer than the 20 ms half-life: it restarts there
    warm = ts - ts[segment_starts(ts, h)] >= h
    assert 0 < (~warm[1:] & warm[:-1]).sum() < n // 4  # restarts happen, and values remain
    assert np.isnan(out[~warm]).all()
    np.testing.assert_allclose(out[warm], ref[warm], rtol=1e-12)
    # a gap of h decays twice as much as a gap of h/2: check on a constant-then-step input
    step = np.array([0.0, 1.0, 1.0])
    t3 = np.array([T0, T0 + h, T0 + 3 * h // 2], np.int64)
    e = compute([S(name="e", kind="ema", input="mid", half_life=h)], quotes(step + 10, t3))[:, 0]
    assert e[1] == pytest.approx(10 + 0.5)  # 1 - 2^-1
    assert e[2] == pytest.approx(10 + 1 - 0.5 * 2**-0.5)


@pytest.mark.parametrize("window", [2, 5, 30])
def test_rolling_mean_std_zscore_ticks_match_numpy(window: int) -> None:
    rng = np.random.default_rng(window)
    mid = 100 + np.cumsum(rng.normal(0, 0.1, 200))
    out = compute(
        [
            S(name="m", kind="rolling_mean", input="mid", window=window),
            S(name="s", kind="rolling_std", input="mid", window=window),
            S(name="z", kind="zscore", input="mid", window=window),
        ],
        quotes(mid),
    )
    for t in range(200):
        if t < window - 1:
            assert np.isnan(out[t]).all()
            continue
        w = mid[t - window + 1 : t + 1]
        assert out[t, 0] == pytest.approx(w.mean(), rel=1e-12)
        assert out[t, 1] == pytest.approx(w.std(ddof=1), rel=1e-8, abs=1e-12)
        assert out[t, 2] == pytest.approx((mid[t] - w.mean()) / w.std(ddof=1), rel=1e-7, abs=1e-9)


def test_time_window_features_match_brute_force() -> None:
    rng = np.random.default_rng(5)
    n = 600
    ts = irregular_ts(n, 5)
    mid = 60_000 + np.cumsum(rng.normal(0, 1.0, n))
    w = 40_000_000
    out = compute(
        [
            S(name="m", kind="rolling_mean", input="mid", window="40ms"),
            S(name="s", kind="rolling_std", input="mid", window="40ms"),
            S(name="r", kind="log_return", input="mid", lag="25ms"),
            S(name="v", kind="realized_vol", input="mid", window=w),
        ],
        quotes(mid, ts),
    )
    lr = np.concatenate([[np.nan], np.diff(np.log(mid))])
    row = np.arange(n)
    seg_w, seg_lag = segment_starts(ts, w), segment_starts(ts, 25_000_000)
    assert (seg_w > 0).any()  # the stream has gaps longer than the window (50 ms)
    for t in range(n):
        inwin = (ts > ts[t] - w) & (ts <= ts[t]) & (row <= t)
        warm = ts[t] - ts[seg_w[t]] >= w  # again a window after a gap longer than it
        if not warm:
            assert np.isnan(out[t, [0, 1, 3]]).all()
        else:
            x = mid[inwin]
            assert out[t, 0] == pytest.approx(x.mean(), rel=1e-12)
            if x.shape[0] >= 2:
                assert out[t, 1] == pytest.approx(x.std(ddof=1), rel=1e-7, abs=1e-9)
            # realized vol: the squared log returns stamped in the window, none across a gap
            r = lr[inwin & (row > seg_w[t])]
            assert out[t, 3] == pytest.approx(math.sqrt(float(np.sum(r * r))), rel=1e-9, abs=1e-12)
        # log return over 25 ms: against the last value at or before t - lag, since the gap
        before = np.flatnonzero((ts <= ts[t] - 25_000_000) & (row <= t) & (row >= seg_lag[t]))
        if before.shape[0]:
            assert out[t, 2] == pytest.approx(
                math.log(mid[t] / mid[before[-1]]), rel=1e-12, abs=1e-15
            )
        else:
            assert np.isnan(out[t, 2])


def test_log_return_ticks_matches_numpy() -> None:
    mid = 100 * np.exp(np.cumsum(np.random.default_rng(6).normal(0, 1e-3, 100)))
    out = compute([S(name="r", kind="log_return", input="mid", lag=4)], quotes(mid))[:, 0]
    assert np.isnan(out[:4]).all()
    np.testing.assert_allclose(out[4:], np.log(mid[4:] / mid[:-4]), rtol=1e-12)


def test_trade_window_features_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    n = 500
    ts = irregular_ts(n, 7)
    price = 100 + rng.normal(0, 0.5, n)
    size = rng.uniform(0.1, 2, n)
    side = rng.choice([-1, 1], n).astype(np.int8)
    b = TickBatch.trades(ts, ts, np.zeros(n, np.int32), price, size, side)
    w = 30_000_000
    fs = FeatureSet(
        [
            S(name="f", kind="trade_flow_imbalance", window=w),
            S(name="v", kind="vwap", window=w),
            S(name="since", kind="time_since_trade"),
        ]
    )
    out = fs.update(b, fs.new_state(1))
    seg = segment_starts(ts, w)
    for t in range(n):
        m = (ts > ts[t] - w) & (np.arange(n) <= t)
        if ts[t] - ts[seg[t]] < w:  # warming up: from the first tick, or after a gap
            assert np.isnan(out[t, :2]).all()
            continue
        assert out[t, 0] == pytest.approx(
            np.sum(side[m] * size[m]) / np.sum(size[m]), rel=1e-9, abs=1e-12
        )
        assert out[t, 1] == pytest.approx(np.sum(price[m] * size[m]) / np.sum(size[m]), rel=1e-12)
    assert (out[:, 2] == 0.0).all()


def test_rolling_std_is_stable_on_large_prices_over_a_long_run() -> None:
    # prices near 1e5 moving by 1e-4: the naive E[x^2] - E[x]^2 returns noise or negatives
    rng = np.random.default_rng(8)
    n = 200_000
    mid = 1e5 + np.round(np.cumsum(rng.normal(0, 1e-4, n)), 6)
    out = compute(
        [S(name="s", kind="rolling_std", input="mid", window=500)], quotes(mid, half=0.0)
    )[:, 0]
    for t in (499, 1000, 77_777, n - 1):
        ref = mid[t - 499 : t + 1].std(ddof=1)
        assert out[t] == pytest.approx(ref, rel=1e-6)
    naive = np.sqrt(max(np.mean(mid[-500:] ** 2) - np.mean(mid[-500:]) ** 2, 0) * 500 / 499)
    assert abs(naive - mid[-500:].std(ddof=1)) > abs(out[-1] - mid[-500:].std(ddof=1))


def test_time_window_ring_overflow_is_counted() -> None:
    ts = T0 + np.arange(20, dtype=np.int64)  # 20 ticks within 1 us
    fs = FeatureSet(
        [
            S(name="mid", kind="mid"),
            S(name="m", kind="rolling_mean", input="mid", window="1s", capacity=4),
        ]
    )
    state = fs.new_state(1)
    fs.update(quotes(np.arange(20.0) + 10, ts), state)
    assert fs.overflow_counts(state) == {"m": 16}


def test_instruments_have_separate_state() -> None:
    n = 40
    ts = T0 + np.arange(n, dtype=np.int64)
    inst = (np.arange(n) % 2).astype(np.int32)
    mid = np.where(inst == 0, 100.0, 200.0) + np.arange(n) * 0.01
    b = TickBatch.quotes(ts, ts, inst, mid - 0.005, mid + 0.005, np.ones(n), np.ones(n))
    fs = FeatureSet([S(name="mid", kind="mid"), S(name="e", kind="ema", input="mid", span=3)])
    out = fs.update(b, fs.new_state(2))
    only0 = compute(
        [S(name="e", kind="ema", input="mid", span=3)], b.take(np.flatnonzero(inst == 0))
    )
    np.testing.assert_array_equal(out[inst == 0, 1], only0[:, 0])


def test_fingerprint_pins_spec_and_order() -> None:
    a = FeatureSet([S(name="mid", kind="mid"), S(name="e", kind="ema", input="mid", span=3)])
    b = FeatureSet([S(name="mid", kind="mid"), S(name="e", kind="ema", input="mid", span=3)])
    c = FeatureSet([S(name="mid", kind="mid"), S(name="e", kind="ema", input="mid", span=4)])
    d = FeatureSet([S(name="e", kind="ema", input="mid", span=3), S(name="mid", kind="mid")])
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    assert d.names == ("e", "mid")


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ([S(name="x", kind="nope")], "unknown kind 'nope'"),
        (
            [S(name="mid", kind="mid"), S(name="z", kind="zscore", input="mid", span=3)],
            "takes no parameter 'span'",
        ),
        ([S(name="mid", kind="mid"), S(name="mid", kind="mid")], "duplicate feature name"),
        (
            [
                S(name="a", kind="ema", input="b", span=2),
                S(name="b", kind="ema", input="a", span=2),
            ],
            "cyclic input",
        ),
        ([S(name="e", kind="ema", input="mid", span=2)], "input 'mid' is not a feature"),
        (
            [
                S(name="mid", kind="mid"),
                S(name="e", kind="ema", input="mid", span=2, half_life="1s"),
            ],
            "exactly one",
        ),
        ([S(name="mid", kind="mid"), S(name="e", kind="ema", input="mid", span=0)], "int >= 1"),
        (
            [S(name="mid", kind="mid"), S(name="z", kind="zscore", input="mid", window="-5s")],
            "duration",
        ),
        (
            [
                S(name="mid", kind="mid"),
                S(name="z", kind="zscore", input="mid", window=10, capacity=3),
            ],
            "time window only",
        ),
        ([S(name="f", kind="vwap")], "window"),
        ([S(name="mid", kind="ema", span=3)], "needs an input"),
        ([], "at least one feature"),
    ],
)
def test_feature_set_bad_config_is_a_clear_config_error(
    specs: list[FeatureSpec], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        FeatureSet(specs)
