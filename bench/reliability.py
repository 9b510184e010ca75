"""Reliability figures of the live daemon (issue 11), for docs/reliability.md.

Two runs against a private mosquitto on a free port:

- ``crash``: the daemon as a process trading against ``oms-sim``, SIGKILLed at random
  points ``--kills`` times (the CI test does 10), restarted each time, then started once
  more and stopped: duplicate orders seen by the OMS, fills double-booked, torn tails
  cut, positions against the OMS's, parity of the last session.
- ``load``: the daemon (shadow mode) as a process fed ``--rate`` quotes/s by
  ``mosquitto_pub`` for ``--seconds``; its RSS sampled every 5 s, then quotes published
  against ticks journaled.

- ``restart``: the rebuild a restarted daemon does, on a journal of ``--records``
  records (1-tick market-data batches of two instruments and a clock reading every 5,
  the Churn strategy of the reliability tests trading on them against a scripted OMS
  that fills every order): without a snapshot (every record applied) and from a
  snapshot ``--tail`` records before the end (the most a restart applies with the
  daemon's ``[journal] snapshot_every_records``); both states compared.

    python -m bench.reliability crash --kills 30
    python -m bench.reliability load --rate 5000 --seconds 180
    python -m bench.reliability restart --records 1000000 --tail 50000
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adapters.journal_file import FileJournalReader
from engine.journal import MarketDataRecord
from tests.integration.conftest import MOSQUITTO, Broker

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(folder: Path) -> tuple[Broker, subprocess.Popen[bytes]]:
    """A mosquitto like the test fixture's (users ``daemon`` and ``operator``)."""
    assert MOSQUITTO is not None, "mosquitto is not installed"
    port = _free_port()
    passwd = folder / "passwd"
    users = {"daemon": "daemon-secret", "operator": "operator-secret"}
    for i, (user, password) in enumerate(users.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *flags, str(passwd), user, password],
                       check=True, capture_output=True)  # fmt: skip
    acl = folder / "acl"
    acl.write_text(
        "user daemon\ntopic read #\ntopic write md/#\ntopic write oms/#\n"
        "topic write tradeloop/+/status\n\nuser operator\ntopic readwrite #\n"
    )
    log = folder / "mosquitto.log"
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl}\npersistence false\nlog_dest file {log}\n"
        "max_queued_messages 100000\nset_tcp_nodelay true\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    broker = Broker("127.0.0.1", port, "daemon", users["daemon"], "operator",
                    users["operator"], log)  # fmt: skip
    return broker, proc


def _env(broker: Broker) -> None:
    os.environ["TL_TEST_MQTT_USER"] = broker.username
    os.environ["TL_TEST_MQTT_PASSWORD"] = broker.password
    os.environ["TL_TEST_COMMAND_KEY"] = "bench-key"


def crash(kills: int, seed: int) -> dict[str, object]:
    from tests.integration.test_reliability import crash_loop

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker, proc = start_broker(folder)
        try:
            _env(broker)
            t0 = time.monotonic()
            figures = asyncio.run(crash_loop(broker, folder, kills=kills, seed=seed))
            figures["wall_s"] = round(time.monotonic() - t0, 1)
            return figures
        finally:
            proc.terminate()
            proc.wait(5)


