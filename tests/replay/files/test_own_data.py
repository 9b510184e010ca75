"""Own data without ceremony: kind from columns, public formats, column mapping, symbols
and instruments from the data, timestamp units by magnitude, time ranges, ``init``."""

from __future__ import annotations

import gzip
import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import config_from_dict, load_config
from engine.errors import DataError
from engine.instruments import Instrument, InstrumentTable
from engine.ticks import QUOTE, TickBatch
from replay.backtest.runner import run_replay
from replay.cli import main
from replay.files.discovery import DataSource, discover_files
from replay.files.formats import FileLayout, inspect_file, parse_column_mapping, parse_time_ns
from replay.files.init_config import grid_step, infer_instruments, with_data_instruments
from replay.files.readers import TickFileReader
from tests.conftest import make_config

T0_MS = 1_723_161_254_087  # 2024-08-08T23:54:14.087Z
T0_NS = T0_MS * 10**6
INST = InstrumentTable([Instrument(symbol="BTCUSDT", tick_size=0.01, lot_size=1e-5)])
REAL_ROWS = {"20240808": 28_040 + 9_757, "20240809": 45_134 + 10_147}


def read(layout: FileLayout, inst: InstrumentTable = INST, **kw: object) -> TickBatch:
    reader = TickFileReader(layout.path, layout.kind, inst, layout=layout, **kw)  # type: ignore[arg-type]
    return TickBatch.concat(list(reader))


def layout_of(path: Path, **kw: object) -> FileLayout:
    found = inspect_file(path, **kw)  # type: ignore[arg-type]
    assert isinstance(found, FileLayout), found
    return found


# ---- generated files in each public format ----


def book_ticker_csv(path: Path, n: int = 50) -> None:
    lines = [
        "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"
    ]
    for i in range(n):
        bid = 61837.63 + 0.01 * (i % 7)
        t = T0_MS + 10 * i
        lines.append(f"{1000 + i},{bid:.2f},{0.5 + i * 1e-5:.5f},{bid + 0.01:.2f},1.25,{t},{t + 3}")
    path.write_text("\n".join(lines) + "\n")


def agg_trades_rows(n: int, *, time_unit: int = 1) -> list[list[str]]:
    rows = []
    for i in range(n):
        maker = "true" if i % 2 == 0 else "false"
        t = (T0_MS + 10 * i) * time_unit
        rows.append(
            [str(500 + i), f"{61837.63 + 0.01 * (i % 3):.2f}", "0.00100", "7", "7", str(t), maker]
        )
    return rows


def tardis_quotes_csv_gz(path: Path, n: int = 40) -> None:
    lines = ["exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount"]
    for i in range(n):
        t_us = T0_MS * 1000 + 10_000 * i
        lines.append(
            f"binance,ETHUSDT,{t_us},{t_us + 250},3.5,2650.{11 + i % 5},2650.{10 + i % 5},2.25"
        )
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")


def tardis_trades_csv(path: Path, n: int = 40) -> None:
    lines = ["exchange,symbol,timestamp,local_timestamp,id,side,price,amount"]
    for i in range(n):
        t_us = T0_MS * 1000 + 10_000 * i + 5
        side = "buy" if i % 3 else "sell"
        lines.append(
            f"binance,ETHUSDT,{t_us},{t_us + 300},{9000 + i},{side},2650.{10 + i % 5},0.{1 + i % 9}"
        )
    path.write_text("\n".join(lines) + "\n")


def test_binance_book_ticker_csv_is_quotes_with_symbol_from_name_and_ms_converted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "BTCUSDT-bookTicker-2024-08-08.csv"
    book_ticker_csv(path)
    layout = layout_of(path)
    assert (layout.kind, layout.format, layout.symbol) == (
        "quotes",
        "Binance bookTicker",
        "BTCUSDT",
    )
    assert layout.ts_unit == {"ts_event": "ms", "ts_recv": "ms"}
    assert any("symbol BTCUSDT taken from the file name" in n for n in layout.notes)
    assert any("ts_event in milliseconds" in n for n in layout.notes)
    b = read(layout)
    assert len(b) == 50 and (b.kind == QUOTE).all()
    assert b.ts_event[0] == T0_NS and b.ts_recv[0] == T0_NS + 3 * 10**6
    assert b.bid[0] == 61837.63 and b.ask[0] == 61837.64
    assert b.bid_size[1] == pytest.approx(0.50001) and b.ask_size[0] == 1.25


