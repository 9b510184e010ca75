"""One config file for every mode, loaded from TOML into a frozen msgspec tree.

Validated in full before any I/O: an unknown key, a wrong type or a bad value is a
``ConfigError`` naming the field by its dotted path (``risk.instruments.BTCUSDT.
max_order_qty``). Numbers are bounded in the schema (``msgspec.Meta``): NaN fails every
bound, so each bound also means "finite". Durations are parsed and range-checked by the
loader. Secrets are never in the file, only the names of the environment variables that
hold them.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect as mi

from engine.errors import ConfigError
from engine.features import FeatureSet, FeatureSpec
from engine.instruments import Instrument
from engine.registry_types import DEFAULT_STAGE_SCALE, StageScale
from engine.risk import RiskConfig
from engine.risk.limits import RiskLimits
from engine.units import MAX_AMOUNT, Duration, parse_duration_ns

Mode = Literal["replay", "shadow", "paper", "live"]
T = TypeVar("T")


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
    # a model taken from a registry folder (``tradeloop models``) instead of ``path``:
    # ``alias`` is ``champion``, ``challenger`` or a version id (sha256 or a unique prefix)
    registry: str | None = None
    alias: str = "champion"

    def __post_init__(self) -> None:
        if self.path is not None and self.registry is not None:
            raise ValueError("give a model folder (path) or a registry (registry), not both")
        if not self.alias.strip():
            raise ValueError("alias must name an alias (champion, challenger) or a version")


class StrategyConfig(_Strict, frozen=True):
    name: str = "ema_cross"
    params: dict[str, Any] = {}


class SimVenueConfig(_Strict, frozen=True):
    """``[venue.sim]``: latency (a duration, may be 0) and fees in bps of notional.

    Fees above 1000 bps (10 %) are a unit mistake; a maker fee may be negative (a rebate),
    down to -100 bps, far beyond any venue's rebate.
    """

    latency: Duration = "250us"
    fee_bps: Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)] = 1.0
    maker_fee_bps: Annotated[float, msgspec.Meta(ge=-100.0, le=1000.0)] | None = None

    @property
    def latency_ns(self) -> int:
        return parse_duration_ns(self.latency)


class VenueConfig(_Strict, frozen=True):
    sim: SimVenueConfig = SimVenueConfig()


class ReplayConfig(_Strict, frozen=True):
    """``[replay]``. ``batch_size`` is at most 2**24 ticks: results do not depend on it
    and a larger batch only costs memory (its feature matrix alone is gigabytes).
    ``start``/``end``: the time range replayed (ISO-8601 UTC or integer time, ``end``
    excluded), as ``--start``/``--end``, which override them."""

    batch_size: Annotated[int, msgspec.Meta(ge=1, le=2**24)] = 65_536
    on_bad_row: Literal["raise", "skip"] = "raise"
    equity_interval: Duration = "1s"
    initial_cash: Annotated[float, msgspec.Meta(gt=0.0, le=MAX_AMOUNT)] = 100_000.0
    start: str | int | None = None
    end: str | int | None = None

    @property
    def equity_interval_ns(self) -> int:
        return parse_duration_ns(self.equity_interval)


# the model ladder, simplest first; "lightgbm" is "gbdt" under its earlier name
TrainFamily = Literal[
    "linear", "logistic", "tree", "random_forest", "gbdt", "lightgbm", "svm", "mlp"
]


class TrainConfig(_Strict, frozen=True):
    """``[train]``: dataset, label, walk-forward split and model for ``tradeloop train``.

    Every key, with its default:

    - ``model = "lightgbm"``: ``"lightgbm"`` (gradient-boosted trees, compared out of
      sample with a logistic baseline) or ``"logistic"`` (the baseline itself, written as
      a linear model folder; replay it with ``[model] kind = "linear"``).
    - ``features = []``: the model's inputs, names from ``[[features]]``; empty means
      every feature of the set.
    - ``horizon = "2s"``: the label is the forward mid log-return over this horizon.
    - ``label = "classification"``: ``"classification"`` (up or not, a probability) or
      ``"regression"`` (the return in bps, a raw score).
    - ``dead_zone_bps = 0.0``: classification only; rows whose forward return is within
      this many bps of 0 have no class and are not fit on (0: an unchanged mid is the
      only unlabelled return). 0 to 1000: 1000 bps (10 %) drops every row at any
      trading horizon.
    - ``sample_interval = "250ms"``: one row per instrument per interval, its first quote.
    - ``folds = 4``: walk-forward folds (2 to 100); the data's span is cut into
      ``folds + 1`` blocks and fold k tests on block k + 1.
    - ``validation_fraction = 0.2``: the last share of each fold's fit rows that LightGBM
      stops early on (above 0, below 0.9, which leaves too few to fit on).
    - ``embargo``: default the horizon, and may not be shorter; the gap kept between
      training labels and each block a model is evaluated on.
    - ``num_leaves = 15``: LightGBM's leaves per tree (2 to 131072, LightGBM's range).
    - ``learning_rate = 0.05``: LightGBM's shrinkage (above 0, at most 1).
    - ``max_rounds = 300``: at most this many trees per fold (1 to 100000).
    - ``early_stopping_rounds = 30``: stop a fold after this many trees without a better
      validation loss (1 to 100000).
    - ``min_data_in_leaf``: default automatic, a fortieth of the rows the model is fit
      on, between 5 and 200 (``replay.research.training.fit.min_data_in_leaf``); an integer (1 to 10000000)
      fixes it. A fixed 200 cannot split a tree on the few hundred rows a fold of a
      few minutes' data has, so every fold stopped at its first, constant tree.
    - ``seed = 7``: LightGBM's seed (a 32-bit int, 0 to 2**31 - 1); training is
      single-threaded and deterministic, so a seed gives the same model bytes.
    - ``suspicious_auc = 0.9``: an out-of-sample AUC above it is implausible for market
      data at a trading horizon and stops training as probable leakage (0.5 to 1).
    - ``allow_failed_leak_checks = []``: the leak checks of
      ``replay.research.training.leakage`` (``"implausible_score"``, ``"label_end"``) whose
      failure may not stop training, by name; a failure let through is a warning and is
      recorded in the manifest (``leak_checks``).

    Training warns (manifest ``warnings``, printed by ``tradeloop train``, listed in the
    training report) when LightGBM is no better than the logistic baseline out of
    sample, when a fold degenerates (best iteration 1, or one class predicted on all its
    test rows), and when a third or more of the rows with features have no label; and
    (``replay.research.training.assessment``) when the model is not significantly better
    than chance or than the best baseline (a single feature, the logistic model) out of
    sample, or its expected net edge per trade at ``[strategy]``'s thresholds after
    ``[venue.sim] fee_bps`` and the spread is negative.
    """

    model: TrainFamily = "lightgbm"
    # the family's own hyperparameters (``replay.research.training.families``), checked
    # by the family: an unknown key is an error naming the keys it takes
    model_params: dict[str, Any] = {}
    features: list[str] = []
    horizon: Duration = "2s"
    label: Literal["classification", "regression"] = "classification"
    dead_zone_bps: Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)] = 0.0
    sample_interval: Duration = "250ms"
    folds: Annotated[int, msgspec.Meta(ge=2, le=100)] = 4
    validation_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=0.9)] = 0.2
    embargo: Duration | None = None
    num_leaves: Annotated[int, msgspec.Meta(ge=2, le=131_072)] = 15
    learning_rate: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.05
    max_rounds: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 300
    early_stopping_rounds: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 30
    min_data_in_leaf: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 7
    suspicious_auc: Annotated[float, msgspec.Meta(ge=0.5, le=1.0)] = 0.9
    allow_failed_leak_checks: list[Literal["implausible_score", "label_end"]] = []

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
    """``[mqtt]``: the broker (shadow, paper, live). Credentials come from the environment
    variables named here, never from the file."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 1883
    topic_prefix: str = ""
    username_env: str | None = None
    password_env: str | None = None
    client_id: str | None = None  # default: tradeloop-{live.node}
    # the broker binds client ids to users (mosquitto's use_username_as_clientid): the
    # daemon logs in as <user>, <user>-md and <user>-reconcile, one password
    bind_client_id: bool = False
    format: Literal["json", "msgpack"] = "json"
    market_data_qos: Annotated[int, msgspec.Meta(ge=0, le=1)] = 0
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=64, le=16 * 2**20)] = 65_536
    inbox_size: Annotated[int, msgspec.Meta(ge=16, le=10_000_000)] = 10_000
    outbox_size: Annotated[int, msgspec.Meta(ge=16, le=10_000_000)] = 10_000
    keepalive: Duration = "15s"
    reconnect_min: Duration = "100ms"
    reconnect_max: Duration = "10s"
    # the first connection is retried this long, then `run` exits with one error naming the
    # broker and what to check; "0s": for ever (a service manager that starts the daemon
    # before the broker). Once connected, a lost connection is retried for ever.
    first_connect_timeout: Duration = "30s"
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class LiveConfig(_Strict, frozen=True):
    """``[live]``: the daemon next to the OMS. ``node`` names this daemon's command and
    status topics, ``account`` the OMS account's order and report topics."""

    # letters, digits and _ only: client order ids are ``{node}-{session}-{n}``, and a
    # daemon books only reports under its own ``{node}-`` (no node a prefix of another's)
    node: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_]{1,64}$")] = "node1"
    account: str = "acct1"
    order_timeout: Duration = "5s"
    heartbeat: Duration = "1s"
    cancel_on_stop: bool = True
    command_key_env: str = "TRADELOOP_COMMAND_KEY"
    # a signed command is acted on once, and only while fresh: its ts_event within this of
    # the receive clock (either way: clocks of two machines), and a copy of a command seen
    # in that window (a QoS 1 redelivery, a captured message replayed) is refused
    command_max_age: Duration = "30s"
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 9108  # 0: no endpoint
    # the metrics endpoint's address (positions and PnL: not for the world); a container
    # sets its compose network's
    metrics_host: str = "127.0.0.1"
    shutdown_timeout: Duration = "5s"
    # how long the OMS has to answer one reconciliation request, and how often a daemon
    # halted by reconciliation asks again
    reconcile_timeout: Duration = "2s"
    reconcile_retry: Duration = "2s"
    # the OMS is asked for the fills it booked since this long before our receipt of the
    # last fill booked (its clock may be behind ours, a report may have been in flight);
    # fills are matched by id, so a wider window costs only bandwidth
    reconcile_lookback: Duration = "1m"
    # an order the OMS reports open that this daemon has no record of: ``flag`` raises an
    # Alarm naming it and leaves it the OMS's (its fills are booked, and a position the
    # engine did not decide sends the engine REDUCE_ONLY); ``adopt`` books it as ours
    # (journaled), so risk checks count it and kill/flatten cancel it
    external_orders: Literal["flag", "adopt"] = "flag"
    # each champion signal of a tree model explained (TreeSHAP, the top ``explain_top``
    # contributions) on a worker thread, into explanations-<session>.jsonl: off the
    # decision path, dropped and counted if the worker falls behind
    explain: bool = True
    explain_top: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 5
    # the sampled Shapley explainer of ONNX models: permutations per explanation (antithetic
    # pairs; each costs k + 1 model rows), stated in every explanation's budget
    explain_permutations: Annotated[int, msgspec.Meta(ge=2, le=100_000)] = 64
    # the bus is hostile: market data whose ts_event is older than ``max_tick_age`` when it
    # arrives, or ahead of its receipt by more than ``max_tick_future``, is refused and
    # counted (it never counts as a fresh feed)
    max_tick_age: Duration = "5s"
    max_tick_future: Duration = "1s"
    # a fill's fee beyond this many bps of its notional (either sign) is refused
    max_fee_bps: Annotated[float, msgspec.Meta(gt=0.0, le=10_000.0)] = 100.0
    # an execution report stamped ahead of its receipt by more than this is refused (the
    # OMS's clock may run a little ahead; a fill stamped a day ahead is not booked)
    max_report_future: Duration = "1m"
    # the wall clock stepping away from the monotonic clock by more than this (either way)
    # is journaled with an Alarm; the engine's automatic claim goes to ``on_clock_jump``
    clock_jump: Duration = "2s"
    on_clock_jump: Literal["alarm", "reduce_only", "halt"] = "reduce_only"
    # a cancel with no answer is sent again after ``cancel_retry``, doubling up to
    # ``cancel_retry_max``: one cancel per working order in flight
    cancel_retry: Duration = "1s"
    cancel_retry_max: Duration = "30s"
    # a new order still unsent this long after its decision (the connection died under
    # it) is never sent: withdrawn and journaled as rejected; cancels always go
    max_order_age: Duration = "3s"
    # the trader's web page (off by default; on localhost by default: it shows positions
    # and PnL). Operator actions need the token in the environment variable named here;
    # without it the page is read-only. Port 0: a free port, logged at start.
    dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 8780
    dashboard_token_env: str = "TRADELOOP_DASHBOARD_TOKEN"

    @property
    def max_tick_age_ns(self) -> int:
        return parse_duration_ns(self.max_tick_age)

    @property
    def max_tick_future_ns(self) -> int:
        return parse_duration_ns(self.max_tick_future)

    @property
    def max_report_future_ns(self) -> int:
        return parse_duration_ns(self.max_report_future)

    @property
    def clock_jump_ns(self) -> int:
        return parse_duration_ns(self.clock_jump)

    @property
    def cancel_retry_ns(self) -> int:
        return parse_duration_ns(self.cancel_retry)

    @property
    def cancel_retry_max_ns(self) -> int:
        return parse_duration_ns(self.cancel_retry_max)

    @property
    def max_order_age_ns(self) -> int:
        return parse_duration_ns(self.max_order_age)

    @property
    def order_timeout_ns(self) -> int:
        return parse_duration_ns(self.order_timeout)

    @property
    def heartbeat_ns(self) -> int:
        return parse_duration_ns(self.heartbeat)

    @property
    def command_max_age_ns(self) -> int:
        return parse_duration_ns(self.command_max_age)

    @property
    def reconcile_timeout_s(self) -> float:
        return parse_duration_ns(self.reconcile_timeout) / 1e9

    @property
    def reconcile_retry_s(self) -> float:
        return parse_duration_ns(self.reconcile_retry) / 1e9

    @property
    def reconcile_lookback_ns(self) -> int:
        return parse_duration_ns(self.reconcile_lookback)


