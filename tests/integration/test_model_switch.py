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
import time
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiomqtt
import polars as pl
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import adapters.daemon as daemon_module
from adapters.daemon import Daemon
from adapters.explanations import explanations_path
from adapters.journal_file import FileJournalReader
from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from engine.codec import EventCodec
from engine.config import config_from_dict
from engine.events import Command, Quote, Signal, Trade
from engine.journal import CommandRecord, ModelSwitch, ModelSwitchRecord
from engine.model_registry import RegistryReader
from engine.strategy import NoParams, Strategy
from replay.journal_replay import load_session, recompute_explanations, replay_session
from replay.parity import parity
from replay.registry import Registry
from replay.sample_data import generate
from replay.training import train
from tests.integration.conftest import Broker
from tests.integration.test_daemon import _client, running

CODEC = EventCodec("json")
KEY = "governance-key"
SYMBOLS = [
    {"symbol": "BTC-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-5},
    {"symbol": "ETH-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-4},
]
# features with no time window: the model scores from the first ticks of a session
FEATURES = ["imb", "imb_ema", "spread"]
TICKS_PER_LEG = 1500


class Flip(Strategy):
    """Buys a step when the score crosses up through 0.5, sells one when it crosses down."""

    name = "flip"
    Params = NoParams

    def thresholds(self) -> Sequence[float]:
        return (0.5,)

    def on_signal(self, signal: Signal) -> None:
        step = 0.01 if signal.instrument == "BTC-USD" else 0.1
        self.ctx.submit_market(signal.instrument, "buy" if signal.zone == 1 else "sell", step)


def _config_data(**extra: Any) -> dict[str, Any]:
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = SYMBOLS
    data["train"] |= {"folds": 3, "sample_interval": "200ms", "min_data_in_leaf": 50,
                      "features": FEATURES}  # fmt: skip
    data["risk"] |= {"max_position": 1000.0, "min_order_notional": 1.0}
    return data | extra


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gov_sample")
    generate(out, symbols=2, hours=0.25, quote_interval_ms=50.0, seed=11)
    return out


@pytest.fixture(scope="module")
def versions(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A registry with two LightGBM versions of the same features: A (champion, paper) and
    B (challenger), trained with different tree sizes, so they score differently."""
    root = tmp_path_factory.mktemp("gov_models")
    train(config_from_dict(_config_data()), sample, root / "a", progress=False)
    data_b = _config_data()
    data_b["train"] |= {"min_data_in_leaf": 400, "num_leaves": 4}
    train(config_from_dict(data_b), sample, root / "b", progress=False)
    reg = Registry(root / "models")
    a, _ = reg.add(root / "a", who="ana", note="A")
    b, _ = reg.add(root / "b", who="ana", note="B")
    assert a != b
    reg.promote(a, alias="champion", who="ana", reason="first", stage="paper")
    reg.promote(b, alias="challenger", who="ana", reason="try B")
    return root / "models", a, b


def _write_config(tmp: Path, broker: Broker, registry: Path) -> Path:
    data = _config_data()
    lines = ['mode = "shadow"\n']
    path = tmp / "live.toml"
    data.pop("mode", None)
    data.pop("train", None)
    data.pop("replay", None)
    data["model"] = {"registry": str(registry), "alias": "champion"}
    data["strategy"] = {"name": "tests.integration.test_model_switch:Flip"}
    data["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "username_env": "TL_GOV_USER",
                    "password_env": "TL_GOV_PASSWORD", "reconnect_min": "50ms",
                    "reconnect_max": "200ms"}  # fmt: skip
    data["live"] = {"node": "n1", "account": "a1", "heartbeat": "100ms", "order_timeout": "30s",
                    "command_key_env": "TL_GOV_KEY", "shutdown_timeout": "3s"}  # fmt: skip
    data["journal"] = {"dir": (tmp / "journal").as_posix(), "fsync": "batch"}
    data["risk"]["max_quote_age"] = "60s"
    for key, value in data.items():
        lines.append(_toml(key, value))
    path.write_text("".join(lines))
    return path


def _toml(key: str, value: Any) -> str:
    """Just enough TOML for the config above (tables, arrays of tables, inline values)."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "".join(f"\n[[{key}]]\n" + "".join(f"{k} = {_v(v)}\n" for k, v in item.items())
                       for item in value)  # fmt: skip
    if isinstance(value, dict):
        return f"\n[{key}]\n" + "".join(f"{k} = {_v(v)}\n" for k, v in value.items())
    return f"{key} = {_v(value)}\n"


def _v(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_v(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _ticks(sample: Path, start: int, count: int) -> list[Quote | Trade]:
    quotes = pl.read_parquet(sample / "quotes.parquet").with_columns(kind=pl.lit("q"))
    trades = pl.read_parquet(sample / "trades.parquet").with_columns(kind=pl.lit("t"))
    rows = pl.concat([quotes, trades], how="diagonal").sort("ts_event").slice(start, count)
    out: list[Quote | Trade] = []
    for r in rows.iter_rows(named=True):
        if r["kind"] == "q":
            out.append(Quote(ts_event=r["ts_event"], ts_recv=r["ts_recv"], instrument=r["symbol"],
                             bid=r["bid"], ask=r["ask"], bid_size=r["bid_size"],
                             ask_size=r["ask_size"]))  # fmt: skip
        else:
            out.append(Trade(ts_event=r["ts_event"], ts_recv=r["ts_recv"], instrument=r["symbol"],
                             price=r["price"], size=r["size"], side=r["side"]))  # fmt: skip
    return out


async def _feed(client: aiomqtt.Client, daemon: Daemon, ticks: list[Quote | Trade]) -> None:
    before = daemon.engine.counters["ticks"]
    for i, tick in enumerate(ticks):
        kind = "quote" if isinstance(tick, Quote) else "trade"
        await client.publish(f"md/SIM/{tick.instrument}/{kind}", CODEC.encode(tick), qos=1)
        if i % 50 == 49:
            await asyncio.sleep(0.005)  # several batches, not one
    async with asyncio.timeout(30):
        while daemon.engine.counters["ticks"] < before + len(ticks):
            await asyncio.sleep(0.02)


async def _command(client: aiomqtt.Client, action: str, *, signed: bool = True,
                   target: str = "", stage: str = "") -> None:  # fmt: skip
    ts = time.time_ns()
    payload = CODEC.encode(Command(ts_event=ts, ts_recv=ts, action=action,  # type: ignore[arg-type]
                                   issuer="ops-desk", reason=f"{action} in the test",
                                   target=target, stage=stage))  # fmt: skip
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if signed:
        props.UserProperty = [(SIGNATURE_PROPERTY, sign_command(payload, KEY.encode()))]
    await client.publish("tradeloop/n1/command", payload, qos=1, properties=props)


async def _until(what: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.02)


def _decisions(journal: Path, session: str) -> list[dict[str, Any]]:
    text = (journal / f"decisions-{session}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


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
        await _until(lambda: daemon.core is not None and daemon.session is not None)
        assert daemon.engine.model_version == a
        await _feed(feed, daemon, _ticks(sample, 0, TICKS_PER_LEG))
        # an unsigned promote reaches the broker (the operator may publish) and does nothing
        await _command(op, "promote", signed=False, target="challenger", stage="paper")
        await asyncio.sleep(0.5)
        assert daemon.engine.model_version == a
        assert len(Registry(registry).state().entries) == entries_before
        await _command(op, "promote", target="challenger", stage="paper")
        await _until(lambda: daemon.models["champion"] == (b, "paper"))
        await _feed(feed, daemon, _ticks(sample, TICKS_PER_LEG, TICKS_PER_LEG))
        await _command(op, "rollback")
        await _until(lambda: daemon.models["champion"][0] == a)
        await _feed(feed, daemon, _ticks(sample, 2 * TICKS_PER_LEG, TICKS_PER_LEG))
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
    decisions = _decisions(journal, session)
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
