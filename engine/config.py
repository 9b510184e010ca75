"""One config file for every mode, loaded from TOML into a frozen msgspec tree.

Validated in full before any I/O: an unknown key, a wrong type or a bad value is a
``ConfigError`` naming the field. Secrets are never in the file, only the names of the
environment variables that hold them.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from engine.errors import ConfigError
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument
from engine.risk import RiskConfig
from engine.units import parse_duration_ns

Mode = Literal["replay", "shadow", "paper", "live"]


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ModelConfig(_Strict, frozen=True):
    """``[model]``: a built-in or plugin model. ``kind`` is an entry-point name of group
    ``tradeloop.models`` or a ``module:Class`` path; ``params`` go to the plugin;
    ``path`` is a model folder (file + manifest) for file-based models."""

    kind: str = "linear"
    name: str = "model"
    path: str | None = None
    params: dict[str, Any] = {}


class StrategyConfig(_Strict, frozen=True):
    name: str = "ema_cross"
    params: dict[str, Any] = {}


class SimVenueConfig(_Strict, frozen=True):
    latency: str | int = "250us"
    fee_bps: float = 1.0
    maker_fee_bps: float | None = None

    @property
    def latency_ns(self) -> int:
        return parse_duration_ns(self.latency)


class VenueConfig(_Strict, frozen=True):
    sim: SimVenueConfig = SimVenueConfig()


class ReplayConfig(_Strict, frozen=True):
    batch_size: int = 65_536
    on_bad_row: Literal["raise", "skip"] = "raise"
    equity_interval: str | int = "1s"
    initial_cash: float = 100_000.0

    @property
    def equity_interval_ns(self) -> int:
        return parse_duration_ns(self.equity_interval)


class TrainConfig(_Strict, frozen=True):
    """``[train]``: dataset, label, walk-forward split and model for ``tradeloop train``.

    ``features``: the model's inputs (default: every feature of the set). Rows are the
    first quote of each instrument in every ``sample_interval``. The label is the forward
    mid log-return over ``horizon``; ``embargo`` defaults to the horizon and may not be
    shorter.
    """

    model: Literal["lightgbm", "logistic"] = "lightgbm"
    features: list[str] = []
    horizon: str | int = "2s"
    label: Literal["classification", "regression"] = "classification"
    dead_zone_bps: float = 0.0
    sample_interval: str | int = "250ms"
    folds: int = 4
    validation_fraction: float = 0.2
    embargo: str | int | None = None
    num_leaves: int = 15
    learning_rate: float = 0.05
    max_rounds: int = 300
    early_stopping_rounds: int = 30
    min_data_in_leaf: int = 200
    seed: int = 7
    suspicious_auc: float = 0.9

    @property
    def horizon_ns(self) -> int:
        return parse_duration_ns(self.horizon)

    @property
    def embargo_ns(self) -> int:
        return self.horizon_ns if self.embargo is None else parse_duration_ns(self.embargo)

    @property
    def sample_interval_ns(self) -> int:
        return parse_duration_ns(self.sample_interval)


class MqttConfig(_Strict, frozen=True):
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = ""
    username_env: str | None = None
    password_env: str | None = None


class JournalConfig(_Strict, frozen=True):
    dir: str = "journal/"
    fsync: Literal["always", "batch", "never"] = "batch"


class Config(_Strict, frozen=True):
    mode: Mode = "replay"
    instruments: list[Instrument] = []
    features: list[FeatureSpec] = []
    model: ModelConfig | None = None
    strategy: StrategyConfig = StrategyConfig()
    risk: RiskConfig = RiskConfig()
    venue: VenueConfig = VenueConfig()
    replay: ReplayConfig = ReplayConfig()
    train: TrainConfig = TrainConfig()
    mqtt: MqttConfig = MqttConfig()
    journal: JournalConfig = JournalConfig()


def _validate(cfg: Config) -> None:
    if not cfg.instruments:
        raise ConfigError("instruments", "at least one [[instruments]] entry is required")
    FeatureSet(list(cfg.features))  # raises ConfigError with the feature's name
    for where, value in (("venue.sim.latency", cfg.venue.sim.latency),
                         ("replay.equity_interval", cfg.replay.equity_interval)):  # fmt: skip
        try:
            parse_duration_ns(value)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from exc
    train = cfg.train
    for where, value in (("train.horizon", train.horizon), ("train.sample_interval", train.sample_interval),
                         ("train.embargo", train.embargo if train.embargo is not None else 0)):  # fmt: skip
        try:
            parse_duration_ns(value)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from exc
    if train.embargo is not None and train.embargo_ns < train.horizon_ns:
        raise ConfigError(
            "train.embargo", "must be at least the label horizon, or test labels leak into training"
        )
    if train.folds < 1 or not 0.0 < train.validation_fraction < 0.9:
        raise ConfigError("train", "folds must be >= 1 and 0 < validation_fraction < 0.9")
    not_declared = [f for f in train.features if f not in {s.name for s in cfg.features}]
    if not_declared:
        raise ConfigError("train.features", f"not features of the set: {not_declared}")
    if cfg.replay.batch_size < 1:
        raise ConfigError("replay.batch_size", "must be >= 1")
    symbols = {i.symbol for i in cfg.instruments}
    unknown = set(cfg.risk.instruments) - symbols
    if unknown:
        raise ConfigError("risk.instruments", f"limits for unknown instruments {sorted(unknown)}")


def config_from_dict(data: dict[str, Any], where: str = "<config>") -> Config:
    """Build and validate a config from parsed TOML.

    Raises:
        ConfigError: unknown key, wrong type, or invalid value.
    """
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.risk.max_order_qty`": keep the path, drop the '$.'
        msg = str(exc)
        path = msg.rsplit("at `", 1)[-1].rstrip("`").removeprefix("$.") if "at `" in msg else where
        raise ConfigError(path, msg.split(" - at ")[0]) from exc
    except ValueError as exc:  # raised by __post_init__ checks (e.g. instrument grids)
        raise ConfigError(where, str(exc)) from exc
    _validate(cfg)
    return cfg


def load_config(path: str | Path) -> tuple[Config, str]:
    """Load a TOML config file; returns the config and the sha256 of the file's bytes.

    Raises:
        ConfigError: the file is missing, not TOML, or invalid.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read config: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), f"not valid TOML: {exc}") from exc
    return config_from_dict(data, str(p)), hashlib.sha256(raw).hexdigest()
