"""The simulated venue in depth mode gives the same reports however its ticks are cut: whole
runs of trades, one tick per call, scans the engine abandons half-way (a loss limit) and
takes up again, or depth rows handed over before the ticks that precede them. Orders and
cancels arrive between ticks, as the engine hands them.

Mutation checks (tried once by hand): not restoring the queue table in
``SimulatedVenue._settle_depth`` (an abandoned scan's queue moves kept, then its ticks
scanned again), and applying handed-over depth rows at once instead of in time
(``_apply_depth_until`` with no time bound), each fail
``test_depth_venue_reports_independent_of_tick_cuts``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim_venue import SimulatedVenue
from engine.book.batch import DepthBatch
from engine.book.book import OrderBook
from engine.events import CancelRequest, DepthUpdate, OrderRequest
from engine.instruments import Instrument, InstrumentTable
from engine.market import MarketState
from engine.ticks import TickBatch

SYM = "X"
PRICES = (99.5, 100.0, 100.5)  # few prices: orders, trades and rows meet often
SIZES = st.sampled_from((0.0, 0.5, 1.0, 2.0))

depth_ev = st.tuples(st.just("depth"), st.sampled_from((1, -1)), st.sampled_from(PRICES), SIZES)
trade_ev = st.tuples(
    st.just("trade"), st.sampled_from((1, -1)), st.sampled_from(PRICES), SIZES.filter(bool)
)
order_ev = st.tuples(
    st.just("order"), st.sampled_from((1, -1)), st.sampled_from((*PRICES, None)),
    st.sampled_from((0.5, 1.0, 2.5)),
)  # fmt: skip
cancel_ev = st.tuples(st.just("cancel"), st.integers(0, 5), st.just(0.0), st.just(0.0))
events = st.lists(st.one_of(depth_ev, trade_ev, trade_ev, order_ev, cancel_ev), max_size=40)


def _run(evs: list[tuple[object, ...]], cut: str, model: str) -> list[str]:
    venue = SimulatedVenue(0, 1.0, queue_model=model, queue_power=2.0)
    venue.bind(MarketState(1), InstrumentTable([Instrument(symbol=SYM)]))
    book = OrderBook(1, levels=5, ticks=[0.5])
    uid = 0

    def depth(ts: int, levels: list[tuple[int, float, float]], snapshot: bool = False) -> None:
        nonlocal uid
        uid += 1
        update = DepthUpdate(
            ts_event=ts, ts_recv=ts, instrument=SYM, first_update_id=uid, last_update_id=uid,
            prev_update_id=uid if snapshot else -1, snapshot=snapshot,
            bids=tuple((p, q) for s, p, q in levels if s > 0),
            asks=tuple((p, q) for s, p, q in levels if s < 0),
        )  # fmt: skip
        rows = DepthBatch.from_updates([update], {SYM: 0})
        book.apply(rows)
        venue.on_depth(rows)

    depth(1, [(1, 99.0, 1.0), (1, 99.5, 2.0), (-1, 100.0, 1.0), (-1, 100.5, 2.0)], True)
    pending: list[tuple[int, float, float, int]] = []

    def flush() -> None:
        if not pending:
            return
        ts = np.array([p[0] for p in pending], np.int64)
        batch = TickBatch.trades(ts, ts, np.zeros(len(pending), np.int32),
                                 np.array([p[1] for p in pending]),
                                 np.array([p[2] for p in pending]),
                                 np.array([p[3] for p in pending], np.int8))  # fmt: skip
        pending.clear()
        step = 1 if cut == "one" else len(batch)
        for start in range(0, len(batch), step):
            stop = min(start + step, len(batch))
            pos = start
            while pos < stop:
                j = venue.match(batch, pos, stop)
                if cut == "abandon" and j - pos > 1:
                    # the market stopped half-way: nothing committed, scan again from there
                    pos = pos + (j - pos) // 2
                    continue
                venue.commit()
                pos = j

    for k, ev in enumerate(evs):
        ts = 1000 * (k + 2)
        kind = ev[0]
        if kind == "trade":
            pending.append((ts, float(ev[2]), float(ev[3]), int(ev[1])))  # type: ignore[arg-type]
            continue
        if kind == "depth" and cut == "early":
            # handed over before the ticks stamped before it are matched (as an engine that
            # takes a batch's depth rows first does): the venue must still apply it in time
            depth(ts, [(int(ev[1]), float(ev[2]), float(ev[3]))])  # type: ignore[arg-type]
            continue
        flush()
        if kind == "depth":
            depth(ts, [(int(ev[1]), float(ev[2]), float(ev[3]))])  # type: ignore[arg-type]
        elif kind == "order":
            limit = ev[2]
            venue.submit(OrderRequest(
                ts_event=ts, ts_recv=ts, client_order_id=f"o{k}", instrument=SYM,
                side="buy" if ev[1] == 1 else "sell", qty=float(ev[3]),  # type: ignore[arg-type]
                order_type="market" if limit is None else "limit",
                limit_price=None if limit is None else float(limit),  # type: ignore[arg-type]
            ))  # fmt: skip
            venue.advance_to(ts)
        else:
            target = next((f"o{i}" for i in range(k) if i % 6 == ev[1]), "none")
            venue.cancel(CancelRequest(ts_event=ts, ts_recv=ts, client_order_id=target,
                                       instrument=SYM))  # fmt: skip
            venue.advance_to(ts)
    flush()
    return [repr(r) for r in venue.drain_reports()]


@settings(max_examples=200, deadline=None)
@given(events, st.sampled_from(("trades_only", "power")))
def test_depth_venue_reports_independent_of_tick_cuts(evs, model):
    whole = _run(evs, "whole", model)
    assert _run(evs, "one", model) == whole
    assert _run(evs, "abandon", model) == whole
    assert _run(evs, "early", model) == whole
