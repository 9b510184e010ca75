from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.errors import DataError
from engine.instruments import Instrument, InstrumentTable
from engine.ticks import TickBatch
from replay.files.readers import BadRowCounts, TickFileReader
from replay.files.streams import merge_streams, rebatch

INST = InstrumentTable([Instrument(symbol="X"), Instrument(symbol="Y")])
T0 = 1_723_111_200_000_000_000  # 2024-08-08T10:00:00Z


def good_quotes(n: int = 6) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_event": [T0 + 10 * i for i in range(n)],
            "symbol": ["X"] * n,
            "bid": [100.0 + i for i in range(n)],
            "ask": [100.5 + i for i in range(n)],
            "bid_size": [1.0] * n,
            "ask_size": [2.0] * n,
        }
    )


def read(path: Path, kind: str = "quotes", **kw: object) -> TickBatch:
    return TickBatch.concat(list(TickFileReader(path, kind, INST, **kw)))  # type: ignore[arg-type]


def write(df: pl.DataFrame, tmp_path: Path, fmt: str) -> Path:
    p = tmp_path / f"q.{fmt}"
    df.write_parquet(p) if fmt == "parquet" else df.write_csv(p)
    return p


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_reader_reads_valid_quotes(tmp_path: Path, fmt: str) -> None:
    b = read(write(good_quotes(), tmp_path, fmt))
    assert len(b) == 6
    assert b.ts_event.tolist() == [T0 + 10 * i for i in range(6)]
    assert np.array_equal(b.ts_recv, b.ts_event)  # ts_recv defaults to ts_event
    assert b.bid[2] == 102.0


def test_reader_accepts_iso_timestamps_in_csv(tmp_path: Path) -> None:
    df = good_quotes(2).with_columns(
        pl.Series("ts_event", ["2024-08-08T10:00:00.000000001Z", "2024-08-08T12:00:01+02:00"])
    )
    b = read(write(df, tmp_path, "csv"))
    assert b.ts_event.tolist() == [1723111200000000001, 1723111201000000000]


@pytest.mark.parametrize(
    ("fmt", "mutate", "row", "column", "reason"),
    [
        ("parquet", lambda d: d.drop("ask_size"), None, "ask_size", "missing column"),
        (
            "parquet",
            lambda d: d.with_columns(
                pl.when(pl.int_range(6) == 3)
                .then(float("nan"))
                .otherwise(pl.col("bid"))
                .alias("bid")
            ),
            3,
            "bid",
            "NaN",
        ),
        (
            "csv",
            lambda d: d.with_columns(
                pl.when(pl.int_range(6) == 2).then(None).otherwise(pl.col("ask")).alias("ask")
            ),
            2,
            "ask",
            "missing",
        ),
        (
            "parquet",
            lambda d: d.with_columns(
                pl.when(pl.int_range(6) == 4).then(200.0).otherwise(pl.col("bid")).alias("bid")
            ),
            4,
            "ask",
            "crossed",
        ),
        (
            "parquet",
            lambda d: d.with_columns(
                pl.when(pl.int_range(6) == 1)
                .then(-1.0)
                .otherwise(pl.col("bid_size"))
                .alias("bid_size")
            ),
            1,
            "bid_size",
            "negative",
        ),
        (
            "parquet",
            lambda d: d.with_columns(
                pl.when(pl.int_range(6) == 5)
                .then(T0 + 5)
                .otherwise(pl.col("ts_event"))
                .alias("ts_event")
            ),
            5,
            "ts_event",
            "backwards",
        ),
        (
            "csv",
            lambda d: d.with_columns(
                pl.when(pl.int_range(6) == 0)
                .then(pl.lit("ZZZ"))
                .otherwise(pl.col("symbol"))
                .alias("symbol")
            ),
            0,
            "symbol",
            "unknown symbol",
        ),
    ],
)
def test_reader_bad_input_names_file_row_and_column(
    tmp_path: Path, fmt: str, mutate, row, column, reason
) -> None:  # type: ignore[no-untyped-def]
    path = write(mutate(good_quotes()), tmp_path, fmt)
    with pytest.raises(DataError, match=reason) as info:
        read(path)
    err = info.value
    assert err.file == str(path)
    assert err.row == row
    assert err.column == column
    assert str(path) in str(err)


