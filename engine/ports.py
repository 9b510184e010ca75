"""The ports the engine is built from. Composition roots (replay runner, live daemon)
plug in concrete adapters; the engine depends only on these protocols."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from engine.events import (
    CancelRejected,
    CancelRequest,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
)
from engine.instruments import InstrumentTable
from engine.market import MarketState
from engine.ticks import TickBatch

ExecutionReport = OrderAccepted | OrderRejected | Fill | OrderCancelled | CancelRejected


class OrderRouter(Protocol):
    """The only place orders leave the process.

    A simulated venue does its work in ``advance_to`` (orders arriving after latency) and
    ``match`` (resting orders against ticks); a live router sends in ``submit``/``cancel``,
    returns ``stop`` from ``match`` and delivers reports through the engine's
    ``on_report``.
    """

    def bind(self, market: MarketState, instruments: InstrumentTable) -> None: ...
    def submit(self, order: OrderRequest) -> None: ...
    def cancel(self, request: CancelRequest) -> None: ...
    def next_event_ns(self) -> int | None: ...
    def advance_to(self, ts_ns: int) -> None: ...
    def match(self, batch: TickBatch, start: int, stop: int) -> int: ...
    def commit(self) -> None: ...
    def drain_reports(self) -> list[ExecutionReport]: ...


class MarketDataSource(Protocol):
    """Yields micro-batches in time order (replay: chunks of files)."""

    def batches(self) -> Iterator[TickBatch]: ...
