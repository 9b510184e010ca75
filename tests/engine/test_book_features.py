"""L2 feature values on small hand-made books (``engine.features.book_features``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.book.batch import DepthBatch
from engine.errors import ConfigError
from engine.events import DepthUpdate
from engine.features.book_features import BookFeatureSet, BookFeatureSpec

SEC = 1_000_000_000


def _u(ts: int, uid: int, *, bids=(), asks=(), snapshot=False, reset=False) -> DepthUpdate:  # type: ignore[no-untyped-def]
    return DepthUpdate(ts_event=ts, ts_recv=ts, instrument="X", first_update_id=uid,
                       last_update_id=uid, snapshot=snapshot, reset=reset,
                       bids=tuple(bids), asks=tuple(asks))  # fmt: skip


SNAP = _u(SEC, 10, bids=[(100.0, 2.0), (99.0, 1.0)], asks=[(101.0, 1.0), (102.0, 3.0)],
          snapshot=True)  # fmt: skip


def _run(specs: list[BookFeatureSpec], ups: list[DepthUpdate]) -> np.ndarray:  # type: ignore[type-arg]
    fs = BookFeatureSet(specs, 1, ticks=[1.0], grid_cells=256)
    batch = DepthBatch.from_updates(ups, {"X": 0})
    out = fs.update(batch)
    return out[np.flatnonzero(batch.flags & 4)]  # one row per update end


def test_l2_static_features_on_a_snapshot() -> None:
    specs = [
        BookFeatureSpec(name="imb1", kind="l2_imbalance", levels=1),
        BookFeatureSpec(name="imb2", kind="l2_imbalance", levels=2),
        BookFeatureSpec(name="wimb2", kind="l2_weighted_imbalance", levels=2),
        BookFeatureSpec(name="micro2", kind="depth_microprice", levels=2),
        BookFeatureSpec(name="slope_b", kind="book_slope_bid", levels=2),
        BookFeatureSpec(name="slope_a", kind="book_slope_ask", levels=2),
        BookFeatureSpec(name="band_b", kind="depth_bid_bps", bps=110.0),
        BookFeatureSpec(name="band_a", kind="depth_ask_bps", bps=50.0),
    ]
    (row,) = _run(specs, [SNAP])
    mid = 100.5
    want = [
        (2 - 1) / 3,
        (3 - 4) / 7,
        (2 + 0.5 - 1 - 1.5) / (2 + 0.5 + 1 + 1.5),
        (101.0 * 3 + 100.0 * 4) / 7,
        3 / ((mid - 99.0) / mid * 1e4),
        4 / ((102.0 - mid) / mid * 1e4),
        3.0,  # 110 bps below 100.5 reaches 99.39: both bid levels (99 is out: 98.9 bound? no)
        1.0,  # 50 bps above 100.5 reaches 101.0025: only the 101 ask
    ]
    # the bid band: 100.5 * (1 - 0.011) = 99.3945, so 99 is outside it
    want[6] = 2.0
    assert row.tolist() == pytest.approx(want, rel=1e-12)


def test_l2_ofi_follows_cont_kukanov_stoikov() -> None:
    specs = [BookFeatureSpec(name="ofi", kind="ofi", half_life_ns=10**15)]
    ups = [
        SNAP,
        _u(SEC + 1, 11, bids=[(100.0, 3.0)]),  # bid size 2 -> 3 at the same price: +1
        _u(SEC + 2, 12, asks=[(101.0, 0.0)]),  # best ask 101 (1) -> 102 (3): + 1
        _u(SEC + 3, 13, bids=[(101.0, 1.0)]),  # bid rises to 101 (1): +1
    ]
    out = _run(specs, ups)[:, 0]
    # an hour-scale half-life: the sum barely decays; NaN until it is that old
    assert np.isnan(out).all()
    specs = [BookFeatureSpec(name="ofi", kind="ofi", half_life_ns=1)]
    out = _run(specs, ups)[:, 0]
    # half-life 1 ns: each update's e alone (the past decays by 2**-1 per ns)
    assert out[1] == pytest.approx(1.0 + 0.0 * 0.5)
    assert out[2] == pytest.approx(1.0 + out[1] * 0.5)
    assert out[3] == pytest.approx(1.0 + out[2] * 0.5)


def test_l2_add_and_cancel_rates_count_sizes_near_the_mid() -> None:
    hl = SEC
    specs = [
        BookFeatureSpec(name="add_b", kind="add_rate_bid", bps=100.0, half_life_ns=hl),
        BookFeatureSpec(name="cancel_a", kind="cancel_rate_ask", bps=200.0, half_life_ns=hl),
    ]
    ups = [
        SNAP,
        _u(2 * SEC, 11, bids=[(100.0, 5.0), (50.0, 7.0)], asks=[(102.0, 1.0)]),
    ]
    out = _run(specs, ups)
    assert np.isnan(out[0]).all()
    # 3 added at 100 (the 50 bid is 5,000 bps away); 2 taken at 102 (149 bps away)
    rate = math.log(2.0) / hl * 1e9
    assert out[1].tolist() == pytest.approx([3.0 * rate, 2.0 * rate])


def test_l2_features_nan_while_out_of_sync_then_warm_up() -> None:
    specs = [
        BookFeatureSpec(name="imb", kind="l2_imbalance", levels=2),
        BookFeatureSpec(name="ofi", kind="ofi", half_life_ns=SEC),
    ]
    ups = [
        SNAP,
        _u(3 * SEC, 11, bids=[(100.0, 3.0)]),
        _u(4 * SEC, 13, bids=[(100.0, 4.0)]),  # gap: 12 missing
        _u(5 * SEC, 14, bids=[(100.0, 5.0)]),  # dropped while out of sync
        _u(6 * SEC, 20, snapshot=True, bids=[(100.0, 1.0)], asks=[(101.0, 1.0)]),
        _u(6 * SEC + 1, 21, bids=[(100.0, 2.0)]),
        _u(7 * SEC + 1, 22, bids=[(100.0, 3.0)]),
    ]
    out = _run(specs, ups)
    assert not np.isnan(out[1]).any()
    assert np.isnan(out[2]).all() and np.isnan(out[3]).all()
    assert out[4, 0] == 0.0 and np.isnan(out[4, 1])  # readable again; OFI warms up anew
    assert np.isnan(out[5, 1])
    # one half-life after the resync: the sum holds only flow since the snapshot
    assert out[6, 1] == pytest.approx(1.0 * 2.0 ** (-(SEC) / SEC) + 1.0)


def test_l2_feature_set_refuses_bad_specs() -> None:
    with pytest.raises(ConfigError, match="unknown L2 kind"):
        BookFeatureSet([BookFeatureSpec(name="x", kind="nope")], 1)
    with pytest.raises(ConfigError, match="levels"):
        BookFeatureSet([BookFeatureSpec(name="x", kind="l2_imbalance", levels=0)], 1)
    with pytest.raises(ConfigError, match="duplicate"):
        BookFeatureSet([BookFeatureSpec(name="x", kind="ofi")] * 2, 1)
