"""Model governance in a live session against a real broker: two real LightGBM versions
(trained here on sample data) in a registry, A champion and B challenger. The daemon
scores B in shadow beside A; a signed ``promote`` on the command topic makes B champion at
a journaled point, a signed ``rollback`` brings A back; an unsigned promote does nothing.
The journal replays to the same decisions (``tradeloop parity``), the audit log holds the
operator's who and why and verifies, and the explanations of the champion's signals name
the version that decided, recomputed equal from the journal."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

import adapters.daemon.core as daemon_module
from adapters.daemon.run import Daemon
from adapters.explanations import explanations_path
from adapters.journal_file import FileJournalReader
from adapters.model_registry_store import Registry
from engine.events import Quote, Trade
from engine.journal import CommandRecord, ModelSwitch, ModelSwitchRecord
from engine.model_registry import RegistryReader
from replay.sessions.journal_replay import load_session, recompute_explanations, replay_session
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_daemon import _client, running
from tests.model_versions import (
    CODEC,
    KEY,
    command,
    feed,
    make_sample,
    read_decisions,
    ticks,
    train_versions,
    until,
    write_config,
)

TICKS_PER_LEG = 1500


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("gov_sample"))


@pytest.fixture(scope="module")
def versions(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A registry with LightGBM versions of the same features: A (champion, paper) and B
    (challenger), trained with different tree sizes, so they score differently."""
    found = train_versions(sample, tmp_path_factory.mktemp("gov_models"))
    return found.registry, found.a, found.b


def _write_config(tmp: Path, broker: Broker, registry: Path) -> Path:
    return write_config(tmp, broker.port, registry)


async def _feed(client: aiomqtt.Client, daemon: Daemon, items: list[Quote | Trade]) -> None:
    await feed(client, lambda: daemon.engine.counters["ticks"], items)


@pytest.fixture
def env(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv("TL_GOV_USER", broker.username)
    monkeypatch.setenv("TL_GOV_PASSWORD", broker.password)
    monkeypatch.setenv("TL_GOV_KEY", KEY)
    return broker


@pytest.mark.asyncio
async def test_model_switch_promote_and_rollback_over_the_command_topic_at_journaled_points(
    env: Broker,
    tmp_path: Path,
    sample: Path,
    versions: tuple[Path, str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, a, b = versions
    config = _write_config(tmp_path, env, registry)
    journal = tmp_path / "journal"
    entries_before = len(Registry(registry).state().entries)
    async with running(config) as daemon, _client(env) as feed, _client(env, operator=True) as op:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        assert daemon.engine.model_version == a
        await _feed(feed, daemon, ticks(sample, 0, TICKS_PER_LEG))
        # an unsigned promote reaches the broker (the operator may publish) and does nothing
        await command(op, "promote", signed=False, target="challenger", stage="paper")
        await asyncio.sleep(0.5)
        assert daemon.engine.model_version == a
        assert len(Registry(registry).state().entries) == entries_before
        await command(op, "promote", target="challenger", stage="paper")
        await until(lambda: daemon.models["champion"] == (b, "paper"))
        await _feed(feed, daemon, ticks(sample, TICKS_PER_LEG, TICKS_PER_LEG))
        await command(op, "rollback")
        await until(lambda: daemon.models["champion"][0] == a)
        await _feed(feed, daemon, ticks(sample, 2 * TICKS_PER_LEG, TICKS_PER_LEG))
        session = daemon.session_id
        loaded = daemon.engine.model
        assert daemon.engine.model_version == a
    # rollback restored A bit for bit: the loaded model is the version folder's file
    manifest = RegistryReader(registry).manifest(a)
    folder = RegistryReader(registry).version_dir(a)
    data = (folder / manifest.model_file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest.model_sha256
    assert loaded is not None and loaded.manifest.model_sha256 == manifest.model_sha256  # type: ignore[attr-defined]

    # the journal holds the two switches; the unsigned command is not in it
    records = list(FileJournalReader(journal))
    switches = [r for r in records if isinstance(r, ModelSwitchRecord)]
    assert [(s.switch.version, s.switch.stage, s.switch.issuer) for s in switches] == [
        (b, "paper", "ops-desk"), (a, "paper", "ops-desk")]  # fmt: skip
    commands = [r.command for r in records if isinstance(r, CommandRecord)]
    assert [c.action for c in commands if c.action in ("promote", "rollback")] == [
        "promote", "rollback"]  # fmt: skip

    # the audit log: the daemon wrote both entries with the operator's who and why
    reg = Registry(registry)
    report = reg.verify()
    state = reg.state()
    promote, rollback = state.entries[-2:]
    assert (promote.action, promote.version, promote.who, promote.reason) == (
        "promote",
        b,
        "ops-desk",
        "promote in the test",
    )
    assert (rollback.action, rollback.version, rollback.who) == ("rollback", a, "ops-desk")
    assert report.entries == entries_before + 2
    assert switches[0].switch.audit_entry_sha256 == promote.entry_sha256

    # decisions: B scored in shadow before the promote, A after the rollback; the switch
    # is a decision at its point
    decisions = read_decisions(journal, session)
    kinds = [d["type"] for d in decisions]
    first, second = (i for i, k in enumerate(kinds) if k == "model_switched")
    challenger_signals = [d for d in decisions[:first] if d["type"] == "challenger_signal"]
    assert challenger_signals and all(d["version"] == b for d in challenger_signals)
    assert any(d["type"] == "signal" for d in decisions[first:second])

    # explanations name the version that decided each signal: A, then B, then A again
    lines = explanations_path(journal, session).read_bytes().splitlines()
    docs = [json.loads(line) for line in lines]
    switch_ts = [decisions[first]["ts_event"], decisions[second]["ts_event"]]
    assert docs
    for doc in docs:
        inside = switch_ts[0] <= doc["ts_ns"] < switch_ts[1]
        assert doc["version"] == (b if inside else a), doc
        total = sum(v for _, v in doc["contributions"]) + doc["rest"] + doc["expected_value"]
        assert abs(total - doc["raw_score"]) <= 1e-9
    assert {doc["version"] for doc in docs} == {a, b}
    # the explanations are a function of the journal
    assert recompute_explanations(journal, session=session) == [line + b"\n" for line in lines]

    # parity: the journal replays to the same decisions, switches and challenger included
    result = parity(journal, session=session)
    assert result.ok, result.differences
    assert result.decisions_equal == len(decisions)

    # and the switch changes decisions: a replay that ignores the switch records differs
    # after the first switch, never before it
    loaded_session = load_session(journal, session)
    info = loaded_session.info
    assert (info.model_version, info.model_stage, info.challenger_version) == (a, "paper", b)
    original = daemon_module.apply_input

    def without_switch(engine: Any, ts: int, body: Any, switcher: Any = None) -> None:
        if not isinstance(body, ModelSwitch):
            original(engine, ts, body, switcher)

    monkeypatch.setattr(daemon_module, "apply_input", without_switch)
    counterfactual = replay_session(loaded_session).decisions
    monkeypatch.undo()
    replayed = [json.loads(CODEC.encode(d)) for d in counterfactual]
    live_without = [d for d in decisions if d["type"] != "model_switched"]
    assert replayed[:first] == live_without[:first]  # before the switch: the same
    assert replayed[first:] != live_without[first:]  # after it: A's decisions, not B's
