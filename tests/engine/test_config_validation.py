"""Every config value is checked when the file is loaded: NaN, infinities, zero, negative
and absurd numbers, bad durations and unknown keys are a ``ConfigError`` that names the
field by its dotted path."""

from __future__ import annotations

import copy
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config, config_from_dict, load_config
from engine.errors import ConfigError
from engine.units import MAX_DURATION_NS, parse_duration_ns
from tests.conftest import BASE_CONFIG


def _config(section: str, values: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(BASE_CONFIG)
    data[section] = {**data.get(section, {}), **values}
    return data


def _refused(section: str, values: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(_config(section, values))
    return info.value


_LIMITS = ["max_order_qty", "max_position", "daily_loss_limit", "max_drawdown",
           "max_gross_exposure", "price_collar_bps", "orders_per_second",
           "account_orders_per_second"]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (field, value)
        for field in _LIMITS
        for value in (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300)
        # 0 is a position limit (only reducing orders), not a mistake: see below
        if (field, value) != ("max_position", 0.0)
    ],
)
def test_config_risk_limit_not_finite_or_out_of_range_is_refused(field: str, value: float) -> None:
    err = _refused("risk", {field: value})
    assert err.where == f"risk.{field}"
    assert "finite number" in err.reason and f"got {value!r}" in err.reason


def test_config_max_position_zero_is_a_limit() -> None:
    # a shadow-stage registry model runs with max_position scaled to 0, and its run
    # folder's config.toml must load again
    cfg = config_from_dict(_config("risk", {"max_position": 0.0}))
    assert cfg.risk.max_position == 0.0
    own = config_from_dict(_config("risk", {"instruments": {"BTC-USD": {"max_position": 0.0}}}))
    assert own.risk.instruments["BTC-USD"].max_position == 0.0


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -5.0])
def test_config_instrument_limit_not_finite_names_the_symbol(value: float) -> None:
    err = _refused("risk", {"instruments": {"BTC-USD": {"max_order_qty": value}}})
    assert err.where == "risk.instruments.BTC-USD.max_order_qty"
    assert str(err).startswith("config risk.instruments.BTC-USD.max_order_qty: must be")


def test_config_instrument_limit_wrong_type_and_unknown_key_name_the_symbol() -> None:
    err = _refused("risk", {"instruments": {"BTC-USD": {"max_open_orders": 2.5}}})
    assert err.where == "risk.instruments.BTC-USD.max_open_orders"
    assert "integer" in err.reason
    err = _refused("risk", {"instruments": {"ETH-USD": {"max_qty": 1.0}}})
    assert err.where == "risk.instruments.ETH-USD.max_qty"
    assert "unknown key" in err.reason and "max_order_qty" in err.reason


@pytest.mark.parametrize(
    ("section", "values", "where"),
    [
        ("venue", {"sim": {"latency": "250us", "fee_bps": math.nan}}, "venue.sim.fee_bps"),
        ("venue", {"sim": {"fee_bps": -1.0}}, "venue.sim.fee_bps"),
        ("venue", {"sim": {"maker_fee_bps": -math.inf}}, "venue.sim.maker_fee_bps"),
        ("replay", {"initial_cash": 0.0}, "replay.initial_cash"),
        ("replay", {"initial_cash": -100.0}, "replay.initial_cash"),
        ("replay", {"initial_cash": math.nan}, "replay.initial_cash"),
        ("replay", {"batch_size": 0}, "replay.batch_size"),
        ("replay", {"batch_size": 2**70}, "replay.batch_size"),
        ("mqtt", {"port": 0}, "mqtt.port"),
        ("mqtt", {"port": 70_000}, "mqtt.port"),
        ("risk", {"max_open_orders": 0}, "risk.max_open_orders"),
        ("risk", {"account_max_open_orders": 2**63}, "risk.account_max_open_orders"),
    ],
)
def test_config_number_out_of_range_is_refused(
    section: str, values: dict[str, Any], where: str
) -> None:
    assert _refused(section, values).where == where


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", -0.1),
        ("learning_rate", 0.0),
        ("learning_rate", math.nan),
        ("num_leaves", 1),
        ("num_leaves", 10**6),
        ("min_data_in_leaf", -5),
        ("min_data_in_leaf", 0),
        ("folds", 1),
        ("folds", 0),
        ("max_rounds", 0),
        ("early_stopping_rounds", 0),
        ("validation_fraction", 0.0),
        ("validation_fraction", 1.5),
        ("validation_fraction", math.nan),
        ("dead_zone_bps", -1.0),
        ("dead_zone_bps", math.inf),
        ("seed", -1),
        ("seed", 2**40),
        ("suspicious_auc", 2.0),
        ("horizon", 0),
        ("horizon", "0s"),
        ("sample_interval", "0s"),
        ("embargo", -1),
        ("embargo", "-1s"),
    ],
)
def test_config_train_value_lightgbm_would_reject_is_refused(field: str, value: Any) -> None:
    err = _refused("train", {field: value})
    assert err.where == f"train.{field}"