class JournalConfig(_Strict, frozen=True):
    """``[journal]``: where the live input journal goes and how often it is fsynced
    (``batch``: reports and commands in small groups, market data in larger ones)."""

    dir: str = "journal/"
    fsync: Literal["always", "batch", "never"] = "batch"
    # the daemon snapshots its engine state every this many records or this often,
    # whichever comes first: a restart applies only the journal after the newest snapshot
    snapshot_every_records: Annotated[int, msgspec.Meta(ge=1_000, le=100_000_000)] = 50_000
    snapshot_every: Duration = "5m"
    # below this many bytes free on the journal's disk (checked at each heartbeat) the
    # daemon goes REDUCE_ONLY with an Alarm, before a full disk stops the journal; 0: off
    min_free_bytes: Annotated[int, msgspec.Meta(ge=0)] = 256 * 2**20
    # the environment variable holding the snapshots' HMAC key: without it no snapshot is
    # written or loaded (a restart replays the journal in full)
    snapshot_key_env: str = "TRADELOOP_SNAPSHOT_KEY"

    @property
    def snapshot_every_s(self) -> float:
        return parse_duration_ns(self.snapshot_every) / 1e9


MonitorAction = Literal["notify", "reduce_only", "halted"]


class MonitorConfig(_Strict, frozen=True):
    """``[monitor]``: model monitoring (``engine.monitor``), the same in replay and live.

    ``window``: the last N scored predictions the IC, hit ratio and calibration are taken
    over; alarms are checked every ``check_every`` scored predictions once the window is
    full. ``drift_window`` (M samples) and ``false_alarm_rate`` (the chance that M
    samples of unchanged data raise a drift alarm on any feature or the score) are
    calibrated by ``tradeloop train`` into the manifest; a running monitor refuses a model
    calibrated for other values. ``ic_min``, ``accuracy_margin`` and ``losing_streak``
    are ``"calibrated"`` (``engine.monitor.alarms``) from the model's out-of-sample IC and
    accuracy to the same ``false_alarm_rate``, per window of ``window`` predictions and of
    ``losing_streak_window`` round trips; a number fixes them (``accuracy_margin``: the
    hit ratio's allowed drop below the out-of-sample accuracy; its rate is stated beside
    it). ``None`` turns an alarm off. Each alarm's action
    (``on_*``) is ``notify`` (an Alarm event and a log line), or the engine's own sticky
    claim on the trading state, ``reduce_only`` or ``halted``, which only an operator
    ``resume`` clears and which never lowers another source's claim. Every action
    defaults to ``notify``: adding a monitor changes no trading decision until asked to.
    """

    enabled: bool = True
    window: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = 1000
    check_every: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 25
    drift_window: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = 500
    reference_bins: Annotated[int, msgspec.Meta(ge=2, le=100)] = 10
    false_alarm_rate: Annotated[float, msgspec.Meta(ge=0.0001, le=0.5)] = 0.01
    ic_min: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)] | Literal["calibrated"] | None = (
        "calibrated"
    )
    accuracy_margin: (
        Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | Literal["calibrated"] | None
    ) = "calibrated"
    losing_streak: (
        Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | Literal["calibrated"] | None
    ) = "calibrated"
    losing_streak_window: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    gap: Duration | None = "30s"
    stale_quote_age: Duration | None = "5s"
    history: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 100_000
    on_low_ic: MonitorAction = "notify"
    on_drift: MonitorAction = "notify"
    on_losing_streak: MonitorAction = "notify"
    on_accuracy: MonitorAction = "notify"
    on_gap: MonitorAction = "notify"

    def __post_init__(self) -> None:
        for name in ("gap", "stale_quote_age"):
            value = getattr(self, name)
            if value is not None and parse_duration_ns(value) <= 0:
                raise ValueError(f"{name} must be a duration > 0, got {value!r}")

    @property
    def gap_ns(self) -> int | None:
        return None if self.gap is None else parse_duration_ns(self.gap)

    @property
    def stale_quote_age_ns(self) -> int | None:
        return None if self.stale_quote_age is None else parse_duration_ns(self.stale_quote_age)


