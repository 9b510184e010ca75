"""Journal files: fsync policies, day rotation, recovery after a crash, reading across days."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from adapters.journal_file import FileJournalReader, FileJournalWriter, FsyncLimits
from adapters.journal_folder import NS_PER_DAY, day_file, journal_files
from engine.clock import TimerFired
from engine.errors import AdapterError
from engine.events import Command, Fill
from engine.journal import (
    AnyRecord,
    JournalDecoder,
    JournalError,
    MarketDataRecord,
    encode_record,
)
from engine.ticks import TickBatch

ROOT = Path(__file__).resolve().parents[2]
T = 1_723_161_254_087_891_268  # 2024-08-08 23:54 UTC
MS = 1_000_000


def batch(n: int, seed: int) -> TickBatch:
    ts = np.full(n, T + seed, np.int64)
    return TickBatch.quotes(
        ts,
        ts,
        np.arange(n, dtype=np.int32) % 3,
        np.full(n, 100.0 + seed),
        np.full(n, 100.5 + seed),
        np.ones(n),
        np.ones(n) * seed,
    )


def fill(i: int) -> Fill:
    return Fill(
        ts_event=T,
        ts_recv=T,
        client_order_id=f"s-{i}",
        fill_id=f"F{i}",
        instrument="BTCUSDT",
        side="buy",
        qty=0.1,
        price=100.0 + i,
        fee=0.0,
        liquidity="maker",
    )


def write_mixed(directory: Path, n: int, ts0: int = T, **kwargs: object) -> list[AnyRecord]:
    out: list[AnyRecord] = []
    with FileJournalWriter(directory, session_id="s-1", **kwargs) as journal:  # type: ignore[arg-type]
        for i in range(n):
            ts = ts0 + i * MS
            match i % 4:
                case 0:
                    out.append(journal.append(ts, batch(1 + i % 7, i)))
                case 1:
                    out.append(journal.append(ts, fill(i)))
                case 2:
                    out.append(journal.append(ts, TimerFired(name="bar", ts_event=ts)))
                case _:
                    out.append(journal.append_clock(ts))
            journal.commit()
    return out


def read(directory: Path) -> tuple[list[AnyRecord], FileJournalReader]:
    reader = FileJournalReader(directory)
    return list(reader), reader


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_journal_file_written_records_read_back_equal(tmp_path: Path, policy: str) -> None:
    written = write_mixed(tmp_path, 40, fsync=policy)
    records, reader = read(tmp_path)
    assert records == written
    assert [r.seq for r in records] == list(range(1, 41))
    assert reader.torn is None


def test_journal_file_always_syncs_every_record(tmp_path: Path) -> None:
    with FileJournalWriter(tmp_path, session_id="s", fsync="always") as journal:
        for i in range(5):
            journal.append(T + i, batch(1, i))
        assert journal.fsyncs == 5


def test_journal_file_never_syncs_only_on_request(tmp_path: Path) -> None:
    with FileJournalWriter(tmp_path, session_id="s", fsync="never") as journal:
        for i in range(50):
            journal.append(T + i, fill(i))
            journal.commit()
        assert journal.fsyncs == 0
        journal.sync()
        assert journal.fsyncs == 1


def test_journal_file_batch_syncs_control_records_at_commit(tmp_path: Path) -> None:
    with FileJournalWriter(tmp_path, session_id="s") as journal:
        journal.append(T, batch(1, 0))
        journal.commit()
        assert journal.fsyncs == 0  # market data alone waits for its group
        journal.append(T, fill(1))
        journal.append(T, Command(ts_event=T, ts_recv=T, action="kill"))
        assert journal.fsyncs == 0
        journal.commit()
        assert journal.fsyncs == 1  # one sync for the turn's group, market data included


@pytest.mark.parametrize("background", [True, False])
def test_journal_file_batch_groups_are_bounded_by_count_and_delay(
    tmp_path: Path, background: bool
) -> None:
    limits = FsyncLimits(
        control_records=4,
        control_delay_ns=MS,
        market_data_records=10,
        market_data_delay_ns=100 * MS,
    )
    with FileJournalWriter(
        tmp_path, session_id="s", limits=limits, background_sync=background
    ) as journal:

        def syncs() -> tuple[int, int]:
            # (on the caller's thread, handed to the background thread)
            return journal.fsyncs, journal.background_syncs_started

        market = (0, 1) if background else (1, 0)  # where a market-data group's sync runs
        for i in range(25):
            journal.append(T, batch(1, i))
        assert syncs() == (2 * market[0], 2 * market[1])  # after the 10th and the 20th batch
        journal.append(T + 100 * MS, batch(1, 0))
        assert syncs() == (3 * market[0], 3 * market[1])  # the oldest batch is 100 ms old
        for i in range(4):
            journal.append(T + 100 * MS, fill(i))
        # control records are synced inline whatever ``background_sync`` says
        assert syncs() == (3 * market[0] + 1, 3 * market[1])
        journal.append(T + 100 * MS, fill(9))
        journal.append(T + 101 * MS, batch(1, 0))
        assert syncs() == (3 * market[0] + 2, 3 * market[1])  # the pending fill waited 1 ms


def test_journal_file_rotates_by_the_records_utc_day(tmp_path: Path) -> None:
    midnight = (T // NS_PER_DAY + 1) * NS_PER_DAY
    times = [midnight - 2, midnight - 1, midnight, midnight + NS_PER_DAY + 5]
    with FileJournalWriter(tmp_path, session_id="s") as journal:
        written = [journal.append(ts, fill(i)) for i, ts in enumerate(times)]
        # A receive time that steps back over midnight stays in the current file.
        written.append(journal.append(midnight - 10, fill(9)))
    names = [p.name for p in journal_files(tmp_path)]
    assert names == ["journal-2024-08-08.tlj", "journal-2024-08-09.tlj", "journal-2024-08-10.tlj"]
    assert day_file(tmp_path, midnight).name == "journal-2024-08-09.tlj"
    records, _ = read(tmp_path)
    assert records == written
    decoder = JournalDecoder()
    assert decoder.feed(journal_files(tmp_path)[1].read_bytes()) == written[2:3]
    assert decoder.header is not None
    assert (decoder.header.first_seq, decoder.header.created_ns) == (3, midnight)
    assert decoder.header.session_id == "s"


def test_journal_file_reopen_continues_the_sequence(tmp_path: Path) -> None:
    first = write_mixed(tmp_path, 6)
    second = write_mixed(tmp_path, 3, ts0=T + 10 * MS)
    assert [r.seq for r in second] == [7, 8, 9]
    records, _ = read(tmp_path)
    assert records == first + second
    assert len(journal_files(tmp_path)) == 1


def test_journal_file_reopen_after_a_crash_cuts_the_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = write_mixed(tmp_path, 9)
    path = journal_files(tmp_path)[0]
    size = path.stat().st_size
    os.truncate(path, size - 5)  # the last record was being written when the power went
    records, reader = read(tmp_path)
    assert records == written[:-1]
    assert reader.torn is not None
    cut_at = reader.torn.offset
    with caplog.at_level(logging.WARNING, logger="tradeloop.journal"):
        journal = FileJournalWriter(tmp_path, session_id="s-2")
        journal.open()
    assert "torn" in caplog.text
    assert path.stat().st_size == cut_at
    assert (journal.torn_tails_cut, journal.torn_bytes_cut) == (1, size - 5 - cut_at)
    assert journal.next_seq == 9
    again = journal.append(T + 20 * MS, fill(99))
    journal.close()
    assert again.seq == 9
    records, reader = read(tmp_path)
    assert records == written[:-1] + [again]
    assert reader.torn is None


def test_journal_file_torn_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    written = write_mixed(src, 5)  # the last record is a 5-tick batch
    assert isinstance(written[-1], MarketDataRecord)
    data = journal_files(src)[0].read_bytes()
    last_start = len(data) - len(encode_record(written[-1]))
    work = tmp_path / "work"
    work.mkdir()
    path = work / journal_files(src)[0].name
    for cut in range(last_start, len(data)):
        path.write_bytes(data[:cut])
        records, reader = read(work)
        assert records == written[:-1], cut
        if cut == last_start:
            assert reader.torn is None
        else:
            assert reader.torn is not None
            assert (reader.torn.offset, reader.torn.length) == (last_start, cut - last_start)


def test_journal_file_flipped_byte_in_a_middle_record_raises_naming_the_offset(
    tmp_path: Path,
) -> None:
    written = write_mixed(tmp_path, 6)
    path = journal_files(tmp_path)[0]
    data = bytearray(path.read_bytes())
    tail = sum(len(encode_record(r)) for r in written[2:])
    start = len(data) - tail  # the third record
    data[start + 12] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=f"byte {start}") as info:
        read(tmp_path)
    assert info.value.offset == start
    assert info.value.file == str(path)
    with pytest.raises(JournalError):
        FileJournalWriter(tmp_path, session_id="s").open()  # never cut into good data


def test_journal_file_torn_tail_in_an_older_day_raises(tmp_path: Path) -> None:
    write_mixed(tmp_path, 4)
    write_mixed(tmp_path, 2, ts0=T + NS_PER_DAY)
    older = journal_files(tmp_path)[0]
    os.truncate(older, older.stat().st_size - 3)
    with pytest.raises(JournalError, match="later day"):
        read(tmp_path)


def test_journal_file_missing_day_is_a_sequence_gap(tmp_path: Path) -> None:
    for day in range(3):
        write_mixed(tmp_path, 2, ts0=T + day * NS_PER_DAY)
    journal_files(tmp_path)[1].unlink()
    with pytest.raises(JournalError, match="expected 3"):
        read(tmp_path)


def test_journal_file_closed_writer_refuses_appends(tmp_path: Path) -> None:
    journal = FileJournalWriter(tmp_path, session_id="s")
    with pytest.raises(AdapterError, match="new"):
        journal.append(T, fill(1))
    journal.open()
    journal.close()
    journal.close()
    assert journal.state == "closed"
    with pytest.raises(AdapterError, match="closed"):
        journal.append(T, fill(1))


def test_journal_file_reader_of_a_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="not a folder"):
        read(tmp_path / "nope")


CHILD = textwrap.dedent(
    """
    import sys
    from adapters.journal_file import FileJournalWriter
    from tests.adapters.test_journal_file import T, batch, fill

    with FileJournalWriter(sys.argv[1], session_id="child", fsync="always") as journal:
        i = 0
        while True:
            body = batch(1 + i % 50, i) if i % 3 else fill(i)
            record = journal.append(T + i, body)
            print(record.seq, flush=True)
            i += 1
    """
)


def test_journal_file_kill_9_leaves_a_readable_prefix(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    reported = 0
    for line in child.stdout:
        reported = int(line)
        if reported >= 300:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    for line in child.stdout:  # lines printed before the kill landed
        reported = int(line)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    records, reader = read(tmp_path)
    seqs = [r.seq for r in records]
    assert seqs == list(range(1, len(records) + 1))
    # Everything reported synced is there; at most the one record in flight beyond it.
    assert reported <= seqs[-1] <= reported + 1
    for r in records:
        i = r.seq - 1  # the child's loop index for this record
        if i % 3:
            assert isinstance(r, MarketDataRecord)
            want = batch(1 + i % 50, i)
            got = r.ticks.to_batch()
            assert all(
                np.array_equal(getattr(got, c), getattr(want, c), equal_nan=True)
                for c in TickBatch.__slots__
            )
        else:
            assert r.report == fill(i)  # type: ignore[union-attr]

    with FileJournalWriter(tmp_path, session_id="after") as journal:
        assert journal.next_seq == seqs[-1] + 1
        assert journal.torn_tails_cut == (0 if reader.torn is None else 1)


# snapshots: a restart from the newest valid one equals a full rebuild


_SNAP_CONFIG = """
mode = "live"
[[instruments]]
symbol = "BTC"
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
window = "1s"
[strategy]
name = "tests.integration.test_reliability:Churn"
params = { qty = 1.0, every = 3, rest = true }
[risk]
max_order_qty = 5.0
max_position = 5.0
warmup = false
[live]
order_timeout = "5s"
"""


def _snap_engine(tmp_path: Path) -> tuple[object, dict[str, object]]:
    from adapters.daemon.assembly import build_live_engine
    from adapters.live_sender import ShadowSender
    from adapters.reconciliation import FillLedger
    from engine.config import load_config
    from engine.ports import SendOnly

    path = tmp_path / "live.toml"
    path.write_text(_SNAP_CONFIG)
    config, _ = load_config(path)
    engine = build_live_engine(config, SendOnly(ShadowSender()), order_id_prefix="n-s")
    ledger = FillLedger(engine.clock)
    engine.sinks.append(ledger)
    return engine, {"ledger": ledger}


SNAP_KEY = b"test-snapshot-key-0123456789abcdef"  # the snapshots' HMAC key


def _session(tmp_path: Path, n: int, snapshot_every: int) -> list[int]:
    """A session journaled and applied as the daemon does, with a snapshot every
    ``snapshot_every`` records; fills answer the orders. Returns the snapshots' seqs."""
    from adapters.daemon.core import apply_input
    from adapters.daemon.snapshots import seal_snapshot, snapshot_header
    from adapters.journal_folder import write_snapshot
    from engine.events import OrderRequest
    from engine.snapshot import capture_state

    engine, extras = _snap_engine(tmp_path)
    sent: list[OrderRequest] = []
    engine.sinks.append(lambda e: sent.append(e) if isinstance(e, OrderRequest) else None)  # type: ignore[union-attr]
    seqs: list[int] = []
    rng = np.random.default_rng(3)
    mid = 100.0
    directory = tmp_path / "journal"
    with FileJournalWriter(directory, session_id="s1") as writer:
        answered = 0
        for k in range(n):
            ts = T + k * 50_000_000
            mid += float(rng.normal(0, 0.3))
            one = np.array([ts], np.int64)
            inputs: list[tuple[int, object]] = [
                (ts, TickBatch.quotes(one, one, np.zeros(1, np.int32), np.array([mid]),
                                      np.array([mid + 0.1]), np.ones(1), np.ones(1)))
            ]  # fmt: skip
            if k % 5 == 0:
                inputs.append((ts + 1, None))
            for ts_in, body in inputs:
                if body is None:
                    writer.append_clock(ts_in)
                else:
                    writer.append(ts_in, body)  # type: ignore[arg-type]
                apply_input(engine, ts_in, body)  # type: ignore[arg-type]
            while answered < len(sent):
                order = sent[answered]
                answered += 1
                if engine.orders.find(order.client_order_id) is None:  # type: ignore[attr-defined]
                    continue  # refused by a risk check: never sent
                fill = Fill(ts_event=ts + 2, ts_recv=ts + 2, client_order_id=order.client_order_id,
                            fill_id=f"oms-{answered}", instrument="BTC", side=order.side,
                            qty=order.qty, price=round(mid, 2), fee=0.01, liquidity="taker")  # fmt: skip
                writer.append(ts + 2, fill)
                apply_input(engine, ts + 2, fill)  # type: ignore[arg-type]
            if (k + 1) % snapshot_every == 0:
                writer.sync()
                payload = capture_state(engine, extras)  # type: ignore[arg-type]
                header = snapshot_header(
                    writer, payload, records=writer.next_seq - 1, sessions=["s1"],
                    ts_recv=ts + 2, config_sha256="cfg",
                )  # fmt: skip
                assert header is not None
                header = seal_snapshot(directory, header, payload, SNAP_KEY)
                write_snapshot(directory, header, payload)
                seqs.append(header.seq)
    assert engine.counters["fills"] > 3  # type: ignore[attr-defined]
    return seqs


