"""A real headless Chromium (the distribution's, driven by playwright) for the dashboard's
browser tests, and the integration fixtures (a real mosquitto per test).

Chromium is looked up as ``$TRADELOOP_CHROMIUM``, then ``chromium``, ``chromium-browser``,
``google-chrome`` on the PATH; without one the tests skip and say so (CI installs it).
Screenshots go to ``artifacts/browser/`` at the repository's root (CI keeps them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.integration.conftest import broker, daemon_env

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "browser"


def chromium_path() -> str | None:
    """The system Chromium, or None."""
    named = os.environ.get("TRADELOOP_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (``--no-sandbox``: CI runs as root), closed after the test."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (apt install chromium, or set $TRADELOOP_CHROMIUM)")
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


__all__ = ["SCREENSHOTS", "broker", "browser", "chromium_path", "daemon_env"]
