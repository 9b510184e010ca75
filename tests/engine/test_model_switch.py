"""Model switching in the engine, without the daemon: real LightGBM versions of a registry
(``tests.model_versions``), swapped in by ``ModelSwitcher`` where a ``ModelSwitch`` record
says. The switch lands exactly at its point (scores of the old model before, of the new
after), any split of the ticks into batches around it decides the same, and a snapshot
taken after switches, restored and fed the tail, has the same monitors as the full run,
including the memory of a version switched away from and back to."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from engine.assembly import ModelSwitcher, attach_challenger, build_engine, find_challenger
from engine.codec import EventCodec
from engine.config import Config, config_from_dict
from engine.engine import Engine
from engine.events import CancelRequest, Event, ModelSwitched, OrderRequest
from engine.journal import ModelSwitch
from engine.monitor import ModelMonitor
from engine.ports import SendOnly
from engine.snapshot import capture_state, restore_state
from engine.ticks import TickBatch
from tests.engine.test_snapshot import _ref_loads, differences
from tests.model_versions import Versions, config_data, make_sample, quote_batch, train_versions

CODEC = EventCodec("json")
N = 2400  # quotes of the two symbols: 60 s, enough for the monitors to score


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Versions, Path]:
    sample = make_sample(tmp_path_factory.mktemp("switch_sample"))
    return train_versions(sample, tmp_path_factory.mktemp("switch_models")), sample


class Outbox:
    def __init__(self) -> None:
        self.sent: list[OrderRequest | CancelRequest] = []

    def submit(self, order: OrderRequest) -> None:
        self.sent.append(order)

    def cancel(self, request: CancelRequest) -> None:
        self.sent.append(request)


class Scores:
    """An observer that keeps each batch's champion scores."""

    def __init__(self) -> None:
        self.batches: list[npt.NDArray[np.float64]] = []

    def observe(self, batch: TickBatch, features: Any, scores: Any) -> npt.NDArray[np.int64]:
        self.batches.append(np.array(scores, np.float64))
        return np.empty(0, np.int64)

    def act(self, index: int) -> None:
        pass

    def all(self) -> npt.NDArray[np.float64]:
        return np.concatenate(self.batches)


def _config(registry: Path) -> Config:
    data = config_data()
    data["model"] = {"registry": str(registry), "alias": "champion"}
    data["strategy"] = {"name": "tests.model_versions:Flip"}
    data["risk"]["max_quote_age"] = "60s"
    return config_from_dict(data)


def _engine(config: Config, *, challenger: str = "") -> tuple[Engine, ModelSwitcher, list[Event]]:
    engine, _ = build_engine(config, SendOnly(Outbox()), live=True)
    if challenger:
        attach_challenger(engine, config, challenger)
    events: list[Event] = []
    engine.sinks.append(events.append)
    return engine, ModelSwitcher(config), events


def _switch(alias: str, version: str, stage: str = "paper") -> ModelSwitch:
    return ModelSwitch(alias=alias, version=version, stage=stage, issuer="test",  # type: ignore[arg-type]
                       reason="test")  # fmt: skip


def _run(
    engine: Engine,
    switcher: ModelSwitcher,
    ticks: TickBatch,
    steps: Sequence[int | ModelSwitch],
    cuts: Sequence[int] = (),
) -> None:
    """Feed ``ticks`` up to each int of ``steps`` (a tick index), apply each switch where
    it stands; ``cuts`` split the ticks into more batches."""
    done = 0
    for step in steps:
        if isinstance(step, ModelSwitch):
            engine.advance_to(int(ticks.ts_recv[done - 1]))
            switcher.apply(engine, step)
            continue
        edges = [done, *(c for c in cuts if done < c < step), step]
        for lo, hi in itertools.pairwise(edges):
            engine.process_batch(ticks.slice(lo, hi))
        done = step


def _encoded(events: list[Event]) -> list[bytes]:
    return [CODEC.encode(e) for e in events]


def test_switch_model_scores_old_model_before_its_point_and_new_one_after(
    versions: tuple[Versions, Path],
) -> None:
    """Fails if the switch took effect a batch late or early (a score of the wrong model on
    either side), or left the version or the emitted ModelSwitched wrong."""
    v, sample = versions
    config = _config(v.registry)
    engine, switcher, events = _engine(config)
    ticks = quote_batch(sample, engine.instruments, 0, N)
    scores = Scores()
    engine.observers.insert(0, scores)
    k = N // 2
    _run(engine, switcher, ticks, [k, _switch("champion", v.b), N])
    assert engine.model_version == v.b

    only: dict[str, npt.NDArray[np.float64]] = {}
    for version in (v.a, v.b):
        pinned = config_from_dict(config_data(
            model={"registry": str(v.registry), "alias": version},
            strategy={"name": "tests.model_versions:Flip"}))  # fmt: skip
        alone, _, _ = _engine(pinned)
        seen = Scores()
        alone.observers.insert(0, seen)
        alone.process_batch(ticks)
        only[version] = seen.all()
    got = scores.all()
    assert not np.array_equal(only[v.a][k:], only[v.b][k:], equal_nan=True)
    np.testing.assert_array_equal(got[:k], only[v.a][:k])
    np.testing.assert_array_equal(got[k:], only[v.b][k:])
    switched = [e for e in events if isinstance(e, ModelSwitched)]
    assert [(e.alias, e.from_version, e.version) for e in switched] == [("champion", v.a, v.b)]
    assert switched[0].ts_recv == int(ticks.ts_recv[k - 1])