_PACER = """
import sys, time, json
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
out = sys.stdout
start = time.monotonic(); sent = 0
while True:
    now = time.monotonic() - start
    if now >= seconds:
        break
    due = int(now * rate)
    while sent < due:
        sent += 1
        ts = time.time_ns()
        out.write('{"type":"quote","ts_event":%d,"ts_recv":%d,"instrument":"BTC","bid":100.0,'
                  '"ask":100.5,"bid_size":1.0,"ask_size":1.0}\\n' % (ts, ts))
    out.flush()
    time.sleep(0.002)
print(sent, file=sys.stderr)
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(rate: int, seconds: float) -> dict[str, object]:
    from tests.integration.test_reliability import write_config

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker, mosquitto = start_broker(folder)
        _env(broker)
        config = write_config(folder, broker.port, every=10**9, rest=False)
        config.write_text(config.read_text().replace('mode = "live"', 'mode = "shadow"'))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "adapters.daemon.cli", "run", "--config", str(config)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(6)  # imports, numba cache, connect
            pacer = subprocess.Popen([sys.executable, "-c", _PACER, str(rate), str(seconds)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            pub = subprocess.Popen(
                ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-u",
                 broker.operator, "-P", broker.operator_password, "-t", "md/SIM/BTC/quote",
                 "-l", "-q", "0"],
                stdin=pacer.stdout,
            )  # fmt: skip
            assert pacer.stdout is not None
            pacer.stdout.close()
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            while pacer.poll() is None:
                samples.append((round(time.monotonic() - t0, 1), round(_rss_mb(daemon.pid), 1)))
                time.sleep(5)
            assert pacer.stderr is not None
            published = int(pacer.stderr.read().decode().split()[-1])
            pub.wait(30)
            time.sleep(2)
            samples.append((round(time.monotonic() - t0, 1), round(_rss_mb(daemon.pid), 1)))
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
            mosquitto.terminate()
            mosquitto.wait(5)
        ticks = sum(
            r.ticks.count
            for r in FileJournalReader(folder / "journal")
            if isinstance(r, MarketDataRecord)
        )
        records = sum(1 for _ in FileJournalReader(folder / "journal"))
        steady = [rss for t, rss in samples if t >= 20]
        return {
            "rate": rate,
            "seconds": seconds,
            "published": published,
            "ticks_journaled": ticks,
            "lost": published - ticks,
            "journal_records": records,
            "rss_mb": samples,
            "rss_growth_after_20s_mb": round(max(steady) - min(steady), 1) if steady else None,
        }


_RESTART_CONFIG = """
mode = "live"
[[instruments]]
symbol = "BTC"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001
[[instruments]]
symbol = "ETH"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001
[[features]]
name = "mid"
kind = "mid"
[[features]]
name = "z"
kind = "zscore"
input = "mid"
window = "5s"
[strategy]
name = "tests.integration.test_reliability:Churn"
params = { qty = 1.0, every = 500, rest = true }
[risk]
max_order_qty = 5.0
max_position = 5.0
warmup = false
[live]
order_timeout = "5s"
"""


def restart(records: int, tail: int) -> dict[str, object]:
    """Rebuild time with and without a snapshot on one journal (see the docstring)."""
    import hashlib

    import numpy as np

    from adapters.daemon.assembly import build_live_engine
    from adapters.daemon.core import apply_input
    from adapters.daemon.rebuild import rebuild
    from adapters.daemon.snapshots import seal_snapshot, snapshot_header
    from adapters.journal_file import FileJournalWriter
    from adapters.journal_folder import write_snapshot
    from adapters.live_sender import ShadowSender
    from adapters.reconciliation import FillLedger
    from engine.config import load_config
    from engine.events import Fill, OrderRequest
    from engine.ports import SendOnly
    from engine.snapshot import capture_state
    from engine.ticks import TickBatch

    folder = Path(tempfile.mkdtemp(prefix="tl-restart-"))
    config_path = folder / "live.toml"
    config_path.write_text(_RESTART_CONFIG)
    config, _ = load_config(config_path)
    digest = hashlib.sha256(_RESTART_CONFIG.encode()).hexdigest()
    mac_key = os.urandom(32)  # the snapshots' HMAC key (a daemon's comes from the environment)

    def engine_and_extras() -> tuple[object, dict[str, object]]:
        engine = build_live_engine(config, SendOnly(ShadowSender()), order_id_prefix="n-s")
        ledger = FillLedger(engine.clock)
        engine.sinks.append(ledger)
        return engine, {"ledger": ledger}

    # the session: journaled and applied as the daemon does; the snapshot at ``records -
    # tail`` is taken from the live engine, as the daemon takes it
    engine, extras = engine_and_extras()
    sent: list[OrderRequest] = []
    engine.sinks.append(lambda e: sent.append(e) if isinstance(e, OrderRequest) else None)  # type: ignore[attr-defined]
    rng = np.random.default_rng(1)
    mids = [100.0, 50.0]
    t0 = time.perf_counter()
    capture_s = 0.0
    payload_bytes = 0
    ts = 1_723_161_254_087_891_268
    answered = 0
    directory = folder / "journal"
    with FileJournalWriter(directory, session_id="bench", fsync="never") as writer:
        while writer.next_seq <= records:
            ts += 1_000_000
            i = writer.next_seq % 2
            mids[i] += float(rng.normal(0, 0.05))
            one = np.array([ts], np.int64)
            batch = TickBatch.quotes(one, one, np.array([i], np.int32), np.array([mids[i]]),
                                     np.array([mids[i] + 0.02]), np.ones(1), np.ones(1))  # fmt: skip
            writer.append(ts, batch)
            apply_input(engine, ts, batch)  # type: ignore[arg-type]
            if writer.next_seq % 5 == 0:
                writer.append_clock(ts)
                apply_input(engine, ts, None)  # type: ignore[arg-type]
            while answered < len(sent):
                order = sent[answered]
                answered += 1
                if engine.orders.find(order.client_order_id) is None:  # type: ignore[attr-defined]
                    continue
                fill = Fill(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id,
                            fill_id=f"oms-{answered}", instrument=order.instrument,
                            side=order.side, qty=order.qty, price=round(mids[i], 2), fee=0.01,
                            liquidity="taker")  # fmt: skip
                writer.append(ts, fill)
                apply_input(engine, ts, fill)  # type: ignore[arg-type]
            if not payload_bytes and writer.next_seq > records - tail:
                writer.sync()
                c0 = time.perf_counter()
                payload = capture_state(engine, extras)  # type: ignore[arg-type]
                header = snapshot_header(writer, payload, records=writer.next_seq - 1,
                                         sessions=["bench"], ts_recv=ts,
                                         config_sha256=digest)  # fmt: skip
                assert header is not None
                header = seal_snapshot(directory, header, payload, mac_key)
                write_snapshot(directory, header, payload)
                capture_s = time.perf_counter() - c0
                payload_bytes = len(payload)
        total = writer.next_seq - 1
    session_s = time.perf_counter() - t0

    def timed(snapshot: bool) -> tuple[float, object, object]:
        fresh, fresh_extras = engine_and_extras()
        r0 = time.perf_counter()
        history = rebuild(fresh, directory, config_sha256=digest if snapshot else None,  # type: ignore[arg-type]
                          extras=fresh_extras, snapshot_mac_key=mac_key)  # fmt: skip
        return time.perf_counter() - r0, fresh, history

    full_s, full, full_history = timed(False)
    snap_s, fast, history = timed(True)
    from tests.engine.test_snapshot import state_differences

    differences = state_differences(fast, full)  # type: ignore[arg-type]
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "records": total,
        "orders": engine.counters["orders_sent"],  # type: ignore[attr-defined]
        "fills": engine.counters["fills"],  # type: ignore[attr-defined]
        "session_s": round(session_s, 1),
        "snapshot_capture_and_write_ms": round(capture_s * 1000, 1),
        "snapshot_bytes": payload_bytes,
        "snapshot_seq": history.snapshot_seq,  # type: ignore[attr-defined]
        "tail_records": total - history.snapshot_seq,  # type: ignore[attr-defined]
        "restart_full_s": round(full_s, 2),
        "restart_from_snapshot_s": round(snap_s, 3),
        "ratio": round(full_s / snap_s, 1),
        "records_rebuilt_equal": history.records == full_history.records,  # type: ignore[attr-defined]
        "state_differences": differences,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="run", required=True)
    c = sub.add_parser("crash")
    c.add_argument("--kills", type=int, default=30)
    c.add_argument("--seed", type=int, default=1)
    m = sub.add_parser("load")
    m.add_argument("--rate", type=int, default=5000)
    m.add_argument("--seconds", type=float, default=180.0)
    r = sub.add_parser("restart")
    r.add_argument("--records", type=int, default=1_000_000)
    r.add_argument("--tail", type=int, default=50_000)
    args = parser.parse_args()
    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}"
    if args.run == "restart":
        figures = restart(args.records, args.tail)
        figures["machine"] = machine
        print(json.dumps(figures))
        return
    figures = crash(args.kills, args.seed) if args.run == "crash" else load(args.rate, args.seconds)
    figures["machine"] = machine
    print(json.dumps(figures))
    assert shutil.which("mosquitto_pub") is not None


if __name__ == "__main__":
    main()
