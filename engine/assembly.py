"""The engine a config describes, built in one place for every composition root: the
replay runner, the live daemon and the replay of a recorded live session. They differ
only in the router (simulated venue, OMS, shadow) and in the live settings."""

from __future__ import annotations

from engine.clock import ReplayClock
from engine.config import Config
from engine.engine import Engine
from engine.features import FeatureSet
from engine.instruments import InstrumentTable
from engine.monitor import ModelMonitor, attach_monitor
from engine.plugins import load_model, load_strategy
from engine.ports import OrderRouter
from engine.risk import RiskEngine
from engine.strategy import Strategy


def build_engine(
    config: Config,
    router: OrderRouter,
    *,
    live: bool = False,
    order_id_prefix: str = "O",
    strategy: Strategy | None = None,
) -> tuple[Engine, ModelMonitor | None]:
    """Build the engine (and its model monitor, if the model has a manifest) of ``config``.

    Args:
        config: a validated config.
        router: where orders go.
        live: the daemon's settings (also when its journal is replayed): receive time is
            the time axis, a raising strategy halts instead of stopping the process, and in
            ``live`` mode an order without an answer becomes UNKNOWN after
            ``[live] order_timeout``. The clock is a ``ReplayClock`` in every case: live,
            it is advanced by the journaled receive times.
        order_id_prefix: prefix of client order ids (node and session, live).
        strategy: an instance to use instead of the configured strategy (tests, notebooks).

    Raises:
        ConfigError, PluginLoadError, ModelError: before any data is read or socket opened.
    """
    instruments = InstrumentTable(list(config.instruments))
    features = FeatureSet(list(config.features))
    model = load_model(config.model) if config.model is not None else None
    if strategy is None:
        strategy = load_strategy(config.strategy)
    # orders sent to an OMS wait for its answer; the simulator and shadow always answer
    timeout = config.live.order_timeout_ns if live and config.mode == "live" else None
    engine = Engine(
        instruments=instruments,
        clock=ReplayClock(),
        router=router,
        features=features,
        model=model,
        strategy=strategy,
        risk=RiskEngine(config.risk, instruments.symbols),
        equity_interval_ns=config.replay.equity_interval_ns,
        initial_cash=config.replay.initial_cash,
        strict=not live,
        order_id_prefix=order_id_prefix,
        arrival_order=live,
        order_timeout_ns=timeout,
    )
    return engine, attach_monitor(engine, config)
