"""The depth files of a replay as the engine's ``BookSource``: every depth parquet of the
data source, read in time order, through the set's L2 features (if it has any; the rows
also go to a simulated venue filling on depth)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from engine.book.batch import DepthBatch
from engine.book.source import DepthAsOf
from engine.config import Config
from engine.errors import DataError
from engine.features import FeatureSet
from engine.features.book_features import BookFeatureSet
from engine.instruments import InstrumentTable
from replay.files.depth.reader import DepthFileReader
from replay.files.discovery import DataSource, as_source, discover_files

__all__ = ["depth_feed", "depth_files", "has_depth"]


def _first_ts(path: Path) -> int:
    col = pq.read_table(path, columns=["ts_event"]).column(0)
    return int(col[0].as_py()) if len(col) else 0


def depth_feed(
    config: Config,
    data: str | Path | DataSource,
    instruments: InstrumentTable,
    features: FeatureSet,
) -> DepthAsOf:
    """The ``BookSource`` of a replay: the source's depth files in time order (each its own
    capture: the book restarts at each), through ``features.book_specs`` (none: the rows
    are only handed on, to the venue).

    Raises:
        DataError: the source has no depth file.
    """
    source = as_source(data)
    batches = depth_files(config, source, instruments)
    if batches is None:
        raise DataError(
            str(source),
            "the config's L2 book features need depth files (tradeloop depth parquet: "
            "`tradeloop book convert` makes them); none found",
        )
    book = (
        BookFeatureSet(
            list(features.book_specs),
            len(instruments),
            ticks=[i.tick_size for i in instruments.instruments],
            levels=config.book.levels,
        )
        if features.book_specs
        else None
    )
    return DepthAsOf(book, batches)


def has_depth(data: str | Path | DataSource) -> bool:
    """Whether the data source holds depth files (then the replay fills on depth)."""
    return bool(discover_files(as_source(data)).depth)


def depth_files(
    config: Config,
    data: str | Path | DataSource,
    instruments: InstrumentTable | None = None,
) -> Iterator[DepthBatch] | None:
    """The depth rows of a data source's depth files, in time order (each file its own
    capture: its reader starts with a restart marker per instrument), or None when it has
    none. What ``tradeloop publish`` plays beside the ticks, and what replay reads.

    Raises:
        DataError: (when iterated) a bad file or row, or files overlapping in time (several
            symbols in separate files are not merged).
    """
    source = as_source(data)
    found = discover_files(source)
    if not found.depth:
        return None
    paths = sorted(found.depth, key=_first_ts)
    index = (instruments or InstrumentTable(list(config.instruments))).index

    def batches() -> Iterator[DepthBatch]:
        last: int | None = None
        for path in paths:
            for batch in DepthFileReader(
                path,
                index,
                on_bad_row=config.replay.on_bad_row,
                start_ns=source.start_ns,
                end_ns=source.end_ns,
            ):
                if len(batch) == 0:
                    continue
                if last is not None and int(batch.ts_event[0]) < last:
                    raise DataError(
                        str(path), "depth files overlap in time (one file per run's span)"
                    )
                last = int(batch.ts_event[-1])
                yield batch

    return batches()
