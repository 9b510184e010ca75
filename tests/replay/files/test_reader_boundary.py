"""Tick files at the boundary: third-party errors become ``DataError`` naming the file,
implausible values are refused, CSV quirks are tolerated (issue 10, parts 4, 7, 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import DataError
from engine.instruments import Instrument, InstrumentTable
from engine.ticks import TickBatch
from replay.cli import main
from replay.files.raw_files import total_rows
from replay.files.readers import BadRowCounts, TickFileReader

INST = InstrumentTable([Instrument(symbol="X"), Instrument(symbol="Y")])
T0 = 1_723_111_200_000_000_000  # 2024-08-08T10:00:00Z


def quotes(n: int = 8) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_event": [T0 + 1_000 * i for i in range(n)],
            "symbol": ["X"] * n,
            "bid": [100.0 + 0.1 * i for i in range(n)],
            "ask": [100.5 + 0.1 * i for i in range(n)],
            "bid_size": [1.0] * n,
            "ask_size": [2.0] * n,
        }
    )


def trades(n: int = 8) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_event": [T0 + 1_000 * i for i in range(n)],
            "symbol": ["X"] * n,
            "price": [100.0 + 0.1 * i for i in range(n)],
            "size": [1.0] * n,
            "side": ["buy", "sell"] * (n // 2),
        }
    )


def with_value(df: pl.DataFrame, column: str, row: int, value: object) -> pl.DataFrame:
    values = df[column].to_list()
    values[row] = value
    return df.with_columns(pl.Series(column, values))


def read(path: Path, kind: str = "quotes", **kw: object) -> TickBatch:
    return TickBatch.concat(list(TickFileReader(path, kind, INST, **kw)))  # type: ignore[arg-type]


def refused(path: Path, kind: str = "quotes", **kw: object) -> DataError:
    with pytest.raises(DataError) as info:
        read(path, kind, **kw)
    assert info.value.file == str(path)
    return info.value


def skipped(path: Path, kind: str = "quotes") -> tuple[TickBatch, BadRowCounts]:
    counts = BadRowCounts()
    return read(path, kind, on_bad_row="skip", bad_rows=counts), counts


# part 4: tracebacks at the file boundary


def test_reader_duplicated_column_names_are_a_data_error(tmp_path: Path) -> None:
    t = quotes().to_arrow()
    t = pa.table(t.columns + [t.column("bid")], names=[*t.column_names, "bid"])
    path = tmp_path / "quotes.parquet"
    pq.write_table(t, path)
    err = refused(path)
    assert "duplicate column names ['bid']" in str(err)


def test_reader_csv_duplicated_header_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text(f"ts_event,symbol,bid,ask,bid_size,ask_size,ask\n{T0},X,1,2,1,1,3\n")
    assert "duplicate column names ['ask']" in str(refused(path))


def test_reader_parquet_metadata_not_utf8_is_read_not_a_panic(tmp_path: Path) -> None:
    # polars panics (PanicException, a BaseException) on schema metadata that is not UTF-8
    path = tmp_path / "trades.parquet"
    table = trades().to_arrow().replace_schema_metadata({b"origin": b"\xff\xfe capture"})
    pq.write_table(table, path)
    assert len(read(path, "trades")) == 8


def test_reader_parquet_corrupt_page_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trades.parquet"
    pq.write_table(
        trades().to_arrow(), path, compression="none", use_dictionary=False, write_statistics=False
    )
    raw = path.read_bytes()
    k = raw.index(b"sell")
    path.write_bytes(raw[:k] + b"\xff\xfe" + raw[k + 2 :])  # invalid UTF-8 in a value
    err = refused(path, "trades")
    assert "cannot read" in err.reason


@pytest.mark.parametrize("cut", [8, 100])
def test_total_rows_broken_footer_names_the_file(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "quotes.parquet"
    quotes().write_parquet(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - cut])
    with pytest.raises(DataError) as info:
        total_rows([path])
    assert info.value.file == str(path)
    assert "not a readable parquet file" in str(info.value)


def test_cli_broken_footer_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "quotes.parquet"
    quotes().write_parquet(path)
    path.write_bytes(path.read_bytes()[:-8])
    assert main(["replay", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"tradeloop: error: {path}: ")
    assert not (tmp_path / "run").exists()


def test_reader_csv_header_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_bytes(b"ts_event,symbol,bid\xff,ask,bid_size,ask_size\n1,X,1,2,1,1\n")
    err = refused(path)
    assert "header line is not UTF-8" in err.reason and "0xff" in err.reason


def test_reader_csv_cell_not_utf8_names_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_bytes(
        f"ts_event,symbol,bid,ask,bid_size,ask_size\n{T0},X,1,2,1,1\n{T0},X\xff,1,2,1,1\n".encode(
            "latin-1"
        )
    )
    err = refused(path)
    assert (err.row, err.column, err.reason) == (1, "symbol", "not UTF-8 text")


# part 7: silent accepts


@pytest.mark.parametrize("value", [1e300, 1e-300, 1e13])
def test_reader_absurd_trade_price_is_refused(tmp_path: Path, value: float) -> None:
    path = tmp_path / "trades.parquet"
    with_value(trades(), "price", 3, value).write_parquet(path)
    err = refused(path, "trades")
    assert (err.row, err.column) == (3, "price")
    batch, counts = skipped(path, "trades")
    assert len(batch) == 7 and counts.total == 1
    assert batch.price.max() < 101.0


def test_reader_price_far_from_rolling_median_is_an_outlier(tmp_path: Path) -> None:
    df = trades(200)
    df = with_value(df, "price", 150, df["price"][149] * 1.6)  # 60 % above the last prices
    df = with_value(df, "price", 0, df["price"][0] * 0.4)  # the very first price: caught too
    path = tmp_path / "trades.parquet"
    df.write_parquet(path)
    err = refused(path, "trades")
    assert (err.row, err.column) == (0, "price") and "median" in err.reason
    batch, counts = skipped(path, "trades")
    assert len(batch) == 198 and counts.by_reason == {err.reason: 2}


def test_reader_price_band_follows_a_move_that_persists(tmp_path: Path) -> None:
    df = trades(200).with_columns(
        pl.when(pl.int_range(200) >= 100).then(pl.col("price") * 2).otherwise(pl.col("price"))
    )
    path = tmp_path / "trades.parquet"
    df.write_parquet(path)
    batch, counts = skipped(path, "trades")
    # the window holds 64 prices: after 33 rows at the new level its lower median has moved
    assert counts.total == 33
    assert len(batch) == 167


def test_reader_bool_price_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trades.parquet"
    trades(2).with_columns(pl.Series("price", [True, True])).write_parquet(path)
    err = refused(path, "trades")
    assert (err.row, err.column) == (None, "price") and "bool" in err.reason


def test_reader_text_price_column_in_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "quotes.parquet"
    quotes().with_columns(pl.col("bid").cast(pl.String)).write_parquet(path)
    err = refused(path)
    assert (err.row, err.column) == (None, "bid") and "text" in err.reason


def test_reader_int32_seconds_column_is_converted_by_magnitude(tmp_path: Path) -> None:
    path = tmp_path / "quotes.parquet"
    df = quotes()
    df.with_columns((pl.col("ts_event") // 10**9).cast(pl.Int32)).write_parquet(path)
    expected = [t // 10**9 * 10**9 for t in df["ts_event"].to_list()]
    assert read(path).ts_event.tolist() == expected


@pytest.mark.parametrize("scale", [10**9, 10**6, 10**3, 1])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_reader_integer_timestamps_in_any_unit_are_converted_to_ns(
    tmp_path: Path, scale: int, fmt: str
) -> None:
    df = quotes()
    path = tmp_path / f"quotes.{fmt}"
    scaled = df.with_columns(pl.col("ts_event") // scale)
    scaled.write_parquet(path) if fmt == "parquet" else scaled.write_csv(path)
    expected = [t // scale * scale for t in df["ts_event"].to_list()]
    assert read(path).ts_event.tolist() == expected


@pytest.mark.parametrize(
    ("scale", "unit"), [(10**9, "seconds"), (10**6, "milliseconds"), (10**3, "microseconds")]
)
def test_reader_a_row_in_another_unit_than_the_file_names_both(
    tmp_path: Path, scale: int, unit: str
) -> None:
    path = tmp_path / "quotes.parquet"
    df = quotes()
    odd = df["ts_event"][2] // scale
    with_value(df, "ts_event", 2, odd).write_parquet(path)
    err = refused(path)
    assert (err.row, err.column) == (2, "ts_event")
    assert f"looks like {unit}, unlike the column's first rows (nanoseconds)" in err.reason


@pytest.mark.parametrize(
    "value", ["2262-05-01T00:00:00Z", "2600-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "5" * 19]
)
def test_reader_timestamp_out_of_range_is_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "quotes.csv"
    with_value(
        quotes().with_columns(pl.col("ts_event").cast(pl.String)), "ts_event", 2, value
    ).write_csv(path)
    err = refused(path)
    assert (err.row, err.column) == (2, "ts_event")
    assert "outside 2000-01-01 .. 2100-01-01" in err.reason


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_reader_arrow_timestamp_column_is_scaled_from_its_unit(tmp_path: Path, unit: str) -> None:
    seconds = [T0 // 10**9 + i for i in range(8)]
    per = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    t = (
        quotes()
        .to_arrow()
        .set_column(0, "ts_event", pa.array([s * per for s in seconds], pa.timestamp(unit)))
    )
    path = tmp_path / "quotes.parquet"
    pq.write_table(t, path)
    assert read(path).ts_event.tolist() == [s * 10**9 for s in seconds]


def test_reader_arrow_timestamp_beyond_2262_is_refused_not_wrapped(tmp_path: Path) -> None:
    t = (
        quotes(2)
        .to_arrow()
        .set_column(0, "ts_event", pa.array([T0 // 10**9, 20_000_000_000], pa.timestamp("s")))
    )
    path = tmp_path / "quotes.parquet"
    pq.write_table(t, path)
    err = refused(path)
    assert (err.row, err.column) == (1, "ts_event") and "outside" in err.reason


def test_reader_forward_jump_skip_drops_the_jump_not_the_rows_after(tmp_path: Path) -> None:
    df = with_value(quotes(10), "ts_event", 3, T0 + 10**15)  # 11 days ahead
    path = tmp_path / "quotes.parquet"
    df.write_parquet(path)
    batch, counts = skipped(path)
    assert len(batch) == 9 and T0 + 10**15 not in batch.ts_event.tolist()
    assert counts.by_reason == {"timestamp jumps forward (the rows after it are earlier)": 1}
    err = refused(path)
    assert (err.row, err.column) == (3, "ts_event") and "jumps forward" in err.reason


def test_reader_single_backwards_row_is_the_outlier(tmp_path: Path) -> None:
    df = with_value(quotes(10), "ts_event", 6, T0)
    path = tmp_path / "quotes.parquet"
    df.write_parquet(path)
    batch, counts = skipped(path)
    assert len(batch) == 9 and counts.by_reason == {"timestamp goes backwards": 1}
    assert refused(path).row == 6


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reader_header_only_file_is_a_no_data_error(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"quotes.{fmt}"
    empty = quotes().head(0)
    empty.write_csv(path) if fmt == "csv" else empty.write_parquet(path)
    assert refused(path).reason == "no data rows"
    assert refused(path, on_bad_row="skip").reason == "no data rows"


def test_reader_file_with_only_bad_rows_under_skip_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "quotes.parquet"
    quotes(3).with_columns(pl.lit("ZZZ").alias("symbol")).write_parquet(path)
    err = refused(path, on_bad_row="skip")
    assert "no valid rows: all 3 data rows are bad" in err.reason


def test_cli_header_only_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text("ts_event,symbol,bid,ask,bid_size,ask_size\n")
    assert main(["replay", str(path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"tradeloop: error: {path}: no data rows\n"


def test_reader_row_with_two_faults_is_counted_once(tmp_path: Path) -> None:
    df = with_value(with_value(quotes(), "bid", 2, float("nan")), "ask_size", 2, -1.0)
    path = tmp_path / "quotes.parquet"
    df.write_parquet(path)
    batch, counts = skipped(path)
    assert len(batch) == 7
    assert counts.by_reason == {"price is NaN, missing or not > 0": 1}


# part 8: CSV robustness


def test_reader_csv_with_utf8_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_bytes(b"\xef\xbb\xbf" + quotes().write_csv().encode())
    assert len(read(path)) == 8


def test_reader_csv_whitespace_around_values_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(
        " ts_event , symbol ,price,size,side\n"
        f" {T0} , X , 60005.0 ,\t1.5 , buy \n{T0 + 1},X,60006,1, SELL\n"
    )
    b = read(path, "trades")
    assert b.price.tolist() == [60005.0, 60006.0] and b.size.tolist() == [1.5, 1.0]
    assert b.side.tolist() == [1, -1] and b.ts_event.tolist() == [T0, T0 + 1]


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_reader_csv_ragged_row_is_a_bad_row(tmp_path: Path, chunk_rows: int) -> None:
    lines = quotes(6).write_csv().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # data row 2 loses a field
    lines[5] += ",7"  # data row 4 has one too many
    path = tmp_path / "quotes.csv"
    path.write_text("\n".join(lines) + "\n")
    err = refused(path, chunk_rows=chunk_rows)
    assert err.row == 2 and "5 fields, the header has 6" in err.reason
    counts = BadRowCounts()
    b = read(path, on_bad_row="skip", bad_rows=counts, chunk_rows=chunk_rows)
    assert b.ts_event.tolist() == [T0 + 1_000 * i for i in (0, 1, 3, 5)]
    assert counts.by_reason == {"ragged row (field count differs from the header)": 2}


def test_reader_csv_row_numbers_after_a_ragged_row_stay_right(tmp_path: Path) -> None:
    lines = quotes(6).write_csv().splitlines()
    lines[2] = lines[2] + ",extra"  # data row 1 ragged
    lines[5] = lines[5].replace(",X,", ",ZZZ,")  # data row 4 unknown symbol
    path = tmp_path / "quotes.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read(path, chunk_rows=1)
    assert info.value.row == 1
    counts = BadRowCounts()
    read(path, on_bad_row="skip", bad_rows=counts, chunk_rows=2)
    assert counts.total == 2


# the policy and real data


@pytest.mark.parametrize("chunk_rows", [1, 3, 64, 100_000])
def test_reader_plausibility_does_not_depend_on_chunking(tmp_path: Path, chunk_rows: int) -> None:
    rng = np.random.default_rng(5)
    n = 600
    ts = T0 + np.cumsum(rng.integers(0, 1000, n))
    price = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    sym = rng.choice(["X", "Y"], n)
    price[rng.choice(n, 20, replace=False)] *= rng.choice([0.01, 3.0, 1e6], 20)
    ts[rng.choice(n, 10, replace=False)] += rng.choice([-(10**9), 10**12], 10)
    path = tmp_path / "trades.parquet"
    pl.DataFrame(
        {"ts_event": ts, "symbol": sym, "price": price, "size": 1.0, "side": "buy"}
    ).write_parquet(path)
    ref, ref_counts = skipped(path, "trades")
    counts = BadRowCounts()
    other = read(path, "trades", on_bad_row="skip", bad_rows=counts, chunk_rows=chunk_rows)
    assert np.array_equal(ref.ts_event, other.ts_event) and np.array_equal(ref.price, other.price)
    assert counts.by_reason == ref_counts.by_reason
    assert np.all(np.diff(other.ts_event) >= 0)


def test_reader_real_binance_files_pass_the_policy_unchanged(real_data: Path) -> None:
    inst = InstrumentTable([Instrument(symbol="BTCUSDT", tick_size=0.01, lot_size=1e-5)])
    for path in sorted(real_data.glob("*.parquet")):
        kind = "quotes" if "quote" in path.name else "trades"
        batch = TickBatch.concat(list(TickFileReader(path, kind, inst)))
        frame = pl.read_parquet(path)
        assert len(batch) == frame.height, path
        assert np.array_equal(batch.ts_event, frame["ts_event"].to_numpy()), path
