"""Depth converters and reader (``replay.files.depth``): Binance captures (with a REST
snapshot saved in them or given apart), Tardis ``incremental_book_L2`` CSV, the depth
parquet reader's bad-row rules, and the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.book.batch import DepthBatch
from engine.book.book import OrderBook
from engine.errors import DataError
from replay.cli import main
from replay.files.depth.binance import read_capture
from replay.files.depth.command import convert
from replay.files.depth.reader import DepthFileReader, is_depth_file
from replay.files.depth.tardis import read_tardis_l2
from replay.files.discovery import discover_files

T0 = 1_723_161_253_000_000_000
MS = 1_000_000


def _diff(t: int, first: int, last: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    data = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": first, "u": last, "b": bids,
            "a": asks}  # fmt: skip
    return f"{T0 + t * MS} " + json.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def _write_capture(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _book(path: Path) -> OrderBook:
    book = OrderBook(1, 10)
    for batch in DepthFileReader(path, {"BTCUSDT": 0}):
        book.apply(batch)
    return book


CAPTURE = [
    _diff(0, 1, 5, [["100.00", "1.0"]], [["101.00", "2.0"]]),
    _diff(100, 6, 10, [["100.50", "3.0"]], []),
    # the REST snapshot, received after the diff 6..10 that covers id 9 (it says 8)
    f"{T0 + 150 * MS} "
    + json.dumps(
        {
            "lastUpdateId": 8,
            "bids": [["100.00", "1.5"], ["99.00", "4.0"]],
            "asks": [["101.00", "2.5"]],
        }
    ),
    f"{T0 + 160 * MS} "
    + json.dumps(
        {
            "stream": "btcusdt@bookTicker",
            "data": {"u": 10, "s": "BTCUSDT", "b": "100.50", "B": "3.0", "a": "101.00", "A": "2.5"},
        }
    ),
    f"{T0 + 170 * MS} "
    + json.dumps(
        {
            "stream": "btcusdt@trade",
            "data": {"e": "trade", "s": "BTCUSDT", "p": "101.00", "q": "0.5", "m": False},
        }
    ),
    "not a line",
    _diff(200, 11, 12, [["100.50", "0"]], [["101.00", "2.0"]]),
]


def test_binance_capture_snapshot_saved_in_it_reapplies_the_diffs_it_does_not_cover(
    tmp_path: Path,
) -> None:
    src = _write_capture(tmp_path / "cap.jsonl.gz", CAPTURE)
    lines = convert([src], tmp_path / "out")
    depth = tmp_path / "out" / "cap-depth.parquet"
    assert is_depth_file(depth)
    assert pq.read_table(tmp_path / "out" / "cap-quotes.parquet").num_rows == 1
    trades = pq.read_table(tmp_path / "out" / "cap-trades.parquet").to_pylist()
    assert trades[0]["side"] == "buy" and trades[0]["size"] == 0.5
    assert any("refused 1 messages" in line for line in lines)
    assert any("1 diffs received before one applied again" in line for line in lines)
    book = _book(depth)
    assert book.status(0) == "synced"
    # snapshot (100: 1.5, 99: 4; 101: 2.5), diff 6..10 again (100.5: 3), diff 11..12
    assert book.levels_of(0, 1)[0].tolist() == [100.0, 99.0]
    assert book.best_ask(0) == (101.0, 2.0)
    assert book.counters(0)["gaps"] == 0


def test_binance_capture_gap_puts_the_book_out_of_sync(tmp_path: Path) -> None:
    lines = [*CAPTURE, _diff(300, 15, 16, [["100.00", "9.0"]], [])]
    src = _write_capture(tmp_path / "gap.jsonl.gz", lines)
    convert([src], tmp_path / "out")
    book = _book(tmp_path / "out" / "gap-depth.parquet")
    assert book.status(0) == "out_of_sync"
    assert book.counters(0)["gaps"] == 1
    report = convert([src], tmp_path / "out2")[-1]
    assert "book out_of_sync" in report and "1 gaps" in report


def test_binance_rest_snapshot_apart_goes_before_the_first_diff_it_does_not_cover(
    tmp_path: Path,
) -> None:
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"lastUpdateId": 7, "bids": [["99.00", "1.0"]],
                                "asks": [["102.00", "1.0"]]}))  # fmt: skip
    src = _write_capture(tmp_path / "d.jsonl.gz", [CAPTURE[0], CAPTURE[1], CAPTURE[6]])
    convert([src], tmp_path / "out", snapshot=snap)
    rows = pq.read_table(tmp_path / "out" / "d-depth.parquet").to_pydict()
    # diff 1..5 (u <= 7, before the snapshot: a partial book), snapshot, 6..10, 11..12
    assert rows["snapshot"].index(True) == 2
    book = _book(tmp_path / "out" / "d-depth.parquet")
    assert book.status(0) == "synced"
    assert book.best_bid(0) == (99.0, 1.0)  # 100.5 was set by 6..10 and removed by 11..12
    assert book.best_ask(0) == (101.0, 2.0)


def test_binance_capture_without_snapshot_states_when_sides_are_known(tmp_path: Path) -> None:
    src = _write_capture(tmp_path / "p.jsonl.gz", [CAPTURE[0], CAPTURE[1]])
    lines = convert([src], tmp_path / "out")
    assert "book partial" in lines[-1]
    assert f"bid levels known only if updated since ts {T0}" in lines[-1]


TARDIS = """exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount
binance,BTCUSDT,1000,1100,true,bid,100.0,1.0
binance,BTCUSDT,1000,1100,true,ask,101.0,2.0
binance,BTCUSDT,1000,1200,true,bid,99.0,3.0
binance,BTCUSDT,2000,2100,false,bid,100.0,0
binance,BTCUSDT,2000,2100,false,ask,100.5,1.0
binance,BTCUSDT,3000,3100,false,bid,oops,1.0
binance,BTCUSDT,4000,4100,true,bid,98.0,5.0
binance,BTCUSDT,4000,4100,true,ask,99.0,6.0
binance,BTCUSDT,5000,5100,false,ask,99.5,1.0
"""


def test_tardis_snapshot_runs_updates_and_reconnect_snapshot(tmp_path: Path) -> None:
    src = tmp_path / "binance_incremental_book_L2_2024-08-08_BTCUSDT.csv"
    src.write_text(TARDIS)
    tables = read_tardis_l2(src)
    assert tables.snapshots == 2  # the first spans two local_timestamps: one snapshot
    assert sum(tables.refused.values()) == 1
    convert([src], tmp_path / "out")
    depth = tmp_path / "out" / "binance_incremental_book_L2_2024-08-08_BTCUSDT-depth.parquet"
    rows = pq.read_table(depth).to_pydict()
    assert rows["ts_event"][0] == 1000 * 1000 and rows["ts_recv"][0] == 1100 * 1000
    book = _book(depth)
    # the reconnect snapshot replaced the book: 98 / 99, then 99.5 added; 99.5 lies past
    # the snapshot's last ask, where the book does not claim to know every level
    assert book.levels_of(0, 1)[0].tolist() == [98.0]
    assert book.levels_of(0, -1)[0].tolist() == [99.0]
    assert book.size_at(0, -1, 99.5) == 1.0
    assert book.counters(0)["snapshots"] == 2


def test_depth_reader_bad_row_raises_or_becomes_a_reset(tmp_path: Path) -> None:
    src = _write_capture(tmp_path / "c.jsonl.gz", CAPTURE)
    convert([src], tmp_path / "out")
    path = tmp_path / "out" / "c-depth.parquet"
    table = pq.read_table(path).to_pydict()
    table["qty"][4] = -1.0
    bad = tmp_path / "bad-depth.parquet"
    pq.write_table(pq.read_table(path).from_pydict(table, schema=pq.read_schema(path)), bad)
    with pytest.raises(DataError, match="qty") as info:
        list(DepthFileReader(bad, {"BTCUSDT": 0}))
    assert info.value.row == 4
    reader = DepthFileReader(bad, {"BTCUSDT": 0}, on_bad_row="skip")
    book = OrderBook(1, 10)
    for batch in reader:
        book.apply(batch)
    assert reader.counts["qty not finite >= 0"] == 1
    assert book.status(0) == "out_of_sync" and book.counters(0)["resets"] == 1


def test_depth_files_are_discovered_apart_and_cli_converts(tmp_path: Path) -> None:
    src = _write_capture(tmp_path / "c.jsonl.gz", CAPTURE)
    assert main(["book", "convert", str(src), "--out", str(tmp_path / "out")]) == 0
    assert main(["book", "info", str(tmp_path / "out" / "c-depth.parquet")]) == 0
    found = discover_files(tmp_path / "out")
    assert [p.name for p in found.depth] == ["c-depth.parquet"]
    assert sorted(f.kind for f in found.files) == ["quotes", "trades"]
    missing = ["book", "convert", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")]
    assert main(missing) == 2
    assert not (tmp_path / "x").exists()  # nothing written for a user's mistake


def test_depth_batch_from_updates_matches_the_parquet_rows(tmp_path: Path) -> None:
    src = _write_capture(tmp_path / "c.jsonl.gz", CAPTURE)
    tables = read_capture(src)
    batch = DepthBatch.concat(list(DepthFileReader(_written(tables, tmp_path), {"BTCUSDT": 0},
                                                   restart=False)))  # fmt: skip
    assert np.array_equal(batch.last_update_id, tables.depth.numpy("last_update_id"))
    assert int(((batch.flags & 4) != 0).sum()) == tables.depth.updates


def _written(tables: object, tmp_path: Path) -> Path:
    path = tmp_path / "t-depth.parquet"
    tables.depth.write(path)  # type: ignore[attr-defined]
    return path


def test_binance_snapshot_saved_before_any_diff_waits_for_the_first_it_does_not_cover(
    tmp_path: Path,
) -> None:
    snap = f"{T0} " + json.dumps({"lastUpdateId": 3, "bids": [["100.00", "1.0"]],
                                  "asks": [["101.00", "1.0"]]})  # fmt: skip
    src = _write_capture(tmp_path / "s.jsonl.gz", [snap, _diff(10, 2, 5, [["100.00", "2.0"]], [])])
    tables = read_capture(src)
    assert tables.snapshots_placed == 1
    assert tables.depth.columns["symbol"] == ["BTCUSDT"] * 3  # the snapshot takes the diff's
    book = OrderBook(1, 5)
    tables.depth.write(tmp_path / "s-depth.parquet")
    for batch in DepthFileReader(tmp_path / "s-depth.parquet", {"BTCUSDT": 0}):
        book.apply(batch)
    assert book.status(0) == "synced" and book.best_bid(0) == (100.0, 2.0)
