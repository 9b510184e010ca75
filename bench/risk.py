"""Cost of the pre-trade risk checks per order, with references.

Usage: python bench/risk.py [--orders 200000] [--repeat 5]

Every check is configured and every order passes them all (a refused order stops at the
first failing check, so a passing order is the most expensive case). Prints the median
cost of ``RiskEngine.check`` alone and of a whole ``submit`` through the engine
(id, OrderRequest, risk, order book, simulated-venue queue).

References in the same run: building the ``OrderRequest`` that is checked (a frozen
msgspec Struct with eight fields) and a bare Python function called with the same three
arguments. The ratios ``check / OrderRequest`` and ``submit / OrderRequest`` are the
figures to compare between machines.
"""

from __future__ import annotations

import argparse
import time

import msgspec
import numpy as np
from common import begin, end, median, runs

from adapters.sim_venue import SimulatedVenue
from engine.clock import ReplayClock
from engine.engine import Engine
from engine.events import OrderRequest
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument, InstrumentTable
from engine.risk import RiskConfig, RiskEngine
from engine.strategy import NoParams, Strategy
from engine.ticks import TickBatch

T = 1_700_000_000_000_000_000
# every limit at or near its schema bound (engine/risk/limits.py: rates and counts <= 1e6,
# amounts <= 1e12), so every check runs and none refuses: a run spends 250,000 of the
# buckets' one-second burst of 1,000,000 at a frozen clock
FULL = {
    "max_order_qty": 10.0, "max_order_notional": 1e9, "max_position": 1e9, "price_collar_bps": 100.0,
    "max_quote_age": "10s", "orders_per_second": 1e6, "max_open_orders": 10**6,
    "max_gross_exposure": 1e12, "account_orders_per_second": 1e6, "account_max_open_orders": 10**6,
    "daily_loss_limit": 1e12, "max_drawdown": 1e12, "warmup": True,
}  # fmt: skip


def build() -> Engine:
    inst = InstrumentTable(
        [Instrument(symbol=s, tick_size=0.01, lot_size=0.001) for s in ("A", "B", "C")]
    )
    fs = FeatureSet(
        [
            FeatureSpec(name="mid", kind="mid"),
            FeatureSpec(name="e", kind="ema", input="mid", span=2),
        ]
    )
    strategy = Strategy(NoParams())
    engine = Engine(instruments=inst, clock=ReplayClock(), router=SimulatedVenue(1_000), features=fs, model=None,
                    strategy=strategy, risk=RiskEngine(msgspec.convert(FULL, RiskConfig), inst.symbols),
                    equity_interval_ns=0)  # fmt: skip
    strategy.required_features = lambda: ("e",)  # type: ignore[method-assign]
    engine._warm_columns = fs.state_columns(["e"]).tolist()
    n = 6
    ts = np.full(n, T, np.int64)
    engine.process_batch(TickBatch.quotes(ts, ts, np.array([0, 1, 2, 0, 1, 2], np.int32), np.full(n, 99.99),
                                          np.full(n, 100.01), np.ones(n), np.ones(n)))  # fmt: skip
    return engine


def _bare(req: OrderRequest, instrument: int, now_ns: int) -> None:
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    started = begin(f"risk: {args.orders:,} orders x {args.repeat} runs, every check on")
    check_us, submit_us, build_us, bare_us = [], [], [], []
    for _ in range(args.repeat):
        engine = build()
        risk = engine.risk
        n = args.orders
        t0 = time.perf_counter()
        reqs = [OrderRequest(ts_event=T, ts_recv=T, client_order_id=f"B-{k}", instrument="A", side="buy",
                             qty=0.01, order_type="limit", limit_price=100.0) for k in range(n)]  # fmt: skip
        build_us.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for req in reqs:
            if risk.check(req, 0, T) is not None:
                raise SystemExit(f"order refused: {risk.rejections}")
        check_us.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for req in reqs:
            if _bare(req, 0, T) is not None:
                raise SystemExit("unreachable")
        bare_us.append((time.perf_counter() - t0) / n * 1e6)
        ctx = engine._context
        n_submit = n // 4
        t0 = time.perf_counter()
        for _ in range(n_submit):
            ctx.submit_limit("A", "buy", 0.01, 100.0)
        submit_us.append((time.perf_counter() - t0) / n_submit * 1e6)
        assert engine.counters["risk_rejected"] == 0
    check, submit, build_, bare = map(median, (check_us, submit_us, build_us, bare_us))
    print(f"RiskEngine.check, every check on, order passes:  {runs(check_us, '.2f')} us/order")
    print(f"engine submit (id, request, risk, book, venue):  {runs(submit_us, '.2f')} us/order")
    print(f"reference, building the OrderRequest (+ its id): {runs(build_us, '.2f')} us/order")
    print(f"reference, bare Python call, same 3 arguments:   {runs(bare_us, '.3f')} us/call")
    print(f"ratios (medians): check / OrderRequest = {check / build_:.1f}; submit / OrderRequest = "
          f"{submit / build_:.1f}; check / bare call = {check / bare:.0f}")  # fmt: skip
    end(started)


if __name__ == "__main__":
    main()
