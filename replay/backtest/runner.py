"""The replay composition root: the same ``Engine`` as live, with ``ReplayClock``, tick
files as the source and the simulated venue as the router."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adapters.sim_venue import SimulatedVenue
from engine.assembly import RegistryModel, resolve_model_config
from engine.assembly import build_engine as assemble
from engine.config import Config
from engine.engine import Engine
from engine.events import Alarm, Event, Fill, RiskRejected, Signal, TradingState
from engine.instruments import InstrumentTable
from engine.monitor import ModelMonitor
from engine.strategy import Strategy
from engine.ticks import TickBatch
from replay.backtest.mids import MidSampler
from replay.files.depth.feed import depth_feed, has_depth
from replay.files.discovery import DataSource, as_source, discover_files
from replay.files.raw_files import total_rows
from replay.files.readers import BadRowCounts, TickFileReader
from replay.files.streams import merge_streams, prefetch, rebatch


@dataclass
class Recorder:
    """Keeps the sparse events a report needs (the engine's event sink)."""

    fills: list[Fill] = field(default_factory=list)
    # a live venue may report a fill twice; the engine books a fill_id once
    # (``engine.orders``: FillOutcome.DUPLICATE), and so does the report
    fill_ids: set[str] = field(default_factory=set)
    risk_rejections: list[RiskRejected] = field(default_factory=list)
    states: list[TradingState] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    signals: int = 0

    def __call__(self, event: Event) -> None:
        match event:
            case Fill():
                if event.fill_id not in self.fill_ids:
                    self.fill_ids.add(event.fill_id)
                    self.fills.append(event)
            case Signal():
                self.signals += 1
            case RiskRejected():
                self.risk_rejections.append(event)
            case TradingState():
                self.states.append(event)
            case Alarm():
                self.alarms.append(event)


@dataclass
class ReplayRun:
    engine: Engine
    recorder: Recorder
    bad_rows: BadRowCounts
    files: list[Path]
    config: Config
    monitor: ModelMonitor | None = None
    # the registry version that ran (None: [model] path or no model); ``config`` is then
    # the resolved config: the version's folder as [model] path, max_position scaled
    model_source: RegistryModel | None = None
    # the mid price path for the report's price panels (None: none sampled)
    mids: MidSampler | None = None


def build_engine(
    config: Config, *, strategy: Strategy | None = None, depth: bool = False
) -> tuple[Engine, Recorder, ModelMonitor | None]:
    """Build the engine a config describes, for replay (simulated venue, replay clock).

    ``strategy`` replaces the configured one with an instance (notebooks, tests).
    ``depth``: the data has depth, so the venue fills on the book under ``[book]
    queue_model`` (docs/fills.md); else on the top of book.

    Raises:
        ConfigError, PluginLoadError: before any data is read.
    """
    sim = config.venue.sim
    if depth:
        venue = SimulatedVenue(sim.latency_ns, sim.fee_bps, sim.maker_fee_bps,
                               queue_model=config.book.queue_model,
                               queue_power=config.book.queue_power)  # fmt: skip
    else:
        venue = SimulatedVenue(sim.latency_ns, sim.fee_bps, sim.maker_fee_bps)
    engine, monitor = assemble(config, venue, strategy=strategy)
    recorder = Recorder()
    engine.sinks.append(recorder)
    return engine, recorder, monitor


def tick_batches(
    config: Config,
    data: str | Path | DataSource,
    instruments: InstrumentTable,
    bad_rows: BadRowCounts,
    batch_size: int | None = None,
) -> tuple[Iterator[TickBatch], list[Path]]:
    """The merged, validated, re-batched tick stream of a data folder, file or
    ``DataSource`` (named files, a column mapping, a time range)."""
    source = as_source(data)
    found = discover_files(source)
    policy = config.replay.on_bad_row
    layouts = [*found.of_kind("quotes"), *found.of_kind("trades")]
    readers = [
        iter(
            TickFileReader(
                f.path,
                f.kind,
                instruments,
                on_bad_row=policy,
                bad_rows=bad_rows,
                layout=f,
                start_ns=source.start_ns,
                end_ns=source.end_ns,
            )
        )
        for f in layouts
    ]
    size = batch_size or config.replay.batch_size
    return prefetch(rebatch(merge_streams(readers), size)), [f.path for f in layouts]


def run_replay(
    config: Config,
    data: str | Path | DataSource,
    *,
    batch_size: int | None = None,
    progress: bool | None = None,
    strategy: Strategy | None = None,
) -> ReplayRun:
    """Replay tick files through the engine.

    Args:
        config: validated config (``replay.files.init_config.with_data_instruments`` adds the
            data's symbols that it lacks).
        data: folder of tick files, one file, or a ``DataSource`` (named files, column
            mapping, time range); depth files among them make the venue fill on the book.
        batch_size: micro-batch size (default ``config.replay.batch_size``); any size gives
            the same result.
        progress: show a progress bar (None: only on a terminal).
        strategy: a strategy instance to use instead of the configured one.

    Raises:
        DataError: bad data under ``on_bad_row="raise"``.
        StrategyError: the strategy raised (replay is strict).
        RegistryError: the registry model cannot be resolved or was changed.
    """
    # resolved once, here, so the run records the version and the limits that ran
    config, model_source = resolve_model_config(config)
    depth = has_depth(data)
    engine, recorder, monitor = build_engine(config, strategy=strategy, depth=depth)
    # depth rows reach the venue even when no L2 feature reads them: its fills need the book
    if engine.features.book_specs or depth:
        engine.book_source = depth_feed(config, data, engine.instruments, engine.features)
    if monitor is not None:
        # the alarms go into the run's monitor page and metrics; -v logs them as they fire
        monitor.alarm_log_level = logging.INFO
    bad_rows = BadRowCounts()
    batches, files = tick_batches(config, data, engine.instruments, bad_rows, batch_size)
    mids = MidSampler(engine.instruments.symbols)
    with tqdm(total=total_rows(files), unit="tick", unit_scale=True, disable=None if progress is None else not progress,
              desc="replay", leave=False) as bar:  # fmt: skip

        def counted() -> Iterator[TickBatch]:
            for batch in batches:
                mids.add_batch(batch)
                yield batch
                bar.update(len(batch))

        run_loop(engine.run(counted()))
    if monitor is not None:
        monitor.count_bad_ticks(bad_rows.total)
    return ReplayRun(engine, recorder, bad_rows, files, config, monitor, model_source, mids)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop where it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows: uvloop does not exist there
        asyncio.run(main)
        return
    uvloop.run(main)
