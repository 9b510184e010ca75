"""Durable state has one owner (issue 20, defects 1 and 2), against a real mosquitto: a
second daemon on a journal folder is refused with one line naming the holder (also when
both start at once on an empty folder), and the journal stays readable; a journal cut to
half its records, or deleted with its session files left, is refused until the operator
accepts the loss, which the journal then records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.daemon.run import run_daemon
from adapters.journal_file import FileJournalReader
from adapters.journal_folder import LOCK_FILE, journal_files
from engine.errors import AdapterError
from engine.journal import JournalLossRecord
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_reliability import (
    ROOT,
    client,
    new_oms,
    quote,
    running,
    serving,
    until,
    write_config,
)


def _daemon(config: Path, *flags: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.daemon.cli", "run", "--config", str(config), *flags],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


async def _exited(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str]:
    async with asyncio.timeout(timeout):
        while proc.poll() is None:
            await asyncio.sleep(0.05)
    _, err = proc.communicate()
    return proc.returncode, err


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tradeloop: error:")]


async def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    code, _ = await _exited(proc)
    return code


async def _holding(journal: Path, proc: subprocess.Popen[str]) -> None:
    lock = journal / LOCK_FILE
    await until(lambda: lock.exists() and f'"pid": {proc.pid}' in lock.read_text(), 60)
    await until(lambda: any(journal.glob("session-*.json")) or proc.poll() is not None, 60)


@pytest.mark.asyncio
async def test_daemon_second_on_one_journal_refused_naming_the_holder(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port)
    journal = tmp_path / "journal"
    async with serving(daemon_env, new_oms()), client(daemon_env) as feed:
        first = _daemon(config)
        try:
            await _holding(journal, first)
            for _ in range(20):
                await quote(feed)
                await asyncio.sleep(0.02)
            second = _daemon(config)
            code, err = await _exited(second)
            assert code == 2, err
            (line,) = _error_lines(err)
            assert f"held by pid {first.pid}" in line and "node n1" in line
            assert "Traceback" not in err
            assert first.poll() is None  # the holder runs on
            for _ in range(20):
                await quote(feed)
                await asyncio.sleep(0.02)
        finally:
            assert await _stop(first) == 0
    records = list(FileJournalReader(journal))  # readable: one writer only
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert parity(journal).ok


@pytest.mark.asyncio
async def test_daemons_started_at_once_on_an_empty_folder_one_runs_one_refused(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port)
    journal = tmp_path / "journal"
    assert not journal.exists()
    async with serving(daemon_env, new_oms()), client(daemon_env) as feed:
        daemons = [_daemon(config), _daemon(config)]
        try:
            await until(lambda: any(d.poll() is not None for d in daemons), 60)
            refused = next(d for d in daemons if d.poll() is not None)
            runner = next(d for d in daemons if d is not refused)
            code, err = await _exited(refused)
            assert code == 2, err
            (line,) = _error_lines(err)
            assert f"held by pid {runner.pid}" in line or "has not named itself" in line
            await _holding(journal, runner)
            for _ in range(20):
                await quote(feed)
                await asyncio.sleep(0.02)
            assert runner.poll() is None
        finally:
            for proc in daemons:
                if proc.poll() is None:
                    assert await _stop(proc) == 0
    records = list(FileJournalReader(journal))
    assert records and [r.seq for r in records] == list(range(1, len(records) + 1))


async def _session(config: Path, broker: Broker, quotes: int) -> None:
    async with serving(broker, new_oms()), client(broker) as feed, running(config) as daemon:
        for _ in range(quotes):
            await quote(feed)
            await asyncio.sleep(0.01)
        await until(lambda: daemon.heartbeat_seq >= 3)


@pytest.mark.asyncio
async def test_daemon_journal_cut_to_half_refused_until_the_loss_is_accepted(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port)
    journal = tmp_path / "journal"
    await _session(config, daemon_env, 60)
    before = len(list(FileJournalReader(journal)))
    newest = journal_files(journal)[-1]
    with newest.open("r+b") as f:
        f.truncate(newest.stat().st_size // 2)
    with pytest.raises(AdapterError, match="records lost"):
        await run_daemon(config, stop=asyncio.Event())
    refused = _daemon(config)
    code, err = await _exited(refused)
    assert code == 2 and len(_error_lines(err)) == 1 and "--accept-journal-loss" in err
    accepted = _daemon(config, "--accept-journal-loss")
    try:
        await _holding(journal, accepted)
        await until(lambda: len(list(journal.glob("session-*.json"))) == 2, 60)
    finally:
        assert await _stop(accepted) == 0
    records = list(FileJournalReader(journal))
    (loss,) = [r for r in records if isinstance(r, JournalLossRecord)]
    assert loss.loss.expected_last_seq >= before and loss.loss.found_last_seq < before
    assert loss.seq == loss.loss.found_last_seq + 1
    assert parity(journal).ok  # the session after the loss replays to its decisions


@pytest.mark.asyncio
async def test_daemon_journal_deleted_session_files_left_refused(
    daemon_env: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, daemon_env.port)
    journal = tmp_path / "journal"
    await _session(config, daemon_env, 20)
    for path in journal_files(journal):
        path.unlink()
    with pytest.raises(AdapterError, match="the journal is gone"):
        await run_daemon(config, stop=asyncio.Event())
    assert not journal_files(journal)  # nothing started: no fresh, flat session
