"""Model governance in live sessions against a real broker, beyond promote/rollback over
the command topic (``test_model_switch``): a promote to a version that fails its checks is
refused at a journaled point and changes nothing; ``tradeloop models promote`` run by hand
is noticed on the heartbeat and switched at a journaled point, for the champion and the
challenger alike, with both models' monitor figures in the retained status and the
decisions explained by ``tradeloop why``; a restart after switches runs the version the
journal last switched to, from a full rebuild and from a snapshot (whose memory of each
version's monitor carries on), and every session's parity is exact.

Versions: ``tests.model_versions`` (A champion, B challenger, C unaliased), trained once per
module; each test works on its own copy of the registry."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from adapters.daemon.run import Daemon
from adapters.explanations import explanations_path
from adapters.journal_file import FileJournalReader
from adapters.model_registry_store import Registry
from adapters.mqtt.status import decode_status
from engine.assembly import find_challenger
from engine.journal import ModelSwitchRecord
from engine.model_registry import RegistryReader
from engine.monitor import ModelMonitor
from replay.cli import main as cli
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_daemon import _client, running
from tests.model_versions import (
    KEY,
    Versions,
    command,
    feed,
    make_sample,
    read_decisions,
    ticks,
    train_versions,
    until,
    write_config,
)

LEG = 500  # ticks fed between two governance actions
SCORED = 0.15  # pause per 50 ticks of a leg the monitors must score: 1000 ticks last 3 s


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("gov2_sample"))


@pytest.fixture(scope="module")
def trained(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    return train_versions(sample, tmp_path_factory.mktemp("gov2_models"))


@pytest.fixture
def registry(trained: Versions, tmp_path: Path) -> Path:
    """This test's own copy of the registry (tests tamper with it and move its aliases)."""
    return Path(shutil.copytree(trained.registry, tmp_path / "models"))


