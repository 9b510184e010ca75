"""Cost of the pre-trade risk checks per order.

Usage: python bench/risk.py [--orders 200000] [--repeat 5]

Every check is configured and every order passes them all (a refused order stops at the
first failing check, so a passing order is the most expensive case). Prints the median
cost of ``RiskEngine.check`` alone and of a whole ``submit`` through the engine
(id, OrderRequest, risk, order book, simulated-venue queue).
"""

from __future__ import annotations

import argparse
import statistics
import time

import msgspec
import numpy as np
from replay_throughput import machine

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
FULL = {
    "max_order_qty": 10.0, "max_order_notional": 1e9, "max_position": 1e9, "price_collar_bps": 100.0,
    "max_quote_age": "10s", "orders_per_second": 1e12, "max_open_orders": 10**9,
    "max_gross_exposure": 1e15, "account_orders_per_second": 1e12, "account_max_open_orders": 10**9,
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    check_us, submit_us = [], []
    for _ in range(args.repeat):
        engine = build()
        risk = engine.risk
        reqs = [OrderRequest(ts_event=T, ts_recv=T, client_order_id=f"B-{k}", instrument="A", side="buy",
                             qty=0.01, order_type="limit", limit_price=100.0) for k in range(args.orders)]  # fmt: skip
        t0 = time.perf_counter()
        for req in reqs:
            if risk.check(req, 0, T) is not None:
                raise SystemExit(f"order refused: {risk.rejections}")
        check_us.append((time.perf_counter() - t0) / args.orders * 1e6)
        ctx = engine._context
        n_submit = args.orders // 4
        t0 = time.perf_counter()
        for _ in range(n_submit):
            ctx.submit_limit("A", "buy", 0.01, 100.0)
        submit_us.append((time.perf_counter() - t0) / n_submit * 1e6)
        assert engine.counters["risk_rejected"] == 0
    print(
        f"RiskEngine.check, every check on, order passes: median {statistics.median(check_us):.2f} us/order "
        f"(runs: {', '.join(f'{c:.2f}' for c in check_us)})"
    )
    print(
        f"engine submit incl. risk + order book + venue queue: median {statistics.median(submit_us):.2f} us/order"
    )
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