class RegistryConfig(_Strict, frozen=True):
    """``[registry]``: how a registry model's stage limits it (``stage_scale``: the share of
    ``max_position`` per stage), and whether the daemon scores the registry's
    ``challenger`` in shadow beside the champion."""

    stage_scale: StageScale = DEFAULT_STAGE_SCALE
    shadow_challenger: bool = True


class BookConfig(_Strict, frozen=True):
    """``[book]``: the L2 order book kept per instrument where depth data exists (depth
    files in replay, the ``depth`` topic live): ``levels`` price levels per side around
    the touch; ``queue_model``: how a resting order's place in the queue advances with
    cancels at its price (``trades_only``: only trades advance it; ``power``: a cancel
    is ahead of the order with probability from the power rule of exponent
    ``queue_power``)."""

    levels: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 20
    queue_model: Literal["trades_only", "power"] = "power"
    queue_power: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 2.0


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
    live: LiveConfig = LiveConfig()
    journal: JournalConfig = JournalConfig()
    monitor: MonitorConfig = MonitorConfig()
    registry: RegistryConfig = RegistryConfig()
    book: BookConfig = BookConfig()
    # your column names, as ``--columns``: tradeloop name -> the name in your files
    columns: dict[str, str] = {}


def _durations(cfg: Config) -> list[tuple[str, Duration | None, bool]]:
    """Every duration of the config: (dotted path, value, whether zero is allowed)."""
    risk = cfg.risk
    return [
        ("venue.sim.latency", cfg.venue.sim.latency, True),
        ("replay.equity_interval", cfg.replay.equity_interval, False),
        ("train.horizon", cfg.train.horizon, False),
        ("train.sample_interval", cfg.train.sample_interval, False),
        ("train.embargo", cfg.train.embargo, False),
        ("risk.max_quote_age", risk.max_quote_age, False),
        ("mqtt.keepalive", cfg.mqtt.keepalive, False),
        ("mqtt.reconnect_min", cfg.mqtt.reconnect_min, False),
        ("mqtt.reconnect_max", cfg.mqtt.reconnect_max, False),
        ("mqtt.first_connect_timeout", cfg.mqtt.first_connect_timeout, True),
        ("live.order_timeout", cfg.live.order_timeout, False),
        ("live.heartbeat", cfg.live.heartbeat, False),
        ("live.shutdown_timeout", cfg.live.shutdown_timeout, False),
        ("live.reconcile_timeout", cfg.live.reconcile_timeout, False),
        ("live.reconcile_retry", cfg.live.reconcile_retry, False),
        ("live.reconcile_lookback", cfg.live.reconcile_lookback, True),
        ("live.command_max_age", cfg.live.command_max_age, False),
        ("live.max_tick_age", cfg.live.max_tick_age, False),
        ("live.max_tick_future", cfg.live.max_tick_future, False),
        ("live.max_report_future", cfg.live.max_report_future, False),
        ("live.clock_jump", cfg.live.clock_jump, False),
        ("live.cancel_retry", cfg.live.cancel_retry, False),
        ("live.cancel_retry_max", cfg.live.cancel_retry_max, False),
        ("live.max_order_age", cfg.live.max_order_age, False),
        ("journal.snapshot_every", cfg.journal.snapshot_every, False),
        *(
            (f"risk.instruments.{_key(symbol)}.max_quote_age", own.max_quote_age, False)
            for symbol, own in risk.instruments.items()
        ),
    ]


