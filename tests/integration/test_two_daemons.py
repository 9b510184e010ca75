"""Two daemons on one OMS account, against a real mosquitto and ``oms-sim`` (issue 19,
defect 10): the OMS publishes every report of the account on one topic, and each daemon
books only its own orders' reports (client order ids under its node's prefix); the other
node's are counted, never booked, so its first fill no longer sets a sticky
REDUCE_ONLY."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.daemon.run import Daemon
from adapters.journal_file import FileJournalReader
from engine.journal import ReportRecord
from replay.sessions.parity import parity
from tests.integration.conftest import Broker
from tests.integration.test_faults import online, write_config
from tests.integration.test_reliability import client, new_oms, quote, running, serving, until


def _config(tmp_path: Path, port: int, node: str, *, max_orders: int) -> Path:
    folder = tmp_path / node
    folder.mkdir()
    path = write_config(folder, port, mode="live", every=1, max_orders=max_orders)
    path.write_text(path.read_text().replace('node = "n1"', f'node = "{node}"'))
    return path


def _position(daemon: Daemon) -> float:
    return float(daemon.engine.portfolio.positions[0])


@pytest.mark.asyncio
async def test_two_daemons_one_account_each_books_only_its_own_reports(
    daemon_env: Broker, tmp_path: Path
) -> None:
    trader = _config(tmp_path, daemon_env.port, "n1", max_orders=3)
    quiet = _config(tmp_path, daemon_env.port, "n2", max_orders=0)
    oms = new_oms()
    async with (
        serving(daemon_env, oms),
        client(daemon_env) as feed,
        running(trader) as n1,
        running(quiet) as n2,
    ):
        await online(n1)
        await online(n2)
        async with asyncio.timeout(10):
            while oms.counters["fills"] < 3:
                await quote(feed)
                await asyncio.sleep(0.05)
        await until(lambda: _position(n1) == oms.positions["BTC"] == 1.0)
        assert n2.core is not None
        counters = n2.core.counters
        # an ack and a fill per order of n1's: none booked by n2
        await until(lambda: counters["reports_other_node"] >= 6)
        await asyncio.sleep(0.2)  # a few turns: had one been booked, it would show
        assert _position(n2) == 0.0
        assert n2.engine.risk.state == "ACTIVE"
        assert n2.engine.counters["reports_unknown_order"] == 0
        assert n2.engine.counters["fills_unknown_order"] == 0
        assert n1.engine.risk.state == "ACTIVE"
        assert n1.core is not None and n1.core.counters["reports_other_node"] == 0
    # refused before the journal: n2's holds none of n1's reports, its replay needs nothing
    assert not [r for r in FileJournalReader(tmp_path / "n2" / "journal")
                if isinstance(r, ReportRecord)]  # fmt: skip
    for node in ("n1", "n2"):
        assert parity(tmp_path / node / "journal").ok
