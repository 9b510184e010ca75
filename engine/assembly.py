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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast

import msgspec

from engine.challenger import ChallengerShadow
from engine.clock import ReplayClock
from engine.config import Config, ModelConfig
from engine.engine import Engine
from engine.errors import ConfigError, ModelError, PluginLoadError, RegistryError
from engine.events import Alarm, ModelSwitched
from engine.features import FeatureSet
from engine.instruments import InstrumentTable
from engine.journal import ModelSwitch
from engine.model_registry import Resolved, resolve_version
from engine.monitor import ModelMonitor, attach_monitor
from engine.plugins import load_model, load_strategy
from engine.ports import OrderRouter
from engine.registry_types import Stage, StageScale, stage_limits
from engine.risk import RiskConfig, RiskEngine
from engine.signals import SignalModel
from engine.signals.manifest import check_against_features
from engine.strategy import Strategy

_FILE_KINDS = ("lightgbm", "linear", "onnx")  # kinds whose folder's manifest says which it is


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


@dataclass(frozen=True)
class ModelPins:
    """The registry versions a session ran with, so its replay builds the same engine
    whatever the aliases name now (versions are immutable and content-addressed).

    Attributes:
        version: the champion's full version id.
        stage: the stage it ran at (its ``max_position`` share).
        challenger: the challenger's version scored in shadow ("" for none).
    """

    version: str
    stage: Stage
    challenger: str = ""


def pin_model_config(config: Config, pins: ModelPins | None) -> tuple[Config, Stage | None]:
    """``config`` with ``[model] alias`` set to the pinned version, and the stage to apply
    (None without pins or without a registry)."""
    if pins is None or config.model is None or config.model.registry is None:
        return config, None
    model = msgspec.structs.replace(config.model, alias=pins.version)
    return msgspec.structs.replace(config, model=model), pins.stage


@dataclass(frozen=True)
class PreparedModel:
    """A registry version loaded and checked, ready to be swapped in at a journaled point.

    Attributes:
        alias: what it becomes (``champion``: the engine's model; ``challenger``).
        model: the loaded model, checked against the feature set.
        source: the version, its stage and the audit log's head when it was read.
        risk: the ``[risk]`` its stage allows (the champion's; None for a challenger).
        monitor: its monitor, not attached yet (None: monitoring off or no manifest).
    """

    alias: Literal["champion", "challenger"]
    model: SignalModel
    source: RegistryModel
    risk: RiskConfig | None
    monitor: ModelMonitor | None


class ModelMemory:
    """Each registry version's monitor per role (``champion``, ``challenger``), kept across
    switches: switching back to a version carries on its figures, so counts only grow.

    It follows the journal's inputs (the switches) like the engine's own state does, so a
    snapshot must capture it: the daemon passes it to ``engine.snapshot.capture_state`` as
    an extra (``adapters.daemon.snapshots.snapshot_extras``). A restart from a snapshot
    without it would give a version switched to again a fresh monitor where a full replay
    keeps the old one, and
    the monitor's figures and alarms (and an alarm's action) would differ.

    It also says which versions the engine runs now (``active``), so a rebuild knows
    whether a session's recorded versions need a switch, and a snapshot taken while other
    versions than the session's run is restored onto the right model
    (``ModelSwitcher.restored``).

    Attributes:
        monitors: ``(role, version)`` -> that version's monitor (None: none was built).
        active: role -> ``(version, stage)`` the engine runs now (the challenger's stage
            is informative only; a role the switcher was not told about is absent).
    """

    def __init__(self) -> None:
        self.monitors: dict[tuple[str, str], ModelMonitor | None] = {}
        self.active: dict[str, tuple[str, str]] = {}