def _validate(cfg: Config) -> None:
    if not cfg.instruments:
        raise ConfigError("instruments", "at least one [[instruments]] entry is required")
    for where, value, zero_allowed in _durations(cfg):
        if value is None:
            continue
        try:
            ns = parse_duration_ns(value)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from exc
        if ns == 0 and not zero_allowed:
            raise ConfigError(where, f"must be a duration > 0, got {value!r}")
    FeatureSet(list(cfg.features))  # raises ConfigError with the feature's name
    train = cfg.train
    if train.embargo is not None and train.embargo_ns < train.horizon_ns:
        raise ConfigError(
            "train.embargo", "must be at least the label horizon, or test labels leak into training"
        )
    not_declared = [f for f in train.features if f not in {s.name for s in cfg.features}]
    if not_declared:
        raise ConfigError("train.features", f"not features of the set: {not_declared}")
    symbols = {i.symbol for i in cfg.instruments}
    unknown = set(cfg.risk.instruments) - symbols
    if unknown:
        raise ConfigError("risk.instruments", f"limits for unknown instruments {sorted(unknown)}")


# msgspec ends a ValidationError with "- at `$.a[0].b`" (or "- at `key` in `$.a`" for a
# bad mapping key); "[...]" stands for a mapping value whose key it does not say.
_AT = re.compile(r"^(?P<reason>.*) - at (?:`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>.*)`$", re.DOTALL)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MISSING = object()


