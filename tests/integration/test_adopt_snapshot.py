"""Issue 11 leftovers against a real mosquitto and ``oms-sim``: an order someone else sent
on our account is adopted (``external_orders = "adopt"``) or flagged, and a restart loads
the snapshot the last session wrote and applies only what follows it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import pytest

from adapters.daemon.assembly import build_live_engine
from adapters.daemon.rebuild import rebuild
from adapters.daemon.snapshots import snapshot_mac_key
from adapters.journal_folder import snapshot_files
from adapters.live_sender import ShadowSender
from adapters.mqtt.command_guard import CommandGuard
from adapters.reconciliation import FillLedger
from engine.config import load_config
from engine.events import OrderRequest, Quote
from engine.ports import SendOnly
from replay.sessions.parity import parity
from tests.engine.test_snapshot import state_differences
from tests.integration.conftest import Broker
from tests.integration.test_reliability import (
    CODEC,
    SYMBOL,
    TOPICS,
    client,
    manifests,
    new_oms,
    running,
    serving,
    until,
    write_config,
)


def _config(tmp: Path, port: int, name: str, *, external: str, every: int) -> Path:
    base = write_config(tmp, port, cancel_on_stop=False, every=every, rest=False)
    text = base.read_text().replace('node = "n1"', f'node = "n1"\nexternal_orders = "{external}"')
    path = tmp / name
    path.write_text(text)
    return path


async def _quote(feed: aiomqtt.Client, bid: float, ask: float, ask_size: float = 10.0) -> None:
    ts = time.time_ns()
    q = Quote(ts_event=ts, ts_recv=ts, instrument=SYMBOL, bid=bid, ask=ask, bid_size=10.0,
              ask_size=ask_size)  # fmt: skip
    await feed.publish(f"md/SIM/{SYMBOL}/quote", CODEC.encode(q), qos=0)


async def _external_half_filled(feed: aiomqtt.Client, oms: object) -> None:
    """ext-1, buy 2 limit 101 from someone else: 1 fills against 1 displayed, 1 rests."""
    external = OrderRequest(ts_event=1, ts_recv=1, client_order_id="other-desk-1",
                            instrument=SYMBOL, side="buy", qty=2.0, order_type="limit",
                            limit_price=101.0)  # fmt: skip
    await feed.publish(TOPICS.orders, CODEC.encode(external), qos=1)
    await until(lambda: len(oms.open_orders()) == 1)  # type: ignore[attr-defined]
    await _quote(feed, 100.0, 100.5, ask_size=1.0)
    await until(lambda: oms.positions[SYMBOL] == 1.0)  # type: ignore[attr-defined]
    await _quote(feed, 102.0, 102.5)  # above the limit: the rest of it rests


async def _first_session(config: Path, feed: aiomqtt.Client) -> None:
    async with running(config):
        for _ in range(3):
            await _quote(feed, 102.0, 102.5)
            await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_adopt_mode_adopts_the_external_order_and_trades_on(
    daemon_env: Broker, tmp_path: Path
) -> None:
    quiet = _config(tmp_path, daemon_env.port, "quiet.toml", external="adopt", every=10**6)
    trading = _config(tmp_path, daemon_env.port, "trade.toml", external="adopt", every=2)
    oms = new_oms()
    async with serving(daemon_env, oms), client(daemon_env) as feed:
        await _first_session(quiet, feed)
        await _external_half_filled(feed, oms)
        async with running(trading) as second:
            await until(lambda: second.reconciliation["runs"] == 1)
            engine = second.engine
            assert second.reconciliation["adopted"] == 1
            order = engine.orders.get("other-desk-1")
            assert order.is_open and order.filled_qty == 1.0 and order.remaining_qty == 1.0
            # its fill before adoption came from the OMS's fills, booked on the order
            assert engine.portfolio.positions.tolist() == [oms.positions[SYMBOL]] == [1.0]
            assert engine.counters["fills_unknown_order"] == 0
            assert engine.risk.state == "ACTIVE"
            sent_before = oms.counters["orders"]
            for _ in range(6):
                await _quote(feed, 102.0, 102.5)
                await asyncio.sleep(0.05)
            await until(lambda: oms.counters["orders"] >= sent_before + 2)  # trades on
            await until(lambda: engine.portfolio.positions.tolist() == [oms.positions[SYMBOL]])
            assert engine.risk.state == "ACTIVE"
        journal = tmp_path / "journal"
        adopted = [json.loads(line) for line in (journal / f"decisions-{second.session_id}.jsonl")
                   .read_text().splitlines() if "adopted external order" in line]  # fmt: skip
        assert len(adopted) == 1 and adopted[0]["severity"] == "warning"
    for m in manifests(journal):
        assert parity(journal, session=str(m["session_id"])).ok


@pytest.mark.asyncio
async def test_flag_mode_does_not_book_the_external_order_and_stops_adding_risk(
    daemon_env: Broker, tmp_path: Path
) -> None:
    """The default: the order is not ours; an Alarm names it, and its fill (in the OMS's
    position) is booked as a fill on an unknown order, which stops adding risk."""
    quiet = _config(tmp_path, daemon_env.port, "quiet.toml", external="flag", every=10**6)
    oms = new_oms()
    async with serving(daemon_env, oms), client(daemon_env) as feed:
        await _first_session(quiet, feed)
        await _external_half_filled(feed, oms)
        async with running(quiet) as second:
            await until(lambda: second.reconciliation["runs"] == 1)
            engine = second.engine
            assert second.reconciliation["adopted"] == 0
            assert engine.orders.find("other-desk-1") is None
            assert engine.counters["reports_unknown_order"] >= 1
            assert engine.counters["fills_unknown_order"] == 1
            assert engine.risk.state != "ACTIVE"
    journal = tmp_path / "journal"
    for m in manifests(journal):
        assert parity(journal, session=str(m["session_id"])).ok


@pytest.mark.asyncio
async def test_restart_loads_the_snapshot_and_equals_a_full_rebuild(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = _config(tmp_path, daemon_env.port, "live.toml", external="flag", every=3)
    journal = tmp_path / "journal"
    oms = new_oms()
    async with serving(daemon_env, oms), client(daemon_env) as feed:
        async with running(config) as first:
            for _ in range(30):
                await _quote(feed, 100.0, 100.5)
                await asyncio.sleep(0.02)
            await until(lambda: first.engine.counters["fills"] >= 5)
        assert first.snapshots["written"] >= 1  # the graceful stop's
        last_seq = max(int(p.name.split("-")[1].split(".")[0]) for p in snapshot_files(journal))
        async with running(config) as second:
            assert second.history.snapshot_seq == last_seq
            assert second.history.snapshots_invalid == 0
            await until(lambda: second.reconciliation["runs"] == 1)
            for _ in range(9):
                await _quote(feed, 100.0, 100.5)
                await asyncio.sleep(0.02)
            await until(lambda: second.engine.portfolio.positions.tolist()
                        == [oms.positions[SYMBOL]])  # fmt: skip
    assert [m["snapshot_seq"] for m in manifests(journal)] == [0, last_seq]
    # offline: the newest snapshot plus its tail against every record applied
    loaded, _ = load_config(config)
    digest = second.snapshot_key

    def fresh() -> tuple[object, dict[str, object]]:
        engine = build_live_engine(loaded, SendOnly(ShadowSender()), order_id_prefix="x")
        ledger, guard = FillLedger(engine.clock), CommandGuard()
        engine.sinks += [ledger, guard]
        return engine, {"ledger": ledger, "command_guard": guard}

    full, full_extras = fresh()
    rebuild(full, journal, extras=full_extras)  # type: ignore[arg-type]
    fast, fast_extras = fresh()
    history = rebuild(fast, journal, config_sha256=digest, extras=fast_extras,  # type: ignore[arg-type]
                      snapshot_mac_key=snapshot_mac_key(loaded))  # fmt: skip
    assert history.snapshot_seq > last_seq  # the second session's own stop snapshot
    assert state_differences(fast, full) == []  # type: ignore[arg-type]
    for m in manifests(journal):
        assert parity(journal, session=str(m["session_id"])).ok