@pytest.mark.parametrize("variant", ["header", "headerless", "headerless_spot"])
def test_binance_agg_trades_with_or_without_header_aggressor_from_is_buyer_maker(
    tmp_path: Path, variant: str
) -> None:
    rows = agg_trades_rows(20, time_unit=1000 if variant == "headerless_spot" else 1)
    if variant == "headerless_spot":  # spot dumps: an is_best_match column, µs since 2025
        rows = [r + ["true"] for r in rows]
    header = (
        []
        if variant != "header"
        else [
            "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
        ]
    )
    path = tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv"
    path.write_text("\n".join(header + [",".join(r) for r in rows]) + "\n")
    layout = layout_of(path)
    assert (layout.kind, layout.format, layout.symbol) == ("trades", "Binance aggTrades", "BTCUSDT")
    if variant != "header":
        assert layout.header is not None and any("no header line" in n for n in layout.notes)
    b = read(layout)
    assert len(b) == 20  # the first row (first_trade_id == last_trade_id) is data, not a header
    assert b.ts_event.tolist() == [T0_NS + 10 * i * 10**6 for i in range(20)]
    # is_buyer_maker = true: the buyer's order rested, the aggressor SOLD
    assert b.side.tolist() == [-1 if i % 2 == 0 else 1 for i in range(20)]
    assert b.size[0] == 0.001


@pytest.mark.parametrize("variant", ["header", "headerless_spot"])
def test_binance_trades_csv_is_trades(tmp_path: Path, variant: str) -> None:
    rows = [
        [str(1 + i), "61837.64", "0.00020", "12.367528", str(T0_MS + i), "True" if i else "False"]
        for i in range(5)
    ]
    if variant == "header":
        text = "id,price,qty,quote_qty,time,is_buyer_maker\n"
    else:
        text = ""
        rows = [r + ["True"] for r in rows]
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_text(text + "\n".join(",".join(r) for r in rows) + "\n")
    layout = layout_of(path)
    assert (layout.kind, layout.format) == ("trades", "Binance trades")
    b = read(layout)
    assert b.side.tolist() == [1, -1, -1, -1, -1] and b.price[0] == 61837.64


def test_tardis_quotes_gz_and_trades_csv_in_microseconds(tmp_path: Path) -> None:
    tardis_quotes_csv_gz(tmp_path / "binance_quotes_2024-08-08_ETHUSDT.csv.gz")
    tardis_trades_csv(tmp_path / "binance_trades_2024-08-08_ETHUSDT.csv")
    found = discover_files(tmp_path)
    kinds = {f.path.name: (f.kind, f.format) for f in found.files}
    assert kinds == {
        "binance_quotes_2024-08-08_ETHUSDT.csv.gz": ("quotes", "Tardis quotes"),
        "binance_trades_2024-08-08_ETHUSDT.csv": ("trades", "Tardis trades"),
    }
    inst = InstrumentTable([Instrument(symbol="ETHUSDT", tick_size=0.01, lot_size=1e-4)])
    q = read(found.of_kind("quotes")[0], inst)
    assert q.ts_event[0] == T0_NS and q.ts_recv[0] == T0_NS + 250_000  # local_timestamp
    assert (q.bid[0], q.ask[0], q.bid_size[0], q.ask_size[0]) == (2650.10, 2650.11, 2.25, 3.5)
    t = read(found.of_kind("trades")[0], inst)
    assert t.side.tolist()[:3] == [-1, 1, 1] and t.size[0] == 0.1


