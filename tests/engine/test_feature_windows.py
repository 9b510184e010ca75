"""Time windows and lags keep their meaning: rings grow, a full ring reads NaN, memory is
bounded at config time; equal timestamps in a half-life EMA."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.errors import ConfigError
from engine.features import FeatureSet, FeatureSpec
from engine.features.feature_set import DEFAULT_CAPACITY, INITIAL_CAPACITY, MAX_ROW_BYTES
from engine.features.streaming import StreamingFeatures
from engine.ticks import QUOTE, TickBatch
from tests.engine.test_features import ema_time_oracle, segment_starts

S = FeatureSpec
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
SEC = 1_000_000_000


def quotes(mid: np.ndarray, ts: np.ndarray, inst: np.ndarray | None = None) -> TickBatch:
    n = mid.shape[0]
    inst = np.zeros(n, np.int32) if inst is None else inst
    return TickBatch.quotes(ts, ts, inst, mid - 0.005, mid + 0.005, np.ones(n), np.ones(n))


def mixed(n: int, gap_ns: np.ndarray, seed: int, n_inst: int = 1) -> TickBatch:
    """Quotes and trades (one in four) of ``n_inst`` instruments at the given gaps."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(gap_ns).astype(np.int64)
    inst = rng.integers(0, n_inst, n).astype(np.int32)
    kind = (rng.uniform(size=n) < 0.25).astype(np.int8)
    mid = 60_000.0 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    q = kind == QUOTE
    nan = np.full(n, np.nan)
    return TickBatch(
        ts, ts, inst, kind,
        np.where(q, mid - 0.01, nan), np.where(q, mid + 0.01, nan),
        np.where(q, rng.uniform(0.1, 3, n), nan), np.where(q, rng.uniform(0.1, 3, n), nan),
        np.where(q, nan, mid), np.where(q, nan, rng.uniform(0.001, 1, n)),
        np.where(q, 0, rng.choice([-1, 1], n)).astype(np.int8),
    )  # fmt: skip


WINDOW_KINDS = [
    S(name="mid", kind="mid"),
    S(name="mean", kind="rolling_mean", input="mid", window="5s"),
    S(name="std", kind="rolling_std", input="mid", window="5s"),
    S(name="z", kind="zscore", input="mid", window="5s"),
    S(name="rv", kind="realized_vol", input="mid", window="5s"),
    S(name="ret", kind="log_return", input="mid", lag="5s"),
    S(name="flow", kind="trade_flow_imbalance", window="5s"),
    S(name="vwap", kind="vwap", window="5s"),
    S(name="vdist", kind="vwap_distance", input="mid", window="5s"),
]


def window_oracle(b: TickBatch, t: int, w: int) -> dict[str, float]:
    """Every kind of ``WINDOW_KINDS`` after tick ``t``, from the raw ticks (one instrument)."""
    ts = b.ts_event[: t + 1]
    q = b.kind[: t + 1] == QUOTE
    mid = 0.5 * (b.bid[: t + 1] + b.ask[: t + 1])
    qts, qmid = ts[q], mid[q]
    inwin = qts > ts[t] - w
    x = qmid[inwin]
    tr = ~q & (ts > ts[t] - w)
    size, price, side = b.size[: t + 1][tr], b.price[: t + 1][tr], b.side[: t + 1][tr]
    lr = np.diff(np.log(qmid))[inwin[1:]]
    before = np.flatnonzero(qts <= qts[-1] - w)
    vwap = float(np.sum(price * size) / np.sum(size)) if size.shape[0] else math.nan
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.shape[0] > 1 else math.nan,
        "rv": math.sqrt(float(np.sum(lr * lr))),
        "ret": math.log(qmid[-1] / qmid[before[-1]]) if before.shape[0] else math.nan,
        "flow": float(np.sum(side * size) / np.sum(size)) if size.shape[0] else 0.0,
        "vwap": vwap,
        "vdist": (qmid[-1] - vwap) / vwap * 1e4,
    }


