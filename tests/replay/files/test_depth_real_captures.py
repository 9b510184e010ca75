"""The book on the real Binance captures (``../shared/data/binance-raw``), against the
bookTicker stream of the same capture, and replay's as-of L2 features against training's.

The rule for top-of-book agreement: a bookTicker carries the order-book update id ``u`` it
reflects; where a depth update ends on exactly that id, the book's best bid and ask
(price and size) must equal the ticker's, or read as unknown (the touch lies past what the
book knows: beyond a REST snapshot's last level). A different price or size is a
disagreement. Measured (2 cores, this run's converter): 2024-08-08 (a 1,000-level REST
snapshot saved in the capture): 564 matched ids, 559 equal, 5 unknown (bids fell below the
snapshot's last bid), 0 disagreements; 2024-08-09 (no snapshot, a partial book): 507
matched, 507 equal. The first version, which kept 80 levels per side, disagreed on 1 of
564 and 1 of 507 (a level dropped while far from the touch); the price grid does not.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import msgspec
import numpy as np
import pytest

from engine.book.batch import F_END, DepthBatch
from engine.book.book import OrderBook
from engine.book.source import DepthAsOf
from engine.config import config_from_dict
from engine.features import FeatureSet, FeatureSpec
from engine.features.book_features import BookFeatureSet
from engine.instruments import Instrument, InstrumentTable
from engine.ticks import TickBatch
from replay.files.depth.command import convert
from replay.files.depth.reader import DepthFileReader
from replay.files.readers import TickFileReader
from replay.research.dataset import book_features_asof

RAW = Path(__file__).resolve().parents[4] / "shared" / "data" / "binance-raw"
if not RAW.exists():
    RAW = Path("/work/shared/data/binance-raw")
pytestmark = pytest.mark.skipif(
    not RAW.exists(), reason=f"real Binance captures not found at {RAW} (../shared/data)"
)
DAYS = {"20240808": (564, 559, 5), "20240809": (507, 507, 0)}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("book")
    convert([RAW / f"spot_btcusdt_{d}.jsonl.gz" for d in DAYS], out)
    return out


def _tickers(path: Path) -> dict[int, tuple[float, float, float, float]]:
    dec = msgspec.json.Decoder()
    out = {}
    with gzip.open(path, "rb") as f:
        for line in f:
            data = dec.decode(line.partition(b" ")[2])
            data = data.get("data", data)
            if "B" in data and "e" not in data:
                out[int(data["u"])] = (float(data["b"]), float(data["B"]), float(data["a"]),
                                       float(data["A"]))  # fmt: skip
    return out


@pytest.mark.parametrize("day", list(DAYS))
def test_book_top_agrees_with_bookticker_on_real_captures(converted: Path, day: str) -> None:
    tickers = _tickers(RAW / f"spot_btcusdt_{day}.jsonl.gz")
    rows = DepthBatch.concat(
        list(DepthFileReader(converted / f"spot_btcusdt_{day}-depth.parquet", {"BTCUSDT": 0}))
    )
    book = OrderBook(1, 20)
    matched = equal = unknown = 0
    start = 0
    for end in np.flatnonzero(rows.flags & F_END):
        book.apply(rows.slice(start, end + 1))
        start = end + 1
        ticker = tickers.get(int(rows.last_update_id[end]))
        if ticker is None or not book.in_sync(0):
            continue
        matched += 1
        top = (*book.best_bid(0), *book.best_ask(0))
        if top == ticker:
            equal += 1
        elif np.isnan(top[0]) or np.isnan(top[2]):
            unknown += 1
    assert (matched, equal, unknown) == DAYS[day]
    assert book.counters(0)["gaps"] == 0


def test_replay_asof_l2_features_equal_training_for_any_batching(converted: Path) -> None:
    specs = [
        FeatureSpec(name="imb5", kind="l2_imbalance", levels=5),
        FeatureSpec(name="ofi", kind="ofi", half_life="1s"),
        FeatureSpec(name="band", kind="depth_bid_bps", bps=5.0),
        FeatureSpec(name="adds", kind="add_rate_ask", bps=5.0, half_life="2s"),
    ]
    fs = FeatureSet([FeatureSpec(name="mid", kind="mid"), *specs])
    inst = InstrumentTable([Instrument(symbol="BTCUSDT", tick_size=0.01)])
    quotes = _concat(
        TickFileReader(converted / f"spot_btcusdt_{d}-quotes.parquet", "quotes", inst) for d in DAYS
    )
    config = config_from_dict({"instruments": [{"symbol": "BTCUSDT", "tick_size": 0.01}],
                               "features": [{"name": "mid", "kind": "mid"}]})  # fmt: skip
    want = book_features_asof(config, converted, inst, list(fs.book_specs), quotes.ts_event,
                              quotes.instrument)  # fmt: skip
    assert np.isfinite(want).mean() > 0.9
    for size in (211, 4_999, 100_000):
        depth = (
            b
            for d in sorted(DAYS)
            for b in DepthFileReader(converted / f"spot_btcusdt_{d}-depth.parquet",
                                     inst.index, chunk_rows=4_099)
        )  # fmt: skip
        source = DepthAsOf(BookFeatureSet(list(fs.book_specs), 1, ticks=[0.01]), depth)
        got = np.vstack([source.asof(quotes.slice(a, a + size))
                         for a in range(0, len(quotes), size)])  # fmt: skip
        assert got.tobytes() == want.tobytes(), size


def _concat(readers: Iterable[TickFileReader]) -> TickBatch:
    return TickBatch.concat([b for r in readers for b in r])


L2_CONFIG = {
    "instruments": [{"symbol": "BTCUSDT", "tick_size": 0.01, "lot_size": 1e-5}],
    "features": [
        {"name": "mid", "kind": "mid"},
        {"name": "imb5", "kind": "l2_imbalance", "levels": 5},
        {"name": "spread", "kind": "spread_bps"},
        {"name": "ofi", "kind": "ofi", "half_life": "1s"},
    ],
    "strategy": {"name": "ema_cross", "params": {"qty": 0.001}},
}


def test_training_dataset_and_replay_read_l2_features_from_the_depth_files(
    converted: Path,
) -> None:
    from replay.backtest.runner import run_replay
    from replay.research.dataset import build_dataset

    config = config_from_dict(L2_CONFIG)
    data = build_dataset(config, converted, progress=False)
    assert data.feature_names == ["mid", "imb5", "spread", "ofi"]
    inst = InstrumentTable(list(config.instruments))
    fs = FeatureSet(list(config.features))
    want = book_features_asof(config, converted, inst, list(fs.book_specs), data.ts,
                              data.instrument)  # fmt: skip
    assert data.X[:, [1, 3]].tobytes() == want.tobytes()
    assert np.isfinite(data.X[:, 1]).mean() > 0.9
    run = run_replay(config, converted, progress=False)
    assert run.engine.counters["ticks"] == 73_174 + 19_904
    assert np.isfinite(run.engine.features_now(0)["imb5"])
