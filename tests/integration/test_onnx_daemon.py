"""An ONNX model in the live daemon against a real broker: a scikit-learn MLP fitted here,
exported with skl2onnx, imported (``tradeloop models import``), evaluated on data after its
training range (``tradeloop evaluate``), added to a registry and promoted to champion at
the paper stage. The daemon loads it through the same plugin path as any model, signals
on its scores, explains each signal with the sampled Shapley explainer (its budget in the
line), the explanations recompute equal from the journal, the journal replays to the same
decisions (``tradeloop parity``) and ``tradeloop why`` answers."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import aiomqtt
import pytest

from adapters.explanations import explanations_path
from adapters.model_registry_store import Registry
from engine.signals.onnx_model import OnnxModel
from replay.cli import main
from replay.research.evaluate import evaluate
from replay.sessions.journal_replay import recompute_explanations
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_daemon import _client, running
from tests.model_versions import KEY, feed, make_sample, read_decisions, ticks, until, write_config
from tests.onnx_support import onnx_folder


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("onnx_sample"))


@pytest.fixture
def env(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv("TL_GOV_USER", broker.username)
    monkeypatch.setenv("TL_GOV_PASSWORD", broker.password)
    monkeypatch.setenv("TL_GOV_KEY", KEY)
    return broker


@pytest.mark.slow  # 85 s at a load average of 10 on 2 cores
@pytest.mark.asyncio
async def test_onnx_champion_runs_in_the_daemon_explained_and_replayable(
    env: Broker, tmp_path: Path, sample: Path
) -> None:
    imported, _ = onnx_folder(tmp_path, "mlp")
    evaluate(imported, sample, tmp_path / "evaluated", progress=False)
    registry = Registry(tmp_path / "models")
    version, _ = registry.add(tmp_path / "evaluated", who="ana")
    registry.promote(version, alias="champion", who="ana", reason="evaluated", stage="paper")
    config = write_config(tmp_path, env.port, tmp_path / "models")
    journal = tmp_path / "journal"
    async with running(config) as daemon, _client(env) as client:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        assert isinstance(daemon.engine.model, OnnxModel)
        assert daemon.engine.model_version == version
        await feed_ticks(client, daemon, ticks(sample, 0, 1500))
        await until(lambda: daemon.engine.counters["signals"] > 0)
        session = daemon.session_id
    decisions = read_decisions(journal, session)
    assert any(d["type"] == "signal" for d in decisions)
    lines = explanations_path(journal, session).read_bytes().splitlines()
    docs = [json.loads(line) for line in lines]
    assert docs and all(d["version"] == version for d in docs)
    for doc in docs:
        assert doc["method"].startswith("sampled Shapley")
        assert doc["budget"]["permutations"] == 64
        total = sum(v for _, v in doc["contributions"]) + doc["rest"] + doc["expected_value"]
        assert abs(total - doc["raw_score"]) <= 1e-6
    assert recompute_explanations(journal, session=session) == [line + b"\n" for line in lines]
    result = parity(journal, session=session)
    assert result.ok, result.differences
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["why", str(journal), "--at", docs[0]["ts_utc"], "--session", session]) == 0
    assert (
        "method: sampled Shapley" in out.getvalue() and "budget: 64 permutations" in out.getvalue()
    )


async def feed_ticks(client: aiomqtt.Client, daemon: object, items: list[object]) -> None:
    await feed(client, lambda: daemon.engine.counters["ticks"], items)  # type: ignore[attr-defined]