@pytest.fixture
def env(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv("TL_GOV_USER", broker.username)
    monkeypatch.setenv("TL_GOV_PASSWORD", broker.password)
    monkeypatch.setenv("TL_GOV_KEY", KEY)
    return broker


def _ticks_in(daemon: Daemon) -> Any:
    return lambda: daemon.engine.counters["ticks"]


def _switches(journal: Path) -> list[ModelSwitchRecord]:
    return [r for r in FileJournalReader(journal) if isinstance(r, ModelSwitchRecord)]


def _champion_monitor(engine: Any) -> ModelMonitor:
    return next(o for o in engine.observers if isinstance(o, ModelMonitor))


def _parity(journal: Path, session: str) -> Any:
    result = parity(journal, session=session)
    assert result.ok, result.differences
    assert result.decisions_equal == result.decisions_logged > 0
    return result


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.asyncio
async def test_promote_to_a_tampered_version_is_refused_and_changes_nothing(
    env: Broker, tmp_path: Path, sample: Path, trained: Versions, registry: Path
) -> None:
    """C's folder is changed after it was added; a signed promote to C is refused: an Alarm,
    a journaled refusal, no audit entry, A keeps deciding (live and in the replay, parity
    exact). ``[live] explain = false``: no worker, no explanations file.

    Fails if the daemon applied a version without checking its folder against its address
    (C would decide after the command), if a refusal were not journaled (the replay would
    not emit the Alarm: parity breaks), or if the registry were written before the check."""
    config = write_config(tmp_path, env.port, registry, explain=False)
    journal = tmp_path / "journal"
    c_dir = RegistryReader(registry).version_dir(trained.c)
    model_file = c_dir / RegistryReader(registry).manifest(trained.c).model_file
    entries = len(Registry(registry).state().entries)
    async with running(config) as daemon, _client(env) as md, _client(env, operator=True) as op:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        assert daemon.explainer is None
        await feed(md, _ticks_in(daemon), ticks(sample, 0, LEG))
        model_file.write_bytes(model_file.read_bytes().replace(b"leaf_value=", b"leaf_value=1", 1))
        signals_before = daemon.engine.counters["signals"]
        await command(op, "promote", target=trained.c, stage="paper")
        await until(lambda: daemon.model_switches["refused"] == 1)
        await feed(md, _ticks_in(daemon), ticks(sample, LEG, LEG))
        assert daemon.engine.model_version == trained.a
        assert daemon.models["champion"] == (trained.a, "paper")
        assert daemon.engine.counters["signals"] > signals_before  # A still decides
        assert daemon.engine.counters["model_switches"] == 0
        session = daemon.session_id
    assert len(Registry(registry).state().entries) == entries  # nothing written
    (record,) = _switches(journal)
    assert record.switch.version == trained.c and "does not match" in record.switch.refused
    logged = read_decisions(journal, session)
    alarms = [d for d in logged if d["type"] == "alarm" and "refused" in d["message"]]
    assert len(alarms) == 1 and alarms[0]["source"] == "registry"
    assert trained.c[:12] in alarms[0]["message"]
    assert not any(d["type"] == "model_switched" for d in logged)
    after = logged[logged.index(alarms[0]) :]
    assert any(d["type"] == "signal" for d in after)
    assert not any(d.get("version") == trained.c for d in logged)
    assert not explanations_path(journal, session).exists()
    result = _parity(journal, session)
    assert result.replay.engine.model_version == trained.a


@pytest.mark.asyncio
async def test_models_promote_by_hand_switches_challenger_then_champion_on_the_heartbeat(
    env: Broker, tmp_path: Path, sample: Path, trained: Versions, registry: Path
) -> None:
    """``tradeloop models promote`` (the registry CLI, not the command topic) while the
    daemon runs: C to challenger, then B to champion. Each is noticed on the heartbeat's
    alias poll and switched at a journaled point (who and why from the audit entry);
    promoting the challenger leaves the champion alone. The retained status carries both
    models' monitor figures; ``tradeloop why`` explains a decision of each champion;
    parity exact.

    Fails if the alias poll missed a change (the switch never comes), if a challenger
    promote touched the champion, or if the status did not follow the switches."""
    config = write_config(tmp_path, env.port, registry)
    journal = tmp_path / "journal"
    reg = str(registry)
    async with running(config) as daemon, _client(env) as md:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        await feed(md, _ticks_in(daemon), ticks(sample, 0, LEG))
        code, out, _ = _cli("models", "promote", trained.c, "--to", "challenger",
                            "--reason", "try C", "--who", "bob", "--registry", reg)  # fmt: skip
        assert code == 0, out
        await until(lambda: daemon.models.get("challenger", ("", ""))[0] == trained.c)
        shadow = find_challenger(daemon.engine)
        assert shadow is not None and shadow.version == trained.c
        assert daemon.engine.model_version == trained.a  # the champion is unchanged
        await feed(md, _ticks_in(daemon), ticks(sample, LEG, LEG))
        code, out, _ = _cli("models", "promote", trained.b, "--to", "champion", "--stage",
                            "paper", "--reason", "B wins", "--who", "bob", "--registry", reg)  # fmt: skip
        assert code == 0, out
        await until(lambda: daemon.models["champion"] == (trained.b, "paper"))
        await feed(md, _ticks_in(daemon), ticks(sample, 2 * LEG, 2 * LEG), SCORED)
        await asyncio.sleep(0.35)  # heartbeats with nothing new: the status is settled
        async with _client(env) as reader:
            await reader.subscribe("tradeloop/n1/status", qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(reader.messages))
        assert message.retain
        assert isinstance(message.payload, bytes)
        status = decode_status(message.payload)
        champion = _champion_monitor(daemon.engine).latest()
        challenger = shadow.monitor.latest() if shadow.monitor is not None else {}
        session = daemon.session_id
    by_role = {m.role: m for m in status.models}
    assert set(by_role) == {"champion", "challenger"}
    assert (by_role["champion"].version, by_role["champion"].stage) == (trained.b, "paper")
    assert (by_role["challenger"].version, by_role["challenger"].stage) == (trained.c, "shadow")
    for role, figures in (("champion", champion), ("challenger", challenger)):
        got = by_role[role]
        assert (got.ic, got.hit_ratio, got.scored, got.alarms) == (
            figures["ic"], figures["hit_ratio"], figures["scored"], figures["alarms"]
        ), role  # fmt: skip
    assert by_role["champion"].scored > 0 and by_role["challenger"].scored > 0

    switches = [r.switch for r in _switches(journal)]
    assert [(s.alias, s.version, s.stage, s.issuer, s.reason) for s in switches] == [
        ("challenger", trained.c, "shadow", "bob", "try C"),
        ("champion", trained.b, "paper", "bob", "B wins"),
    ]
    logged = read_decisions(journal, session)
    kinds = [d["type"] for d in logged]
    first, second = (i for i, k in enumerate(kinds) if k == "model_switched")
    assert logged[first]["alias"] == "challenger" and logged[first]["from_version"] == trained.b
    shadowed = [d["version"] for d in logged if d["type"] == "challenger_signal"]
    assert trained.b in shadowed and trained.c in shadowed
    assert all(
        d["version"] == trained.c for d in logged[first:] if d["type"] == "challenger_signal"
    )
    _parity(journal, session)

    # tradeloop why, on the live explanations: a decision of A, then one of B
    docs = [json.loads(x) for x in explanations_path(journal, session).read_text().splitlines()]
    switch_ts = logged[second]["ts_event"]
    for doc in (next(d for d in docs if d["ts_ns"] < switch_ts),
                next(d for d in docs if d["ts_ns"] >= switch_ts and d["order_ids"])):  # fmt: skip
        code, out, err = _cli("why", str(journal), "--at", doc["ts_utc"], "--session", session)
        assert code == 0, err
        assert doc["version"][:12] in out and doc["instrument"] in out
        assert all(order in out for order in doc["order_ids"])
        assert all(name in out for name, _ in doc["contributions"])
    code, out, err = _cli("why", str(journal), "--at", "2001-01-01T00:00:00")
    assert (code, out, err.count("\n")) == (2, "", 1) and "no decision" in err


@pytest.mark.asyncio
async def test_restart_after_switches_runs_the_last_switched_version_rebuilt_and_from_snapshot(
    env: Broker, tmp_path: Path, sample: Path, trained: Versions, registry: Path
) -> None:
    """Session 1 promotes B (command) and stops on it (its snapshot, of its own pinned
    versions, is not valid for session 2, which pins B). Session 2 rebuilds the whole
    journal, session 1 on A and then B as it ran (its rebuilt book is the orders session 1
    sent), and runs B; it rolls back to A
    and promotes B again, and stops on B: a snapshot. Session 3 starts from that snapshot
    on B and rolls back to A, whose monitor carries on from the snapshot's memory. Every
    session's parity is exact, and session 3's monitors equal the replay's (which applies
    the whole journal, no snapshot).

    Fails if a restart ran the version it pinned instead of the journal's last (the
    decisions after the rebuild would be another model's: parity breaks), or if the
    snapshot dropped the memory of A's monitor (session 3's A monitor would restart from
    zero where the replay's carries on)."""
    config = write_config(tmp_path, env.port, registry)
    journal = tmp_path / "journal"
    sessions: list[str] = []
    offset = 0

    async def leg(daemon: Daemon, md: Any, n: int = LEG, pause: float = 0.005) -> None:
        nonlocal offset
        await feed(md, _ticks_in(daemon), ticks(sample, offset, n), pause)
        offset += n

    async with running(config) as daemon, _client(env) as md, _client(env, operator=True) as op:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        await leg(daemon, md)
        await command(op, "promote", target="challenger", stage="paper")
        await until(lambda: daemon.models["champion"] == (trained.b, "paper"))
        await leg(daemon, md)
        sessions.append(daemon.session_id)
    async with running(config) as daemon, _client(env) as md, _client(env, operator=True) as op:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        assert daemon.history.snapshot_seq == 0 and daemon.history.records > 0
        assert daemon.engine.model_version == trained.b
        # the rebuilt book holds the orders session 1 sent: those before the promote
        # decided by A again (the version session 1 started on), not by B (what the
        # registry names now)
        sent = sorted(
            (d["client_order_id"], d["instrument"], d["side"], d["qty"])
            for d in read_decisions(journal, sessions[0])
            if d["type"] == "order_request"
        )
        prefix = f"n1-{sessions[0]}-"
        book = sorted(
            (o.client_order_id, o.request.instrument, o.request.side, o.request.qty)
            for o in daemon.engine.orders._orders.values()
            if o.client_order_id.startswith(prefix)
        )
        assert sent and book == sent
        await leg(daemon, md)
        await command(op, "rollback")
        await until(lambda: daemon.models["champion"][0] == trained.a)
        await leg(daemon, md, 2 * LEG, SCORED)  # long enough for A's monitor to score
        await command(op, "promote", target=trained.b, stage="paper")
        await until(lambda: daemon.models["champion"] == (trained.b, "paper"))
        await leg(daemon, md)
        sessions.append(daemon.session_id)
    assert daemon.snapshots["written"] >= 1
    async with running(config) as daemon, _client(env) as md, _client(env, operator=True) as op:
        await until(lambda: daemon.core is not None and daemon.session is not None)
        assert daemon.history.snapshot_seq > 0  # restored from the snapshot
        assert daemon.engine.model_version == trained.b
        assert daemon.switcher is not None
        remembered = daemon.switcher.memory.monitors[("champion", trained.a)]
        assert remembered is not None
        scored_before = int(remembered.counts["scored"])
        assert scored_before > 0
        await command(op, "rollback")
        await until(lambda: daemon.models["champion"][0] == trained.a)
        assert _champion_monitor(daemon.engine) is remembered  # A's monitor carries on
        await leg(daemon, md, 2 * LEG, SCORED)
        sessions.append(daemon.session_id)
        live = _champion_monitor(daemon.engine).latest()
        assert live["scored"] > scored_before
    # no session started with a realigning switch: each ran what the journal last switched to
    assert not [r for r in _switches(journal) if r.switch.issuer == "daemon"]
    results = [_parity(journal, s) for s in sessions]
    engine = results[-1].replay.engine
    assert engine.model_version == trained.a
    assert _champion_monitor(engine).latest() == live
