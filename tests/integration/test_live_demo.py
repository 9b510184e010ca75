"""``tradeloop live-demo`` end to end: its own mosquitto, oms-sim, the daemon and a sample
feed, each a child process; a signed operator command sent with ``--command`` while it
runs; then the parity of the session it leaves behind."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from adapters.journal_file import FileJournalReader
from adapters.tools.demo.live_demo import DemoSettings, run_live_demo, set_toml_key
from engine.errors import ConfigError
from engine.events import Fill
from engine.journal import CommandRecord, ReportRecord
from tests.integration.conftest import MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "replay.cli"]


def _dispatcher_has_live_demo() -> bool:
    from replay.cli import build_parser

    return "live-demo" in build_parser().format_help()


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="live-demo-stdout", daemon=True).start()
    return lines


def test_live_demo_short_feed_trades_and_leaves_a_session_with_parity(tmp_path: Path) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    if not _dispatcher_has_live_demo():
        pytest.skip("the dispatcher (replay/cli.py) does not register live-demo yet")
    out = tmp_path / "demo"
    # 10 minutes of market data at 40x: about 1,900 messages/s for 15 s, past the slow
    # EMA's 4,000-quote warm-up into a few crossings; the OMS simulator keeps up at that
    # rate (at 100x its queue of quotes delays the orders behind them by seconds)
    proc = subprocess.Popen(
        [*CLI, "live-demo", "--out", str(out), "--minutes", "10", "--speed", "40", "--grace", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = _lines(proc)
    seen: list[str] = []
    command: subprocess.CompletedProcess[str] | None = None
    dashboard: dict[str, object] | None = None
    deadline = time.monotonic() + 90
    try:
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            seen.append(line)
            if line.startswith("dashboard: http://") and dashboard is None:
                # the daemon's page is up while the demo runs (its document, over HTTP)
                url = line.split()[1]
                with urllib.request.urlopen(url + "api/state", timeout=10) as r:
                    dashboard = json.loads(r.read())
            if "daemon online" in line and command is None:
                # resume is harmless while ACTIVE, and the journal records who sent it
                command = subprocess.run(
                    [*CLI, "live-demo", "--out", str(out), "--command", "resume"],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
        proc.wait(30)
    except (queue.Empty, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
        pytest.fail("live-demo did not finish within 90 s:\n" + "".join(seen[-30:]))
    finally:
        assert proc.stdout is not None
        proc.stdout.close()
    text = "".join(seen)
    assert proc.returncode == 0, text[-3000:]
    assert command is not None and command.returncode == 0, (command, text[-2000:])
    assert "sent a signed resume" in command.stdout
    assert dashboard is not None, text[-2000:]
    assert dashboard["node"] == "node1" and dashboard["actions"] == {"enabled": True, "why": ""}
    assert "live-demo stopped" in text and "check parity" in text

    journal = out / "journal"
    (manifest,) = journal.glob("session-*.json")
    session = json.loads(manifest.read_text())
    decisions_path = journal / session["decisions_file"]
    decisions = [json.loads(line) for line in decisions_path.read_text().splitlines()]
    requested = {d["client_order_id"] for d in decisions if d["type"] == "order_request"}
    refused = {d["client_order_id"] for d in decisions if d["type"] == "risk_rejected"}
    sent = requested - refused
    assert sent, f"no order passed the risk checks: {len(requested)} requested"
    records = list(FileJournalReader(journal))
    fills = [
        r.report for r in records if isinstance(r, ReportRecord) and isinstance(r.report, Fill)
    ]
    assert fills and {f.client_order_id for f in fills} <= sent
    commands = [
        (r.command.action, r.command.issuer) for r in records if isinstance(r, CommandRecord)
    ]
    assert ("resume", "operator") in commands
    assert commands[-1] == ("kill", "daemon")  # the daemon's own stop (cancel_on_stop)
    assert f"{len(fills)} fills (journal)" in text

    parity = subprocess.run(
        [*CLI, "parity", str(journal)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert parity.returncode == 0, parity.stdout + parity.stderr
    assert "decisions equal" in parity.stdout


def test_live_demo_without_mosquitto_or_broker_says_so_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapters.tools.demo.live_demo._mosquitto", lambda: None)

    def no_sample(*args: object, **kwargs: object) -> tuple[Path, Path]:
        raise AssertionError("sample data written before the broker was checked")

    with pytest.raises(ConfigError, match=r"mosquitto is not installed.*--broker HOST:PORT"):
        run_live_demo(DemoSettings(out=tmp_path), sample_data=no_sample, entry=CLI)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        run_live_demo(DemoSettings(out=tmp_path, broker="nohost"), sample_data=no_sample, entry=CLI)
    assert not any(tmp_path.iterdir())


def test_set_toml_key_sets_only_the_named_section() -> None:
    text = (ROOT / "docs" / "live.toml").read_text()
    text = set_toml_key(text, "mqtt", "port", "1999")
    text = set_toml_key(text, "live", "metrics_port", "0")
    text = set_toml_key(text, "mqtt", "password_env", None)
    text = set_toml_key(text, "journal", "dir", '"/tmp/j"')
    text = set_toml_key(text, "", "mode", '"paper"')
    text = set_toml_key(text, "live", "shutdown_timeout", '"2s"')  # not there: added

    doc = tomllib.loads(text)
    assert doc["mode"] == "paper" and doc["mqtt"]["port"] == 1999
    assert "password_env" not in doc["mqtt"] and doc["mqtt"]["username_env"]
    assert doc["live"]["metrics_port"] == 0 and doc["live"]["shutdown_timeout"] == "2s"
    assert doc["journal"]["dir"] == "/tmp/j" and len(doc["instruments"]) == 2