class ModelSwitcher:
    """Loads registry versions and swaps them into an engine where a ``ModelSwitch`` record
    says, the same way live and in the replay of a journal.

    Live, ``prepare`` runs on a worker thread (it reads files and compiles nothing on the
    loop), the result is handed back with ``offer``, and the record that applies it is
    journaled; a replay finds nothing offered and prepares the version by its id when the
    record comes (the version is immutable, so it is the same model bit for bit).

    Args:
        config: the session's config as written (with ``[model] registry``), not resolved.
        pins: the versions the engine was built with (``build_engine``'s ``pins``), so
            ``align`` and ``restored`` know what it runs before any switch.

    Attributes:
        sessions_without_versions: sessions a rebuild found no recorded versions for
            (their records were applied on whatever ran before: see ``align``).
    """

    def __init__(self, config: Config, pins: ModelPins | None = None) -> None:
        if config.model is None or config.model.registry is None:
            raise ConfigError("model.registry", "model switches need a registry model")
        self.config = config
        self.registry = config.model.registry
        self.pins = pins
        self._offered: dict[tuple[str, str, str], PreparedModel] = {}
        # read through ``memory`` at each switch: a snapshot restores it in place
        self.memory = ModelMemory()
        if pins is not None:
            self.memory.active["champion"] = (pins.version, pins.stage)
            if pins.challenger:
                self.memory.active["challenger"] = (pins.challenger, "")
        self.sessions_without_versions: list[str] = []

    def prepare(
        self, alias: Literal["champion", "challenger"], ref: str, stage: Stage | None = None
    ) -> PreparedModel:
        """Load and check the version ``ref`` names as ``alias`` would run it. Touches no
        engine: safe on a worker thread.

        Raises:
            RegistryError, AuditChainError: unknown version, changed folder, broken log.
            PluginLoadError, ModelError: the model does not load or its features differ
                from the set, or its monitor cannot be built.
            ConfigError: its stage's share needs a ``max_position`` an instrument lacks.
        """
        model, source = load_registry_model(self.config, ref)
        applied: Stage = stage or source.stage
        scale = self.config.registry.stage_scale
        source = replace(source, stage=applied, share=stage_limits(applied, 1.0, scale))
        risk = None
        if alias == "champion":
            symbols = [i.symbol for i in self.config.instruments]
            risk = scaled_risk(self.config.risk, symbols, applied, scale)
        return PreparedModel(alias, model, source, risk, _monitor_for(model, self.config))

    def offer(self, prepared: PreparedModel) -> None:
        """Keep a version prepared off the loop for the record that will apply it."""
        key = (prepared.alias, prepared.source.version, prepared.source.stage)
        self._offered[key] = prepared

    def apply(self, engine: Engine, switch: ModelSwitch) -> None:
        """Apply one journaled switch: swap the model (the champion's limits follow its
        stage, its monitor is replaced by the new model's), emit ``ModelSwitched``; or,
        for a refused switch, emit an Alarm and change nothing.

        Raises:
            RegistryError, ModelError, PluginLoadError, ConfigError: a replay cannot load
                the version the journal names (the registry lost or changed it).
        """
        now = engine.clock.now_ns()
        if switch.refused:
            engine.counters["model_switches_refused"] += 1
            engine.emit(Alarm(ts_event=now, ts_recv=now, source="registry", severity="warning",
                              message=f"{switch.alias} -> {switch.version[:12]} ({switch.stage}) "
                                      f"refused: {switch.refused}"))  # fmt: skip
            return
        key = (switch.alias, switch.version, switch.stage)
        prepared = self._offered.pop(key, None) or self.prepare(
            switch.alias, switch.version, switch.stage
        )
        if prepared.source.version != switch.version:
            raise RegistryError(f"{switch.version[:12]} resolved to {prepared.source.version[:12]}")
        monitors = self.memory.monitors
        monitor = monitors.get((switch.alias, switch.version), prepared.monitor)
        monitors[(switch.alias, switch.version)] = monitor
        if switch.alias == "champion":
            before = engine.model_version
            old = next((o for o in engine.observers if isinstance(o, ModelMonitor)), None)
            monitors.setdefault(("champion", before), old)
            engine.switch_model(prepared.model, version=switch.version, risk=prepared.risk)
            _replace_monitor(engine, monitor)
        else:
            shadow = find_challenger(engine)
            before = shadow.version if shadow is not None else ""
            if shadow is None:
                engine.observers.append(
                    ChallengerShadow(engine, prepared.model, switch.version, monitor)
                )
            else:
                monitors.setdefault(("challenger", before), shadow.monitor)
                shadow.switch(prepared.model, switch.version, monitor)
        self.memory.active[switch.alias] = (switch.version, switch.stage)
        engine.emit(ModelSwitched(ts_event=now, ts_recv=now, model=prepared.model.name,
                                  alias=switch.alias, version=switch.version, stage=switch.stage,
                                  from_version=before,
                                  audit_entry_sha256=switch.audit_entry_sha256,
                                  issuer=switch.issuer, reason=switch.reason))  # fmt: skip

    def align(self, engine: Engine, pins: ModelPins, *, reason: str) -> int:
        """Switch ``engine`` to the versions a session ran (its manifest's ``pins``) where
        it runs others: what a session's first record needs in a rebuild, and what the
        daemon does after its rebuild, before its own first record. Not journaled: the
        session's manifest is the record, so a replay does the same at the same point.

        Each switch is ``apply``'s (the monitor kept per version, ``ModelSwitched``
        emitted); a challenger the session did not score is detached (its monitor kept).

        Returns:
            How many roles were switched (0: the engine already ran ``pins``).

        Raises:
            RegistryError, ModelError, PluginLoadError, ConfigError: as ``apply``.
        """
        active = self.memory.active
        switched = 0
        champion = active.get("champion")
        running = champion if champion is not None else (engine.model_version, pins.stage)
        if running != (pins.version, pins.stage):
            self.apply(engine, ModelSwitch(alias="champion", version=pins.version,
                                           stage=pins.stage, issuer="session",
                                           reason=reason))  # fmt: skip
            switched += 1
        shadow = find_challenger(engine)
        current = shadow.version if shadow is not None else ""
        if pins.challenger and current != pins.challenger:
            stage = resolve_version(self.registry, pins.challenger).stage
            self.apply(engine, ModelSwitch(alias="challenger", version=pins.challenger,
                                           stage=stage, issuer="session",
                                           reason=reason))  # fmt: skip
            switched += 1
        elif not pins.challenger and shadow is not None:
            self.memory.monitors.setdefault(("challenger", shadow.version), shadow.monitor)
            engine.observers.remove(shadow)
            active.pop("challenger", None)
            switched += 1
        return switched

    def restored(self, engine: Engine) -> None:
        """After a snapshot was restored into ``engine`` (built with ``pins``): the model
        object is the build's (a snapshot references the model, never pickles it), so if
        the snapshot was taken while another champion ran, load that one in its place.
        Everything else (its columns, its stage's limits, its monitor) came with the
        snapshot.

        Raises:
            RegistryError, ModelError, PluginLoadError: the recorded version cannot load.
        """
        champion = self.memory.active.get("champion")
        if champion is None or self.pins is None or champion[0] == self.pins.version:
            return
        version, stage = champion
        engine.model = self.prepare("champion", version, cast(Stage, stage)).model


