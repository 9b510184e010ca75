"""Zones with a dead band (``engine.signals.zones.Thresholds``): two zone changes in
opposite directions are always more than the band apart in score (after the zone a warm
stretch enters at, which is where the score is), a score hovering within
half the band of a threshold never flips, a band of 0 is the plain zones, and any split of
the ticks into batches gives the same signals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.signals.zones import Thresholds, ZoneTracker
from engine.ticks import TickBatch
from strategies.ml_threshold import MlThreshold, MlThresholdParams

scores = st.one_of(st.floats(0.0, 1.0, allow_nan=False), st.just(float("nan")))


def _batch(n: int) -> TickBatch:
    z = np.zeros(n)
    return TickBatch.quotes(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64),
                            np.zeros(n, np.int32), z, z + 1.0, z + 1.0, z + 1.0)  # fmt: skip


def _changes(
    thresholds: Thresholds,
    path: list[float],
    cuts: list[int] = (),  # type: ignore[assignment]
) -> list[tuple[int, int, int]]:
    tracker = ZoneTracker(thresholds, 1)
    out = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(path)), len(path)]
    for a, b in itertools.pairwise(bounds):
        s = np.asarray(path[a:b], np.float64)
        idx, zone, prev = tracker.changes(_batch(b - a), s)
        out += [(a + int(i), int(z), int(p)) for i, z, p in zip(idx, zone, prev, strict=True)]
    return out


def _plain_zone(levels: list[float], s: float) -> int:
    return -1 if np.isnan(s) else sum(1 for t in levels if s >= t)


levels_st = st.lists(st.floats(0.05, 0.95), min_size=1, max_size=3, unique=True).map(sorted)


@settings(max_examples=300, deadline=None)
@given(levels=levels_st, band=st.floats(0.0, 0.3), path=st.lists(scores, max_size=200))
def test_zone_reversals_are_more_than_the_dead_band_apart(
    levels: list[float], band: float, path: list[float]
) -> None:
    # mutation tried: ``down`` counted without the band (``s >= thresholds[down]``) lets a
    # long flip back as soon as the score dips under the threshold: fails
    changes = _changes(Thresholds(levels, band), path)
    for (t1, z1, p1), (t2, z2, p2) in itertools.pairwise(changes):
        if p1 < 0 or p2 < 0 or any(np.isnan(path[t]) for t in range(t1, t2 + 1)):
            continue  # entering (at warm-up, after NaN) takes the score's zone: no band yet
        assert p2 == z1  # the zone in between did not change silently
        if (z1 - p1) * (z2 - p2) < 0:  # a reversal
            assert abs(path[t2] - path[t1]) > band


@settings(max_examples=200, deadline=None)
@given(levels=levels_st, path=st.lists(scores, max_size=200), cuts=st.lists(st.integers(0, 200)))
def test_zone_band_zero_is_the_plain_zones_and_any_batching_agrees(
    levels: list[float], path: list[float], cuts: list[int]
) -> None:
    zones = [_plain_zone(levels, s) for s in path]
    expected, last = [], -1
    for t, z in enumerate(zones):
        if z != last:
            if z >= 0:
                expected.append((t, z, last))
            last = z
    assert _changes(Thresholds(levels, 0.0), path) == expected
    assert _changes(Thresholds(levels, 0.0), path, cuts) == expected
    banded = _changes(Thresholds(levels, 0.1), path)
    assert _changes(Thresholds(levels, 0.1), path, cuts) == banded


@settings(max_examples=100, deadline=None)
@given(
    threshold=st.floats(0.2, 0.8),
    band=st.floats(0.01, 0.2),
    wiggle=st.lists(st.floats(-0.4999, 0.4999), min_size=1, max_size=300),
)
def test_zone_score_hovering_on_a_threshold_does_not_flip(
    threshold: float, band: float, wiggle: list[float]
) -> None:
    # what the demo's model did: a score sitting at its threshold, flipping every few ticks
    path = [threshold + band, *(threshold + w * band for w in wiggle)]
    assert len(_changes(Thresholds([threshold], band), path)) == 1  # entering only
    assert len(_changes(Thresholds([threshold], 0.0), path)) >= 1


def test_ml_threshold_dead_band_param_reaches_the_zones() -> None:
    strategy = MlThreshold(MlThresholdParams(upper=0.56, lower=0.44, notional=1e4, dead_band=0.02))
    levels = strategy.thresholds()
    assert isinstance(levels, Thresholds) and list(levels) == [0.44, 0.56]
    assert ZoneTracker(levels, 1).dead_band == 0.02
    with pytest.raises(ValueError, match="dead_band"):
        MlThreshold(MlThresholdParams(upper=0.56, lower=0.44, notional=1e4, dead_band=-0.1))