def _rebuilt(tmp_path: Path, *, snapshots: bool) -> tuple[object, object]:
    from adapters.daemon.rebuild import rebuild

    engine, extras = _snap_engine(tmp_path)
    with FileJournalWriter(tmp_path / "journal", session_id="s2") as writer:
        next_seq = writer.next_seq
    history = rebuild(
        engine, tmp_path / "journal", before_seq=next_seq,  # type: ignore[arg-type]
        config_sha256="cfg" if snapshots else None, extras=extras, snapshot_mac_key=SNAP_KEY,
    )  # fmt: skip
    return engine, history


def test_restart_from_snapshot_equals_full_rebuild_and_reads_only_the_tail(
    tmp_path: Path,
) -> None:
    from adapters.journal_folder import snapshot_files
    from tests.engine.test_snapshot import state_differences

    seqs = _session(tmp_path, 300, 70)
    assert len(snapshot_files(tmp_path / "journal")) == 2  # older ones pruned
    full, full_history = _rebuilt(tmp_path, snapshots=False)
    fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == seqs[-1] and history.snapshots_invalid == 0  # type: ignore[attr-defined]
    assert history.records == full_history.records  # type: ignore[attr-defined]
    assert history.last_seq == full_history.last_seq  # type: ignore[attr-defined]
    assert state_differences(fast, full) == []  # type: ignore[arg-type]


