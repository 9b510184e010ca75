"""The journal's market-data fsync off the loop's thread (``fsync = "batch"``): appends do
not wait for it, control records are still synced before ``commit()`` returns, a failed
background sync stops the writer, and a ``kill -9`` leaves every appended record."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import adapters.journal_file as journal_file
from adapters.journal_file import FileJournalReader, FileJournalWriter, FsyncLimits
from adapters.journal_folder import NS_PER_DAY, snapshot_files
from engine.errors import AdapterError
from tests.adapters.test_journal_file import MS, T, batch, fill

ROOT = Path(__file__).resolve().parents[2]
LIMITS = FsyncLimits(market_data_records=10)


class Disk:
    """Stands in for fdatasync: a sync on a thread other than the test's blocks until
    ``release``; every sync notes its thread and whether its fd was open."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail = fail
        self.calls: list[tuple[bool, bool]] = []  # (on the test's thread, fd open)

    def __call__(self, fd: int) -> None:
        main = threading.current_thread() is threading.main_thread()
        if not main:
            self.started.set()
            assert self.release.wait(10)
        try:
            os.fstat(fd)
            is_open = True
        except OSError:
            is_open = False
        self.calls.append((main, is_open))
        if self.fail and not main:
            raise OSError(errno.EIO, "I/O error")


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Disk]]:
    made: list[Disk] = []

    def make(fail: bool = False) -> Disk:
        d = Disk(fail)
        monkeypatch.setattr(journal_file, "_sync", d)
        made.append(d)
        return d

    yield make
    for d in made:
        d.release.set()  # never leave a syncer blocked


def _group_in_flight(journal: FileJournalWriter, d: Disk) -> None:
    """Append a full market-data group (``LIMITS``: 10 batches) and wait until its sync
    runs, blocked, on the background thread."""
    for i in range(LIMITS.market_data_records):
        journal.append(T + i, batch(1, i))
    assert d.started.wait(10)


