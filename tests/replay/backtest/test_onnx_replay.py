"""An ONNX model (a scikit-learn MLP fitted here, exported with skl2onnx, imported) drives
the ML threshold strategy in a replay of generated ticks: it signals and trades, its
results do not depend on the batch size, and a config whose features differ from the
ones it was imported for is refused before any tick flows."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.config import Config
from engine.errors import ModelError, PluginLoadError
from replay.backtest.runner import run_replay
from replay.files.sample_data import generate
from tests.onnx_support import ml_config, onnx_folder


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate(out, symbols=1, hours=0.1, quote_interval_ms=100.0, seed=5)
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder, _ = onnx_folder(tmp_path_factory.mktemp("model"), "mlp")
    return ml_config(model={"kind": "onnx", "name": "flow-mlp", "path": str(folder)})


def test_onnx_model_replay_trades_the_same_at_any_batch_size(sample: Path, config: Config) -> None:
    big = run_replay(config, sample, batch_size=4096, progress=False)
    assert big.recorder.signals > 10 and len(big.recorder.fills) > 5
    small = run_replay(config, sample, batch_size=7, progress=False)
    assert small.recorder.signals == big.recorder.signals
    assert [(f.ts_event, f.qty, f.price) for f in small.recorder.fills] == [
        (f.ts_event, f.qty, f.price) for f in big.recorder.fills
    ]


def test_onnx_model_on_another_feature_set_refused_before_data(
    sample: Path, config: Config
) -> None:
    changed = [
        msgspec.structs.replace(f, span=40) if f.name == "imb_ema" else f for f in config.features
    ]
    with pytest.raises((ModelError, PluginLoadError), match="feature set"):
        run_replay(msgspec.structs.replace(config, features=changed), sample, progress=False)
