"""``tradeloop book``: convert L2 data to the tradeloop depth parquet, and say what a depth
file's book looks like (status, gaps, from when each side is known).

    tradeloop book convert CAPTURE.jsonl.gz --out DIR   # Binance capture: depth+quotes+trades
    tradeloop book convert L2.csv.gz --out DIR          # Tardis incremental_book_L2
    tradeloop book info DIR/x-depth.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.book.book import OrderBook
from engine.errors import AdapterError, DataError
from replay.files.depth.binance import read_capture, read_rest_snapshot
from replay.files.depth.reader import DepthFileReader
from replay.files.depth.table import DepthTable
from replay.files.depth.tardis import read_tardis_l2

__all__ = ["add_book_commands", "book_report", "convert"]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".txt"):
        name = name.removesuffix(suffix)
    return name


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if ".csv" in name:
        return "tardis"
    if ".jsonl" in name or ".json" in name or ".txt" in name:
        return "binance"
    raise DataError(str(path), "cannot tell the format from the name: give --format")


def _write_columns(columns: dict[str, list[Any]], path: Path) -> None:
    try:
        pq.write_table(pa.table(columns), path, compression="zstd")
    except (OSError, pa.ArrowException) as exc:
        raise AdapterError(f"cannot write {path}: {exc}") from exc


def book_report(path: Path, levels: int = 20) -> list[str]:
    """Lines saying, per symbol of a depth file, how its book ends up: status, updates,
    gaps, resets, snapshots, and from when each side's levels are known."""
    symbols = sorted(set(pq.read_table(path, columns=["symbol"]).column(0).to_pylist()))
    index = {s: k for k, s in enumerate(symbols)}
    book = OrderBook(len(symbols), levels)
    for batch in DepthFileReader(path, index):
        book.apply(batch)
    lines = []
    for s, i in index.items():
        c = book.counters(i)
        bid_since, ask_since = book.known_since_ns(i)
        since = (
            "levels known from the snapshot"
            if c["snapshots"]
            else f"no snapshot: bid levels known only if updated since ts {bid_since}, "
            f"ask levels since ts {ask_since}"
        )
        lines.append(
            f"{s}: book {book.status(i)}; {c['updates']} updates applied, {c['gaps']} gaps, "
            f"{c['resets']} resets, {c['stale']} stale, {c['dropped_out_of_sync']} dropped "
            f"out of sync, {c['snapshots']} snapshots; {since}"
        )
    return lines


def convert(
    sources: list[Path],
    out: Path,
    *,
    fmt: str = "auto",
    snapshot: Path | None = None,
    symbol: str | None = None,
) -> list[str]:
    """Convert each source into ``out``; returns the lines to print.

    Raises:
        DataError: a source cannot be read or has no depth data.
        AdapterError: an output file cannot be written.
    """
    for src in sources:
        if not src.is_file():
            raise DataError(str(src), "no such file")
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for src in sources:
        kind = _format_of(src, fmt)
        stem = _stem(src)
        depth: DepthTable
        refused: dict[str, int]
        if kind == "binance":
            snap = read_rest_snapshot(snapshot) if snapshot is not None else None
            tables = read_capture(src, snapshot=snap, symbol=symbol)
            depth, refused = tables.depth, dict(tables.refused)
            for name, cols in (("quotes", tables.quotes), ("trades", tables.trades)):
                if cols["ts_event"]:
                    target = out / f"{stem}-{name}.parquet"
                    _write_columns(cols, target)
                    lines.append(f"wrote {target} ({len(cols['ts_event'])} rows)")
            if tables.snapshots_placed:
                lines.append(
                    f"{src.name}: {tables.snapshots_placed} depth snapshot(s); "
                    f"{tables.replayed_diffs} diffs received before one applied again after it"
                )
        elif kind == "tardis":
            ttables = read_tardis_l2(src)
            depth, refused = ttables.depth, dict(ttables.refused)
        else:
            raise DataError(str(src), f"unknown format {kind!r} (binance or tardis)")
        for reason, n in refused.items():
            lines.append(f"{src.name}: refused {n} messages: {reason}")
        if not len(depth):
            raise DataError(str(src), "no depth updates found")
        target = out / f"{stem}-depth.parquet"
        depth.write(target)
        lines.append(f"wrote {target} ({len(depth)} rows, {depth.updates} updates)")
        lines.extend(book_report(target))
    return lines


def _cmd_convert(args: argparse.Namespace) -> int:
    lines = convert(
        [Path(p) for p in args.sources],
        Path(args.out),
        fmt=args.format,
        snapshot=Path(args.snapshot) if args.snapshot else None,
        symbol=args.symbol,
    )
    print("\n".join(lines))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise DataError(str(path), "no such file")
    print("\n".join(book_report(path, args.levels)))
    return 0


def add_book_commands(sub: Any) -> None:
    """Register ``tradeloop book convert`` and ``tradeloop book info``."""
    book = sub.add_parser(
        "book",
        help="L2 order-book data: convert Binance captures and Tardis files to depth parquet",
    )
    cmds = book.add_subparsers(dest="book_command", required=True)
    conv = cmds.add_parser(
        "convert",
        help="Binance captures (<ns> <json> per line) or Tardis incremental_book_L2 CSV "
        "to depth parquet (captures also give quotes and trades parquet)",
    )
    conv.add_argument("sources", nargs="+", metavar="SRC")
    conv.add_argument("--out", required=True, help="folder for the parquet files")
    conv.add_argument("--format", choices=("auto", "binance", "tardis"), default="auto")
    conv.add_argument(
        "--snapshot", help="Binance REST depth snapshot (JSON) taken at the stream's start"
    )
    conv.add_argument("--symbol", help="keep only this symbol (Binance captures)")
    conv.set_defaults(func=_cmd_convert)
    info = cmds.add_parser("info", help="a depth file's book: status, gaps, known since")
    info.add_argument("file")
    info.add_argument("--levels", type=int, default=20)
    info.set_defaults(func=_cmd_info)
