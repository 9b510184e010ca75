"""The dashboard in a real headless Chromium, against a real daemon and a real mosquitto:
the page shows a fill within a second of the engine booking it; an operator kill from the
page reaches the engine (HALTED, journaled as the operator's command); an action without
the token is refused and changes nothing; a daemon without a token draws no buttons.

Content is asserted, not pixels; each test leaves a screenshot in ``artifacts/browser/``.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from adapters.journal_file import FileJournalReader
from engine.events import Event, Fill, OrderAccepted
from engine.journal import CommandRecord
from tests.adapters.dashboard.test_dashboard_daemon import TOKEN, TOKEN_ENV, dashboard_config
from tests.browser.conftest import SCREENSHOTS
from tests.integration.conftest import Broker
from tests.integration.test_daemon import CODEC, SYMBOL, publish_quote, running, watching

# a daemon and a Chromium per test: ~25 s for the file on 2 busy cores
pytestmark = pytest.mark.slow


async def _open(browser: Any, url: str) -> Any:
    page = await browser.new_page()
    await page.goto(url)
    # the first document came through the event stream (polled from outside the page:
    # its Content Security Policy forbids evaluating strings in it)
    await expect(page.locator("#conn")).to_have_text("live")
    return page


@pytest.mark.asyncio
async def test_browser_page_shows_a_fill_within_a_second_of_booking(
    daemon_env: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = dashboard_config(tmp_path, daemon_env)
    async with watching(daemon_env) as (watcher, feed), running(config) as daemon:
        await watcher.status(lambda s: s.online)
        assert daemon.dashboard_url is not None
        page = await _open(browser, daemon.dashboard_url)
        assert await page.text_content("#state") == "ACTIVE"
        assert "n1 (live)" in (await page.text_content("#node") or "")
        await publish_quote(feed)
        await watcher.wait(lambda: len(watcher.orders) == 1)
        order_id = watcher.orders[0].client_order_id
        await page.wait_for_selector(f"#orders td:text-is('{order_id}')", timeout=5000)
        booked: list[float] = []

        def on_fill(event: Event) -> None:
            if isinstance(event, Fill):
                booked.append(time.monotonic())

        daemon.engine.sinks.append(on_fill)
        ts = time.time_ns()
        accepted = OrderAccepted(ts_event=ts, ts_recv=ts, client_order_id=order_id,
                                 venue_order_id="v1")  # fmt: skip
        fill = Fill(ts_event=ts, ts_recv=ts, client_order_id=order_id, fill_id="f1",
                    instrument=SYMBOL, side="buy", qty=1.0, price=100.5, fee=0.01,
                    liquidity="taker")  # fmt: skip
        await feed.publish("oms/a1/reports", CODEC.encode(accepted), qos=1)
        await feed.publish("oms/a1/reports", CODEC.encode(fill), qos=1)
        row = page.locator("#fills tr", has_text=order_id)
        await row.wait_for(timeout=10_000)
        shown = time.monotonic()
        assert len(booked) == 1
        print(f"fill shown {(shown - booked[0]) * 1e3:.0f} ms after the engine booked it")
        # an upper bound: it includes the round trip from the browser back to this test
        assert shown - booked[0] < 1.0, f"the fill showed {shown - booked[0]:.3f} s after booking"
        cells = await row.locator("td").all_text_contents()
        assert cells[1:6] == [SYMBOL, "buy", "1.0000", "100.5000", "0.0100"]
        positions = await page.locator("#positions td").all_text_contents()
        assert positions[:2] == [SYMBOL, "1.0000"]
        assert await page.locator("#orders .empty").count() == 1  # no working order left
        await page.screenshot(path=str(SCREENSHOTS / "fill.png"), full_page=True)


@pytest.mark.asyncio
async def test_browser_kill_from_the_page_halts_the_engine_and_is_journaled(
    daemon_env: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = dashboard_config(tmp_path, daemon_env, mode="paper")  # no OMS to wait for
    async with watching(daemon_env) as (watcher, _), running(config) as daemon:
        await watcher.status(lambda s: s.online)
        assert daemon.dashboard_url is not None
        page = await _open(browser, daemon.dashboard_url)
        assert await page.is_visible("#actions") and not await page.is_visible("#readonly")
        # without the token: refused, nothing changes
        await page.click("button[data-action=kill]")
        await expect(page.locator("#result")).to_have_text(re.compile(r"^kill: 401"))
        await page.screenshot(path=str(SCREENSHOTS / "kill-refused.png"), full_page=True)
        await page.fill("#token", TOKEN + "-wrong")
        await page.click("button[data-action=kill]")
        await expect(page.locator("#result")).to_have_text("kill: 401 wrong token")
        await asyncio.sleep(0.3)
        assert daemon.engine.risk.trading.claim("operator") == "ACTIVE"
        assert await page.text_content("#state") == "ACTIVE"
        # with it: the engine halts, the page says so and who holds it
        await page.fill("#token", TOKEN)
        await page.fill("#reason", "browser test kill")
        await page.click("button[data-action=kill]")
        await expect(page.locator("#result")).to_have_text(re.compile(r"^kill: 202"))
        await expect(page.locator("#state")).to_have_text("HALTED", timeout=5000)
        assert daemon.engine.risk.trading.claim("operator") == "HALTED"
        assert "operator=HALTED" in (await page.text_content("#held") or "")
        events = await page.locator("#events").text_content()
        assert events is not None and "command kill" in events and "browser test kill" in events
        await page.screenshot(path=str(SCREENSHOTS / "kill.png"), full_page=True)
    commands = [
        r.command for r in FileJournalReader(tmp_path / "journal") if isinstance(r, CommandRecord)
    ]
    assert (commands[0].action, commands[0].issuer, commands[0].reason) == (
        "kill", "dashboard", "browser test kill",
    )  # fmt: skip


@pytest.mark.asyncio
async def test_browser_read_only_page_has_no_buttons_and_the_endpoint_refuses(
    daemon_env: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = dashboard_config(tmp_path, daemon_env, mode="paper")
    async with watching(daemon_env) as (watcher, _), running(config) as daemon:
        await watcher.status(lambda s: s.online)
        assert daemon.dashboard_url is not None
        page = await _open(browser, daemon.dashboard_url)
        assert not await page.is_visible("#actions")
        assert TOKEN_ENV in (await page.text_content("#readonly") or "")
        # a request forged from the page itself, with a token, is still refused
        status = await page.evaluate(
            """async (token) => (await fetch('api/actions/kill', {method: 'POST',
                 headers: {'Authorization': 'Bearer ' + token}})).status""",
            TOKEN,
        )
        assert status == 403
        await page.screenshot(path=str(SCREENSHOTS / "read-only.png"), full_page=True)
        assert daemon.engine.risk.trading.claim("operator") == "ACTIVE"
