"""Live daemon latency and ingest against a local mosquitto, with references in the same run.

Usage: python bench/live_latency.py [--rates 1000,5000,10000] [--seconds 5] [--orders-per-second 100]
[--loop uvloop|asyncio] [--dashboard [--pairs 3]]

For each rate a fresh mosquitto (anonymous, loopback, free port) and a fresh daemon (mode
``live``, in this process) run; a separate process writes JSON quotes, each stamped with
the wall time it was written, paced at the rate, into ``mosquitto_pub -l`` (one message
per line, QoS 0). The bid steps between two levels every N quotes (N = rate /
``--orders-per-second``); a linear model scores ``mid - level`` and the bundled EMA-cross
strategy (the fast path: one Signal per crossing, no per-tick hook) reverses a 0.001
position on each crossing. No OMS answers, so orders stay open (order timeout 1 h). The
daemon runs on uvloop, as ``tradeloop run`` does (``--loop asyncio`` for the default loop).

Figures:

- ``tick->order``: inside the daemon, the quote batch's receipt (its ``ts_recv``) to the
  order's publish (``Daemon.latencies_ns``, stamped when the sender's publish returns): the
  PUBLISH written to the broker's socket when the daemon passes the session's
  ``publish_order_now`` to the sender, else the order accepted by the session (written
  then, or queued), p50 / p99 / p99.9.
- ``tick->OMS``: the same receipt to the order's arrival at ``mosquitto_sub`` on the
  orders topic (QoS 1, standing in for the OMS): the daemon's part plus the socket write
  and one broker hop, whatever the daemon's stamp stands for; comparable across versions.
- ``hop (daemon)``: quote written by the feeder -> stamped by the daemon's session
  (``ts_recv - ts_event`` of every journaled tick; both on this machine's clock).
- ``hop (mosquitto_sub)``: the same feed's hop to ``mosquitto_sub -F '%U %p'`` (a C
  client), the loopback broker reference.
- ingest: quotes the daemon journaled out of those sent (nothing lost means equal), its
  sustained rate (first to last receipt) and ``mosquitto_sub``'s rate on the same feed.
- ratios: tick->order p50 / p99 / p99.9 over the broker hop's p50 (the issue's goal:
  tick->order p99 <= 0.5 x broker hop p50, journal on).
- journal fsyncs: those the loop waited for (control records, the heartbeat's clock
  reading) and the market-data groups synced on the journal's background thread.

With ``--dashboard`` each rate runs ``--pairs`` pairs of sessions with the daemon's
dashboard on (``[live] dashboard``): one with the page closed (no client), one with it open
(``curl -N`` reading the server-sent events in a process of its own, as a browser would:
every document pushed is built and sent by the daemon's loop), the order alternating per
pair. Printed: tick->order p50 / p99 / p99.9 of each (the median over the pairs of each
run's percentile), the ratio open / closed, and the documents the page received.

The machine and the load average at the start and the end are printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import begin, end  # noqa: E402

from adapters.daemon.run import Daemon, run_daemon  # noqa: E402
from adapters.journal_file import FileJournalReader  # noqa: E402
from engine.journal import MarketDataRecord  # noqa: E402

SYMBOL = "BTC"
TOPIC = f"md/SIM/{SYMBOL}/quote"
ORDERS = "oms/bench/orders"

# Writes every due line each 0.5 ms: the stamp is the write time, so the measured hop
# includes mosquitto_pub's own read of the pipe.
PACER = r"""
import sys, time
rate, seconds, symbol, half = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
n = int(rate * seconds)
out = sys.stdout
start = time.perf_counter()
i = 0
while i < n:
    due = min(n, int((time.perf_counter() - start) * rate) + 1)
    if due > i:
        lines = []
        for j in range(i, due):
            ts = time.time_ns()
            bid = 100.1 if (j // half) % 2 else 100.0
            lines.append('{"type":"quote","ts_event":%d,"ts_recv":%d,"instrument":"%s",'
                         '"bid":%.2f,"ask":%.2f,"bid_size":1.0,"ask_size":1.0}\n'
                         % (ts, ts, symbol, bid, bid + 0.5))
        out.write("".join(lines))
        out.flush()
        i = due
    else:
        time.sleep(0.0005)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto(tmp: Path, port: int, nagle: bool) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = tmp / "mosquitto.conf"
    # set_tcp_nodelay: without it the broker's Nagle holds each quote to a client that also
    # publishes (the daemon: orders, status) until the client's delayed ACK, ~10 ms here
    # (daemon hop p50 10.6 ms -> 0.8 ms); a receive-only client (mosquitto_sub) never sees it
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
        f"set_tcp_nodelay {'false' if nagle else 'true'}\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def _config(tmp: Path, port: int) -> Path:
    path = tmp / "live.toml"
    path.write_text(f"""
mode = "live"

[[instruments]]
symbol = "{SYMBOL}"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001

[[features]]
name = "mid"
kind = "mid"

[model]
kind = "linear"
name = "mid_level"
params = {{ features = ["mid"], weights = [1.0], bias = -100.3 }}

[strategy]
name = "ema_cross"
params = {{ qty = 0.001 }}

[mqtt]
host = "127.0.0.1"
port = {port}
inbox_size = 100000

[live]
node = "bench"
account = "bench"
heartbeat = "1s"
order_timeout = "1h"
metrics_port = 0

[journal]
dir = "{(tmp / "journal").as_posix()}"
fsync = "batch"
""")
    return path


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``mosquitto_sub -F '%U %p'`` output: (receipt ns, decoded JSON payload)."""
    out = []
    for line in path.read_text().splitlines():
        stamp, _, payload = line.partition(" ")
        secs, _, nanos = stamp.partition(".")
        out.append((int(secs) * 1_000_000_000 + int(nanos.ljust(9, "0")[:9]), json.loads(payload)))
    return out


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _fmt_us(values: np.ndarray) -> str:
    if not values.size:
        return "n/a"
    return " / ".join(f"{_pct(values, q) / 1e3:,.0f}" for q in (50, 99, 99.9)) + " us"


def _with_dashboard(path: Path) -> None:
    """The dashboard on, on a free port (a page's documents cost the loop their build)."""
    text = path.read_text().replace("[live]\n", "[live]\ndashboard = true\ndashboard_port = 0\n", 1)
    path.write_text(text)


async def _run_one(
    rate: int, seconds: float, orders_per_second: int, nagle: bool, *, dashboard: str = "off"
) -> dict[str, object]:
    """One session at ``rate``; ``dashboard``: ``off``, ``closed`` (served, no page) or
    ``open`` (a page reading its events)."""
    tmp = Path(tempfile.mkdtemp(prefix="tl-live-bench-", dir=os.getcwd()))
    page: subprocess.Popen[bytes] | None = None
    page_out = tmp / "events.txt"
    port = _free_port()
    broker = _mosquitto(tmp, port, nagle)
    sub_out = tmp / "sub.txt"
    oms_out = tmp / "oms.txt"
    try:
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-t", TOPIC, "-F", "%U %p", "-q", "0"],
            stdout=sub_out.open("wb"), stderr=subprocess.DEVNULL,
        )  # fmt: skip
        oms = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-t", ORDERS, "-F", "%U %p", "-q", "1"],
            stdout=oms_out.open("wb"), stderr=subprocess.DEVNULL,
        )  # fmt: skip
        config = _config(tmp, port)
        if dashboard != "off":
            _with_dashboard(config)
        half = max(1, rate // orders_per_second)
        stop = asyncio.Event()
        built: list[Daemon] = []
        task = asyncio.create_task(run_daemon(config, stop=stop, on_ready=built.append))
        while not built or built[0].session is None:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        daemon = built[0]
        if dashboard == "open":
            assert daemon.dashboard_url is not None
            page = subprocess.Popen(
                ["curl", "-sN", daemon.dashboard_url + "events"],
                stdout=page_out.open("wb"), stderr=subprocess.DEVNULL,
            )  # fmt: skip
        await asyncio.sleep(1.0)  # subscriptions in place (the daemon's and mosquitto_sub's)
        pacer = subprocess.Popen(
            [sys.executable, "-c", PACER, str(rate), str(seconds), SYMBOL, str(half)],
            stdout=subprocess.PIPE,
        )
        pub = subprocess.Popen(
            ["mosquitto_pub", "-p", str(port), "-t", TOPIC, "-l", "-q", "0"],
            stdin=pacer.stdout,
        )
        assert pacer.stdout is not None
        pacer.stdout.close()
        sent = int(rate * seconds)
        while pub.poll() is None:
            await asyncio.sleep(0.1)
        session = daemon.session
        assert session is not None
        # until the daemon took everything in, or it stalls for 2 s
        last, still = -1, 0.0
        while still < 2.0:
            got = session.counters["messages_in_quote"]
            if got >= sent:
                break
            still = still + 0.1 if got == last else 0.0
            last = got
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the last orders reach the outbox
        latencies = np.array(daemon.latencies_ns, dtype=np.int64)
        counters = dict(session.counters)
        server = daemon.dashboard.server if daemon.dashboard is not None else None
        clients = server.clients if server is not None else 0
        build_us = float("nan")
        if server is not None:  # what one push costs the loop, on the state the run left
            t0 = time.process_time()
            for _ in range(50):
                size = len(server.encode(server.build()))
            build_us = (time.process_time() - t0) / 50 * 1e6
            print(f"  (document: {size:,} bytes, build+encode {build_us:,.0f} us CPU; "
                  f"{len(daemon.engine.orders.open_orders())} working orders)", flush=True)  # fmt: skip
        if page is not None:
            page.terminate()
            page.wait()
        stop.set()
        await asyncio.wait_for(task, 30)
        assert daemon.core is not None
        journal = daemon.core.journal
        # fsyncs the loop waited for vs those run on the journal's thread (an older
        # journal writer has no background counters)
        fsyncs = (
            journal.fsyncs,
            getattr(journal, "background_fsyncs", 0),
            getattr(journal, "background_sync_ns", 0),
        )
        pacer.wait()
        sub.terminate()
        sub.wait()
        oms.terminate()
        oms.wait()
    finally:
        broker.terminate()
        broker.wait()
    hops: list[np.ndarray] = []
    recv: list[np.ndarray] = []
    for record in FileJournalReader(tmp / "journal"):
        if isinstance(record, MarketDataRecord):
            batch = record.ticks.to_batch()
            hops.append(batch.ts_recv - batch.ts_event)
            recv.append(batch.ts_recv)
    daemon_hop = np.concatenate(hops) if hops else np.empty(0, np.int64)
    daemon_recv = np.concatenate(recv) if recv else np.empty(0, np.int64)
    sub_hop, sub_recv = [], []
    for received, message in _lines(sub_out):
        sub_hop.append(received - message["ts_event"])
        sub_recv.append(received)
    # an order's ts_event is the engine's time when it decided: its batch's receipt
    tick_to_oms = [
        received - message["ts_event"]
        for received, message in _lines(oms_out)
        if message.get("type") == "order_request"
    ]
    pushed = page_out.read_bytes().count(b"data: ") if page_out.exists() else 0
    shutil.rmtree(tmp, ignore_errors=True)

    def rate_of(stamps: np.ndarray | list[int]) -> float:
        a = np.asarray(stamps)
        return (a.size - 1) / ((a.max() - a.min()) / 1e9) if a.size > 1 else float("nan")

    return {
        "rate": rate,
        "sent": sent,
        "journaled": int(daemon_hop.size),
        "dropped": counters.get("dropped_market_data", 0),
        "orders": int(latencies.size),
        "tick_to_order": latencies,
        "daemon_hop": daemon_hop,
        "sub_hop": np.asarray(sub_hop, np.int64),
        "tick_to_oms": np.asarray(tick_to_oms, np.int64),
        "daemon_rate": rate_of(daemon_recv),
        "sub_rate": rate_of(sub_recv),
        "sub_count": len(sub_recv),
        "fsyncs": fsyncs,
        "page_documents": pushed,
        "page_clients": clients,
    }


def _dashboard_pairs(
    run: Any, rate: int, seconds: float, orders_per_second: int, nagle: bool, pairs: int
) -> None:
    """Page closed and open, alternating, ``pairs`` times; medians and the ratio."""
    figures: dict[str, list[tuple[float, float, float]]] = {"closed": [], "open": []}
    documents: list[int] = []
    orders: dict[str, int] = {"closed": 0, "open": 0}
    for i in range(pairs):
        for mode in ("closed", "open") if i % 2 == 0 else ("open", "closed"):
            r = run(_run_one(rate, seconds, orders_per_second, nagle, dashboard=mode))
            t2o = r["tick_to_order"]
            assert isinstance(t2o, np.ndarray)
            figures[mode].append(tuple(_pct(t2o, q) for q in (50, 99, 99.9)))  # type: ignore[arg-type]
            orders[mode] += int(t2o.size)
            if mode == "open":
                assert r["page_clients"] == 1, "the page was not connected"
                documents.append(int(r["page_documents"]))  # type: ignore[call-overload]
            print(f"  pair {i + 1} page {mode:6}: tick->order {_fmt_us(t2o)} "
                  f"({t2o.size} orders)", flush=True)  # fmt: skip
    med = {m: [float(np.median([f[k] for f in v])) for k in range(3)] for m, v in figures.items()}
    print(f"\n{rate:,} msgs/s, {pairs} pairs of {seconds:g} s; median over the pairs of each "
          f"run's percentile, tick->order p50 / p99 / p99.9:")  # fmt: skip
    for mode in ("closed", "open"):
        line = " / ".join(f"{v / 1e3:,.0f}" for v in med[mode])
        print(f"  page {mode:6}: {line} us ({orders[mode]} orders)")
    ratio = " / ".join(f"{o / c:.2f}" if c else "n/a" for o, c in zip(med["open"], med["closed"]))
    print(f"  ratio open / closed: {ratio}")
    print(f"  documents the open page received per run: {documents} "
          f"(at most one per 100 ms push interval)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--orders-per-second", type=int, default=100)
    ap.add_argument(
        "--broker-nagle", action="store_true", help="leave mosquitto's set_tcp_nodelay off"
    )
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument(
        "--dashboard", action="store_true", help="page closed vs open, in pairs, per rate"
    )
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    started = begin("live latency: tick->order inside the daemon, broker hop as reference")
    print(f"quotes for {args.seconds:g} s per rate, ~{args.orders_per_second} orders/s, "
          f"JSON QoS 0, loopback mosquitto (set_tcp_nodelay {not args.broker_nagle}), "
          f"journal fsync 'batch', {args.loop} loop; latencies p50 / p99 / p99.9")  # fmt: skip
    run = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        run = uvloop.run
    if args.dashboard:
        for rate in (int(r) for r in args.rates.split(",")):
            _dashboard_pairs(run, rate, args.seconds, args.orders_per_second, args.broker_nagle,
                             args.pairs)  # fmt: skip
        end(started)
        return
    for rate in (int(r) for r in args.rates.split(",")):
        r = run(_run_one(rate, args.seconds, args.orders_per_second, args.broker_nagle))
        t2o = r["tick_to_order"]
        dhop = r["daemon_hop"]
        shop = r["sub_hop"]
        assert isinstance(t2o, np.ndarray) and isinstance(dhop, np.ndarray)
        assert isinstance(shop, np.ndarray)
        print(f"\n{rate:,} msgs/s: sent {r['sent']:,}, journaled by the daemon {r['journaled']:,} "
              f"(dropped {r['dropped']}), mosquitto_sub got {r['sub_count']:,}")  # fmt: skip
        t2oms = r["tick_to_oms"]
        assert isinstance(t2oms, np.ndarray)
        print(f"  tick->order (daemon, {r['orders']} orders): {_fmt_us(t2o)}")
        print(f"  tick->OMS (mosquitto_sub, {t2oms.size} orders): {_fmt_us(t2oms)}")
        print(f"  hop feeder->daemon stamp:        {_fmt_us(dhop)}")
        print(f"  hop feeder->mosquitto_sub (ref): {_fmt_us(shop)}")
        inline, background, background_ns = r["fsyncs"]  # type: ignore[misc]
        mean = f", mean {background_ns / background / 1e3:,.0f} us" if background else ""
        print(f"  journal fsyncs: {inline} on the loop's thread, {background} on the "
              f"journal's sync thread{mean}")  # fmt: skip
        print(f"  receive rate: daemon {r['daemon_rate']:,.0f} msgs/s, "
              f"mosquitto_sub {r['sub_rate']:,.0f} msgs/s")  # fmt: skip
        if t2o.size and shop.size:
            hop = max(_pct(shop, 50), 1.0)
            ratios = " / ".join(f"{_pct(t2o, q) / hop:.2f}" for q in (50, 99, 99.9))
            print(f"  ratios: daemon hop p50 / broker hop p50 = {_pct(dhop, 50) / hop:.2f}; "
                  f"tick->order p50 / p99 / p99.9 over broker hop p50 = {ratios} "
                  f"(goal: p99 <= 0.5)")  # fmt: skip
            oms_ratios = " / ".join(f"{_pct(t2oms, q) / hop:.2f}" for q in (50, 99, 99.9))
            print(f"  tick->OMS p50 / p99 / p99.9 over broker hop p50 = {oms_ratios}")
    end(started)


if __name__ == "__main__":
    main()