def test_journal_fsync_market_group_synced_in_background_append_does_not_wait(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    d = disk()
    with FileJournalWriter(tmp_path, session_id="s", limits=LIMITS) as journal:
        written = [journal.append(T + i, batch(1, i)) for i in range(10)]
        assert d.started.wait(10)  # the 10th append handed its group to the thread ...
        assert journal.fsyncs == 0  # ... and returned while that sync is still blocked
        assert (journal.background_syncs_started, journal.background_fsyncs) == (1, 0)
        written += [journal.append(T + 10 + i, batch(1, i)) for i in range(5)]
        d.release.set()
        journal.wait_synced()
        assert journal.background_fsyncs == 1
    assert d.calls[0] == (False, True)  # off the test's thread, on an open fd
    assert list(FileJournalReader(tmp_path)) == written


def test_journal_fsync_control_record_synced_inline_after_the_background_sync(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    d = disk()
    with FileJournalWriter(tmp_path, session_id="s", limits=LIMITS) as journal:
        _group_in_flight(journal, d)
        journal.append(T + 10, fill(1))
        assert journal.fsyncs == 0
        threading.Timer(0.05, d.release.set).start()
        journal.commit()  # a control record: on disk before anything acts on it
        assert journal.fsyncs == 1
        # the background sync finished first (its failure would be reported to it alone),
        # then the commit's own
        assert d.calls == [(False, True), (True, True)]


def test_journal_fsync_commit_fails_when_the_background_sync_in_flight_fails(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    """Mutation-checked: with ``commit`` checking the syncer's error before its inline
    fdatasync but not waiting for the sync in flight (the reviewed race), the commit
    returned as if the fill were durable and this test failed."""
    d = disk(fail=True)
    journal = FileJournalWriter(tmp_path, session_id="s", limits=LIMITS)
    journal.open()
    _group_in_flight(journal, d)
    journal.append(T + 10, fill(1))
    threading.Timer(0.05, d.release.set).start()
    with pytest.raises(AdapterError, match="background fsync"):
        journal.commit()
    assert journal.state == "failed"
    journal.close()


def test_journal_fsync_full_control_group_fails_when_the_background_sync_fails(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    """The second reviewer's path: a control group filling inside ``append`` syncs
    inline there, and the ``commit`` after it has nothing pending. Mutation-checked: with
    the wait only in ``commit``/``sync`` (not in ``_fsync``), the 16 fills were appended
    and committed with the writer still open and this test failed."""
    d = disk(fail=True)
    journal = FileJournalWriter(tmp_path, session_id="s", limits=LIMITS)
    journal.open()
    _group_in_flight(journal, d)
    threading.Timer(0.05, d.release.set).start()
    with pytest.raises(AdapterError, match="background fsync"):
        for i in range(LIMITS.control_records):
            journal.append(T + 10 + i, fill(i))
        journal.commit()
    assert journal.state == "failed"
    journal.close()


def test_journal_sync_waits_for_background_syncs_a_snapshot_relies_on_it(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    d = disk()
    with FileJournalWriter(tmp_path, session_id="s", limits=LIMITS) as journal:
        _group_in_flight(journal, d)
        threading.Timer(0.05, d.release.set).start()
        journal.sync()  # nothing pending inline: before the fix it returned at once
        assert journal.background_fsyncs == 1


def test_journal_open_sets_aside_snapshots_past_the_journal_end(tmp_path: Path) -> None:
    """A machine crash lost the journal's tail after a snapshot of it reached the disk: at
    the next open that snapshot is renamed aside, so a later session whose records pass
    its seq cannot make it look valid (a state from a history that did not happen)."""
    with FileJournalWriter(tmp_path, session_id="s", limits=LIMITS) as journal:
        for i in range(30):
            journal.append(T + i, batch(1, i))
    (tmp_path / "snapshot-20.tls").write_bytes(b"kept: covers a record the journal holds")
    (tmp_path / "snapshot-50.tls").write_bytes(b"lost timeline")
    again = FileJournalWriter(tmp_path, session_id="s2", limits=LIMITS)
    again.open()
    assert again.next_seq == 31 and again.stale_snapshots == 1
    assert (tmp_path / "snapshot-50.tls.stale").exists()
    assert snapshot_files(tmp_path) == [tmp_path / "snapshot-20.tls"]
    again.close()


def test_journal_fsync_rotation_waits_for_the_background_sync_of_the_old_file(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    d = disk()
    with FileJournalWriter(tmp_path, session_id="s", limits=LIMITS) as journal:
        _group_in_flight(journal, d)
        threading.Timer(0.05, d.release.set).start()
        journal.append(T + NS_PER_DAY, fill(1))  # a new day: the old file's fd is closed
    assert d.calls[0] == (False, True)  # it was still open when the thread synced it
    assert len(list(journal.directory.glob("journal-*.tlj"))) == 2


def test_journal_fsync_failed_background_sync_stops_the_writer(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    d = disk(fail=True)
    journal = FileJournalWriter(tmp_path, session_id="s", limits=LIMITS)
    journal.open()
    for i in range(10):
        journal.append(T + i, batch(1, i))
    d.release.set()
    with pytest.raises(AdapterError, match="background fsync"):
        journal.wait_synced()
    assert journal.state == "failed"
    with pytest.raises(AdapterError):
        journal.append(T + 11, fill(1))  # nothing is journaled after the lost pages
    journal.close()
    assert journal.state == "failed"


def test_journal_fsync_background_off_syncs_market_groups_inline(
    tmp_path: Path, disk: Callable[..., Disk]
) -> None:
    d = disk()
    with FileJournalWriter(
        tmp_path, session_id="s", limits=LIMITS, background_sync=False
    ) as journal:
        for i in range(10):
            journal.append(T + i * MS, batch(1, i))
        assert (journal.fsyncs, journal.background_syncs_started) == (1, 0)
    assert all(main for main, _ in d.calls)


CHILD = textwrap.dedent(
    """
    import sys
    from adapters.journal_file import FileJournalWriter, FsyncLimits
    from tests.adapters.test_journal_file import T, batch, fill

    limits = FsyncLimits(market_data_records=5)
    with FileJournalWriter(sys.argv[1], session_id="child", limits=limits) as journal:
        i = 0
        while True:
            # a fill in every 20 records: market-data groups of 5 fill in between
            body = batch(1 + i % 50, i) if i % 20 else fill(i)
            record = journal.append(T + i, body)
            journal.commit()
            print(record.seq, journal.background_syncs_started, flush=True)
            i += 1
    """
)


def test_journal_fsync_kill_9_during_background_syncs_keeps_every_appended_record(
    tmp_path: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    reported = started = 0
    for line in child.stdout:
        reported, started = (int(x) for x in line.split())
        if reported >= 600:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    for line in child.stdout:
        reported = int(line.split()[0])
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert started > 0  # background syncs were under way

    reader = FileJournalReader(tmp_path)
    seqs = [r.seq for r in reader]
    assert seqs == list(range(1, len(seqs) + 1))
    # every appended record survives the process (os.write before append returns); at
    # most the one in flight beyond the last reported
    assert reported <= seqs[-1] <= reported + 1
    with FileJournalWriter(tmp_path, session_id="after") as journal:
        assert journal.next_seq == seqs[-1] + 1
        assert journal.torn_tails_cut == (1 if reader.torn is not None else 0)