def test_time_windows_with_more_values_than_the_old_ring_match_brute_force() -> None:
    # 2,000 ticks/s over 5 s: 7,500 quotes in every window, over the old fixed ring of 4,096
    # (which silently kept only the newest 4,096 and called that the window)
    n = 24_000
    b = mixed(n, np.full(n, MS // 2), seed=1)
    fs = FeatureSet(WINDOW_KINDS)
    state = fs.new_state(1)
    out = fs.update(b, state)
    assert fs.overflow_counts(state) == dict.fromkeys(fs.names[1:], 0)
    assert fs.capacities(state)["mean"] > 7_500
    col = {name: c for c, name in enumerate(fs.names)}
    for t in (10_050, 15_001, 20_345, n - 1):
        while b.kind[t] != QUOTE:
            t -= 1  # the derived features move with their input (quotes)
        ref = window_oracle(b, t, 5 * SEC)
        for name, value in ref.items():
            assert out[t, col[name]] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert np.isfinite(out[n // 2 :, col["ret"]]).all()


def test_log_return_time_lag_over_more_updates_than_the_ring_starts_with_has_values() -> None:
    # the reported case: 100 quotes/s, lag 1 s; with a 64-value ring it never had a value
    n = 2_000
    ts = T0 + np.arange(n, dtype=np.int64) * 10 * MS
    mid = 100 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 1e-4, n)))
    fs = FeatureSet(
        [S(name="mid", kind="mid"), S(name="r", kind="log_return", input="mid", lag="1s")]
    )
    out = fs.update(quotes(mid, ts), fs.new_state(1))[:, 1]
    assert np.isnan(out[:100]).all()
    np.testing.assert_allclose(out[100:], np.log(mid[100:] / mid[:-100]), rtol=1e-12)
    # and past the old default of 4,096 values: 1,000 quotes/s with a 5 s lag
    n = 12_000
    ts = T0 + np.arange(n, dtype=np.int64) * MS
    mid = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 1e-4, n)))
    fs = FeatureSet(
        [S(name="mid", kind="mid"), S(name="r", kind="log_return", input="mid", lag="5s")]
    )
    out = fs.update(quotes(mid, ts), fs.new_state(1))[:, 1]
    assert np.isnan(out[:5000]).all()
    np.testing.assert_allclose(out[5000:], np.log(mid[5000:] / mid[:-5000]), rtol=1e-12)


def test_time_window_at_its_capacity_reads_nan_until_dropped_values_leave_it() -> None:
    # bursts of 30 quotes within 30 us, 200 ms apart, and a quote every 40 ms between
    # them (no gap longer than the window, so no restart); window 100 ms holds one burst,
    # but the capacity is 8: values dropped from a burst are in the window for 100 ms
    bursts, per = 12, 30
    burst_ts = (T0 + (np.arange(bursts) * 200 * MS)[:, None] + np.arange(per) * 1_000).ravel()
    filler = T0 + 20 * MS + np.arange(bursts * 5) * 40 * MS
    tail = T0 + bursts * 200 * MS + np.arange(1, 40) * 20 * MS
    ts = np.concatenate([burst_ts, filler, tail]).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    in_burst = (order < bursts * per) & (order % per >= 8)  # a burst's 9th quote on
    n = ts.shape[0]
    mid = 100 + np.cumsum(np.random.default_rng(4).normal(0, 0.01, n))
    specs = [
        S(name="mid", kind="mid"),
        S(name="mean", kind="rolling_mean", input="mid", window="100ms", capacity=8),
        S(name="rv", kind="realized_vol", input="mid", window="100ms", capacity=8),
        S(name="ret", kind="log_return", input="mid", lag="100ms", capacity=8),
    ]
    fs = FeatureSet(specs)
    state = fs.new_state(1)
    out = fs.update(quotes(mid, ts), state)
    assert fs.capacities(state) == {"mean": 8, "rv": 8, "ret": 8}
    assert fs.overflow_counts(state)["mean"] >= bursts * (per - 8)
    lr = np.r_[np.nan, np.diff(np.log(mid))]
    for t in range(n):
        inwin = (ts > ts[t] - 100 * MS) & (np.arange(n) <= t)
        if np.isfinite(out[t, 1]):  # a value is always over the whole window, never fewer
            assert out[t, 1] == pytest.approx(mid[inwin].mean(), rel=1e-12)
        if np.isfinite(out[t, 2]):
            r = lr[inwin & (np.arange(n) >= 1)]
            assert out[t, 2] == pytest.approx(math.sqrt(float(np.sum(r * r))), rel=1e-9)
        if np.isfinite(out[t, 3]):
            before = np.flatnonzero(ts[: t + 1] <= ts[t] - 100 * MS)
            assert out[t, 3] == pytest.approx(math.log(mid[t] / mid[before[-1]]), rel=1e-12)
    assert np.isnan(out[in_burst, 1]).all()  # truncated windows read NaN
    warm = ts - ts[0] >= 100 * MS
    assert np.isfinite(out[warm & ~in_burst, 1]).any()  # NaN for the overflow, not a restart
    assert np.isfinite(out[-20:, 1:]).all()  # and values come back once the drops are out


