"""The monitor enters a batch's scored predictions into its window a run at a time (up to
each check) and runs the drift alarm's edge rule over a batch's samples in one compiled
call. The figures must be those of entering predictions one by one:

- the window at every check is exactly the last N of the predictions scored so far (an
  oracle that keeps every scored prediction, and recomputes the IC at each check);
- any split of the same ticks into batches gives the same snapshot, history and alarms
  (batches of one tick, a few, random cuts, one batch);
- the compiled edge rule over a run of checks equals it applied one check at a time.

Mutation checks: a run written from the ring's next slot without skipping the
predictions beyond N (``slots`` from ``self._next`` alone) fails the window oracle when
``check_every`` > N; the first check of a batch placed from the batch start instead of the
running count (``range(every - 1, ...)``) fails batch invariance and the oracle.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import MonitorConfig
from engine.monitor import ModelMonitor
from engine.monitor.edges import alarm_edges
from engine.monitor.stats import F64, reference_bins, spearman
from engine.signals.manifest import (
    LabelSpec,
    Manifest,
    MonitorReference,
    ReferenceBins,
    TimeRange,
)
from engine.ticks import TickBatch

FEATURES = 2
SYMBOLS = ("X", "Y")


class Recording(ModelMonitor):
    """A monitor that also keeps every scored prediction, in the order it entered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered: list[tuple[float, float]] = []

    def _enter(self, score: F64, realized: F64) -> None:
        self.entered += zip(score.tolist(), realized.tolist(), strict=True)
        super()._enter(score, realized)


def monitor(window: int, check_every: int, drift_window: int) -> Recording:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(2000, FEATURES + 1))
    bins = [reference_bins(train[:, j], 10) for j in range(FEATURES + 1)]
    # a threshold the shifted middle third crosses and the rest mostly does not
    rb = [ReferenceBins(edges=e.tolist(), fractions=f.tolist(), drift_threshold=0.35)
          for e, f in bins]  # fmt: skip
    names = [f"f{j}" for j in range(FEATURES)]
    ref = MonitorReference(rows=2000, sample_interval_ns=300, label_tolerance_ns=5000,
                           window=drift_window, configured_false_alarm_rate=0.01,
                           calibration_method="time_blocks", false_alarm_bound=0.01,
                           features=dict(zip(names, rb[:-1], strict=True)), score=rb[-1])  # fmt: skip
    manifest = Manifest(name="t", kind="lightgbm", model_file="m.txt", model_sha256="0" * 64,
                        output="probability", feature_names=names, feature_fingerprint="f",
                        feature_specs=[], label=LabelSpec(horizon_ns=1000),
                        train_range=TimeRange(start_ns=0, end_ns=1), reference=ref,
                        metrics={"oos_accuracy": 0.55})  # fmt: skip
    cfg = MonitorConfig(window=window, check_every=check_every, drift_window=drift_window,
                        gap=None, ic_min=0.05, accuracy_margin=0.02)  # fmt: skip
    return Recording(config=cfg, manifest=manifest, symbols=SYMBOLS, sample_interval_ns=300)


def stream(seed: int, n: int) -> tuple[TickBatch, F64, F64]:
    """Quotes of two instruments, equal timestamps included, features that drift in the
    middle third, probability scores with ties, some undefined."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 120, n)).astype(np.int64)
    inst = rng.integers(0, 2, n).astype(np.int32)
    mid = 100 + np.cumsum(rng.normal(0, 0.01, n))
    x = rng.normal(size=(n, FEATURES))
    x[n // 3 : 2 * n // 3] += 0.8
    signal = np.where(rng.uniform(size=n) < 0.5, rng.normal(size=n), np.r_[np.diff(mid), 0] * 50)
    score = (1 / (1 + np.exp(-signal))).round(2)
    score[rng.uniform(size=n) < 0.01] = np.nan
    one = np.ones(n)
    return TickBatch.quotes(ts, ts, inst, mid - 0.01, mid + 0.01, one, one), x, score


def feed(mon: ModelMonitor, ticks: TickBatch, x: F64, score: F64, cuts: list[int]) -> str:
    """Observe the stream cut at ``cuts``, firing alarms at their ticks; every figure as
    JSON."""
    logging.disable(logging.WARNING)
    try:
        bounds = [0, *sorted(set(cuts)), len(ticks)]
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                continue
            part = ticks.slice(lo, hi)
            for i in mon.observe(part, x[lo:hi], score[lo:hi]).tolist():
                mon.act(i)
        mon.act(2**62)
    finally:
        logging.disable(logging.NOTSET)
    return json.dumps({"snapshot": mon.snapshot(), "history": mon.history()}, sort_keys=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    window=st.integers(10, 40),
    check_every=st.integers(1, 60),
    cuts=st.lists(st.integers(1, 2999), max_size=40),
)
def test_monitor_window_at_each_check_is_the_last_n_scored_whatever_the_batches(
    seed: int, window: int, check_every: int, cuts: list[int]
) -> None:
    ticks, x, score = stream(seed, 3000)
    mon = monitor(window, check_every, drift_window=40)
    feed(mon, ticks, x, score, cuts)
    scored = mon.counts["scored"]
    assert scored == len(mon.entered) and scored > 2 * window
    s, r = mon.window_values()
    tail = np.array(mon.entered[-window:])
    np.testing.assert_array_equal(s, tail[:, 0])
    np.testing.assert_array_equal(r, tail[:, 1])
    checks = list(mon.performance_history)
    assert [c["scored"] for c in checks] == list(range(check_every, scored + 1, check_every))
    every = np.array(mon.entered)
    for c in checks:
        seen = every[max(0, c["scored"] - window) : c["scored"]]
        assert c["ic"] == spearman(seen[:, 0], seen[:, 1])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    check_every=st.integers(1, 30),
    cuts=st.lists(st.integers(1, 2999), max_size=60),
    size=st.sampled_from([1, 7, 256]),
)
def test_monitor_figures_and_alarms_do_not_depend_on_the_batches(
    seed: int, check_every: int, cuts: list[int], size: int
) -> None:
    ticks, x, score = stream(seed, 3000)
    whole = feed(monitor(20, check_every, 40), ticks, x, score, [])
    assert feed(monitor(20, check_every, 40), ticks, x, score, cuts) == whole
    even = list(range(size, 3000, size))
    assert feed(monitor(20, check_every, 40), ticks, x, score, even) == whole
    alarms = json.loads(whole)["snapshot"]["alarms"]["by_kind"]
    assert alarms["drift"] >= 1 and alarms["low_ic"] + alarms["accuracy"] >= 1  # exercised


@settings(max_examples=200, deadline=None)
@given(
    holds=st.lists(st.booleans(), max_size=60),
    armed=st.booleans(),
    clear=st.integers(0, 5),
    rearm_after=st.integers(1, 5),
)
def test_alarm_edges_over_a_run_equal_one_check_at_a_time(
    holds: list[bool], armed: bool, clear: int, rearm_after: int
) -> None:
    fired, run_armed, run_clear = alarm_edges(np.array(holds, np.bool_), armed, clear, rearm_after)
    one: list[int] = []
    a, c = armed, clear
    for k, h in enumerate(holds):
        f, a, c = alarm_edges(np.array([h]), a, c, rearm_after)
        one += [k] * f.shape[0]
    assert fired.tolist() == one and (run_armed, run_clear) == (a, c)
    # the rule, by hand: a check fires when the condition holds and it was armed
    assert all(holds[k] for k in one)
