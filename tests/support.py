"""Small real parts for tests: a scripted strategy, tick builders, and a daemon's broker
session without a broker (``FakeSession``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from adapters.mqtt.ingest import Inbound
from adapters.mqtt.status import Status, decode_status
from adapters.sim_venue import SimulatedVenue
from engine.clock import ReplayClock, TimerFired
from engine.engine import Engine
from engine.events import (
    CancelRejected,
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    RiskRejected,
)
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument, InstrumentTable
from engine.risk import RiskConfig, RiskEngine
from engine.signals import SignalModel
from engine.strategy import NoParams, Strategy
from engine.ticks import TickBatch


class Scripted(Strategy):
    """Runs ``at[ts](self)`` when the timer set for ``ts`` fires; records what comes back."""

    name = "scripted"

    def __init__(
        self, at: dict[int, Callable[[Scripted], Any]] | None = None, needs: tuple[str, ...] = ()
    ) -> None:
        super().__init__(NoParams())
        self.at = at or {}
        self.needs = needs
        self.seen: list[Event] = []
        self.ids: list[str] = []

    def required_features(self) -> tuple[str, ...]:
        return self.needs

    def on_start(self) -> None:
        for ts in self.at:
            self.ctx.set_timer(f"t{ts}", ts)

    def on_timer(self, timer: TimerFired) -> None:
        self.at[timer.ts_event](self)

    def on_fill(self, fill: Fill) -> None:
        self.seen.append(fill)

    def on_order(
        self, event: OrderAccepted | OrderCancelled | OrderRejected | CancelRejected
    ) -> None:
        self.seen.append(event)

    def on_reject(self, rejected: RiskRejected) -> None:
        self.seen.append(rejected)


def quotes(rows: list[tuple[int, float, float, float, float]], instrument: int = 0) -> TickBatch:
    a = np.array(rows, dtype=float)
    ts = np.array([r[0] for r in rows], np.int64)  # not via float: ns stamps need all 64 bits
    inst = np.full(len(rows), instrument, np.int32)
    return TickBatch.quotes(ts, ts, inst, a[:, 1], a[:, 2], a[:, 3], a[:, 4])


def trades(rows: list[tuple[int, float, float, int]]) -> TickBatch:
    a = np.array(rows, dtype=float)
    ts = np.array([r[0] for r in rows], np.int64)
    return TickBatch.trades(
        ts, ts, np.zeros(len(rows), np.int32), a[:, 1], a[:, 2], a[:, 3].astype(np.int8)
    )


def make_engine(strategy: Strategy, *, risk: RiskConfig | None = None, latency: int = 0, fee_bps: float = 0.0,
                maker_fee_bps: float | None = None, symbols: tuple[str, ...] = ("X",),
                features: list[FeatureSpec] | None = None, tick_size: float = 0.5,
                lot_size: float = 0.1, model: SignalModel | None = None) -> Engine:  # fmt: skip
    inst = InstrumentTable(
        [Instrument(symbol=s, tick_size=tick_size, lot_size=lot_size) for s in symbols]
    )
    fs = FeatureSet(features or [FeatureSpec(name="mid", kind="mid")])
    return Engine(instruments=inst, clock=ReplayClock(), router=SimulatedVenue(latency, fee_bps, maker_fee_bps),
                  features=fs, model=model, strategy=strategy, risk=RiskEngine(risk or RiskConfig(), inst.symbols),
                  equity_interval_ns=0)  # fmt: skip


class FakeSession:
    """The session's surface, with an inbox the test fills."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self.counters: dict[str, int] = {}
        self.orders: list[object] = []
        self.statuses: list[Status] = []

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def publish_order_now(self, order: object) -> bool:
        return False  # the fake has no socket: everything goes through publish_order

    async def publish_order(self, order: object) -> None:
        self.orders.append(order)

    async def publish_status(self, payload: bytes) -> None:
        self.statuses.append(decode_status(payload))

    def outbox_empty(self) -> bool:
        return True

    async def flush(self, timeout_s: float) -> bool:
        return True