def test_reader_csv_non_numeric_cell_is_a_bad_row_not_a_crash(tmp_path: Path) -> None:
    p = tmp_path / "quotes.csv"
    p.write_text(
        f"ts_event,symbol,bid,ask,bid_size,ask_size\n{T0},X,100,101,1,1\n{T0},X,abc,101,1,1\n"
    )
    with pytest.raises(DataError) as info:
        read(p)
    assert (info.value.row, info.value.column) == (1, "bid")


def test_reader_skip_policy_drops_and_counts_by_reason(tmp_path: Path) -> None:
    df = good_quotes(8).with_columns(
        pl.Series("bid", [100.0, float("nan"), 102.0, 200.0, 104.0, 105.0, 106.0, 107.0]),
        pl.Series("ts_event", [T0 + t for t in (0, 10, 20, 30, 40, 5, 60, 70)]),
    )
    counts = BadRowCounts()
    b = read(write(df, tmp_path, "parquet"), on_bad_row="skip", bad_rows=counts, chunk_rows=3)
    assert b.ts_event.tolist() == [T0 + t for t in (0, 20, 40, 60, 70)]
    assert counts.total == 3
    assert counts.by_reason["timestamp goes backwards"] == 1
    assert counts.by_reason["crossed or locked quote (bid >= ask)"] == 1


def test_reader_trades_validate_side_and_size(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "ts_event": [T0 + 1, T0 + 2, T0 + 3],
            "symbol": ["X", "X", "Y"],
            "price": [1.0, 2.0, 3.0],
            "size": [1.0, 0.0, 1.0],
            "side": ["buy", "sell", "SELL"],
        }
    )
    p = tmp_path / "trades.parquet"
    df.write_parquet(p)
    with pytest.raises(DataError) as info:
        read(p, "trades")
    assert (info.value.row, info.value.column) == (1, "size")
    df.with_columns(
        pl.Series("side", ["buy", "up", "sell"]), pl.Series("size", [1.0, 1.0, 1.0])
    ).write_parquet(p)
    with pytest.raises(DataError, match="side"):
        read(p, "trades")


def test_merge_and_rebatch_do_not_depend_on_file_chunking(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 400
    ts_q = T0 + np.sort(rng.integers(0, 300, n))  # many equal stamps across files
    ts_t = T0 + np.sort(rng.integers(0, 300, n // 2))
    pl.DataFrame(
        {
            "ts_event": ts_q,
            "symbol": rng.choice(["X", "Y"], n),
            "bid": 1.0,
            "ask": 2.0,
            "bid_size": rng.uniform(1, 2, n),
            "ask_size": 1.0,
        }
    ).write_parquet(tmp_path / "quotes.parquet")
    pl.DataFrame(
        {
            "ts_event": ts_t,
            "symbol": "X",
            "price": 1.5,
            "size": rng.uniform(1, 2, n // 2),
            "side": "buy",
        }
    ).write_parquet(tmp_path / "trades.parquet")

    def merged(chunk: int, size: int) -> TickBatch:
        streams = [
            iter(TickFileReader(tmp_path / "quotes.parquet", "quotes", INST, chunk_rows=chunk)),
            iter(TickFileReader(tmp_path / "trades.parquet", "trades", INST, chunk_rows=chunk)),
        ]
        parts = list(rebatch(merge_streams(streams), size))
        assert all(len(p) == size for p in parts[:-1])
        return TickBatch.concat(parts)

    ref = merged(10_000, 10_000)
    assert np.all(np.diff(ref.ts_event) >= 0)
    for chunk, size in [(1, 1), (7, 13), (64, 5)]:
        other = merged(chunk, size)
        for col in ("ts_event", "kind", "instrument", "bid_size", "size"):
            assert np.array_equal(getattr(ref, col), getattr(other, col), equal_nan=True), col
