"""L2 book features (``engine.features.book_features``): streaming (one update at a
time), any batch split and the whole stream give identical values, bit for bit, on streams
with snapshots, gaps, resets and stale updates.

Mutations tried once (each made a test fail):
- ``book_features_run`` also evaluating the features at a batch's last row when it is not
  the end of an update (a half-applied update read as if complete): this property failed.
- ``_evaluate`` keeping the decayed sums through an out-of-sync stretch (their reset
  removed): this property still passed (a value rule, not a batching one);
  ``tests/engine/test_book_features.py::test_l2_features_nan_while_out_of_sync_then_warm_up``
  failed.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.book.batch import DepthBatch
from engine.events import DepthUpdate
from engine.features.book_features import L2_KINDS, BookFeatureSet, BookFeatureSpec
from tests.property.test_book_batches import TICK, streams

SPECS = [BookFeatureSpec(name=k, kind=k, levels=3, bps=30.0, half_life_ns=4) for k in L2_KINDS] + [
    BookFeatureSpec(name="imb1", kind="l2_imbalance", levels=1)
]


def _features() -> BookFeatureSet:
    return BookFeatureSet(SPECS, 1, ticks=[TICK], grid_cells=128)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ups=streams(), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_l2_features_any_split_identical(ups: list[DepthUpdate], cuts: list[int]) -> None:
    rows = DepthBatch.from_updates(ups, {"X": 0})
    whole = _features().update(rows)
    split_fs = _features()
    bounds = sorted({min(c, len(rows)) for c in cuts} | {0, len(rows)})
    parts = [split_fs.update(rows.slice(a, b)) for a, b in itertools.pairwise(bounds)]
    split = np.vstack(parts) if parts else np.empty((0, len(SPECS)))
    streaming_fs = _features()
    one_by_one = [streaming_fs.update(DepthBatch.from_updates([u], {"X": 0})) for u in ups]
    streaming = np.vstack(one_by_one) if one_by_one else np.empty((0, len(SPECS)))
    assert whole.tobytes() == split.tobytes()
    assert whole.tobytes() == streaming.tobytes()
    assert np.array_equal(split_fs.values, whole[-1:] if len(whole) else split_fs.values,
                          equal_nan=True)  # fmt: skip