def _segments(path: str) -> list[str | int | None]:
    """``.a[0].b`` -> ``["a", 0, "b"]``; ``None`` for a mapping value of unknown key."""
    out: list[str | int | None] = []
    for m in _SEGMENT.finditer(path):
        name, index = m.groups()
        out.append(name if name is not None else int(index) if index is not None else None)
    return out


def _key(name: str) -> str:
    """A key as TOML writes it in a dotted path: bare if it can be, quoted otherwise (which
    also keeps a newline in a key from splitting the one-line error)."""
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _dotted(prefix: str, segments: list[str | int | None]) -> str:
    text = prefix
    for seg in segments:
        if isinstance(seg, int):
            text += f"[{seg}]"
        else:
            text += ("." if text else "") + ("[...]" if seg is None else _key(seg))
    return text


def _value_at(data: object, segments: list[str | int | None]) -> object:
    for seg in segments:
        found = (isinstance(data, dict) and seg in data) or (
            isinstance(data, list) and isinstance(seg, int) and seg < len(data)
        )
        if not found:
            return _MISSING
        data = data[seg]  # type: ignore[index]
    return data


def _type_at(t: mi.Type, segments: list[str | int | None]) -> mi.Type | None:
    for seg in segments:
        t = _without_none(t)
        if isinstance(t, mi.StructType) and isinstance(seg, str):
            found = [f.type for f in t.fields if f.name == seg]
            if not found:
                return None
            t = found[0]
        elif isinstance(t, mi.ListType) and isinstance(seg, int):
            t = t.item_type
        elif isinstance(t, mi.DictType):
            t = t.value_type
        else:
            return None
    return t