def test_torn_or_damaged_newest_snapshot_falls_back_to_the_previous_then_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.journal_folder import snapshot_files
    from tests.engine.test_snapshot import state_differences

    seqs = _session(tmp_path, 200, 60)
    full, _ = _rebuilt(tmp_path, snapshots=False)
    newest, older = snapshot_files(tmp_path / "journal")
    newest.write_bytes(newest.read_bytes()[:-7])  # torn
    fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == seqs[-2] and history.snapshots_invalid == 1  # type: ignore[attr-defined]
    assert state_differences(fast, full) == []  # type: ignore[arg-type]
    data = bytearray(older.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the payload
    older.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == 0 and history.snapshots_invalid == 2  # type: ignore[attr-defined]
    assert state_differences(fast, full) == []  # type: ignore[arg-type]
    assert "ignored" in caplog.text


def test_snapshot_after_a_kill_9_torn_tail_and_a_foreign_config(tmp_path: Path) -> None:
    """kill -9 mid-write: the journal's torn tail is cut, the snapshot (taken before it)
    still loads and the state equals a full rebuild of what is left; a snapshot of
    another config is never used."""
    from adapters.journal_folder import journal_files
    from tests.engine.test_snapshot import state_differences

    seqs = _session(tmp_path, 150, 50)
    journal = journal_files(tmp_path / "journal")[-1]
    with journal.open("ab") as f:
        f.write(b"\x40\x00\x00\x00\x12\x34")  # half a frame: the write a SIGKILL cut
    full, _ = _rebuilt(tmp_path, snapshots=False)  # the writer's open cuts the tail
    fast, history = _rebuilt(tmp_path, snapshots=True)
    assert history.snapshot_seq == seqs[-1]  # type: ignore[attr-defined]
    assert state_differences(fast, full) == []  # type: ignore[arg-type]
    from adapters.daemon.rebuild import rebuild

    engine, extras = _snap_engine(tmp_path)
    other = rebuild(engine, tmp_path / "journal", config_sha256="another", extras=extras,  # type: ignore[arg-type]
                    snapshot_mac_key=SNAP_KEY)  # fmt: skip
    assert other.snapshot_seq == 0 and other.snapshots_invalid == 2  # both kept
    assert state_differences(engine, full) == []  # type: ignore[arg-type]


def test_reader_from_a_position_checks_the_record_there(tmp_path: Path) -> None:
    from adapters.journal_file import FileJournalReader
    from engine.errors import JournalError

    with FileJournalWriter(tmp_path, session_id="s") as writer:
        for i in range(5):
            writer.append_clock(T + i)
        middle = writer.position()
        for i in range(5, 9):
            writer.append_clock(T + i)
        end = writer.position()
    assert middle is not None and end is not None
    assert [r.seq for r in FileJournalReader(tmp_path, start=middle)] == [6, 7, 8, 9]
    assert list(FileJournalReader(tmp_path, start=end)) == []
    wrong = type(middle)(file=middle.file, offset=middle.offset + 3, seq=middle.seq)
    with pytest.raises(JournalError):
        list(FileJournalReader(tmp_path, start=wrong))
    past = type(middle)(file=middle.file, offset=end.offset + 100, seq=end.seq)
    with pytest.raises(JournalError):
        list(FileJournalReader(tmp_path, start=past))
