"""The ports the engine is built from. Composition roots (replay runner, live daemon)
plug in concrete adapters; the engine depends only on these protocols."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from engine.book.batch import DepthBatch
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


class OrderSender(Protocol):
    """The sending role: orders and cancels leave the process here (an OMS over MQTT,
    a journal in shadow mode). Reports come back through ``Engine.on_report``."""

    def submit(self, order: OrderRequest) -> None: ...
    def cancel(self, request: CancelRequest) -> None: ...


class OrderRouter(Protocol):
    """The port the engine sends through: the sending role plus, for a simulated venue,
    the matching role (``advance_to`` handles orders arriving after latency, ``match``
    rests orders against ticks, ``drain_reports`` hands back its reports). A venue reached
    by sending only is wrapped in ``SendOnly``.
    """

    def bind(self, market: MarketState, instruments: InstrumentTable) -> None: ...
    def submit(self, order: OrderRequest) -> None: ...
    def cancel(self, request: CancelRequest) -> None: ...
    def next_event_ns(self) -> int | None: ...
    def advance_to(self, ts_ns: int) -> None: ...
    def match(self, batch: TickBatch, start: int, stop: int) -> int: ...
    def commit(self) -> None: ...
    def drain_reports(self) -> list[ExecutionReport]: ...


@runtime_checkable
class DepthConsumer(Protocol):
    """A router that simulates fills on L2 depth (the simulated venue in depth mode): it is
    handed every depth row, no later than the first tick or venue event stamped after it
    (possibly earlier: a batch's rows before its ticks), and applies them in time order
    itself."""

    def on_depth(self, batch: DepthBatch) -> None: ...


class MarketDataSource(Protocol):
    """Yields micro-batches in time order (replay: chunks of files)."""

    def batches(self) -> Iterator[TickBatch]: ...


class SendOnly:
    """``OrderRouter`` for a venue the engine only sends to: nothing is simulated here,
    the venue's reports arrive through ``Engine.on_report``.

    Args:
        sender: where orders and cancels go.
    """

    def __init__(self, sender: OrderSender) -> None:
        self.sender = sender

    def bind(self, market: MarketState, instruments: InstrumentTable) -> None:
        pass

    def submit(self, order: OrderRequest) -> None:
        self.sender.submit(order)

    def cancel(self, request: CancelRequest) -> None:
        self.sender.cancel(request)

    def next_event_ns(self) -> int | None:
        return None

    def advance_to(self, ts_ns: int) -> None:
        pass

    def match(self, batch: TickBatch, start: int, stop: int) -> int:
        return stop

    def commit(self) -> None:
        pass

    def drain_reports(self) -> list[ExecutionReport]:
        return []
