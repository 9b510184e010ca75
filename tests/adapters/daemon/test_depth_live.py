"""The live core with depth: journaled before it is applied, an out-of-sync book journaled as
lost data (the engine's ``data_loss`` claim) before the rows that caused it, and the journal
replayed into a fresh engine reaching the same state (parity).

And a paper engine with L2 features and queue fills (the daemon's ``build_live_engine``):
a snapshot of it restores the book source's and the venue's books, so a restart from a
snapshot continues exactly as the engine that ran through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.daemon.core import FeedMonitor, LiveCore, apply_record
from adapters.journal_file import FileJournalReader, FileJournalWriter
from adapters.metrics import DaemonMetrics
from adapters.mqtt.ingest import DepthData, MarketData
from engine.book.batch import DepthBatch
from engine.engine import Engine
from engine.events import DepthUpdate
from engine.journal import DepthRecord, FeedRecord, MarketDataRecord
from engine.strategy import NoParams
from engine.ticks import TickBatch
from tests.support import Scripted, make_engine

S = 1_000_000_000
T = 1_700_000_000 * S


def _depth(ts: int, first: int, last: int, *, snapshot: bool = False) -> DepthData:
    update = DepthUpdate(ts_event=ts, ts_recv=ts, instrument="X", first_update_id=first,
                         last_update_id=last, prev_update_id=first if snapshot else -1,
                         snapshot=snapshot, bids=((99.5, 1.0),), asks=((100.0, 2.0),))  # fmt: skip
    return DepthData(batch=DepthBatch.from_updates([update], {"X": 0}), ts_recv=ts, messages=1)


def _quote(ts: int) -> MarketData:
    one = np.array([ts], np.int64)
    batch = TickBatch.quotes(one, one, np.zeros(1, np.int32), np.array([99.5]),
                             np.array([100.0]), np.array([1.0]), np.array([2.0]))  # fmt: skip
    return MarketData(batch=batch, ts_recv=ts, messages=1)


def test_depth_journaled_gap_is_data_loss_and_replay_matches(tmp_path: Path) -> None:
    engine = make_engine(Scripted())
    with FileJournalWriter(tmp_path, session_id="s1", fsync="never") as journal:
        core = LiveCore(engine, journal, FeedMonitor(("X",), [None], T), DaemonMetrics(("X",)))
        core.handle([_depth(T + 1, 10, 12), _quote(T + 2), _depth(T + 3, 13, 14)])
        assert engine.risk.trading.claim("data_loss") == "ACTIVE"
        core.handle([_depth(T + 4, 20, 21)])  # 15..19 never came: out of sync
        assert engine.risk.trading.claim("data_loss") != "ACTIVE"
        core.handle([_depth(T + 5, 30, 30, snapshot=True), _quote(T + 6)])
        assert engine.risk.trading.claim("data_loss") == "ACTIVE"
    records = list(FileJournalReader(tmp_path))
    kinds = [type(r).__name__ for r in records]
    assert kinds == ["DepthRecord", "MarketDataRecord", "DepthRecord", "FeedRecord",
                     "DepthRecord", "DepthRecord", "MarketDataRecord", "FeedRecord"]  # fmt: skip
    lost, restored = (r for r in records if isinstance(r, FeedRecord))
    assert lost.feed.status == "lost" and "out of sync" in lost.feed.reason
    assert restored.feed.status == "restored"
    assert isinstance(records[0], DepthRecord) and isinstance(records[1], MarketDataRecord)
    replayed = make_engine(Scripted())
    states = []
    for record in records:
        apply_record(replayed, record)
        states.append(replayed.risk.trading.claim("data_loss"))
    assert states[3] != "ACTIVE" and states[-1] == "ACTIVE"
    assert replayed.risk.trading.claims() == engine.risk.trading.claims()


def _paper_l2_engine() -> Engine:
    from adapters.daemon.assembly import build_live_engine, build_router
    from engine.config import config_from_dict
    from tests.integration.test_depth_parity import L2Quoter

    config = config_from_dict(
        {
            "mode": "paper",
            "instruments": [{"symbol": "BTC", "venue": "SIM", "tick_size": 1.0, "lot_size": 0.001}],
            "features": [
                {"name": "mid", "kind": "mid"},
                {"name": "l2_imb", "kind": "l2_imbalance", "levels": 3},
            ],
            "strategy": {"name": "ema_cross", "params": {"qty": 1.0}},
            "book": {"queue_model": "power"},
        }
    )
    router = build_router(config, None)
    return build_live_engine(config, router, order_id_prefix="p", strategy=L2Quoter(NoParams()))


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.7])
def test_paper_engine_with_depth_restores_from_a_snapshot_to_the_same_state(cut: float) -> None:
    """A snapshot of a paper engine with L2 features and queue fills, taken half-way and
    restored into a fresh engine, continues exactly as the engine that ran through: the
    book source's and the venue's books are state, captured and restored."""
    from adapters.tools.publish import merge_by_time
    from engine.snapshot import capture_state, restore_state
    from tests.integration.test_depth_parity import _market

    ticks, depth = _market(seed=11, steps=120, t0=T)
    stream = list(merge_by_time(ticks, iter(depth)))

    def feed(engine: Engine, items: list[TickBatch | DepthBatch]) -> None:
        for item in items:
            if isinstance(item, DepthBatch):
                engine.process_depth(item)
            else:
                engine.process_batch(item)

    def decisions(engine: Engine) -> list[object]:
        seen: list[object] = []
        engine.sinks.append(seen.append)
        return seen

    half = int(len(stream) * cut)
    through = _paper_l2_engine()
    feed(through, stream[:half])
    payload = capture_state(through)
    restored = _paper_l2_engine()
    restore_state(restored, payload)
    want, got = decisions(through), decisions(restored)
    feed(through, stream[half:])
    feed(restored, stream[half:])
    assert through.counters["fills"] > 2 and through.counters["orders_sent"] > 4
    assert got == want and len(want) > 3
    assert restored.counters == through.counters
    assert restored.features_now(0) == through.features_now(0)
    assert restored.portfolio.positions.tolist() == through.portfolio.positions.tolist()
