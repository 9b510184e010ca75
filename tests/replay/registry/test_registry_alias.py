"""A replay of a registry model by alias: a LightGBM model trained in the test on sample
data, added with ``tradeloop models add`` and promoted to champion at stage paper, runs as
that version with its position held to the paper share of ``max_position``; a changed
version folder or audit log is refused before any tick is read; promote then rollback
replays the earlier version's decisions bit for bit."""

from __future__ import annotations

import argparse
import shlex
import shutil
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from adapters.model_registry_store import AUDIT_FILE, Registry
from engine.assembly import load_registry_model, resolve_model_config
from engine.config import Config, config_from_dict, load_config
from engine.errors import AuditChainError, RegistryError
from engine.events import Fill, Signal
from engine.strategy import NoParams, Strategy
from replay.backtest.report import write_report
from replay.backtest.runner import ReplayRun, run_replay
from replay.files.sample_data import split_by_time
from replay.registry.cli import add_models_commands
from replay.research.training.run import train

SYMBOLS = [
    {"symbol": "BTC-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-5},
    {"symbol": "ETH-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-4},
]
FEATURES = ["imb", "imb_ema", "flow_2s", "ret_1s", "z_mid_10s"]
# BTC has its own limit, ETH takes the account default: the stage must scale both
MAX_POSITION = {"BTC-USD": 0.2, "ETH-USD": 2.0}
STEP = {"BTC-USD": 0.01, "ETH-USD": 0.1}  # 600 and 300 in notional, above the dust floor
PAPER = 0.25  # the default [registry] stage_scale.paper


class Pyramid(Strategy):
    """Buys one more step each time the score crosses up through 0.5 and never sells, so
    its position grows until ``max_position`` refuses the next step: the limit, not the
    strategy, decides how far it gets."""

    name = "pyramid"
    Params = NoParams

    def thresholds(self) -> Sequence[float]:
        return (0.5,)

    def on_signal(self, signal: Signal) -> None:
        if signal.zone == 1:
            self.ctx.submit_market(signal.instrument, "buy", STEP[signal.instrument])


def config(models: Path | None = None, *, alias: str = "champion", **extra: Any) -> Config:
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = SYMBOLS
    data["train"] |= {"folds": 3, "sample_interval": "200ms", "min_data_in_leaf": 50,
                      "features": FEATURES}  # fmt: skip
    data["risk"] |= {
        "max_position": MAX_POSITION["ETH-USD"],
        "instruments": {"BTC-USD": {"max_position": MAX_POSITION["BTC-USD"]}},
    }
    if models is not None:
        data["model"] = {"registry": str(models), "alias": alias}
    data |= extra
    return config_from_dict(data)


def models_cli(argv: str) -> None:
    """``tradeloop models ...`` as the dispatcher runs it."""
    parser = argparse.ArgumentParser(prog="tradeloop")
    add_models_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(shlex.split(argv))
    assert args.func(args) == 0


def replay(cfg: Config, data: Path) -> ReplayRun:
    return run_replay(cfg, data, batch_size=4096, progress=False, strategy=Pyramid(NoParams()))


def max_positions(fills: list[Fill]) -> dict[str, float]:
    position: dict[str, float] = defaultdict(float)
    peak: dict[str, float] = defaultdict(float)
    for f in fills:
        position[f.instrument] += f.qty if f.side == "buy" else -f.qty
        peak[f.instrument] = max(peak[f.instrument], abs(position[f.instrument]))
    return dict(peak)


@pytest.fixture(scope="module")
def trained(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two real models of the same feature set trained on the first two thirds of the
    sample (A: LightGBM, B: the logistic baseline), and the held-out third."""
    root = tmp_path_factory.mktemp("alias")
    split_by_time(sample_dir, root / "train", root / "hold", 2 / 3)
    train(config(), root / "train", root / "lgbm", progress=False)
    logistic = config(train={**train_table(), "model": "logistic"})
    train(logistic, root / "train", root / "logistic", progress=False)
    return root / "lgbm", root / "logistic", root / "hold"


def train_table() -> dict[str, Any]:
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    return dict(data["train"]) | {"folds": 3, "sample_interval": "200ms",
                                  "min_data_in_leaf": 50, "features": FEATURES}  # fmt: skip


@pytest.fixture(scope="module")
def registry(trained: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with A as champion at stage paper and B added (stage shadow)."""
    reg = tmp_path_factory.mktemp("registry") / "models"
    lgbm, logistic, _ = trained
    models_cli(f"models add {lgbm} --registry {reg} --who ana --note 'lightgbm fit'")
    models_cli(f"models add {logistic} --registry {reg} --who ana --note 'baseline'")
    a = Registry(reg).state().entries[0].version
    models_cli(f"models promote {a} --to champion --stage paper --registry {reg} "
               "--who ana --reason 'beat the baseline'")  # fmt: skip
    return reg


def writable_copy(registry: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(registry, copy)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def test_replay_by_alias_runs_that_version_at_the_paper_share_of_max_position(
    registry: Path, trained: tuple[Path, Path, Path]
) -> None:
    """Mutation-checked: with ``scaled_risk`` leaving ``[risk.instruments.*]`` limits
    unscaled (only the account default scaled), BTC-USD reached 0.2 > 0.25 x 0.2 and this
    test failed; with the stage not applied at all, both instruments did."""
    champion = Registry(registry).lookup("champion")
    run = replay(config(registry), trained[2])
    source = run.model_source
    assert source is not None
    assert (source.version, source.stage, source.share) == (champion.version, "paper", PAPER)
    assert source.ref == "champion" and source.path == champion.path
    # the run's config is what ran: that version's folder, the limits at the paper share
    assert run.config.model is not None and run.config.model.path == str(champion.path)
    assert run.config.model.registry is None and run.config.model.kind == "lightgbm"
    assert run.engine.model is not None and run.engine.model.name == champion.manifest.name
    peak = max_positions(run.recorder.fills)
    for symbol, limit in MAX_POSITION.items():
        assert 0 < peak[symbol] <= limit * PAPER + 1e-9, symbol
    for symbol, limit in MAX_POSITION.items():
        i = run.engine.instruments.symbols.index(symbol)
        assert run.engine.risk.limits[i].max_position == limit * PAPER
    assert {r.check for r in run.recorder.risk_rejections} >= {"max_position"}

    # the same version without the scale goes past the paper share: the limit above bit
    full = config(registry, registry={"stage_scale": {"paper": 1.0, "live": 1.0}})
    unscaled = max_positions(replay(full, trained[2]).recorder.fills)
    for symbol, limit in MAX_POSITION.items():
        assert limit * PAPER < unscaled[symbol] <= limit + 1e-9, symbol


def test_shadow_stage_sends_nothing_in_replay(
    registry: Path, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    reg = writable_copy(registry, tmp_path)
    b = Registry(reg).state().entries[1].version
    models_cli(f"models promote {b} --to challenger --registry {reg} --who ana --reason shadow")
    run = replay(config(reg, alias="challenger"), trained[2])
    assert run.model_source is not None and run.model_source.stage == "shadow"
    assert run.recorder.signals > 0  # the model scored and the strategy tried
    assert run.recorder.fills == []
    assert run.recorder.risk_rejections
    assert {r.check for r in run.recorder.risk_rejections} == {"max_position"}
    # the run folder says which version ran at which stage, and its config.toml (limits
    # scaled to 0) loads again
    metrics = write_report(run, tmp_path / "run", "0" * 64)
    shown = metrics["header"]["model"]["registry"]
    assert (shown["ref"], shown["version"], shown["stage"]) == ("challenger", b, "shadow")
    assert shown["max_position_share"] == 0.0
    assert b in (tmp_path / "run" / "report.html").read_text()
    again, _ = load_config(tmp_path / "run" / "config.toml")
    assert again.risk.max_position == 0.0


def test_tampered_model_file_is_refused_at_load_naming_it(
    registry: Path, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    reg = writable_copy(registry, tmp_path)
    found = Registry(reg).lookup("champion")
    model_file = found.path / "model.txt"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    model_file.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=r"model\.txt") as caught:
        replay(config(reg), trained[2])
    assert str(model_file) in str(caught.value)


def test_tampered_audit_log_is_refused_at_load_naming_it(
    registry: Path, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    reg = writable_copy(registry, tmp_path)
    audit = reg / AUDIT_FILE
    audit.write_bytes(audit.read_bytes().replace(b"beat the baseline", b"beat the baselinE"))
    with pytest.raises(AuditChainError) as caught:
        replay(config(reg), trained[2])
    assert caught.value.file == str(audit) and caught.value.line == 3


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("challenger", "alias challenger is not set"),
        ("0123456789", "no version '0123456789'"),
        ("newest", "neither an alias"),
        ("abc", "neither an alias"),
    ],
)
def test_unset_or_unknown_alias_is_a_clear_error(registry: Path, alias: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        resolve_model_config(config(registry, alias=alias))


def test_promote_then_rollback_replays_the_earlier_version_bit_for_bit(
    registry: Path, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    reg = writable_copy(registry, tmp_path)
    state = Registry(reg).state()
    a, b = state.entries[0].version, state.entries[1].version
    before = replay(config(reg), trained[2])
    models_cli(f"models promote {b[:10]} --to champion --stage paper --registry {reg} "
               "--who bo --reason 'try the baseline'")  # fmt: skip
    other = replay(config(reg), trained[2])
    models_cli(f"models rollback champion --registry {reg} --who bo --reason 'IC alarm'")
    after = replay(config(reg), trained[2])
    assert before.model_source is not None and before.model_source.version == a
    assert other.model_source is not None and other.model_source.version == b
    assert after.model_source is not None and after.model_source.version == a
    assert other.recorder.fills != before.recorder.fills  # B decides differently
    assert after.recorder.fills == before.recorder.fills  # Fill structs: every field, exact
    assert after.recorder.risk_rejections == before.recorder.risk_rejections
    assert after.recorder.signals == before.recorder.signals
    assert after.engine.portfolio.cash[0] == before.engine.portfolio.cash[0]


def test_challenger_loads_beside_the_champion_on_the_same_features(
    registry: Path, tmp_path: Path
) -> None:
    reg = writable_copy(registry, tmp_path)
    b = Registry(reg).state().entries[1].version
    models_cli(f"models promote {b} --to challenger --registry {reg} --who ana --reason shadow")
    model, source = load_registry_model(config(reg), "challenger")
    assert source.version == b and source.stage == "shadow" and source.share == 0.0
    assert list(model.feature_names) == FEATURES


def test_missing_registry_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no model registry here"):
        resolve_model_config(config(tmp_path / "nowhere"))