def _monitor_for(model: SignalModel, config: Config) -> ModelMonitor | None:
    manifest = getattr(model, "manifest", None)
    if not config.monitor.enabled or manifest is None:
        return None
    return ModelMonitor(
        config=config.monitor,
        manifest=manifest,
        symbols=tuple(i.symbol for i in config.instruments),
        sample_interval_ns=config.train.sample_interval_ns,
        host=None,
    )


def _replace_monitor(engine: Engine, monitor: ModelMonitor | None) -> None:
    """The champion's monitor (a ModelMonitor among the observers; a challenger's sits in
    its ChallengerShadow) replaced in place, so the observers keep their order."""
    if monitor is not None:
        monitor.host = engine
    index = next((i for i, o in enumerate(engine.observers) if isinstance(o, ModelMonitor)), None)
    if index is None:
        if monitor is not None:
            engine.observers.append(monitor)
            engine.sinks.append(monitor)
        return
    old: object = engine.observers[index]
    if monitor is None:
        del engine.observers[index]
        engine.sinks[:] = [s for s in engine.sinks if s is not old]
        return
    engine.observers[index] = monitor
    engine.sinks[:] = [monitor if s is old else s for s in engine.sinks]


def find_challenger(engine: Engine) -> ChallengerShadow | None:
    """The engine's challenger in shadow, if one is attached."""
    return next((o for o in engine.observers if isinstance(o, ChallengerShadow)), None)


def attach_challenger(engine: Engine, config: Config, ref: str) -> ChallengerShadow:
    """Score the registry's ``ref`` (``challenger``, or the version a session ran) in shadow
    beside ``engine``'s champion, with its own monitor.

    Raises:
        RegistryError, AuditChainError, PluginLoadError, ModelError: as
            ``load_registry_model``.
    """
    model, source = load_registry_model(config, ref)
    shadow = ChallengerShadow(engine, model, source.version, _monitor_for(model, config))
    engine.observers.append(shadow)
    return shadow


def build_engine(
    config: Config,
    router: OrderRouter,
    *,
    live: bool = False,
    order_id_prefix: str = "O",
    strategy: Strategy | None = None,
    pins: ModelPins | None = None,
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
            ``[live] order_timeout`` and a cancel is resent no sooner than
            ``[live] cancel_retry``, doubling up to ``cancel_retry_max``. The clock is a ``ReplayClock`` in every case: live,
            it is advanced by the journaled receive times.
        order_id_prefix: prefix of client order ids (node and session, live).
        strategy: an instance to use instead of the configured strategy (tests, notebooks).
        pins: the registry versions to run instead of what the aliases name now (the
            replay of a session; ``ModelPins``).

    Raises:
        ConfigError, PluginLoadError, ModelError, RegistryError: before any data is read
            or socket opened.
    """
    config, stage = pin_model_config(config, pins)
    config, source = resolve_model_config(config, stage=stage)
    instruments = InstrumentTable(list(config.instruments))
    features = FeatureSet(list(config.features))
    model = load_model(config.model) if config.model is not None else None
    if strategy is None:
        strategy = load_strategy(config.strategy)
    # orders sent to an OMS wait for its answer; the simulator and shadow always answer
    timeout = config.live.order_timeout_ns if live and config.mode == "live" else None
    # ...and a cancel it leaves unanswered or rejects is resent with back-off, not at once
    retry = config.live.cancel_retry_ns if timeout is not None else None
    retry_max = config.live.cancel_retry_max_ns if timeout is not None else None
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
        cancel_retry_ns=retry,
        cancel_retry_max_ns=retry_max,
    )
    if source is not None:
        engine.model_version = source.version
    return engine, attach_monitor(engine, config)
