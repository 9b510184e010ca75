"""``tradeloop command`` (issue 20, item 10), against a mosquitto configured as docs/ ship
it and a daemon running docs/live.toml: the operator's ``kill`` halts the daemon and the
command prints HALTED; ``resume`` brings ACTIVE back; a command with the wrong key, or
sent as a user the ACL does not allow to command, changes nothing and says so."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.tools.demo.live_demo import set_toml_key
from tests.integration.conftest import DeployedBroker
from tests.integration.test_daemon import running
from tests.integration.test_tls_deployment import deployed_config, online_status

ROOT = Path(__file__).resolve().parents[2]


async def _command(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``tradeloop command`` in a process of its own (the daemon runs in this loop)."""
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "replay.cli", "command", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env or dict(os.environ),
    )
    return proc.returncode, proc.stdout + proc.stderr


def _no_feed_needed(config: Path) -> Path:
    """No feed runs here: with docs' 2 s ``max_quote_age`` a ``tradeloop command`` that
    takes longer to start (a loaded machine) meets a data-loss HALTED claim as well, which
    is not what these tests are about."""
    config.write_text(set_toml_key(config.read_text(), "risk", "max_quote_age", '"1h"'))
    return config


@pytest.mark.asyncio
async def test_operator_command_kill_prints_halted_and_resume_brings_active(
    deployed_env: DeployedBroker, tmp_path: Path
) -> None:
    config = _no_feed_needed(deployed_config(tmp_path, deployed_env))
    async with running(config) as daemon:
        assert (await online_status(deployed_env)).state == "ACTIVE"
        code, out = await _command(config, "kill", "--reason", "test kill", "--timeout", "20")
        assert code == 0, out
        assert out.strip().splitlines()[-1] == "node1: HALTED (claims: operator=HALTED)"
        assert daemon.engine.risk.trading.claim("operator") == "HALTED"
        code, out = await _command(config, "resume", "--timeout", "20")
        assert code == 0, out
        assert out.strip().splitlines()[-1] == "node1: ACTIVE"


@pytest.mark.asyncio
async def test_operator_command_wrong_key_or_user_changes_nothing_and_fails(
    deployed_env: DeployedBroker, tmp_path: Path
) -> None:
    config = _no_feed_needed(deployed_config(tmp_path, deployed_env))
    async with running(config) as daemon:
        await online_status(deployed_env)
        wrong_key = dict(os.environ, TRADELOOP_COMMAND_KEY="not-the-key")
        code, out = await _command(config, "kill", "--timeout", "2", env=wrong_key)
        assert code != 0 and "reported no effect" in out, out
        # the feed's user may not publish commands (docs/mosquitto.acl)
        as_feed = dict(
            os.environ,
            TRADELOOP_OPERATOR_USER="feed",
            TRADELOOP_OPERATOR_PASSWORD=deployed_env.passwords["feed"],
        )
        code, out = await _command(config, "kill", "--timeout", "2", env=as_feed)
        assert code != 0, out
        assert daemon.engine.risk.trading.claim("operator") == "ACTIVE"
