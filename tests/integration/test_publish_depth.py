"""``tradeloop publish`` plays depth files beside the ticks (the dispatcher wires
``replay.files.depth.feed.depth_files``): over a real mosquitto every depth update of the
file arrives as one ``DepthUpdate`` with its levels, in time order with the quotes and
trades, an update before the ticks of its own stamp."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from adapters.tools.cli import register
from engine.codec import EventCodec
from engine.config import Config
from engine.events import DepthUpdate, Event, Quote, Trade
from engine.instruments import InstrumentTable
from engine.ticks import TickBatch
from replay.backtest.runner import tick_batches
from replay.files.depth.feed import depth_files
from replay.files.raw_files import total_rows
from replay.files.readers import BadRowCounts
from tests.integration.conftest import Broker
from tests.integration.test_publish import collect, subscriber
from tests.replay.backtest.test_replay_depth_fills import _write_market


def tick_files(config: Config, data: str) -> tuple[Iterator[TickBatch], int | None]:
    batches, files = tick_batches(
        config, data, InstrumentTable(list(config.instruments)), BadRowCounts()
    )
    return batches, total_rows(files)


def _publish_args(broker: Broker, data: Path, config: Path, *, depth: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(), tick_files=tick_files, default_config=config,
             depth_files=depth_files if depth else None)  # fmt: skip
    return parser.parse_args(
        ["publish", str(data), "--speed", "0", "--format", "msgpack", "--broker",
         f"{broker.host}:{broker.port}", "--username", broker.username, "--password-env",
         "TEST_MQTT_PASSWORD", "--keep-time"]
    )  # fmt: skip


@pytest.mark.asyncio
async def test_publish_plays_depth_files_in_time_order_with_the_ticks(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", broker.password)
    data = tmp_path / "data"
    data.mkdir()
    _write_market(data, seed=5, steps=60)
    config = tmp_path / "c.toml"
    config.write_text(
        '[[instruments]]\nsymbol = "SYN"\nvenue = "SIM"\ntick_size = 1.0\nlot_size = 0.001\n'
        '[[features]]\nname = "mid"\nkind = "mid"\n'
    )
    depth = pq.read_table(data / "syn-depth.parquet").to_pydict()
    # the reader starts each file with a restart marker (a new capture: a receiver's book
    # restarts), published as an update without levels
    n_updates = sum(depth["end"]) + 1
    n_ticks = (
        pq.read_metadata(data / "syn-quotes.parquet").num_rows
        + pq.read_metadata(data / "syn-trades.parquet").num_rows
    )
    args = _publish_args(broker, data, config, depth=True)
    async with subscriber(broker, "md/#") as c:
        listening = asyncio.create_task(collect(c, n_updates + n_ticks, EventCodec("msgpack")))  # type: ignore[arg-type]
        assert await asyncio.to_thread(args.func, args) == 0
        got = await listening
    events: list[Event] = [e for _, e in got]
    updates = [e for e in events if isinstance(e, DepthUpdate)]
    assert len(updates) == n_updates == 61
    restart, updates = updates[0], updates[1:]
    assert restart.reset and restart.snapshot and not restart.bids and not restart.asks
    assert sum(isinstance(e, Quote | Trade) for e in events) == n_ticks
    assert all(topic == "md/SIM/SYN/depth" for topic, e in got if isinstance(e, DepthUpdate))
    stamps = [e.ts_event for e in events]
    assert stamps == sorted(stamps)
    # each update before the quote of its stamp (the engine's as-of order)
    for k, e in enumerate(events):
        if isinstance(e, Quote):
            assert any(isinstance(p, DepthUpdate) and p.ts_event == e.ts_event
                       for p in events[:k])  # fmt: skip
    # the levels are the file's: the first update is the snapshot, in the file's rows
    first = updates[0]
    rows = int(np.flatnonzero(depth["end"])[0]) + 1  # the file has no marker row
    assert first.snapshot and len(first.bids) + len(first.asks) == rows
    assert [p for p, _ in first.bids] == [p for p, s in zip(depth["price"][:rows],
                                                              depth["side"][:rows], strict=True)
                                          if s == 1]  # fmt: skip
    assert [u.last_update_id for u in updates] == list(range(1, 61))