@pytest.mark.parametrize("cuts", [(), (1, 2, 3, 500, 1299, 1301), tuple(range(7, N, 97))])
def test_switch_decisions_do_not_depend_on_the_batches_around_it(
    versions: tuple[Versions, Path], cuts: tuple[int, ...]
) -> None:
    """Batch invariance with switches of both roles: any split of the ticks into batches
    gives the same events (signals, challenger signals, orders, alarms, switches) and the
    same monitors. Fails if a switch (or the zones it carries over) depended on where a
    batch ends, e.g. a new model's first signal taken from the batch's end."""
    v, sample = versions
    config = _config(v.registry)
    steps: list[int | ModelSwitch] = [800, _switch("champion", v.b), _switch("challenger", v.c),
                                      1300, _switch("champion", v.a), N]  # fmt: skip
    runs = []
    for split in [(), cuts]:
        engine, switcher, events = _engine(config, challenger=v.b)
        ticks = quote_batch(sample, engine.instruments, 0, N)
        _run(engine, switcher, ticks, steps, split)
        shadow = find_challenger(engine)
        assert shadow is not None and shadow.version == v.c
        runs.append((_encoded(events), _monitors(engine, switcher)))
    (events_one, monitors_one), (events_cut, monitors_cut) = runs
    assert any(b'"type":"model_switched"' in e for e in events_one)
    assert any(b'"type":"challenger_signal"' in e for e in events_one)
    assert events_one == events_cut
    assert differences(monitors_one, monitors_cut) == []


def _monitors(engine: Engine, switcher: ModelSwitcher) -> dict[str, Any]:
    """Every monitor's captured state: the champion's, the challenger's and those the
    switcher keeps for versions switched away from."""
    champion = next(o for o in engine.observers if isinstance(o, ModelMonitor))
    shadow = find_challenger(engine)
    out: dict[str, Any] = {"champion": champion.latest(), "counts": dict(champion.counts)}
    if shadow is not None and shadow.monitor is not None:
        out["challenger"] = shadow.monitor.latest()
    for (role, version), monitor in sorted(switcher.memory.monitors.items()):
        if monitor is not None:
            out[f"{role}:{version}"] = {**monitor.latest(), "counts": dict(monitor.counts)}
    return out


def test_snapshot_after_switches_then_tail_equals_full_run_in_monitor_state(
    versions: tuple[Versions, Path],
) -> None:
    """A snapshot taken after A -> B -> A (champion) and B -> C (challenger), restored into
    a fresh engine and fed the tail, in which B and then the challenger B come back: every
    monitor (B's carried-on figures included) and every event equal the full run's.

    Fails if the switcher's memory of each version's monitor is left out of the snapshot
    (``extras={"models": ...}`` dropped, or ``ModelSwitcher`` caching the dict it had before
    the restore): B, switched to again after the restart, starts a fresh monitor whose
    ``scored`` and alarm counts differ from the full run's carried-on one."""
    v, sample = versions
    config = _config(v.registry)
    head: list[int | ModelSwitch] = [600, _switch("champion", v.b), _switch("challenger", v.c),
                                     1400, _switch("champion", v.a), 1600]  # fmt: skip
    tail: list[int | ModelSwitch] = [_switch("champion", v.b), _switch("challenger", v.b), N]

    full, full_switcher, full_events = _engine(config, challenger=v.b)
    ticks = quote_batch(sample, full.instruments, 0, N)
    _run(full, full_switcher, ticks, head)
    b_before = full_switcher.memory.monitors[("champion", v.b)]
    assert b_before is not None
    scored_before = int(b_before.counts["scored"])
    assert scored_before > 0  # B's memory is not empty
    payload = capture_state(full, {"models": full_switcher.memory})
    at = len(full_events)

    restored, switcher, events = _engine(config, challenger=v.b)
    restore_state(restored, payload, {"models": switcher.memory})
    assert set(switcher.memory.monitors) == set(full_switcher.memory.monitors)

    def run_tail(engine: Engine, s: ModelSwitcher) -> None:
        done = 1600
        for step in tail:
            if isinstance(step, ModelSwitch):
                engine.advance_to(int(ticks.ts_recv[done - 1]))
                s.apply(engine, step)
            else:
                engine.process_batch(ticks.slice(done, step))
                done = step

    run_tail(full, full_switcher)
    run_tail(restored, switcher)
    assert restored.model_version == full.model_version == v.b
    assert differences(_monitors(restored, switcher), _monitors(full, full_switcher)) == []
    champion = next(o for o in restored.observers if isinstance(o, ModelMonitor))
    assert champion.counts["scored"] > scored_before  # carried on from the snapshot
    assert _encoded(events) == _encoded(full_events[at:])
    # the whole captured state too (the engine, its observers and the switcher's memory)
    extras_full = {"models": full_switcher.memory}
    extras_restored = {"models": switcher.memory}
    assert (
        differences(
            _ref_loads(capture_state(restored, extras_restored)),
            _ref_loads(capture_state(full, extras_full)),
        )
        == []
    )
