"""Soak of the live daemon (issue 11, part 6; not in CI): a session of ``--minutes`` at
``--rate`` quotes/s with ``--broker-restarts`` mosquitto SIGKILL+restarts and
``--daemon-kills`` daemon SIGKILL+restarts spread evenly over it, against ``oms-sim``.

The feed is ``mosquitto_pub -l`` paced by a small writer, one run per segment between two
faults (so every quote published is counted exactly). Reported: quotes published against
ticks journaled, orders the OMS received against unique client ids and fills booked by
the replay of the last session, the daemon's max RSS (``/proc/<pid>/status`` every
second), the time from each broker kill to the journaled data-loss record, and each
daemon restart's time to online.

    python -m bench.soak                      # 10 min, 20k/s, 20 and 20
    python -m bench.soak --minutes 3 --rate 10000 --broker-restarts 5 --daemon-kills 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from adapters.journal_file import FileJournalReader
from adapters.mqtt.status import decode_status
from adapters.oms_sim import MqttOmsSimulator, SimulatedOms
from bench.reliability import _PACER, _env, _rss_mb, start_broker
from engine.errors import AdapterError
from engine.journal import FeedRecord, MarketDataRecord
from replay.journal_replay import replay_journal
from replay.parity import parity
from tests.integration.conftest import MOSQUITTO, Broker
from tests.integration.test_reliability import TOPICS, new_oms, write_config

ROOT = Path(__file__).resolve().parents[1]


def _spawn_daemon(config: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.daemon_cli", "run", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _client(broker: Broker, name: str) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, username=broker.operator,
                          password=broker.operator_password,
                          identifier=f"{name}-{time.monotonic_ns()}",
                          protocol=aiomqtt.ProtocolVersion.V5)  # fmt: skip


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


async def _oms_forever(broker: Broker, oms: SimulatedOms, done: asyncio.Event) -> None:
    """oms-sim on the broker, reconnecting after each broker restart (same OMS state)."""
    while not done.is_set():
        sim = MqttOmsSimulator(oms, host=broker.host, port=broker.port, topics=TOPICS,
                               username=broker.operator, password=broker.operator_password,
                               client_id="soak-oms")  # fmt: skip
        try:
            async with sim:
                await sim.serve(done, drain_timeout_s=1.0)
        except AdapterError:
            await asyncio.sleep(0.1)


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


async def soak(
    minutes: float, rate: int, broker_restarts: int, daemon_kills: int, keep: Path | None = None
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if keep is None else keep
        folder.mkdir(parents=True, exist_ok=True)
        broker, mosquitto = start_broker(folder)
        _env(broker)
        config = write_config(folder, broker.port, every=max(rate // 5, 2), rest=True)
        journal = folder / "journal"
        oms = new_oms()
        events = ["broker", "daemon"] * max(broker_restarts, daemon_kills)
        events = [e for i, e in enumerate(events)
                  if (e == "broker" and i // 2 < broker_restarts)
                  or (e == "daemon" and i // 2 < daemon_kills)]  # fmt: skip
        segment_s = minutes * 60 / (len(events) + 1)
        rss: list[float] = []
        loss_ms: list[float] = []
        online_s: list[float] = []
        published = 0
        done = asyncio.Event()
        oms_task = asyncio.create_task(_oms_forever(broker, oms, done), name="oms")
        daemon = _spawn_daemon(config)

        async def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(OSError):
                    rss.append(_rss_mb(daemon.pid))
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample(), name="rss")
        t_start = time.monotonic()
        try:
            online_s.append(await _online_since(broker, 0, 60))
            for event in [*events, None]:
                published += await _publish(broker, rate, segment_s)
                await asyncio.sleep(0.5)  # the daemon drains and journals what it was sent
                if event == "daemon":
                    daemon.kill()
                    daemon.wait(10)
                    since = time.time_ns()
                    daemon = _spawn_daemon(config)
                    online_s.append(await _online_since(broker, since, 60))
                elif event == "broker":
                    killed_ns = time.time_ns()
                    mosquitto.kill()
                    mosquitto.wait(10)
                    await asyncio.sleep(0.3)
                    mosquitto = subprocess.Popen(
                        [str(MOSQUITTO), "-c", str(folder / "mosquitto.conf")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    await _online_since(broker, killed_ns, 60)
                    lost = [r.ts_recv for r in FileJournalReader(journal)
                            if isinstance(r, FeedRecord) and r.feed.status == "lost"
                            and r.ts_recv >= killed_ns]  # fmt: skip
                    if lost:
                        loss_ms.append(round((min(lost) - killed_ns) / 1e6, 1))
            await asyncio.sleep(1.0)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        finally:
            done.set()
            if daemon.poll() is None:
                daemon.kill()
            sampler.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(oms_task, 5)
            mosquitto.terminate()
            mosquitto.wait(5)
        wall_s = time.monotonic() - t_start
        ticks = sum(r.ticks.count for r in FileJournalReader(journal)
                    if isinstance(r, MarketDataRecord))  # fmt: skip
        sessions = sorted(
            (json.loads(p.read_text()) for p in journal.glob("session-*.json")),
            key=lambda m: int(m["first_seq"]),
        )
        last = replay_journal(journal, session=str(sessions[-1]["session_id"]))
        ids = [o.request.client_order_id for o in oms.orders.values()]
        fill_ids = [f.fill_id for f in oms.fills]
        return {
            "settings": {
                "minutes": minutes,
                "rate": rate,
                "broker_restarts": broker_restarts,
                "daemon_kills": daemon_kills,
            },
            "wall_s": round(wall_s, 1),
            "quotes_published": published,
            "rate_reached_per_s": round(published / (len(events) + 1) / segment_s),
            "ticks_journaled": ticks,
            "ticks_lost": published - ticks,
            "sessions": len(sessions),
            "orders_at_oms": oms.counters["orders"],
            "orders_acked_or_filled": sum(o.status != "pending" for o in oms.orders.values()),
            "duplicate_orders": oms.counters["resends"] + len(ids) - len(set(ids)),
            "fills_at_oms": len(fill_ids),
            "fills_booked": last.engine.counters["fills"],
            "fills_double_booked": last.engine.counters["fills"] - len(set(fill_ids)),
            "position_engine": float(last.engine.portfolio.positions[0]),
            "position_oms": oms.positions["BTC"],
            "max_rss_mb": round(max(rss), 1) if rss else None,
            "rss_mb_first_last": [round(rss[0], 1), round(rss[-1], 1)] if rss else None,
            "loss_state_after_broker_kill_ms": loss_ms,
            "daemon_restart_to_online_s": [round(s, 2) for s in online_s],
            "parity_ok": parity(journal).ok,
            "load_average": os.getloadavg(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--broker-restarts", type=int, default=20)
    parser.add_argument("--daemon-kills", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None, help="work in (and keep) this folder")
    args = parser.parse_args()
    figures = asyncio.run(
        soak(args.minutes, args.rate, args.broker_restarts, args.daemon_kills, args.keep)
    )
    figures["machine"] = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
