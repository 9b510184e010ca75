"""Fills on the real Binance captures: the top-of-book venue against the depth venue.

One order schedule on each capture (``../shared/data/binance-raw``), run through three venues
(top of book; depth with ``trades_only``; depth with ``power`` 2): every 5 s a buy joins the
best bid and a sell the best ask (0.01 BTC each, cancelled 20 s later), every 30 s a market
order of 2 BTC alternating sides. Run with ``-s`` to see the figures (docs/fills.md has
them). The assertions are the rules that must hold on real data whatever the figures: the
queue makes a resting order fill no sooner and no more than at the top of book, and a market
order walking the book pays at least the touch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from adapters.sim_venue import SimulatedVenue
from engine.book.batch import DepthBatch
from engine.events import CancelRequest, Fill, OrderRequest
from engine.instruments import Instrument, InstrumentTable
from engine.market import ASK, ASK_SIZE, BID, BID_SIZE, MarketState
from engine.ticks import QUOTE, TickBatch

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance-raw"
CAPTURES = ("spot_btcusdt_20240808.jsonl.gz", "spot_btcusdt_20240809.jsonl.gz")
SYM = "BTCUSDT"
PASSIVE_EVERY_NS = 5_000_000_000
PASSIVE_LIFE_NS = 20_000_000_000
MARKET_EVERY_NS = 30_000_000_000
PASSIVE_QTY = 0.01
MARKET_QTY = 2.0
NEVER = 2**63 - 1


@dataclass
class Tally:
    fills: list[Fill] = field(default_factory=list)
    sent: dict[str, OrderRequest] = field(default_factory=dict)
    touch: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        by_order: dict[str, list[Fill]] = defaultdict(list)
        for f in self.fills:
            by_order[f.client_order_id].append(f)
        passive = [c for c in self.sent if c.startswith("p")]
        market = [c for c in self.sent if c.startswith("m")]
        filled_passive = [c for c in passive if by_order.get(c)]
        delays = [(by_order[c][0].ts_event - self.sent[c].ts_event) / 1e9 for c in filled_passive]
        slippage = []
        for c in market:
            got = by_order.get(c, [])
            qty = sum(f.qty for f in got)
            if qty > 0:
                vwap = sum(f.qty * f.price for f in got) / qty
                sign = 1.0 if self.sent[c].side == "buy" else -1.0
                slippage.append(sign * (vwap - self.touch[c]) / self.touch[c] * 1e4)
        return {
            "fills": len(self.fills),
            "passive_sent": len(passive),
            "passive_filled": len(filled_passive),
            "passive_qty": round(sum(f.qty for c in passive for f in by_order.get(c, [])), 8),
            "median_s_to_fill": float(np.median(delays)) if delays else float("nan"),
            "market_qty": round(sum(f.qty for c in market for f in by_order.get(c, [])), 8),
            "market_slippage_bps": float(np.mean(slippage)) if slippage else float("nan"),
        }


def _load(path: Path) -> tuple[TickBatch, DepthBatch]:
    from replay.files.depth.binance import read_capture  # the reader of the book helper

    tables = read_capture(path, symbol=SYM)
    q, t = tables.quotes, tables.trades
    quotes = TickBatch.quotes(
        np.asarray(q["ts_event"], np.int64), np.asarray(q["ts_recv"], np.int64),
        np.zeros(len(q["ts_event"]), np.int32), np.asarray(q["bid"]), np.asarray(q["ask"]),
        np.asarray(q["bid_size"]), np.asarray(q["ask_size"]),
    )  # fmt: skip
    trades = TickBatch.trades(
        np.asarray(t["ts_event"], np.int64), np.asarray(t["ts_recv"], np.int64),
        np.zeros(len(t["ts_event"]), np.int32), np.asarray(t["price"]), np.asarray(t["size"]),
        np.asarray([1 if s == "buy" else -1 for s in t["side"]], np.int8),
    )  # fmt: skip
    ticks = TickBatch.concat([quotes, trades])
    ticks = ticks.take(np.argsort(ticks.ts_event, kind="stable"))
    d = tables.depth
    depth = DepthBatch.from_columns(
        ts_event=d.numpy("ts_event"), ts_recv=d.numpy("ts_recv"),
        instrument=np.zeros(len(d), np.int32), side=d.numpy("side"), price=d.numpy("price"),
        qty=d.numpy("qty"), snapshot=d.numpy("snapshot"), reset=d.numpy("reset"),
        end=d.numpy("end"), first_update_id=d.numpy("first_update_id"),
        last_update_id=d.numpy("last_update_id"), prev_update_id=d.numpy("prev_update_id"),
    )  # fmt: skip
    return ticks, depth


class Run:
    """One venue fed the way the engine feeds it: depth rows handed over before the ticks
    stamped after them; orders reach the venue after every tick stamped at or before their
    time (the venue applies rows at or before an arrival first)."""

    def __init__(self, queue_model: str | None) -> None:
        self.market = MarketState(1)
        self.venue = SimulatedVenue(0, 0.0, queue_model=queue_model, queue_power=2.0)
        self.venue.bind(self.market, InstrumentTable([Instrument(symbol=SYM)]))
        self.tally = Tally()

    def ticks(self, batch: TickBatch, start: int, stop: int) -> None:
        pos = start
        while pos < stop:
            pos = self.venue.match(batch, pos, stop)
            self.venue.commit()
        quotes = np.flatnonzero(batch.kind[start:stop] == QUOTE)
        if quotes.shape[0]:
            k = start + int(quotes[-1])
            row = self.market.book[0]
            row[BID], row[ASK] = batch.bid[k], batch.ask[k]
            row[BID_SIZE], row[ASK_SIZE] = batch.bid_size[k], batch.ask_size[k]
        self._drain()

    def depth(self, batch: DepthBatch) -> None:
        self.venue.on_depth(batch)

    def send(self, msg: OrderRequest | CancelRequest, touch: float = 0.0) -> None:
        if isinstance(msg, OrderRequest):
            self.tally.sent[msg.client_order_id] = msg
            self.tally.touch[msg.client_order_id] = touch
            self.venue.submit(msg)
        else:
            self.venue.cancel(msg)
        self.venue.advance_to(msg.ts_event)
        self._drain()

    def _drain(self) -> None:
        self.tally.fills += [r for r in self.venue.drain_reports() if isinstance(r, Fill)]


def _simulate(ticks: TickBatch, depth: DepthBatch) -> dict[str, dict[str, float]]:
    runs = {"top_of_book": Run(None), "trades_only": Run("trades_only"), "power": Run("power")}
    # cut points: depth updates end at rows flagged end; orders at a fixed schedule
    ends = np.flatnonzero(depth.flags & 4) + 1
    t0 = int(ticks.ts_event[0])
    schedule: list[tuple[int, str]] = []
    t = t0 + PASSIVE_EVERY_NS
    last = int(ticks.ts_event[-1])
    while t < last:
        schedule.append((t, "passive"))
        if (t - t0) % MARKET_EVERY_NS == 0:
            schedule.append((t, "market"))
        schedule.append((t + PASSIVE_LIFE_NS, "cancel"))
        t += PASSIVE_EVERY_NS
    schedule.sort(key=lambda e: e[0])
    d_start = 0
    tick_pos = 0
    n_passive = n_market = 0
    for when, what in schedule:
        # feed, in time order, every depth update and tick stamped at or before ``when``
        # (a depth update before the ticks of its own stamp, as the engine does)
        while True:
            nt = int(ticks.ts_event[tick_pos]) if tick_pos < len(ticks) else NEVER
            nd = int(depth.ts_recv[d_start]) if d_start < len(depth) else NEVER
            if min(nt, nd) > when:
                break
            if nd <= nt:
                stop = int(ends[np.searchsorted(ends, d_start, side="right")])
                for run in runs.values():
                    run.depth(depth.slice(d_start, stop))
                d_start = stop
                continue
            limit = min(
                int(np.searchsorted(ticks.ts_event, when, side="right")),
                int(np.searchsorted(ticks.ts_event, nd, side="left")),
            )
            for run in runs.values():
                run.ticks(ticks, tick_pos, limit)
            tick_pos = limit
        bid, ask = runs["top_of_book"].market.book[0, BID], runs["top_of_book"].market.book[0, ASK]
        if math.isnan(bid) and what != "cancel":
            continue
        if what == "passive":
            n_passive += 1
            for side, px in (("buy", bid), ("sell", ask)):
                cid = f"p{when}{side[0]}"
                req = OrderRequest(ts_event=when, ts_recv=when, client_order_id=cid,
                                   instrument=SYM, side=side, qty=PASSIVE_QTY,  # type: ignore[arg-type]
                                   order_type="limit", limit_price=float(px))  # fmt: skip
                for run in runs.values():
                    run.send(req)
        elif what == "market":
            n_market += 1
            side = "buy" if n_market % 2 else "sell"
            req = OrderRequest(ts_event=when, ts_recv=when, client_order_id=f"m{n_market}",
                               instrument=SYM, side=side, qty=MARKET_QTY)  # type: ignore[arg-type]  # fmt: skip
            for run in runs.values():
                run.send(req, touch=float(ask if side == "buy" else bid))
        else:
            for side in "bs":
                cancel = CancelRequest(ts_event=when, ts_recv=when, instrument=SYM,
                                       client_order_id=f"p{when - PASSIVE_LIFE_NS}{side}")  # fmt: skip
                for run in runs.values():
                    run.send(cancel)
    return {name: run.tally.summary() for name, run in runs.items()}


@pytest.mark.slow  # about 20 s a capture on these machines
@pytest.mark.parametrize("capture", CAPTURES)
def test_fills_depth_against_top_of_book_on_real_captures(capture: str) -> None:
    path = DATA / capture
    if not path.exists():
        pytest.skip(f"{path} is absent (real Binance captures, see ../shared/data/README.md)")
    ticks, depth = _load(path)
    result = _simulate(ticks, depth)
    print(f"\n{capture}:")
    for name, figures in result.items():
        print(f"  {name:12s} " + "  ".join(f"{k}={v:.4g}" for k, v in figures.items()))
    l1, trades_only, power = result["top_of_book"], result["trades_only"], result["power"]
    assert l1["passive_sent"] == trades_only["passive_sent"] == power["passive_sent"] > 0
    # the queue only delays: never more passive fills than at the top of book, and cancels
    # moving us forward (power) never give fewer than trades alone
    assert trades_only["passive_qty"] <= power["passive_qty"] + 1e-9
    assert power["passive_qty"] <= l1["passive_qty"] + 1e-9
    assert power["market_slippage_bps"] >= -1e-9
