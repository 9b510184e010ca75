"""The read-only registry resolver and the stage's capital limit: what a version's stage
does to ``max_position`` (account default and per-instrument), how a reference that names
nothing or more than one version is refused, and that a config without a registry passes
through untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.assembly import resolve_model_config, scaled_risk
from engine.config import config_from_dict
from engine.errors import ConfigError, RegistryError
from engine.model_registry import RegistryReader, RegistryState, VersionInfo
from engine.registry_types import StageScale
from engine.risk import RiskConfig
from engine.risk.limits import RiskLimits

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
RISK = RiskConfig(
    max_position=8.0,
    max_order_qty=3.0,
    instruments={"BTC-USD": RiskLimits(max_position=0.4), "ETH-USD": RiskLimits(max_order_qty=1.0)},
)


def positions(risk: RiskConfig) -> dict[str, float | None]:
    return {s: risk.limits_for(s).max_position for s in SYMBOLS}


def test_scaled_risk_paper_scales_default_and_own_limits() -> None:
    out = scaled_risk(RISK, SYMBOLS, "paper", StageScale(paper=0.25))
    assert positions(out) == {"BTC-USD": 0.1, "ETH-USD": 2.0, "SOL-USD": 2.0}
    # nothing else moves
    assert out.max_order_qty == 3.0 and out.limits_for("ETH-USD").max_order_qty == 1.0


def test_scaled_risk_shadow_allows_no_position_even_without_a_limit() -> None:
    out = scaled_risk(RiskConfig(), SYMBOLS, "shadow", StageScale())
    assert positions(out) == dict.fromkeys(SYMBOLS, 0.0)
    assert positions(scaled_risk(RISK, SYMBOLS, "shadow", StageScale())) == dict.fromkeys(
        SYMBOLS, 0.0
    )


def test_scaled_risk_live_at_full_share_is_unchanged() -> None:
    assert scaled_risk(RISK, SYMBOLS, "live", StageScale()) is RISK


def test_scaled_risk_paper_without_a_limit_to_scale_is_refused() -> None:
    risk = RiskConfig(instruments={"BTC-USD": RiskLimits(max_position=1.0)})
    with pytest.raises(ConfigError, match=r"ETH-USD, SOL-USD has none to scale") as caught:
        scaled_risk(risk, SYMBOLS, "paper", StageScale())
    assert caught.value.where == "risk.max_position"


def state_with(*versions: str) -> RegistryState:
    state = RegistryState()
    for v in versions:
        state.versions[v] = VersionInfo(v, "shadow", 0, "ana", "added")
    return state


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("abcdef", "ambiguous"),  # two versions start with it
        ("abcdef1", None),
        ("ABCDEF2", None),  # hex is case-blind
        ("abcde", "neither an alias"),  # too short to name one version safely
        ("champion", "alias champion is not set"),
        ("fedcba", "no version 'fedcba'"),
        ("latest", "neither an alias"),
    ],
)
def test_find_refuses_ambiguous_unknown_and_unset(
    tmp_path: Path, ref: str, message: str | None
) -> None:
    one, two = "abcdef1" + "0" * 57, "abcdef2" + "0" * 57
    reader = RegistryReader(tmp_path)
    state = state_with(one, two)
    if message is None:
        assert reader.find(state, ref) == (one if ref.endswith("1") else two)
    else:
        with pytest.raises(RegistryError, match=message):
            reader.find(state, ref)


def test_config_without_registry_passes_through() -> None:
    cfg = config_from_dict(
        {
            "instruments": [{"symbol": "X", "venue": "V", "tick_size": 0.01, "lot_size": 1.0}],
            "features": [{"name": "mid", "kind": "mid"}],
            "model": {"path": "m"},
        }
    )
    assert resolve_model_config(cfg) == (cfg, None)
    assert resolve_model_config(cfg)[0] is cfg
