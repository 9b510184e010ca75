"""Cost of journaling one input, per fsync policy, next to references measured in the same run.

Usage: python bench/journal.py [--records 20000] [--synced 300] [--repeat 5] [--dir PATH]

For each input (a 1-tick batch, a 100-tick batch, a Fill report) and each policy, the median
over ``--repeat`` runs of ``FileJournalWriter.append`` per record, and beside it:

- ``encode``: ``msgspec.msgpack.encode`` of the same record Struct alone;
- ``write``: a bare ``os.write`` of the same framed bytes to an O_APPEND file;
- ``write+sync``: ``os.write`` then fdatasync, for the policies that sync per record.

``batch`` is measured the way the daemon drives it: one input per turn, ``commit()`` after
each (so a Fill is synced every turn, market data every 1000 batches), and a Fill group of
16 per ``commit()``. The journal is written under ``--dir`` (default: a temporary folder in
the current directory, so on the disk the journal would use, not a tmpfs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
from replay_throughput import machine

from adapters.journal_file import FileJournalWriter, FsyncMode
from engine.events import Fill
from engine.journal import RecordBody, encode_record, make_record
from engine.ticks import TickBatch

T = 1_723_161_254_087_891_268
_sync = getattr(os, "fdatasync", os.fsync)


def ticks(n: int) -> TickBatch:
    rng = np.random.default_rng(n)
    ts = T + np.arange(n, dtype=np.int64)
    return TickBatch.quotes(
        ts,
        ts + 1000,
        rng.integers(0, 3, n).astype(np.int32),
        rng.normal(100, 1, n),
        rng.normal(101, 1, n),
        rng.random(n),
        rng.random(n),
    )


FILL = Fill(
    ts_event=T,
    ts_recv=T,
    client_order_id="s-1-42",
    fill_id="F-123456",
    instrument="BTCUSDT",
    side="buy",
    qty=0.01,
    price=61837.63,
    fee=0.01,
    liquidity="taker",
)


def per_record_us(run: Callable[[Path, int], None], base: Path, n: int, repeat: int) -> float:
    runs = []
    for k in range(repeat):
        folder = base / f"run-{time.perf_counter_ns()}-{k}"
        folder.mkdir()
        t0 = time.perf_counter()
        run(folder, n)
        runs.append((time.perf_counter() - t0) / n * 1e6)
        shutil.rmtree(folder)
    return statistics.median(runs)


def journal_run(body: RecordBody, policy: FsyncMode, group: int) -> Callable[[Path, int], None]:
    def run(folder: Path, n: int) -> None:
        with FileJournalWriter(folder, session_id="bench", fsync=policy) as journal:
            for i in range(n):
                journal.append(T + i * 1000, body)
                if (i + 1) % group == 0:
                    journal.commit()

    return run


def write_run(frame: bytes, sync: bool) -> Callable[[Path, int], None]:
    def run(folder: Path, n: int) -> None:
        fd = os.open(folder / "raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(n):
                os.write(fd, frame)
                if sync:
                    _sync(fd)
        finally:
            os.close(fd)

    return run


def encode_us(record: msgspec.Struct, n: int, repeat: int) -> float:
    encode = msgspec.msgpack.encode
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            encode(record)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--records", type=int, default=20_000, help="records per run, no per-record sync"
    )
    ap.add_argument("--synced", type=int, default=300, help="records per run, sync per record")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir or Path.cwd()))
    print(machine())
    print(f"journal folder: {base} ({os.statvfs(base).f_bsize}-byte blocks)")
    inputs: list[tuple[str, RecordBody]] = [
        ("1-tick batch", ticks(1)),
        ("100-tick batch", ticks(100)),
        ("Fill", FILL),
    ]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = (
        f"{'input':<15}{'bytes':>7}  {'policy':<17}{'append us':>11}{'encode us':>11}"
        f"{'write us':>10}{'ratio':>8}{'write+sync us':>15}{'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    try:
        for name, body in inputs:
            record = make_record(1, T, body)
            frame = encode_record(record)
            enc = encode_us(record, args.records, args.repeat)
            write = per_record_us(write_run(frame, False), base, args.records, args.repeat)
            write_sync = per_record_us(write_run(frame, True), base, args.synced, args.repeat)
            cases: list[tuple[str, FsyncMode, int, int]] = [
                ("never", "never", 1, args.records),
                ("batch", "batch", 1, args.records if name != "Fill" else args.synced),
                ("always", "always", 1, args.synced),
            ]
            if name == "Fill":
                cases.insert(2, ("batch, 16/commit", "batch", 16, args.records // 4))
            for label, policy, group, n in cases:
                cost = per_record_us(journal_run(body, policy, group), base, n, args.repeat)
                synced_each = policy == "always" or (
                    policy == "batch" and name == "Fill" and group == 1
                )
                line = (
                    f"{name:<15}{len(frame):>7}  {label:<17}{cost:>11.2f}{enc:>11.2f}"
                    f"{write:>10.2f}{cost / (enc + write):>8.2f}"
                )
                if synced_each:
                    line += f"{write_sync:>15.1f}{cost / write_sync:>8.2f}"
                print(line)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "ratio: append / (encode + write); for a per-record sync, append / (write + sync)."
        " append includes building the record (TickBatch columns to bytes), framing and CRC32."
    )


if __name__ == "__main__":
    main()