def _without_none(t: mi.Type) -> mi.Type:
    if isinstance(t, mi.UnionType):
        kept = [u for u in t.types if not isinstance(u, mi.NoneType)]
        if len(kept) == 1:
            return kept[0]
    return t


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _expected(t: mi.Type | None) -> str | None:
    """What a field takes, in words, for the kinds of field whose msgspec message is unclear."""
    t = None if t is None else _without_none(t)
    if isinstance(t, mi.IntType | mi.FloatType):
        bounds = [
            f"{op} {bound:g}" if isinstance(bound, float) else f"{op} {bound}"
            for op, bound in ((">", t.gt), (">=", t.ge), ("<", t.lt), ("<=", t.le))
            if bound is not None
        ]
        what = (
            "an integer"
            if isinstance(t, mi.IntType)
            else "a finite number"
            if bounds
            else "a number"
        )
        return f"must be {what} {' and '.join(bounds)}".rstrip()
    if isinstance(t, mi.Metadata) and (t.extra or {}).get("unit") == "duration":
        return "must be a duration like '250us', '5s', '2m' or an int of ns"
    return None


def _config_error(
    exc: msgspec.ValidationError, data: object, root: Any, prefix: str, file: str
) -> ConfigError:
    """The ``ConfigError`` for a msgspec error met while converting ``data`` to ``root``,
    which sits at dotted path ``prefix`` of the config read from ``file``."""
    text = str(exc)
    m = _AT.match(text)
    reason, segments = (m.group("reason"), _segments(m.group("path"))) if m else (text, [])
    field_type = _type_at(mi.type_info(root), segments)
    unknown = _UNKNOWN.match(reason)
    if unknown is not None:
        container = None if field_type is None else _without_none(field_type)
        known = [f.name for f in container.fields] if isinstance(container, mi.StructType) else []
        segments = [*segments, unknown.group("key")]
        reason = "unknown key" + (f" (known keys: {', '.join(known)})" if known else "")
    else:
        expected = _expected(field_type)
        reason = expected or reason
        value = _value_at(data, segments)
        if value is not _MISSING and (expected or reason.startswith("Expected")):
            reason = f"{reason.split(', got ')[0]}, got {_shown(value)}"
    # a struct's own check may quote a user's string: the CLI's error stays one line
    return ConfigError(_dotted(prefix, segments) or file, reason.replace("\n", "\\n"))


