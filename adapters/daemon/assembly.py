"""The engine the daemon runs, assembled from the config (``engine.assembly``) with the
live settings, so the replay of a journal builds exactly the same one.

Live and replay differ only in the clock, the source and the router; the router depends
on the mode (``build_router``). The daemon's own engine sends through ``SwitchSender``,
which holds everything while the journal's history is applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adapters.live_sender import QueueSender, ShadowSender
from adapters.sim_venue import SimulatedVenue
from engine.assembly import ModelPins, attach_challenger, build_engine
from engine.book.batch import DepthBatch
from engine.book.source import DepthAsOf
from engine.config import Config
from engine.engine import Engine
from engine.errors import TradeloopError
from engine.events import CancelRequest, DepthUpdate, OrderRequest
from engine.features.book_features import BookFeatureSet
from engine.model_registry import resolve_version
from engine.ports import OrderRouter, OrderSender, SendOnly
from engine.strategy import NoParams, Strategy
from engine.ticks import TickBatch


class SwitchSender:
    """The sending port of the daemon's engine: nothing leaves while the journal's history
    is applied (``target`` None), then everything goes to ``target``."""

    def __init__(self) -> None:
        self.target: OrderSender | None = None
        self.held = 0

    def submit(self, order: OrderRequest) -> None:
        if self.target is None:
            self.held += 1
        else:
            self.target.submit(order)

    def cancel(self, request: CancelRequest) -> None:
        if self.target is None:
            self.held += 1
        else:
            self.target.cancel(request)


def build_router(config: Config, sender: QueueSender | None) -> OrderRouter:
    """The router of the config's mode (``sender`` is the live mode's queue). Paper fills on
    the book under ``[book] queue_model`` once depth arrives (the depth topic), and on the
    top of book while none has (docs/fills.md)."""
    if config.mode == "paper":
        sim = config.venue.sim
        return SimulatedVenue(sim.latency_ns, sim.fee_bps, sim.maker_fee_bps,
                              queue_model=config.book.queue_model,
                              queue_power=config.book.queue_power)  # fmt: skip
    if config.mode == "live":
        assert sender is not None
        return SendOnly(sender)
    return SendOnly(ShadowSender())


def build_live_engine(
    config: Config,
    router: OrderRouter,
    *,
    order_id_prefix: str,
    strategy: Strategy | None = None,
    pins: ModelPins | None = None,
) -> Engine:
    """The engine a config describes, with the daemon's settings (``engine.assembly``):
    receive time as the time axis, not strict, order timeouts and the cancels' back-off
    (``[live] cancel_retry``, ``cancel_retry_max``) in ``live`` mode, the model monitor
    attached and, for a registry model with ``[registry] shadow_challenger``, the
    challenger scored in shadow beside it, and for L2 features a book source fed by the
    depth topic (``Engine.process_depth``), so the replay of a journal builds exactly the
    same engine.

    Args:
        pins: the registry versions to run (``session_pins``; the replay of a session
            passes the ones it recorded); None: what the aliases name now.

    Raises:
        ConfigError, PluginLoadError, ModelError, RegistryError: before any socket opens.
    """
    engine, _monitor = build_engine(
        config, router, live=True, order_id_prefix=order_id_prefix, strategy=strategy, pins=pins
    )
    if engine.features.book_specs:
        book = BookFeatureSet(
            list(engine.features.book_specs),
            len(engine.instruments),
            ticks=[i.tick_size for i in engine.instruments.instruments],
            levels=config.book.levels,
        )
        engine.book_source = DepthAsOf(book)  # rows come by push, as they are received
    challenger = pins.challenger if pins is not None else challenger_version(config)
    if challenger and config.registry.shadow_challenger:
        attach_challenger(engine, config, challenger)
    return engine


def challenger_version(config: Config) -> str:
    """The registry's challenger now ("" when the config has no registry or the alias is
    unset: nothing to score in shadow)."""
    if config.model is None or config.model.registry is None:
        return ""
    try:
        return resolve_version(config.model.registry, "challenger").version
    except TradeloopError as exc:
        if "is not set" not in str(exc):
            raise
        return ""


class _WarmUpStrategy(Strategy):
    """Asks for the same signals as the real strategy and does nothing with them."""

    name = "warm_up"

    def __init__(self, thresholds: Sequence[float]) -> None:
        super().__init__(NoParams())
        self._thresholds = tuple(thresholds)

    def thresholds(self) -> Sequence[float]:
        return self._thresholds


def warm_up(config: Config, thresholds: Sequence[float]) -> None:
    """Run one quote and one trade per instrument through a throwaway engine of the same
    config, so numba compiles (or loads from its cache) every kernel before the first
    real tick: a first order must not wait a second for the compiler."""
    n = len(config.instruments)
    index = np.arange(n, dtype=np.int32)
    ts = np.arange(1, n + 1, dtype=np.int64)
    price = np.full(n, 100.0)
    size = np.ones(n)
    batch = TickBatch.merge(
        TickBatch.quotes(ts, ts, index, price, price + 1.0, size, size),
        TickBatch.trades(ts, ts, index, price, size, np.ones(n, np.int8)),
    )
    router = build_router(config, None) if config.mode == "paper" else SendOnly(ShadowSender())
    engine = build_live_engine(
        config, router, order_id_prefix="warm-up", strategy=_WarmUpStrategy(thresholds)
    )
    # a snapshot per instrument before the ticks: the book's kernels compile too
    updates = [
        DepthUpdate(ts_event=0, ts_recv=0, instrument=i.symbol, first_update_id=1,
                    last_update_id=1, prev_update_id=1, snapshot=True, bids=((100.0, 1.0),),
                    asks=((101.0, 1.0),))
        for i in engine.instruments.instruments
    ]  # fmt: skip
    engine.process_depth(DepthBatch.from_updates(updates, engine.instruments.index))
    engine.process_batch(batch)
    engine.advance_to(int(ts[-1]) + 1)


__all__ = [
    "SwitchSender",
    "build_live_engine",
    "build_router",
    "challenger_version",
    "warm_up",
]
