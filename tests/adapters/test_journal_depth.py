"""Depth records in the journal file: grouped for fsync as market data (not synced at once
as a control record), read back equal.

Mutation check (tried once by hand): counting ``DepthRecord`` as a control record in
``FileJournalWriter`` (the ``isinstance`` test on ``MarketDataRecord`` alone) fails
``test_journal_depth_records_group_like_market_data``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapters.journal_file import FileJournalReader, FileJournalWriter, FsyncLimits
from engine.book.batch import DepthBatch
from engine.events import DepthUpdate
from engine.journal import DepthRecord

T = 1_700_000_000 * 1_000_000_000


def _rows(uid: int) -> DepthBatch:
    update = DepthUpdate(ts_event=T, ts_recv=T, instrument="X", first_update_id=uid,
                         last_update_id=uid, bids=((99.5, float(uid)),), asks=((100.0, 1.0),))  # fmt: skip
    return DepthBatch.from_updates([update], {"X": 0})


def test_journal_depth_records_group_like_market_data(tmp_path: Path) -> None:
    limits = FsyncLimits(market_data_records=10, control_records=2)
    with FileJournalWriter(
        tmp_path, session_id="s", limits=limits, background_sync=False
    ) as journal:
        for uid in range(1, 10):
            journal.append(T, _rows(uid))
        assert journal.fsyncs == 0  # two control records would have been synced already
        journal.append(T, _rows(10))
        assert journal.fsyncs == 1
    back = [r for r in FileJournalReader(tmp_path) if isinstance(r, DepthRecord)]
    assert [int(r.depth.to_batch().first_update_id[0]) for r in back] == list(range(1, 11))
    assert np.array_equal(back[4].depth.to_batch().qty, _rows(5).qty)
