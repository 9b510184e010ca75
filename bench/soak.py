"""Soak of the live daemon (issue 11, part 6; not in CI): a session of ``--minutes`` of
feed at ``--rate`` quotes/s with ``--broker-restarts`` mosquitto SIGKILL+restarts and
``--daemon-kills`` daemon SIGKILL+restarts spread evenly over it, against ``tradeloop
oms-sim`` as a process of its own (it reconnects after each broker restart, keeping its
state and its unacknowledged reports).

The feed is ``mosquitto_pub -l`` paced by a small writer, one run per segment between two
faults (so every quote published is counted exactly). Before each fault the daemon's
``tradeloop_messages_in_total{kind="quote"}`` (its metrics endpoint) is read once it has
stopped rising, so the quotes each daemon process received are known even for a process
that is then SIGKILLed; after a broker restart the next segment waits for the daemon's
status and for oms-sim to answer a request. Reported: quotes published, received and journaled; orders the
OMS received, answered, and received twice; fills at the OMS against fills booked by the
replay of the last session; positions; RSS of the daemon and of oms-sim over time
(``/proc/<pid>/status`` every second) and the load average; the time from each broker
kill to the journaled data-loss record; each daemon start's time to online; parity.

    python -m bench.soak                      # 10 min, 20k/s, 20 and 20 (the issue's)
    python -m bench.soak --minutes 3 --rate 10000 --broker-restarts 5 --daemon-kills 5
    python -m bench.soak --keep /tmp/soak     # keeps the journal, figures.json, rss.csv
    python -m bench.soak --plot /tmp/soak/rss.csv docs/soak_rss.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiomqtt

from adapters.journal_file import FileJournalReader
from adapters.mqtt.reconcile import (
    FillsSinceRequest,
    OpenOrdersRequest,
    PositionsRequest,
    request,
)
from adapters.mqtt.status import decode_status
from bench.reliability import _PACER, _env, _rss_mb, start_broker
from engine.errors import AdapterError
from engine.events import OrderAccepted, OrderRejected
from engine.journal import FeedRecord, MarketDataRecord, ReportRecord
from replay.sessions.journal_replay import replay_journal
from replay.sessions.parity import parity
from tests.integration.conftest import MOSQUITTO, Broker
from tests.integration.test_reliability import TOPICS, write_config

ROOT = Path(__file__).resolve().parents[1]

# a restarted daemon applies every earlier journal record before it goes online: with
# millions of ticks journaled that took minutes here (docs/reliability.md, section 7)
_ONLINE_TIMEOUT_S = 900.0
# the daemon's received count must hold still this long before a fault (it has drained)
_SETTLED_S = 0.5
_SETTLE_TIMEOUT_S = 60.0

_OMS_COMMAND = """
import sys
from replay.cli import main
sys.exit(main(sys.argv[1:]))
"""
_STOPPED = re.compile(
    r"oms-sim stopped: (\d+) orders \((\d+) resends, (\d+) answered\), (\d+) cancels, "
    r"(\d+) fills, (\d+) reconciliation requests, ([\d,]+) ticks, (\d+) bad messages, "
    r"(\d+) reconnects"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_daemon(config: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.daemon.cli", "run", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _spawn_oms(broker: Broker, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TL_SOAK_OMS_PASSWORD=broker.operator_password)
    return subprocess.Popen(
        [sys.executable, "-c", _OMS_COMMAND, "oms-sim", "--config", str(config),
         "--broker", f"{broker.host}:{broker.port}", "--username", broker.operator,
         "--password-env", "TL_SOAK_OMS_PASSWORD", "--account", TOPICS.account,
         "--latency", "0us", "--fee-bps", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("wb"),
    )  # fmt: skip


def _client(broker: Broker, name: str) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, username=broker.operator,
                          password=broker.operator_password,
                          identifier=f"{name}-{time.monotonic_ns()}",
                          protocol=aiomqtt.ProtocolVersion.V5)  # fmt: skip


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quotes_received(metrics_port: int) -> int | None:
    """The daemon's ``messages_in_total{kind="quote"}``; None while it does not serve."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as page:
            text = page.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith('tradeloop_messages_in_total{kind="quote"}'):
            return int(float(line.split()[-1]))
    return 0


async def _settled_received(metrics_port: int) -> int | None:
    """The daemon's received quotes once the count has held still for ``_SETTLED_S``."""
    last: int | None = None
    still_since = time.monotonic()
    deadline = still_since + _SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        now = await asyncio.to_thread(_quotes_received, metrics_port)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= _SETTLED_S:
            return last
        await asyncio.sleep(0.1)
    return last


