"""The depth files of a replay as the engine's ``BookSource``: every depth parquet of the
data source, read in time order, through the set's L2 features."""

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

__all__ = ["depth_feed"]


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
    capture: the book restarts at each), through ``features.book_specs``.

    Raises:
        DataError: the source has no depth file.
    """
    source = as_source(data)
    found = discover_files(source)
    if not found.depth:
        raise DataError(
            str(source),
            "the config's L2 book features need depth files (tradeloop depth parquet: "
            "`tradeloop book convert` makes them); none found",
        )
    paths = sorted(found.depth, key=_first_ts)

    def batches() -> Iterator[DepthBatch]:
        for path in paths:
            yield from DepthFileReader(
                path,
                instruments.index,
                on_bad_row=config.replay.on_bad_row,
                start_ns=source.start_ns,
                end_ns=source.end_ns,
            )

    book = BookFeatureSet(
        list(features.book_specs),
        len(instruments),
        ticks=[i.tick_size for i in instruments.instruments],
        levels=config.book.levels,
    )
    return DepthAsOf(book, batches())