def test_trade_windows_at_their_capacity_read_nan_until_dropped_trades_leave_them() -> None:
    # bursts of 30 trades within 30 us every 200 ms, a quote every 10 ms; window 100 ms,
    # capacity 8: after a burst the windows miss trades for 100 ms and must say so
    bursts, per = 8, 30
    t_ts = (T0 + (np.arange(bursts) * 200 * MS)[:, None] + np.arange(per) * 1_000).ravel()
    q_ts = T0 + 5 * MS + np.arange(bursts * 20 + 30) * 10 * MS
    ts = np.concatenate([t_ts, q_ts]).astype(np.int64)
    kind = np.r_[np.ones(t_ts.shape[0]), np.zeros(q_ts.shape[0])].astype(np.int8)
    o = np.argsort(ts, kind="stable")
    ts, kind = ts[o], kind[o]
    n = ts.shape[0]
    rng = np.random.default_rng(6)
    q = kind == QUOTE
    mid = 100 + np.cumsum(rng.normal(0, 0.01, n))
    nan = np.full(n, np.nan)
    b = TickBatch(ts, ts, np.zeros(n, np.int32), kind, np.where(q, mid - 0.01, nan), np.where(q, mid + 0.01, nan),
                  np.where(q, 1.0, nan), np.where(q, 1.0, nan), np.where(q, nan, mid), np.where(q, nan, rng.uniform(0.1, 2, n)),
                  np.where(q, 0, rng.choice([-1, 1], n)).astype(np.int8))  # fmt: skip
    w = 100 * MS
    fs = FeatureSet([
        S(name="mid", kind="mid"),
        S(name="flow", kind="trade_flow_imbalance", window="100ms", capacity=8),
        S(name="vwap", kind="vwap", window="100ms", capacity=8),
        S(name="vdist", kind="vwap_distance", input="mid", window="100ms", capacity=8),
    ])  # fmt: skip
    state = fs.new_state(1)
    out = fs.update(b, state)
    assert fs.overflow_counts(state) == dict.fromkeys(["flow", "vwap", "vdist"], bursts * (per - 8))
    for t in range(n):
        m = ~q & (ts > ts[t] - w) & (np.arange(n) <= t)
        sz, px, sd = b.size[m], b.price[m], b.side[m]
        if np.isfinite(out[t, 1]):  # a value is always over every trade of the window
            assert out[t, 1] == pytest.approx(np.sum(sd * sz) / np.sum(sz) if m.any() else 0.0)
        if np.isfinite(out[t, 2]):
            assert out[t, 2] == pytest.approx(np.sum(px * sz) / np.sum(sz), rel=1e-12)
        if q[t] and np.isfinite(out[t, 3]):  # it moves with its input, the quotes
            vwap = np.sum(px * sz) / np.sum(sz)
            assert out[t, 3] == pytest.approx((mid[t] - vwap) / vwap * 1e4, rel=1e-9)
    after_burst = ~q
    after_burst[after_burst] = np.arange(after_burst.sum()) % per >= 8
    assert np.isnan(out[after_burst, 1:3]).all()  # truncated windows read NaN
    late = ts > t_ts[-1] + w
    assert np.isfinite(out[late & (ts < t_ts[-1] + w + 50 * MS), 1]).all()  # and come back