@pytest.mark.parametrize(
    ("where", "section", "values"),
    [
        ("risk.max_quote_age", "risk", {"max_quote_age": "0s"}),
        ("risk.max_quote_age", "risk", {"max_quote_age": 0}),
        ("risk.max_quote_age", "risk", {"max_quote_age": 10**30}),
        ("risk.max_quote_age", "risk", {"max_quote_age": "9" * 400 + "s"}),
        ("risk.max_quote_age", "risk", {"max_quote_age": "5 parsecs"}),
        ("risk.instruments.BTC-USD.max_quote_age", "risk",
         {"instruments": {"BTC-USD": {"max_quote_age": "0ms"}}}),
        ("replay.equity_interval", "replay", {"equity_interval": "0s"}),
        ("replay.equity_interval", "replay", {"equity_interval": "400d"}),
        ("venue.sim.latency", "venue", {"sim": {"latency": -1}}),
        ("venue.sim.latency", "venue", {"sim": {"latency": 1.5}}),
    ],
)  # fmt: skip
def test_config_duration_zero_unparsable_or_too_long_is_refused(
    where: str, section: str, values: dict[str, Any]
) -> None:
    assert _refused(section, values).where == where


def test_config_values_at_their_bounds_are_accepted() -> None:
    data = copy.deepcopy(BASE_CONFIG)
    data["risk"] = {"max_order_qty": 1e12, "price_collar_bps": 10_000.0, "max_quote_age": "366d",
                    "instruments": {"BTC-USD": {"max_open_orders": 1}}}  # fmt: skip
    data["venue"] = {"sim": {"latency": 0, "fee_bps": 0.0, "maker_fee_bps": -100.0}}
    data["train"] = {"folds": 2, "num_leaves": 2, "seed": 0, "dead_zone_bps": 0.0,
                     "validation_fraction": 0.5, "learning_rate": 1.0, "horizon": 1,
                     "embargo": "1s"}  # fmt: skip
    cfg = config_from_dict(data)
    assert cfg.risk.limits_for("BTC-USD").max_quote_age_ns == MAX_DURATION_NS
    assert cfg.venue.sim.latency_ns == 0 and cfg.train.embargo_ns == 1_000_000_000


def test_config_wrong_type_says_what_the_field_takes_and_what_it_got() -> None:
    err = _refused("risk", {"max_order_qty": "lots"})
    assert str(err) == (
        "config risk.max_order_qty: must be a finite number > 0 and <= 1e+12, got 'lots'"
    )
    err = _refused("train", {"horizon": True})
    assert err.where == "train.horizon" and "duration" in err.reason


def test_config_unknown_key_is_named_with_its_section_and_the_known_keys() -> None:
    err = _refused("train", {"learning_rte": 0.1})
    assert err.where == "train.learning_rte"
    assert "unknown key" in err.reason and "learning_rate" in err.reason


@pytest.mark.parametrize("name", ["default_config.toml", "ml_config.toml"])
def test_config_bundled_files_load(name: str) -> None:
    cfg, digest = load_config(Path(str(resources.files("replay") / name)))
    assert isinstance(cfg, Config) and len(digest) == 64


def test_load_config_not_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[risk]\nmax_order_qty = 1\nmax_position = = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.where == str(path) and "line 3" in info.value.reason
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_load_config_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"mode = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_load_config_nan_limit_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[instruments]]\nsymbol = "BTCUSDT"\n'
                    '[risk.instruments.BTCUSDT]\nmax_order_qty = nan\n')  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        "config risk.instruments.BTCUSDT.max_order_qty: "
        "must be a finite number > 0 and <= 1e+12, got nan"
    )


@pytest.mark.parametrize(
    ("text", "ns"), [("250us", 250_000), ("1.5ms", 1_500_000), ("2m", 120 * 10**9), (7, 7)]
)
def test_parse_duration_ns_valid(text: str | int, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("value", ["9" * 400 + "s", "367d", MAX_DURATION_NS + 1, 10**30, -1, True])
def test_parse_duration_ns_huge_negative_or_bool_is_a_value_error(value: str | int) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ns(value)


def test_load_config_model_path_and_registry_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "desk"
    folder.mkdir()
    base = '[[instruments]]\nsymbol = "X"\n[[features]]\nname = "m"\nkind = "mid"\n[model]\n'
    (folder / "a.toml").write_text(base + 'path = "models/m1"\n')
    (folder / "b.toml").write_text(base + 'registry = "reg"\n')
    (folder / "c.toml").write_text(base + f'path = "{tmp_path}"\n')
    monkeypatch.chdir(tmp_path)  # elsewhere than the config: the working directory is not used
    a, _ = load_config(folder / "a.toml")
    b, _ = load_config(folder / "b.toml")
    c, _ = load_config(folder / "c.toml")
    assert a.model is not None and Path(a.model.path or "") == folder / "models" / "m1"
    assert b.model is not None and Path(b.model.registry or "") == folder / "reg"
    assert b.model.alias == "champion"
    assert c.model is not None and c.model.path == str(tmp_path)  # absolute: kept


def test_config_model_path_and_registry_together_are_refused() -> None:
    error = _refused("model", {"path": "m", "registry": "r"})
    assert "model" in str(error) and "not both" in str(error)


@pytest.mark.parametrize(
    ("section", "values", "where"),
    [
        ("live", {"external_orders": "ignore"}, "live.external_orders"),
        ("registry", {"stage_scale": {"shadow": 0.5}}, "registry.stage_scale"),
        ("registry", {"stage_scale": {"paper": 0.9, "live": 0.5}}, "registry.stage_scale"),
        ("columns", {"bid": 3}, "columns.bid"),
    ],
)
def test_config_new_sections_refuse_bad_values_by_path(
    section: str, values: dict[str, Any], where: str
) -> None:
    assert where in str(_refused(section, values))


def test_config_new_sections_defaults() -> None:
    cfg = config_from_dict(copy.deepcopy(BASE_CONFIG))
    assert cfg.live.external_orders == "flag"
    assert cfg.registry.stage_scale.paper == 0.25 and cfg.registry.shadow_challenger
    assert cfg.columns == {} and cfg.replay.start is None and cfg.replay.end is None