async def _online_since(broker: Broker, since_ns: int, timeout_s: float) -> float:
    """Seconds until the daemon's status says online with a time after ``since_ns``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with _client(broker, "soak-status") as c:
                await c.subscribe(TOPICS.status, qos=1)
                async with asyncio.timeout(1.0):
                    async for m in c.messages:
                        s = decode_status(bytes(m.payload))
                        if s.online and s.ts_ns >= since_ns:
                            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the daemon was not online within {timeout_s} s")


async def _publish(broker: Broker, rate: int, seconds: float) -> int:
    read_fd, write_fd = os.pipe()
    pacer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PACER, str(rate), str(seconds),
        stdout=write_fd, stderr=subprocess.PIPE,
    )  # fmt: skip
    pub = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-u", broker.operator,
        "-P", broker.operator_password, "-t", "md/SIM/BTC/quote", "-l", "-q", "0",
        stdin=read_fd,
    )  # fmt: skip
    os.close(read_fd)
    os.close(write_fd)
    _, err = await pacer.communicate()
    await pub.wait()
    return int(err.decode().split()[-1])


async def _oms_back(broker: Broker, timeout_s: float) -> None:
    """Until oms-sim answers a request: after a broker restart it is back (and subscribed
    to market data) a little after the daemon, and would miss the next segment's start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with _client(broker, "soak-oms-back") as c:
                await request(c, TOPICS, PositionsRequest(), timeout_s=1.0)
            return
        except (aiomqtt.MqttError, AdapterError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _oms_state(broker: Broker) -> dict[str, object]:
    """What the OMS holds, asked over the contract (as the daemon's reconciliation asks)."""
    async with _client(broker, "soak-oms-state") as c:
        fills = await request(c, TOPICS, FillsSinceRequest(since_ns=0), timeout_s=30)
        positions = await request(c, TOPICS, PositionsRequest(), timeout_s=30)
        opened = await request(c, TOPICS, OpenOrdersRequest(), timeout_s=30)
    fill_ids = [f.fill_id for f in fills.fills]
    return {
        "fills": len(fill_ids),
        "unique_fill_ids": len(set(fill_ids)),
        "position": positions.positions.get("BTC", 0.0),
        "open_orders": len(opened.orders),
    }


def order_round_trips(journal: Path) -> dict[str, object]:
    """Orders the daemons decided and their risk gates passed (``decisions-*.jsonl``)
    against the ones the journal has an ack or reject for, and the round trip decision ->
    that first answer received (``ReportRecord.ts_recv``), on this machine's one clock."""
    decided: dict[str, int] = {}
    refused: set[str] = set()  # by the daemon's own risk gates: never sent
    for path in journal.glob("decisions-*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("type") == "order_request":
                decided[event["client_order_id"]] = int(event["ts_event"])
            elif event.get("type") == "risk_rejected":
                refused.add(event["client_order_id"])
    for cid in refused:
        decided.pop(cid, None)
    answered: dict[str, int] = {}
    for record in FileJournalReader(journal):
        if isinstance(record, ReportRecord):
            report = record.report
            if isinstance(report, OrderAccepted | OrderRejected):
                answered.setdefault(report.client_order_id, record.ts_recv)
    trips = sorted((answered[cid] - ts) / 1e6 for cid, ts in decided.items() if cid in answered)

    def at(q: float) -> float | None:
        return round(trips[min(len(trips) - 1, int(q * len(trips)))], 1) if trips else None

    return {
        "orders_sent": len(decided),
        "answers_journaled": sum(cid in answered for cid in decided),
        "round_trip_ms_p50_p99_max": [at(0.5), at(0.99), at(1.0)],
    }


def _mb(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        return round(_rss_mb(pid), 1)
    return None


async def soak(
    minutes: float, rate: int, broker_restarts: int, daemon_kills: int, keep: Path | None = None
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        folder = Path(tmp) if keep is None else keep
        folder.mkdir(parents=True, exist_ok=True)
        broker, mosquitto = start_broker(folder)
        _env(broker)
        config = write_config(folder, broker.port, every=max(rate // 5, 2), rest=True)
        metrics_port = _free_port()
        text = config.read_text()
        config.write_text(text.replace("metrics_port = 0", f"metrics_port = {metrics_port}"))
        journal = folder / "journal"
        events = ["broker", "daemon"] * max(broker_restarts, daemon_kills)
        events = [e for i, e in enumerate(events)
                  if (e == "broker" and i // 2 < broker_restarts)
                  or (e == "daemon" and i // 2 < daemon_kills)]  # fmt: skip
        segment_s = minutes * 60 / (len(events) + 1)
        samples: list[tuple[float, float | None, float | None, float, str]] = []
        marks: list[str] = []  # the fault of the next sample
        received: list[int | None] = []  # per daemon process, read before it was stopped
        offered: list[int] = []  # published while each daemon process lived
        offered_now = 0
        broker_kills_ns: list[int] = []
        online_s: list[float] = []
        published = 0
        done = asyncio.Event()
        oms = _spawn_oms(broker, config, folder / "oms-sim.log")
        assert oms.stdout is not None
        banner = await asyncio.to_thread(oms.stdout.readline)
        if b"orders on" not in banner:
            raise RuntimeError(f"oms-sim did not start: {banner!r}")
        daemon = _spawn_daemon(config)
        t_start = time.monotonic()

        async def sample() -> None:
            while not done.is_set():
                mark = marks.pop() if marks else ""
                samples.append((round(time.monotonic() - t_start, 1), _mb(daemon.pid),
                                _mb(oms.pid), os.getloadavg()[0], mark))  # fmt: skip
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample(), name="rss")
        oms_cpu0 = _cpu_s(oms.pid)
        oms_state: dict[str, object] = {}
        oms_counts: dict[str, int] = {}
        try:
            online_s.append(await _online_since(broker, 0, _ONLINE_TIMEOUT_S))
            for i, event in enumerate([*events, None]):
                sent = await _publish(broker, rate, segment_s)
                published += sent
                offered_now += sent
                if event == "daemon":
                    received.append(await _settled_received(metrics_port))
                    offered.append(offered_now)
                    offered_now = 0
                    marks.append("daemon kill")
                    daemon.kill()
                    daemon.wait(10)
                    since = time.time_ns()
                    daemon = _spawn_daemon(config)
                    online_s.append(await _online_since(broker, since, _ONLINE_TIMEOUT_S))
                elif event == "broker":
                    await _settled_received(metrics_port)  # the daemon has drained
                    marks.append("broker kill")
                    broker_kills_ns.append(time.time_ns())
                    mosquitto.kill()
                    mosquitto.wait(10)
                    await asyncio.sleep(0.3)
                    mosquitto = subprocess.Popen(
                        [str(MOSQUITTO), "-c", str(folder / "mosquitto.conf")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    await _online_since(broker, broker_kills_ns[-1], _ONLINE_TIMEOUT_S)
                    await _oms_back(broker, _ONLINE_TIMEOUT_S)
                print(f"segment {i + 1}/{len(events) + 1} done ({event or 'end'}), "
                      f"{published:,} published, {time.monotonic() - t_start:.0f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
            received.append(await _settled_received(metrics_port))
            offered.append(offered_now)
            oms_cpu_s = _cpu_s(oms.pid) - oms_cpu0
            oms_state = await _oms_state(broker)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        finally:
            done.set()
            if daemon.poll() is None:
                daemon.kill()
            sampler.cancel()
            oms.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                out, _ = oms.communicate(timeout=30)
                found = _STOPPED.search(out.decode())
                if found:
                    names = ("orders", "resends", "answered", "cancels", "fills", "requests",
                             "ticks", "bad", "reconnects")  # fmt: skip
                    oms_counts = {n: int(v.replace(",", "")) for n, v in zip(names, found.groups())}
            if oms.poll() is None:
                oms.kill()
            mosquitto.terminate()
            mosquitto.wait(5)
        wall_s = time.monotonic() - t_start
        ticks = 0
        lost_ns: list[int] = []
        for record in FileJournalReader(journal):
            if isinstance(record, MarketDataRecord):
                ticks += record.ticks.count
            elif isinstance(record, FeedRecord) and record.feed.status == "lost":
                lost_ns.append(record.ts_recv)
        loss_ms = []
        for killed in broker_kills_ns:
            after = [t for t in lost_ns if t >= killed]
            loss_ms.append(round((min(after) - killed) / 1e6, 1) if after else None)
        sessions = sorted(
            (json.loads(p.read_text()) for p in journal.glob("session-*.json")),
            key=lambda m: int(m["first_seq"]),
        )
        last = replay_journal(journal, session=str(sessions[-1]["session_id"]))
        # from the first start's online on: before it the process is still importing
        daemon_rss = [s[1] for s in samples if s[1] is not None and s[0] >= online_s[0]]
        oms_rss = [s[2] for s in samples if s[2] is not None]
        loads = [s[3] for s in samples]
        with (folder / "rss.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t_s", "daemon_rss_mb", "oms_rss_mb", "load_1min", "fault"])
            writer.writerows(samples)
        received_known = [r for r in received if r is not None]
        figures: dict[str, object] = {
            "settings": {
                "minutes": minutes,
                "rate": rate,
                "broker_restarts": broker_restarts,
                "daemon_kills": daemon_kills,
            },
            "wall_s": round(wall_s, 1),
            "quotes_published": published,
            "rate_reached_per_s": round(published / (len(events) + 1) / segment_s),
            "quotes_received_by_daemons": sum(received_known),
            "received_per_process_known": f"{len(received_known)}/{len(received)}",
            # where quotes went missing: per daemon process, published while it lived
            # minus what it received (a broker kill inside its life included)
            "not_received_per_process": [
                None if r is None else o - r for o, r in zip(offered, received, strict=True)
            ],
            "ticks_journaled": ticks,
            "journaled_minus_received": ticks - sum(received_known),
            "published_minus_journaled": published - ticks,
            "sessions": len(sessions),
            "oms": oms_counts,
            "oms_cpu_percent": round(100 * oms_cpu_s / wall_s, 1),
            "oms_state": oms_state,
            "fills_booked_by_replay": last.engine.counters["fills"],
            "position_engine": float(last.engine.portfolio.positions[0]),
            "max_rss_mb_daemon": max(daemon_rss) if daemon_rss else None,
            "rss_mb_daemon_first_last": [daemon_rss[0], daemon_rss[-1]] if daemon_rss else None,
            "max_rss_mb_oms": max(oms_rss) if oms_rss else None,
            "rss_mb_oms_first_last": [oms_rss[0], oms_rss[-1]] if oms_rss else None,
            "load_1min_min_median_max": [min(loads), sorted(loads)[len(loads) // 2], max(loads)]
            if loads
            else None,
            "loss_state_after_broker_kill_ms": loss_ms,
            "daemon_start_to_online_s": [round(s, 2) for s in online_s],
            "daemon_orders": order_round_trips(journal),
            "parity_ok": parity(journal).ok,
        }
        (folder / "figures.json").write_text(json.dumps(figures, indent=1))
        return figures


def plot(rss_csv: Path, png: Path) -> None:
    """RSS of the daemon and of oms-sim over the soak, faults marked, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with rss_csv.open() as f:
        rows = list(csv.DictReader(f))
    t = [float(r["t_s"]) / 60 for r in rows]

    def column(name: str) -> list[float]:
        return [float(r[name]) if r[name] else float("nan") for r in rows]

    fig, ax = plt.subplots(figsize=(7, 3), dpi=90)
    for r, x in zip(rows, t):
        if r["fault"]:
            color = "tab:red" if r["fault"] == "daemon kill" else "tab:gray"
            ax.axvline(x, color=color, lw=0.6, alpha=0.5)
    ax.plot(t, column("daemon_rss_mb"), label="daemon RSS", color="tab:blue", lw=1)
    ax.plot(t, column("oms_rss_mb"), label="oms-sim RSS", color="tab:green", lw=1)
    ax.set_xlabel("minutes (red: daemon SIGKILL, grey: broker SIGKILL)")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("bench/soak.py: RSS every second", fontsize=9)
    fig.tight_layout()
    fig.savefig(png)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="feed time (default 10)")
    parser.add_argument("--rate", type=int, default=20_000, help="quotes/s (default 20000)")
    parser.add_argument("--broker-restarts", type=int, default=20, help="(default 20)")
    parser.add_argument("--daemon-kills", type=int, default=20, help="(default 20)")
    parser.add_argument("--keep", type=Path, default=None, help="work in (and keep) this folder")
    parser.add_argument(
        "--plot", nargs=2, type=Path, metavar=("RSS_CSV", "PNG"), help="only draw a kept rss.csv"
    )
    args = parser.parse_args()
    if args.plot:
        plot(*args.plot)
        return
    t0 = time.time()
    figures = asyncio.run(
        soak(args.minutes, args.rate, args.broker_restarts, args.daemon_kills, args.keep)
    )
    figures["machine"] = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}"
    figures["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
