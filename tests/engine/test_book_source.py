"""The engine with L2 book features: it refuses to start without a depth source (NaN book
features would still be scored), and with one, a tick's L2 values are those of the last
complete depth update at or before it."""

from __future__ import annotations

import numpy as np
import pytest

from engine.book.batch import DepthBatch
from engine.book.source import DepthAsOf
from engine.config import config_from_dict
from engine.errors import ConfigError
from engine.events import DepthUpdate
from engine.features.book_features import BookFeatureSet
from engine.ticks import TickBatch
from replay.backtest.runner import build_engine

CONFIG = {
    "instruments": [{"symbol": "X", "tick_size": 1.0}],
    "features": [
        {"name": "mid", "kind": "mid"},
        {"name": "imb", "kind": "l2_imbalance", "levels": 2},
    ],
    "strategy": {"name": "ema_cross", "params": {"qty": 1.0}},
}


def _quotes(ts: list[int]) -> TickBatch:
    n = len(ts)
    one = np.ones(n)
    return TickBatch.quotes(np.array(ts), np.array(ts), np.zeros(n, np.int32), 100 * one,
                            101 * one, one, one)  # fmt: skip


def _depth() -> DepthBatch:
    ups = [
        DepthUpdate(ts_event=10, ts_recv=10, instrument="X", first_update_id=1,
                    last_update_id=1, snapshot=True, bids=((100.0, 3.0),), asks=((101.0, 1.0),)),
        DepthUpdate(ts_event=20, ts_recv=20, instrument="X", first_update_id=2,
                    last_update_id=2, bids=((100.0, 1.0),)),
    ]  # fmt: skip
    return DepthBatch.from_updates(ups, {"X": 0})


def test_engine_with_l2_features_and_no_depth_refuses_to_start() -> None:
    engine, _, _ = build_engine(config_from_dict(CONFIG))
    assert [b.name for b in engine.features.book_specs] == ["imb"]
    with pytest.raises(ConfigError, match="need depth data"):
        engine.process_batch(_quotes([5]))


def test_engine_reads_l2_features_as_of_each_tick() -> None:
    engine, _, _ = build_engine(config_from_dict(CONFIG))
    book = BookFeatureSet(list(engine.features.book_specs), 1, ticks=[1.0])
    engine.book_source = DepthAsOf(book, iter([_depth()]))
    engine.process_batch(_quotes([5, 10, 15]))
    engine.process_batch(_quotes([20, 25]))
    assert engine.features_now(0)["imb"] == 0.0  # (1 - 1) / 2 after the update at 20
    source = DepthAsOf(BookFeatureSet(list(engine.features.book_specs), 1, ticks=[1.0]),
                       iter([_depth()]))  # fmt: skip
    values = source.asof(_quotes([5, 10, 15, 20, 25]))[:, 0]
    assert np.isnan(values[0])
    assert values[1:].tolist() == [0.5, 0.5, 0.0, 0.0]


def test_streaming_features_refuse_a_set_with_l2_features() -> None:
    from engine.features import FeatureSet, FeatureSpec
    from engine.features.streaming import StreamingFeatures

    fs = FeatureSet([FeatureSpec(name="mid", kind="mid"),
                     FeatureSpec(name="imb", kind="l2_imbalance")])  # fmt: skip
    with pytest.raises(ConfigError, match="tick features only"):
        StreamingFeatures(fs, 1)
