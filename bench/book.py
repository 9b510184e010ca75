"""L2 book throughput on a real capture: tradeloop's numba book (alone, and with every L2
feature kind) against hftbacktest 2.4.4 building its market depth from the same rows, and
polars reading the depth file; memory against the stream's length.

    .venv/bin/python bench/book.py [--capture ../shared/data/binance-raw/spot_btcusdt_20240809.jsonl.gz]

Each figure is the median of ``--runs`` runs on fresh state (compilation excluded). The
rows are the depth parquet's (one level change each); hftbacktest gets the same rows as
its events (snapshot rows as DEPTH_SNAPSHOT_EVENT, the rest DEPTH_EVENT) and processes
them inside ``elapse`` over the whole span. Memory: the peak RSS of a child process that
streams the file once and then eight times over (restart markers between the copies, so
every copy is real work), in 65,536-row chunks.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import begin, end, median, runs
from engine.book.batch import F_END, F_RESET, F_SNAPSHOT, DepthBatch
from engine.book.book import OrderBook
from engine.features.book_features import L2_KINDS, BookFeatureSet, BookFeatureSpec
from replay.files.depth.command import convert
from replay.files.depth.reader import DepthFileReader

DEFAULT = (
    Path(__file__).resolve().parents[2] / "shared/data/binance-raw/spot_btcusdt_20240809.jsonl.gz"
)
SPECS = [BookFeatureSpec(name=k, kind=k, levels=10, bps=5.0, half_life_ns=1_000_000_000)
         for k in L2_KINDS]  # fmt: skip


def _rows(path: Path) -> DepthBatch:
    return DepthBatch.concat(list(DepthFileReader(path, {"BTCUSDT": 0})))


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _hft_events(rows: DepthBatch) -> np.ndarray:  # type: ignore[type-arg]
    import hftbacktest as h

    ev = np.zeros(len(rows), h.event_dtype)
    level = rows.side != 0
    kind = np.where(rows.flags & F_SNAPSHOT, h.DEPTH_SNAPSHOT_EVENT, h.DEPTH_EVENT)
    side = np.where(rows.side > 0, h.BUY_EVENT, h.SELL_EVENT)
    ev["ev"] = (kind | side | h.EXCH_EVENT | h.LOCAL_EVENT).astype(np.uint64)
    ev["exch_ts"] = rows.ts_event
    ev["local_ts"] = rows.ts_event
    ev["px"] = rows.price
    ev["qty"] = rows.qty
    return ev[level]


def _hft_run(events: np.ndarray, roi: bool) -> tuple[float, float]:  # type: ignore[type-arg]
    import hftbacktest as h

    asset = (h.BacktestAsset().data([events]).linear_asset(1.0)
             .constant_order_latency(0, 0).risk_adverse_queue_model()
             .no_partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
             .tick_size(0.01).lot_size(0.00001).last_trades_capacity(0))  # fmt: skip
    if roi:
        mid = float(np.median(events["px"]))
        asset = asset.roi_lb(round(mid * 0.9, 2)).roi_ub(round(mid * 1.1, 2))
        hbt = h.ROIVectorMarketDepthBacktest([asset])
    else:
        hbt = h.HashMapMarketDepthBacktest([asset])
    span = int(events["local_ts"][-1] - events["local_ts"][0]) + 1
    t0 = time.perf_counter()
    hbt.elapse(span)
    dt = time.perf_counter() - t0
    best = hbt.depth(0).best_bid
    hbt.close()
    return dt, best


def _stream(path: Path, copies: int) -> Iterator[DepthBatch]:
    shift = 0
    for _ in range(copies):
        marker = DepthBatch.from_columns(
            ts_event=[shift], ts_recv=[shift], instrument=[0], side=[0], price=[np.nan],
            qty=[np.nan], snapshot=[True], reset=[True], end=[True], first_update_id=[0],
            last_update_id=[0], prev_update_id=[-1],
        )  # fmt: skip
        yield marker
        last = 0
        for b in DepthFileReader(path, {"BTCUSDT": 0}, chunk_rows=65_536, restart=False):
            ts = b.ts_event + shift
            last = int(ts[-1])
            yield DepthBatch(ts, b.ts_recv, b.instrument, b.side, b.price, b.qty, b.flags,
                             b.first_update_id, b.last_update_id, b.prev_update_id)  # fmt: skip
        shift = last + 1
    _ = (F_RESET, F_END)


def _child(path: Path, copies: int) -> None:
    fs = BookFeatureSet(SPECS, 1)
    n = 0
    for b in _stream(path, copies):
        fs.update(b)
        n += len(b)
    print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--capture", type=Path, default=DEFAULT)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rss-child", nargs=2, metavar=("DEPTH", "COPIES"))
    args = p.parse_args()
    if args.rss_child:
        _child(Path(args.rss_child[0]), int(args.rss_child[1]))
        return
    started = begin("bench/book.py: L2 book updates and features per second, real capture")
    tmp = Path(tempfile.mkdtemp(prefix="tl-book-"))
    convert([args.capture], tmp)
    depth = next(tmp.glob("*-depth.parquet"))
    rows = _rows(depth)
    n = len(rows)
    print(f"capture: {args.capture.name}: {n:,} depth rows (level changes), "
          f"{int(((rows.flags & F_END) != 0).sum()):,} updates")  # fmt: skip

    import polars as pl

    pl.read_parquet(depth)
    t_polars = [_time(lambda: pl.read_parquet(depth)) for _ in range(args.runs)]

    OrderBook(1, 20).apply(rows.slice(0, 100))
    t_book = []
    for _ in range(args.runs):
        book = OrderBook(1, 20)
        t_book.append(_time(lambda book=book: book.apply(rows)))
    BookFeatureSet(SPECS, 1).update(rows.slice(0, 100))
    t_feat = []
    for _ in range(args.runs):
        fs = BookFeatureSet(SPECS, 1)
        t_feat.append(_time(lambda fs=fs: fs.update(rows)))

    events = _hft_events(rows)
    _hft_run(events[:1000], roi=False)
    t_hash = [_hft_run(events, roi=False)[0] for _ in range(args.runs)]
    t_roi = [_hft_run(events, roi=True)[0] for _ in range(args.runs)]

    def rate(ts: list[float], count: int = n) -> str:
        return runs([count / t / 1e6 for t in ts], ".2f") + " M rows/s"

    print(f"polars read_parquet (reference):       {rate(t_polars)}")
    print(f"tradeloop book alone:                   {rate(t_book)}")
    print(f"tradeloop book + {len(SPECS)} L2 features:       {rate(t_feat)}")
    print(f"hftbacktest 2.4.4 HashMap depth:        {rate(t_hash, len(events))}")
    print(f"hftbacktest 2.4.4 ROIVector depth:      {rate(t_roi, len(events))}")
    r_feat = median([n / t for t in t_feat])
    print(f"ratio book+features / hftbacktest HashMap: "
          f"{r_feat / median([len(events) / t for t in t_hash]):.2f}x; / ROIVector: "
          f"{r_feat / median([len(events) / t for t in t_roi]):.2f}x; / polars read: "
          f"{r_feat / median([n / t for t in t_polars]):.2f}x")  # fmt: skip
    print(
        f"ratio book alone / hftbacktest HashMap: "
        f"{median([n / t for t in t_book]) / median([len(events) / t for t in t_hash]):.2f}x"
    )
    peaks = []
    for copies in (1, 8):
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(depth), str(copies)],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
        peaks.append((int(out[0]), int(out[1])))
        print(f"memory: {int(out[0]):,} rows streamed ({copies}x the file): peak RSS "
              f"{int(out[1]) / 1024:.0f} MiB")  # fmt: skip
    print(f"memory ratio 8x / 1x length: {peaks[1][1] / peaks[0][1]:.2f}")
    end(started)


if __name__ == "__main__":
    main()
