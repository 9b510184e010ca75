"""Shipped strategies and plugin resolution."""

from __future__ import annotations

import msgspec
import pytest

from engine.config import ModelConfig, StrategyConfig
from engine.errors import PluginLoadError
from engine.events import Command, Signal
from engine.plugins import load_model, load_strategy
from strategies.ema_cross import EmaCross
from strategies.ml_threshold import MlThreshold, MlThresholdParams
from tests.support import make_engine, quotes

T = 1_700_000_000_000_000_000


def _signal(zone: int, prev: int = -1) -> Signal:
    return Signal(
        ts_event=T, ts_recv=T, instrument="X", model="m", score=0.0, zone=zone, previous_zone=prev
    )


def _fill(engine) -> None:  # type: ignore[no-untyped-def]
    now = engine.clock.now_ns() + 1
    engine.process_batch(quotes([(now, 99.0, 101.0, 100.0, 100.0)]))


def test_entry_points_and_module_paths_resolve() -> None:
    assert isinstance(
        load_strategy(StrategyConfig(name="ema_cross", params={"qty": 1.0})), EmaCross
    )
    assert isinstance(
        load_strategy(StrategyConfig(name="ml_threshold", params={"qty": 1.0})), MlThreshold
    )
    assert isinstance(
        load_strategy(StrategyConfig(name="strategies.ema_cross:EmaCross", params={"qty": 1.0})),
        EmaCross,
    )


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("ema_cross", {"qty": 1.0, "notional": 5.0}, "exactly one"),
        ("ema_cross", {"qty": 1.0, "bogus": 1}, "bad params"),
        ("ml_threshold", {"qty": 1.0, "upper": 0.4, "lower": 0.6}, "lower must be below upper"),
        ("ml_threshold", {"qty": 1.0, "exit": 0.9}, "exit must lie"),
        ("nope:Nothing", {}, "cannot import module"),
    ],
)
def test_bad_strategy_params_are_refused_at_start_up(
    name: str, params: dict[str, object], match: str
) -> None:
    with pytest.raises(PluginLoadError, match=match):
        load_strategy(StrategyConfig(name=name, params=params))


def test_unknown_model_kind_is_refused() -> None:
    with pytest.raises(PluginLoadError, match="no entry point 'xgb'"):
        load_model(ModelConfig(kind="xgb"))
    with pytest.raises(PluginLoadError, match="one weight per feature"):
        load_model(ModelConfig(kind="linear", params={"features": ["a", "b"], "weights": [1.0]}))


def _ml(**kw: object) -> tuple[MlThreshold, object]:
    strat = MlThreshold(msgspec.convert({"qty": 1.0, **kw}, MlThresholdParams))
    engine = make_engine(strat, lot_size=0.1)
    engine.process_batch(quotes([(T, 99.0, 101.0, 100.0, 100.0)]))
    return strat, engine


def test_ml_threshold_long_short_flat_zones() -> None:
    strat, engine = _ml()
    assert strat.thresholds() == (0.45, 0.55)
    for zone, expected in [(2, 1.0), (1, 0.0), (0, -1.0), (2, 1.0)]:
        strat.on_signal(_signal(zone))
        _fill(engine)
        assert engine.portfolio.positions[0] == expected, zone  # type: ignore[attr-defined]


def test_ml_threshold_hysteresis_holds_until_exit() -> None:
    strat, engine = _ml(upper=0.6, lower=0.4, exit=0.5)
    assert strat.thresholds() == (0.4, 0.5, 0.6)
    steps = [(3, 1.0), (2, 1.0), (1, 0.0), (0, -1.0), (1, -1.0), (2, 0.0)]
    for zone, expected in steps:
        strat.on_signal(_signal(zone))
        _fill(engine)
        assert engine.portfolio.positions[0] == expected, zone  # type: ignore[attr-defined]


def test_trade_to_under_reduce_only_closes_instead_of_flipping_and_halted_sends_nothing() -> None:
    strat, engine = _ml()
    strat.on_signal(_signal(2))
    _fill(engine)
    engine.on_command(Command(ts_event=T, ts_recv=T, action="reduce_only"))  # type: ignore[attr-defined]
    strat.on_signal(_signal(0))  # would flip to -1: closes to 0
    _fill(engine)
    assert engine.portfolio.positions[0] == 0.0  # type: ignore[attr-defined]
    strat.on_signal(_signal(2))  # would open: nothing
    assert engine.risk.rejections.total() == 0  # type: ignore[attr-defined]
    engine.on_command(Command(ts_event=T, ts_recv=T, action="kill"))  # type: ignore[attr-defined]
    assert strat.trade_to("X", 1.0) is None


class MeanModel:
    """A user's model plugin, as in the README."""

    def __init__(self, name: str, features: list[str]) -> None:
        self.name, self.feature_names = name, tuple(features)

    @classmethod
    def from_config(cls, config: ModelConfig) -> MeanModel:
        return cls(config.name, config.params["features"])

    def predict(self, features):  # type: ignore[no-untyped-def]
        return features.mean(axis=1)


def test_model_plugin_by_module_path_runs_in_the_engine() -> None:
    import numpy as np

    from engine.features import FeatureSpec

    model = load_model(ModelConfig(kind="tests.strategies.test_strategies:MeanModel", name="mean",
                                   params={"features": ["imb", "mid"]}))  # fmt: skip
    assert isinstance(model, MeanModel)
    np.testing.assert_array_equal(
        model.predict(np.array([[1.0, 3.0], [np.nan, 1.0]])), [2.0, np.nan]
    )
    strat = MlThreshold(
        msgspec.convert({"qty": 1.0, "upper": 50.5, "lower": 49.5}, MlThresholdParams)
    )
    feats = [FeatureSpec(name="mid", kind="mid"), FeatureSpec(name="imb", kind="book_imbalance")]
    engine = make_engine(strat, features=feats, model=model)
    engine.process_batch(quotes([(T, 99.0, 101.0, 1.0, 1.0), (T + 1, 101.0, 103.0, 1.0, 1.0)]))
    assert engine.counters["signals"] == 2  # score (imb + mid) / 2: 50 then 51