def test_tardis_files_replay_through_the_cli_with_instruments_inferred(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    tardis_quotes_csv_gz(data / "q.csv.gz", 400)
    tardis_trades_csv(data / "t.csv", 400)
    assert main(["replay", str(data), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "note: ETHUSDT: not in the config; tick_size 0.01" in err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["ticks"] == 800 and "ETHUSDT" in metrics["header"]["instruments"]


def test_kind_comes_from_columns_not_the_name_and_skipped_files_are_named(
    tmp_path: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_dir / "quotes.parquet", data / "btc_book.parquet")
    shutil.copy(sample_dir / "trades.parquet", data / "prints.parquet")
    (data / "notes.txt").write_text("hello")
    pl.DataFrame({"a": [1], "b": [2]}).write_csv(data / "other.csv")
    found = discover_files(data)
    assert {f.path.name: f.kind for f in found.files} == {
        "btc_book.parquet": "quotes",
        "prints.parquet": "trades",
    }
    assert [p.name for p, _ in found.skipped] == ["notes.txt", "other.csv"]
    assert main(["replay", str(data), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipped {data / 'notes.txt'}: not a .parquet" in err
    assert f"warning: skipped {data / 'other.csv'}: columns ['a', 'b'] are neither quotes" in err
    rows = (
        pl.read_parquet(sample_dir / "quotes.parquet").height
        + pl.read_parquet(sample_dir / "trades.parquet").height
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["ticks"] == rows


def test_a_file_named_quotes_with_a_column_missing_names_the_column(tmp_path: Path) -> None:
    pl.DataFrame(
        {"ts_event": [T0_NS], "symbol": ["X"], "bid": [1.0], "ask": [2.0], "bid_size": [1.0]}
    ).write_parquet(tmp_path / "quotes.parquet")
    found = discover_files(tmp_path)
    with pytest.raises(DataError) as info:
        read(found.files[0])
    assert info.value.column == "ask_size" and "missing column" in info.value.reason


def test_quotes_and_trades_flags_name_files_explicitly(tmp_path: Path, sample_dir: Path) -> None:
    shutil.copy(sample_dir / "quotes.parquet", tmp_path / "a.parquet")
    shutil.copy(sample_dir / "trades.parquet", tmp_path / "b.parquet")
    out = tmp_path / "run"
    argv = [
        "replay",
        "--quotes",
        str(tmp_path / "a.parquet"),
        "--trades",
        str(tmp_path / "b.parquet"),
    ]
    assert main([*argv, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [Path(f["file"]).name for f in metrics["data_files"]] == ["a.parquet", "b.parquet"]
    # a file named as trades whose columns are quotes is refused, naming both
    with pytest.raises(DataError, match="named as trades but its columns are Binance bookTicker"):
        book_ticker_csv(tmp_path / "BTCUSDT-x.csv")
        discover_files(DataSource(trades=(tmp_path / "BTCUSDT-x.csv",)))


def test_column_mapping_reads_any_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "time,sym,best_bid,best_ask,bq,aq\n"
        f"{T0_NS},BTCUSDT,100.5,100.6,1,2\n{T0_NS + 1},BTCUSDT,100.5,100.7,1,2\n"
    )
    columns = parse_column_mapping(
        "ts_event=time, symbol=sym,bid=best_bid,ask=best_ask,bid_size=bq,ask_size=aq"
    )
    found = discover_files(DataSource(path=tmp_path, columns=columns))
    b = read(found.files[0])
    assert b.ts_event.tolist() == [T0_NS, T0_NS + 1] and b.ask.tolist() == [100.6, 100.7]
    with pytest.raises(DataError, match="'mid' is not a tick column"):
        parse_column_mapping("mid=m")


def test_grid_step_is_the_largest_power_of_ten_all_values_fit() -> None:
    assert grid_step(np.array([61837.63, 61837.64, 61840.0])) == 0.01
    assert grid_step(np.array([2650.5, 2651.0, 2650.1])) == 0.1  # a 0.5 grid fits 0.1
    assert grid_step(np.array([100.0, 250.0, 3000.0])) == 1.0  # capped at 1
    assert grid_step(np.array([0.00012345, 0.0001235])) == 1e-8
    assert grid_step(np.array([3.78826, 0.00009, 1.6052])) == 1e-5
    assert grid_step(np.array([0.0, np.nan])) is None


def test_instruments_inferred_for_symbols_not_in_the_config(sample_dir: Path) -> None:
    cfg = make_config(instruments=[{"symbol": "BTC-USD", "tick_size": 0.01, "lot_size": 1e-5}])
    cfg2, _, notes = with_data_instruments(cfg, sample_dir)
    symbols = [i.symbol for i in cfg2.instruments]
    assert symbols == ["BTC-USD", "ETH-USD"]
    eth = cfg2.instruments[1]
    prices = pl.read_parquet(sample_dir / "quotes.parquet").filter(pl.col("symbol") == "ETH-USD")
    assert all(eth.is_on_tick(p) for p in prices["bid"].head(500).to_list())
    assert any(n.startswith("ETH-USD: not in the config; tick_size") for n in notes)


def test_timestamps_in_milliseconds_replay_in_their_real_time(
    tmp_path: Path, sample_dir: Path
) -> None:
    for name in ("quotes", "trades"):
        df = pl.read_parquet(sample_dir / f"{name}.parquet")
        df.with_columns(pl.col("ts_event") // 10**6, pl.col("ts_recv") // 10**6).write_csv(
            tmp_path / f"{name}.csv"
        )
    cfg = make_config()
    run = run_replay(cfg, tmp_path, progress=False)
    first = pl.read_parquet(sample_dir / "quotes.parquet")["ts_event"].min()
    assert run.engine.counters["ticks"] > 0
    assert run.engine.clock.now_ns() > first  # not 1970: converted, not stretched
    found = discover_files(tmp_path)
    assert all(f.ts_unit.get("ts_event") == "ms" for f in found.files)


def test_implausible_integer_timestamps_are_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text("ts_event,symbol,bid,ask,bid_size,ask_size\n123,BTCUSDT,1,2,1,1\n")
    with pytest.raises(DataError) as info:
        read(layout_of(path))
    assert (info.value.row, info.value.column) == (0, "ts_event")
    assert "outside 2000-01-01 .. 2100-01-01" in info.value.reason


def test_time_range_filters_rows_and_skips_parquet_row_groups(tmp_path: Path) -> None:
    n = 1000
    df = pl.DataFrame(
        {
            "ts_event": [T0_NS + i * 10**9 for i in range(n)],
            "symbol": ["BTCUSDT"] * n,
            "bid": [100.0] * n,
            "ask": [100.01] * n,
            "bid_size": [1.0] * n,
            "ask_size": [1.0] * n,
        }
    )
    pq.write_table(df.to_arrow(), tmp_path / "q.parquet", row_group_size=100)
    df.write_csv(tmp_path / "q.csv")
    start, end = T0_NS + 250 * 10**9, T0_NS + 420 * 10**9
    for name in ("q.parquet", "q.csv"):
        layout = layout_of(tmp_path / name)
        reader = TickFileReader(
            layout.path, "quotes", INST, layout=layout, start_ns=start, end_ns=end, chunk_rows=64
        )
        b = TickBatch.concat(list(reader))
        assert b.ts_event.tolist() == [T0_NS + i * 10**9 for i in range(250, 420)]
    # the row groups wholly outside the range are not read: a corrupt value there is unseen
    bad = df.with_columns(
        pl.when(pl.int_range(n) == 5).then(-1.0).otherwise(pl.col("bid")).alias("bid")
    )
    pq.write_table(bad.to_arrow(), tmp_path / "bad.parquet", row_group_size=100)
    layout = layout_of(tmp_path / "bad.parquet")
    assert len(read(layout, start_ns=start, end_ns=end)) == 170


def test_time_range_from_the_cli_in_iso(tmp_path: Path, sample_dir: Path) -> None:
    first = int(pl.read_parquet(sample_dir / "quotes.parquet")["ts_event"].min())  # type: ignore[arg-type]
    start = first + 60 * 10**9
    end = first + 300 * 10**9
    iso = np.datetime64(start, "ns").astype("datetime64[ms]").astype(str) + "Z"
    assert parse_time_ns(iso) == start // 10**6 * 10**6
    assert parse_time_ns(str(start // 10**9)) == start // 10**9 * 10**9  # seconds by magnitude
    out = tmp_path / "run"
    assert (
        main(["replay", str(sample_dir), "--start", iso, "--end", str(end), "--out", str(out)]) == 0
    )
    equity = pl.read_parquet(out / "equity.parquet")
    assert equity["ts_event"].min() >= start // 10**9 * 10**9 - 10**9
    assert equity["ts_event"].max() <= end + 10**9
    with pytest.raises(DataError, match="neither ISO-8601"):
        parse_time_ns("yesterday")


def test_init_writes_a_config_that_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    book_ticker_csv(data / "BTCUSDT-bookTicker-2024-08-08.csv", 300)
    rows = agg_trades_rows(100)
    (data / "BTCUSDT-aggTrades-2024-08-08.csv").write_text(
        "\n".join(",".join(r) for r in rows) + "\n"
    )
    cfg_path = tmp_path / "my.toml"
    assert main(["init", str(data), "--out", str(cfg_path)]) == 0
    cfg, _ = load_config(cfg_path)
    assert [(i.symbol, i.venue, i.tick_size, i.lot_size) for i in cfg.instruments] == [
        ("BTCUSDT", "BINANCE", 0.01, 1e-5)
    ]
    assert "tradeloop init" in cfg_path.read_text()
    assert main(["init", str(data), "--out", str(cfg_path)]) == 2  # no silent overwrite
    out = tmp_path / "run"
    assert main(["replay", str(data), "--config", str(cfg_path), "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["ticks"] == 400
    err = capsys.readouterr().err
    assert "no header line; read as Binance aggTrades" in err


def test_infer_instruments_reads_symbols_from_every_row(tmp_path: Path) -> None:
    n = 300_000  # more than one chunk: a symbol first seen late still gets an instrument
    symbols = ["AAA"] * (n - 10) + ["LATE"] * 10
    prices = [10.5] * (n - 10) + [0.0123] * 10
    pl.DataFrame(
        {
            "ts_event": [T0_NS + i for i in range(n)],
            "symbol": symbols,
            "price": prices,
            "size": [2.0] * n,
            "side": ["buy"] * n,
        }
    ).write_parquet(tmp_path / "t.parquet", row_group_size=100_000)
    inferred = {
        i.instrument.symbol: i.instrument for i in infer_instruments(discover_files(tmp_path))
    }
    assert inferred["AAA"].tick_size == 0.1 and inferred["LATE"].tick_size == 1e-4
    assert inferred["AAA"].lot_size == 1.0


def test_parquet_arrow_timestamp_range_uses_its_unit(tmp_path: Path) -> None:
    seconds = [T0_MS // 1000 + i for i in range(10)]
    t = pa.table(
        {
            "ts_event": pa.array([s * 1000 for s in seconds], pa.timestamp("ms")),
            "symbol": ["BTCUSDT"] * 10,
            "bid": [1.0] * 10,
            "ask": [1.01] * 10,
            "bid_size": [1.0] * 10,
            "ask_size": [1.0] * 10,
        }
    )
    pq.write_table(t, tmp_path / "q.parquet", row_group_size=2)
    layout = layout_of(tmp_path / "q.parquet")
    b = read(layout, start_ns=seconds[4] * 10**9, end_ns=seconds[6] * 10**9)
    assert b.ts_event.tolist() == [seconds[4] * 10**9, seconds[5] * 10**9]


# ---- the real Binance capture, through the CLI, without editing any config ----


def test_real_binance_files_with_arbitrary_names_replay_and_train_in_two_commands(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mine"
    data.mkdir()
    shutil.copy(real_data / "spot_btcusdt_20240809-quotes.parquet", data / "btc_book.parquet")
    shutil.copy(real_data / "spot_btcusdt_20240809-trades.parquet", data / "btc_fills_feed.parquet")
    out = tmp_path / "run"
    assert main(["replay", str(data), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ticks"] == REAL_ROWS["20240809"] and metrics["bad_rows_skipped"] == {}
    assert metrics["header"]["data_from"].startswith("2024-08-09")
    model = tmp_path / "model"
    cfg_text = (Path(__file__).resolve().parents[3] / "replay" / "ml_config.toml").read_text()
    small = tomllib.loads(cfg_text)
    small["train"] |= {"min_data_in_leaf": 20, "folds": 2}
    assert config_from_dict(small)  # the bundled ML config minus its small-data defaults
    ml = tmp_path / "ml.toml"
    from replay.files.init_config import config_toml

    ml.write_text(config_toml(small))
    assert main(["train", str(data), "--config", str(ml), "--out", str(model)]) == 0
    assert (model / "manifest.json").exists()
    assert "BTCUSDT: not in the config" in capsys.readouterr().err


def test_real_binance_folder_replays_with_the_bundled_config(
    real_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert main(["replay", str(real_data), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ticks"] == sum(REAL_ROWS.values())
    assert metrics["header"]["data_from"].startswith("2024-08-08")
    assert metrics["header"]["data_to"].startswith("2024-08-09")


def test_real_binance_time_range_selects_one_day(real_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["replay", str(real_data), "--start", "2024-08-09", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["ticks"] == REAL_ROWS["20240809"]
