"""The engine a config describes, built in one place for every composition root: the
replay runner, the live daemon and the replay of a recorded live session. They differ
only in the router (simulated venue, OMS, shadow) and in the live settings.

A model taken from a registry (``[model] registry`` and ``alias``) is resolved here, in
every mode alike: the alias names a version, whose folder is checked against its content
address (and the audit log's chain) before it is loaded, and the version's stage scales
``max_position`` (``[registry] stage_scale``, the account default and every
``[risk.instruments.SYMBOL]`` override). Replay applies the stage too: a replay shows what
the model may do at its stage, not what it would do unlimited, so a ``shadow`` version
(scale 0) sends nothing in replay either, and every order it tries is a ``RiskRejected``
(check ``max_position``) in the report. To see a version trade at full size, promote it
or point ``[model] path`` at its folder (``tradeloop models show VERSION`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.clock import ReplayClock
from engine.config import Config, ModelConfig
from engine.engine import Engine
from engine.errors import ConfigError, ModelError, PluginLoadError
from engine.features import FeatureSet
from engine.instruments import InstrumentTable
from engine.model_registry import Resolved, resolve_version
from engine.monitor import ModelMonitor, attach_monitor
from engine.plugins import load_model, load_strategy
from engine.ports import OrderRouter
from engine.registry_types import Stage, StageScale, stage_limits
from engine.risk import RiskConfig, RiskEngine
from engine.signals import SignalModel
from engine.signals.manifest import check_against_features
from engine.strategy import Strategy

_FILE_KINDS = ("lightgbm", "linear")  # kinds whose folder's manifest says which it is


@dataclass(frozen=True)
class RegistryModel:
    """The registry version a config's ``[model]`` was resolved to, and what its stage
    allows: show ``version`` wherever the run or the session says what ran.

    Attributes:
        registry: the registry folder.
        ref: what the config asked for (``champion``, ``challenger``, a version or prefix).
        version: the full version id (sha256 content address).
        stage: the stage applied (the registry's, unless the caller pinned one).
        share: the share of ``max_position`` that stage allows (``[registry] stage_scale``).
        path: the version's folder, checked against its address.
        audit_seq: the audit log's last entry (0-based) when it was read.
        audit_entry_sha256: that entry's hash: anchor it outside the registry (journal).
    """

    registry: str
    ref: str
    version: str
    stage: Stage
    share: float
    path: Path
    audit_seq: int
    audit_entry_sha256: str


def resolve_model_config(
    config: Config, *, stage: Stage | None = None
) -> tuple[Config, RegistryModel | None]:
    """The config with its registry model resolved: ``[model] path`` is the version's
    folder (``registry`` cleared) and ``max_position`` (account default and per-instrument)
    is scaled by the version's stage. A config without a registry comes back unchanged, so
    resolving twice is resolving once (``build_engine`` resolves what it is given).

    Args:
        config: a validated config.
        stage: the stage to apply instead of the registry's current one (the replay of a
            live session applies the stage it ran at; pin the version too, with
            ``[model] alias`` set to the recorded version id).

    Returns:
        The config to build from, and what was resolved (None without a registry).

    Raises:
        RegistryError: no registry, an unknown, unset or ambiguous alias or version, a
            version folder that does not match its address (names the file).
        AuditChainError: the registry's audit log was changed (names the file and entry).
        ConfigError: the stage allows part of ``max_position`` but an instrument has none.
    """
    model = config.model
    if model is None or model.registry is None:
        return config, None
    found = resolve_version(model.registry, model.alias)
    applied: Stage = stage or found.stage
    scale = config.registry.stage_scale
    source = _registry_model(model.registry, model.alias, found, applied, scale)
    resolved = msgspec.structs.replace(
        model,
        # a trained folder says what it is; a plugin kind is the user's and is kept
        kind=found.manifest.kind if model.kind in _FILE_KINDS else model.kind,
        # absolute: a run folder's config.toml is read relative to the run folder
        path=str(found.path.absolute()),
        registry=None,
        alias="champion",  # the default: with no registry it means nothing (see RegistryModel.ref)
    )
    risk = scaled_risk(config.risk, [i.symbol for i in config.instruments], applied, scale)
    return msgspec.structs.replace(config, model=resolved, risk=risk), source


def scaled_risk(
    risk: RiskConfig, symbols: list[str], stage: Stage, scale: StageScale
) -> RiskConfig:
    """``[risk]`` with ``max_position`` scaled to what ``stage`` allows: the account-wide
    default and each instrument's own limit, so no instrument keeps an unscaled one.

    A share of 0 (shadow) sets every limit to 0 (no position may be opened; a reducing
    order still passes). A share between 0 and 1 needs a limit to scale on every
    instrument; a share of 1 changes nothing.

    Raises:
        ConfigError: a share below 1 and an instrument without ``max_position``.
    """
    share = stage_limits(stage, 1.0, scale)
    if share == 1.0:
        return risk
    if share > 0.0:
        unlimited = [s for s in symbols if risk.limits_for(s).max_position is None]
        if unlimited:
            raise ConfigError(
                "risk.max_position",
                f"the registry model is in stage {stage}, which may hold {share:g} of "
                f"max_position, but {', '.join(unlimited)} has none to scale: set one",
            )

    def scaled(limit: float | None) -> float | None:
        if limit is None:
            return 0.0 if share == 0.0 else None
        return stage_limits(stage, limit, scale)

    instruments = {
        symbol: msgspec.structs.replace(own, max_position=scaled(own.max_position))
        if own.max_position is not None
        else own
        for symbol, own in risk.instruments.items()
    }
    return msgspec.structs.replace(
        risk, max_position=scaled(risk.max_position), instruments=instruments
    )


def load_registry_model(config: Config, ref: str) -> tuple[SignalModel, RegistryModel]:
    """Another version of the config's registry (the daemon's ``challenger`` in shadow),
    loaded and checked against the config's feature set, so it scores the same feature
    rows as the champion: pass its ``predict`` the columns of ``model.feature_names``.

    Raises:
        ConfigError: the config names no registry.
        RegistryError, AuditChainError: as ``resolve_model_config``.
        PluginLoadError: the version does not load, or its features differ from the set.
    """
    model = config.model
    if model is None or model.registry is None:
        raise ConfigError("model.registry", "no registry to take a second model from")
    found = resolve_version(model.registry, ref)
    source = _registry_model(model.registry, ref, found, found.stage, config.registry.stage_scale)
    loaded = load_model(
        ModelConfig(kind=found.manifest.kind, name=found.manifest.name, path=str(found.path))
    )
    features = FeatureSet(list(config.features))
    try:
        check_against_features(found.manifest, features.names, features.fingerprint)
    except ModelError as exc:
        raise PluginLoadError(found.manifest.name, str(exc)) from exc
    return loaded, source


def _registry_model(
    registry: str, ref: str, found: Resolved, stage: Stage, scale: StageScale
) -> RegistryModel:
    return RegistryModel(
        registry=registry,
        ref=ref,
        version=found.version,
        stage=stage,
        share=stage_limits(stage, 1.0, scale),
        path=found.path.absolute(),
        audit_seq=found.audit_seq,
        audit_entry_sha256=found.audit_entry_sha256,
    )


def build_engine(
    config: Config,
    router: OrderRouter,
    *,
    live: bool = False,
    order_id_prefix: str = "O",
    strategy: Strategy | None = None,
) -> tuple[Engine, ModelMonitor | None]:
    """Build the engine (and its model monitor, if the model has a manifest) of ``config``.

    A registry model is resolved first (``resolve_model_config``: the version's folder,
    ``max_position`` scaled by its stage, in every mode). To show which version ran,
    resolve before and pass the resolved config: it is then used as it is.

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
        ConfigError, PluginLoadError, ModelError, RegistryError: before any data is read
            or socket opened.
    """
    config, _ = resolve_model_config(config)
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