def test_ema_time_later_update_at_the_same_timestamp_replaces_the_earlier() -> None:
    h = 10 * MS
    ts = np.array([T0, T0 + h, T0 + h, T0 + 2 * h], np.int64)
    x = np.array([100.0, 110.0, 200.0, 200.0])
    fs = FeatureSet([S(name="mid", kind="mid"), S(name="e", kind="ema", input="mid", half_life=h)])
    out = fs.update(quotes(x, ts), fs.new_state(1))[:, 1]
    assert out[1] == pytest.approx(0.5 * 100 + 0.5 * 110)  # 105
    assert out[2] == pytest.approx(0.5 * 100 + 0.5 * 200)  # 150: 200 is the value at h
    assert out[3] == pytest.approx(0.5 * 150 + 0.5 * 200)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ema_time_with_repeated_timestamps_matches_oracle_in_any_batching(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    gaps = rng.choice([0, 0, 0, 1_000, 3 * MS, 3 * MS], n)
    gaps[rng.choice(n, 6, replace=False)] = 20 * MS  # gaps longer than the half-life
    ts = T0 + np.cumsum(gaps).astype(np.int64)
    mid = 100 + np.cumsum(rng.normal(0, 0.1, n))
    h = 10 * MS
    fs = FeatureSet([S(name="mid", kind="mid"), S(name="e", kind="ema", input="mid", half_life=h)])
    b = quotes(mid, ts)
    whole = fs.update(b, fs.new_state(1))[:, 1]
    warm = ts - ts[segment_starts(ts, h)] >= h  # 20 ms gaps restart the 10 ms half-life
    assert np.isnan(whole[~warm]).all() and warm.sum() > n // 4
    np.testing.assert_allclose(whole[warm], ema_time_oracle(ts, mid, h)[warm], rtol=1e-12)
    # cuts inside runs of equal stamps change nothing
    state = fs.new_state(1)
    cuts = [0, *sorted(rng.choice(n, 25, replace=False)), n]
    split = np.concatenate([fs.update(b.slice(a, c), state)[:, 1] for a, c in pairwise(cuts)])
    assert np.array_equal(whole, split, equal_nan=True)


def test_growing_rings_keep_streaming_batches_and_parallel_identical() -> None:
    # bursts of ~1,000 ticks within a few ms, 400 ms apart, over 3 instruments: several
    # growths, some inside one call and some between calls, on every path
    rng = np.random.default_rng(5)
    n = 40_000
    gaps = np.where(rng.uniform(size=n) < 0.001, 400 * MS, rng.choice([0, 1_000, 10_000], n))
    b = mixed(n, gaps, seed=5, n_inst=3)
    specs = [*WINDOW_KINDS, S(name="capped", kind="rolling_std", input="mid", window="50ms",
                              capacity=100)]  # fmt: skip
    fs = FeatureSet(specs)
    state = fs.new_state(3)
    whole = fs.update(b, state)
    caps = fs.capacities(state)
    assert caps["capped"] == 100 and fs.overflow_counts(state)["capped"] > 0
    assert INITIAL_CAPACITY < caps["mean"] < DEFAULT_CAPACITY
    assert fs.overflow_counts(state)["mean"] == 0
    parallel = fs.update(b, fs.new_state(3), parallel=True)
    assert np.array_equal(whole, parallel, equal_nan=True)
    state = fs.new_state(3)
    cuts = [0, *sorted(rng.choice(n, 60, replace=False)), n]
    split = np.vstack([fs.update(b.slice(a, c), state) for a, c in pairwise(cuts)])
    assert np.array_equal(whole, split, equal_nan=True)
    m = 6_000  # the streaming path grows the same rings, one tick at a time
    stream = StreamingFeatures(fs, 3)
    rows = np.array([stream.push(int(b.ts_event[t]), int(b.instrument[t]), int(b.kind[t]), float(b.bid[t]),
                                 float(b.ask[t]), float(b.bid_size[t]), float(b.ask_size[t]),
                                 float(b.price[t]), float(b.size[t]), int(b.side[t])).copy()
                     for t in range(m)])  # fmt: skip
    assert np.array_equal(whole[:m], rows, equal_nan=True)
    assert fs.capacities(stream.state)["mean"] > INITIAL_CAPACITY
    assert np.isfinite(whole).sum() > whole.size // 2


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (S(name="z", kind="zscore", input="mid", window="5s", capacity=10**12),
         r"capacity 1,000,000,000,000 needs 14\.6 TiB .* bound is 256\.0 MiB per instrument"),
        (S(name="z", kind="rolling_mean", input="mid", window=10**9),
         r"window or lag of 1,000,000,000 ticks needs 7\.5 GiB .* 256\.0 MiB"),
        (S(name="r", kind="log_return", input="mid", lag=10**9), r"needs 7\.5 GiB"),
        (S(name="v", kind="vwap", window="1h", capacity=2**25), r"capacity 33,554,432 needs 768\.0 MiB"),
    ],
)  # fmt: skip
def test_unbounded_state_from_config_is_a_config_error_with_the_memory(
    spec: FeatureSpec, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        FeatureSet([S(name="mid", kind="mid"), spec])
    assert err.value.where == f"features.{spec.name}"


def test_a_set_whose_full_rings_exceed_the_bound_together_is_refused() -> None:
    per = S(name="x", kind="rolling_mean", input="mid", window="1m", capacity=2**21)  # 32 MiB each
    specs = [S(name="mid", kind="mid")] + [
        S(name=f"m{i}", kind=per.kind, input="mid", window=per.window, capacity=per.capacity)
        for i in range(9)
    ]
    with pytest.raises(ConfigError, match=r"the set needs 288\.0 MiB .* largest: m\d 32\.0 MiB"):
        FeatureSet(specs)
    FeatureSet(specs[:8])  # 8 x 32 MiB fits in MAX_ROW_BYTES
    assert MAX_ROW_BYTES == 256 * 2**20


def test_real_btcusdt_60s_window_and_lag_have_values_with_default_settings(real_data: Path) -> None:
    q = pl.read_parquet(real_data / "spot_btcusdt_20240809-quotes.parquet")
    tr = pl.read_parquet(real_data / "spot_btcusdt_20240809-trades.parquet")
    frame = (
        pl.concat([q.with_columns(kind=pl.lit(0, pl.Int8)), tr.with_columns(kind=pl.lit(1, pl.Int8))],
                  how="diagonal")
        .sort("ts_event", "kind", maintain_order=True)
    )  # fmt: skip
    specs = [
        S(name="mid", kind="mid"),
        S(name="mean", kind="rolling_mean", input="mid", window="60s"),
        S(name="ret", kind="log_return", input="mid", lag="60s"),
        S(name="vwap", kind="vwap", window="60s"),
    ]
    out = FeatureSet(specs).compute(frame)
    ts = frame["ts_event"].to_numpy()
    quote = frame["kind"].to_numpy() == 0
    mid = 0.5 * (frame["bid"].to_numpy() + frame["ask"].to_numpy())
    late = ts - ts[0] >= 61 * SEC
    assert np.isfinite(out[late & quote, 1:]).all()
    qts, qmid = ts[quote], mid[quote]
    place = np.cumsum(quote) - 1  # a quote row's index among the quotes (stamps repeat)
    rows = np.flatnonzero(late & quote)
    for t in rows[:: max(1, rows.shape[0] // 150)]:
        k = place[t]
        inwin = (qts > ts[t] - 60 * SEC) & (np.arange(qts.shape[0]) <= k)
        assert out[t, 1] == pytest.approx(qmid[inwin].mean(), rel=1e-12)
        anchor = np.searchsorted(qts, ts[t] - 60 * SEC, side="right") - 1
        assert out[t, 2] == pytest.approx(math.log(qmid[k] / qmid[anchor]), rel=1e-9, abs=1e-15)


def test_a_nine_minute_gap_is_not_reported_as_a_one_second_return_or_a_10s_vol() -> None:
    # the audit's case: a quote every 100 ms, nine minutes of nothing, a trade, quotes
    # again; the move across the gap is 1 % (a 100 bp jump)
    before = T0 + np.arange(300, dtype=np.int64) * 100 * MS
    after = before[-1] + 540 * SEC + np.arange(300, dtype=np.int64) * 100 * MS
    ts = np.concatenate([before, after])
    n = ts.shape[0]
    mid = 100 * np.exp(np.cumsum(np.random.default_rng(9).normal(0, 1e-5, n)))
    mid[300:] *= 1.01
    q = TickBatch.quotes(
        ts, ts, np.zeros(n, np.int32), mid - 0.005, mid + 0.005, np.ones(n), np.ones(n)
    )
    trade = TickBatch.trades(after[:1] - 1, after[:1] - 1, np.zeros(1, np.int32), mid[300:301],
                             np.ones(1), np.ones(1, np.int8))  # fmt: skip
    b = TickBatch.concat([q.slice(0, 300), trade, q.slice(300, n)])
    fs = FeatureSet([
        S(name="mid", kind="mid"),
        S(name="ret_1s", kind="log_return", input="mid", lag="1s"),
        S(name="rv_10s", kind="realized_vol", input="mid", window="10s"),
        S(name="ema_1s", kind="ema", input="mid", half_life="1s"),
        S(name="mean_10s", kind="rolling_mean", input="mid", window="10s"),
        S(name="flow_2s", kind="trade_flow_imbalance", window="2s"),
    ])  # fmt: skip
    out = fs.update(b, fs.new_state(1))
    rows = np.r_[np.arange(300), np.arange(301, n + 1)]  # the quote rows of ``b``
    ret, rv = out[rows, 1], out[rows, 2]
    assert np.isfinite(ret[10:300]).all() and np.isfinite(rv[100:300]).all()
    # after the gap: NaN until a whole lag / window of new quotes, never the 1 % jump
    assert np.isnan(ret[300:310]).all() and np.isnan(rv[300:400]).all()
    np.testing.assert_allclose(ret[310:], np.log(mid[310:] / mid[300:-10]), rtol=1e-12)
    assert np.nanmax(np.abs(ret[300:])) < 1e-3 and np.nanmax(rv[300:]) < 1e-3
    assert np.isnan(out[rows[300:310], 3]).all() and np.isnan(out[rows[300:400], 4]).all()
    # the trade that ends the gap reads no stale value of any time feature
    assert np.isnan(out[300, 1:]).all() and np.isfinite(out[299, 1:5]).all()
    # and streaming gives the same, tick by tick
    stream = StreamingFeatures(fs, 1)
    pushed = np.array([stream.push(int(b.ts_event[t]), 0, int(b.kind[t]), float(b.bid[t]), float(b.ask[t]),
                                   float(b.bid_size[t]), float(b.ask_size[t]), float(b.price[t]),
                                   float(b.size[t]), int(b.side[t])).copy() for t in range(len(b))])  # fmt: skip
    assert np.array_equal(out, pushed, equal_nan=True)
