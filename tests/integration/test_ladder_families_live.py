"""Issue 22's "done when", live half: every family ``tradeloop train --ladder`` fits runs as
the champion (paper stage) of a daemon over a real mosquitto, with its model monitor; each
signal is explained with its family's method (exact coefficient x input for linear and
logistic, TreeSHAP for the LightGBM trees, sampled Shapley with its budget for the ONNX
graphs), ``tradeloop why`` answers for a decision, and the journal replays to the same
decisions (``tradeloop parity``).

One small ladder (15 minutes of two generated symbols, the three window-free features, small
models) is trained once for the module; each family gets its own registry, daemon and
journal, fed a short stretch of the sample."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.explanations import explanations_path
from adapters.model_registry_store import Registry
from engine.config import config_from_dict
from engine.monitor import ModelMonitor
from replay.cli import main
from replay.research.ladder.report import read_ladder
from replay.research.ladder.run import run_ladder
from replay.research.training.families import FAMILIES
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_daemon import _client, running
from tests.model_versions import (
    KEY,
    config_data,
    feed,
    make_sample,
    read_decisions,
    ticks,
    until,
    write_config,
)

SMALL = {
    "svm": {"max_fit_rows": 300},
    "mlp": {"max_epochs": 8, "hidden": [8]},
    "random_forest": {"trees": 8},
}
# how each family's explanation line names its method (engine.signals.explain)
METHOD = {
    "linear": "exact (coefficient x input",
    "logistic": "exact (coefficient x input",
    "tree": "TreeSHAP (exact)",
    "random_forest": "TreeSHAP (exact)",
    "gbdt": "TreeSHAP (exact)",
    "svm": "sampled Shapley",
    "mlp": "sampled Shapley",
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("ladder_live_sample"))


@pytest.fixture(scope="module")
def ladder(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = config_data()
    data["train"] |= {"model_params": SMALL}
    out = tmp_path_factory.mktemp("ladder_live") / "ladder"
    run_ladder(config_from_dict(data), sample, out, progress=False, replicates=99)
    assert all(f.trained for f in read_ladder(out).families)
    return out


@pytest.fixture
def env(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv("TL_GOV_USER", broker.username)
    monkeypatch.setenv("TL_GOV_PASSWORD", broker.password)
    monkeypatch.setenv("TL_GOV_KEY", KEY)
    return broker


def _monitor(engine: Any) -> ModelMonitor:
    return next(o for o in engine.observers if isinstance(o, ModelMonitor))


@pytest.mark.slow  # 53 s on 2 cores at a load average of 5: the ladder once, 7 daemons
@pytest.mark.asyncio
@pytest.mark.parametrize("family", FAMILIES)
async def test_family_runs_in_the_daemon_explained_and_replayable(
    env: Broker, tmp_path: Path, sample: Path, ladder: Path, family: str
) -> None:
    registry = Registry(tmp_path / "models")
    version, _ = registry.add(ladder / family, who="ana", note=family)
    registry.promote(version, alias="champion", who="ana", reason=family, stage="paper")
    config = write_config(tmp_path, env.port, tmp_path / "models")
    journal = tmp_path / "journal"
    async with running(config) as daemon, _client(env) as client:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        assert daemon.engine.model_version == version
        assert daemon.models["champion"] == (version, "paper")
        # 600 ticks over about 3 s of receive time: past the 2 s horizon, so the monitor
        # scores predictions, not only makes them
        await feed(client, lambda: daemon.engine.counters["ticks"], ticks(sample, 0, 600), 0.25)
        monitor = _monitor(daemon.engine)
        await until(lambda: daemon.engine.counters["signals"] > 0 and monitor.counts["scored"] > 0)
        counts = dict(monitor.counts)
        session = daemon.session_id
    assert counts["samples"] > counts["samples_incomplete"], counts
    decisions = read_decisions(journal, session)
    assert any(d["type"] == "signal" for d in decisions)
    lines = explanations_path(journal, session).read_bytes().splitlines()
    docs = [json.loads(line) for line in lines]
    assert docs and all(d["version"] == version for d in docs)
    for doc in docs:
        assert doc["method"].startswith(METHOD[family]), doc["method"]
        total = sum(v for _, v in doc["contributions"]) + doc["rest"] + doc["expected_value"]
        assert abs(total - doc["raw_score"]) <= 1e-6
    result = parity(journal, session=session)
    assert result.ok, result.differences
    assert result.decisions_equal == result.decisions_logged > 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["parity", str(journal), "--session", session]) == 0  # the command too
        out.seek(0)
        out.truncate()
        assert main(["why", str(journal), "--at", docs[0]["ts_utc"], "--session", session]) == 0
    assert f"method: {METHOD[family]}" in out.getvalue(), out.getvalue()
    assert f"model {family} version {version[:12]}" in out.getvalue(), out.getvalue()
