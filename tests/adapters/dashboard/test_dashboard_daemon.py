"""The dashboard of a real daemon against a real mosquitto (no browser: HTTP only): what
it shows follows the engine, an action with the token goes down the signed command path
(journaled, replayed to the same decisions), one without is refused and changes
nothing, and the page of a daemon without a token is read-only."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.journal_file import FileJournalReader
from engine.events import Fill, OrderAccepted
from engine.journal import CommandRecord
from tests.integration.conftest import Broker
from tests.integration.test_daemon import (
    CODEC,
    SYMBOL,
    _free_port,
    _replayed_decisions,
    _scrape,
    publish_quote,
    running,
    watching,
    write_config,
)

TOKEN_ENV = "TL_TEST_DASHBOARD_TOKEN"
TOKEN = "dashboard-token-of-the-tests"


def dashboard_config(
    tmp: Path, broker: Broker, mode: str = "live", *, metrics_port: int = 0
) -> Path:
    """``tests.integration.test_daemon``'s config with the dashboard on, on a free port."""
    path = write_config(tmp, mode, broker.port, metrics_port=metrics_port)
    text = path.read_text().replace(
        "[live]\n",
        f'[live]\ndashboard = true\ndashboard_port = 0\ndashboard_token_env = "{TOKEN_ENV}"\n',
    )
    path.write_text(text)
    return path


async def state(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "api/state") as r:
        assert r.status == 200
        doc: dict[str, Any] = json.loads(await r.read())
        return doc


async def until(what: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def act(url: str, action: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}api/actions/{action}", json={"reason": "test"}, headers=headers) as r,
    ):
        return r.status, str((await r.json())["message"])


@pytest.mark.asyncio
async def test_dashboard_daemon_shows_fill_and_a_token_kill_is_journaled_and_replayed(
    daemon_env: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    metrics_port = _free_port()
    config = dashboard_config(tmp_path, daemon_env, metrics_port=metrics_port)
    async with watching(daemon_env) as (watcher, feed), running(config) as daemon:
        await watcher.status(lambda s: s.online)
        url = daemon.dashboard_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        doc = await state(url)
        assert doc["node"] == "n1" and doc["state"] == "ACTIVE" and doc["actions"]["enabled"]
        await publish_quote(feed)
        await watcher.wait(lambda: len(watcher.orders) == 1)
        order = watcher.orders[0]
        assert [o["client_order_id"] for o in (await state(url))["orders"]] == [
            order.client_order_id
        ]
        ts = time.time_ns()
        for report in (
            OrderAccepted(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id,
                          venue_order_id="v1"),
            Fill(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id, fill_id="f1",
                 instrument=SYMBOL, side="buy", qty=1.0, price=100.5, fee=0.01,
                 liquidity="taker"),
        ):  # fmt: skip
            await feed.publish("oms/a1/reports", CODEC.encode(report), qos=1)
        await watcher.status(lambda s: s.positions.get(SYMBOL) == 1.0)
        doc = await state(url)
        assert doc["fills"][0]["fill_id"] == "f1" and doc["fills"][0]["price"] == 100.5
        assert doc["instruments"][0]["position"] == 1.0 and doc["orders"] == []

        status, message = await act(url, "kill", None)
        assert status == 401, message
        status, message = await act(url, "kill", TOKEN[:-1])
        assert status == 401, message
        await asyncio.sleep(0.3)
        assert daemon.engine.risk.trading.claim("operator") == "ACTIVE"

        status, message = await act(url, "kill", TOKEN)
        assert status == 202, message
        await until(lambda: daemon.engine.risk.trading.claim("operator") == "HALTED")
        doc = await state(url)
        assert doc["state"] == "HALTED" and doc["claims"]["operator"] == "HALTED"
        assert doc["commands"][0]["issuer"] == "dashboard"
        assert daemon.session is not None
        assert daemon.session.counters["messages_in_command"] == 1  # the bus's own counter
        assert daemon.dashboard is not None
        counts = daemon.dashboard.server.counters if daemon.dashboard.server else {}
        assert counts["refused_unauthenticated"] == 1 and counts["refused_bad_token"] == 1
        scraped = _scrape(metrics_port)
        for outcome in ("refused_unauthenticated", "refused_bad_token", "accepted_kill"):
            assert f'tradeloop_dashboard_requests_total{{outcome="{outcome}"}} 1.0' in scraped
    journal = tmp_path / "journal"
    commands = [r.command for r in FileJournalReader(journal) if isinstance(r, CommandRecord)]
    assert [(c.action, c.issuer) for c in commands][:1] == [("kill", "dashboard")]
    replayed = _replayed_decisions(config, journal, daemon.session_id, daemon.order_id_prefix)
    assert replayed == (journal / f"decisions-{daemon.session_id}.jsonl").read_text().splitlines()


@pytest.mark.asyncio
async def test_dashboard_daemon_without_token_is_read_only(
    daemon_env: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = dashboard_config(tmp_path, daemon_env, mode="paper")
    async with watching(daemon_env) as (watcher, _), running(config) as daemon:
        await watcher.status(lambda s: s.online)
        url = daemon.dashboard_url
        assert url is not None
        doc = await state(url)
        assert not doc["actions"]["enabled"] and TOKEN_ENV in doc["actions"]["why"]
        status, message = await act(url, "kill", TOKEN)
        assert status == 403 and "read-only" in message
        await asyncio.sleep(0.2)
        assert daemon.engine.risk.trading.claim("operator") == "ACTIVE"