def _convert(data: object, root: type[T], prefix: str, file: str) -> T:
    try:
        return msgspec.convert(data, root)
    except msgspec.ValidationError as exc:
        raise _config_error(exc, data, root, prefix, file) from exc


def config_from_dict(data: dict[str, Any], where: str = "<config>") -> Config:
    """Build and validate a config from parsed TOML.

    Raises:
        ConfigError: unknown key, wrong type, or invalid value; names the field by its
            dotted path.
    """
    # msgspec names a bad mapping value "[...]", not by its key: check each instrument's
    # limits on their own first, so the error says which symbol.
    risk = data.get("risk")
    own_limits = risk.get("instruments") if isinstance(risk, dict) else None
    if isinstance(own_limits, dict):
        for symbol, limits in own_limits.items():
            _convert(limits, RiskLimits, f"risk.instruments.{_key(symbol)}", where)
    columns = data.get("columns")
    if isinstance(columns, dict):
        for name, column in columns.items():
            if not isinstance(column, str) or not column:
                raise ConfigError(
                    f"columns.{_key(name)}", f"must be the column's name, got {_shown(column)}"
                )
    cfg = _convert(data, Config, "", where)
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
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), f"not UTF-8 text (byte {exc.start}): {exc.reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"
        raise ConfigError(str(p), f"not valid TOML: {exc}") from exc
    cfg = config_from_dict(model_paths_relative_to(data, p.parent), str(p))
    return cfg, hashlib.sha256(raw).hexdigest()


def model_paths_relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``[model] path`` and ``registry`` of parsed TOML read relative to the config file's
    folder, not the working directory: a config and its model move together."""
    model = data.get("model")
    if not isinstance(model, dict):
        return data
    model = dict(model)
    for key in ("path", "registry"):
        value = model.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            model[key] = str(folder / value)
    return {**data, "model": model}
