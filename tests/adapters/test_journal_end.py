"""The journal knows its end (issue 20, defect 2): what a writer last made durable is
recorded beside the journal (``journal.end``), and a journal that no longer reaches it, or
snapshots and session files without their journal, are refused unless the operator
accepts the loss, which is then journaled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.journal_file import FileJournalReader, FileJournalWriter
from adapters.journal_folder import END_FILE, journal_digest, journal_files, read_journal_end
from engine.errors import AdapterError, JournalError
from engine.events import Command
from engine.journal import JournalLoss, JournalLossRecord

T = 1_723_161_254_087_891_268
MS = 1_000_000


def _command(i: int) -> Command:
    return Command(ts_event=T + i, ts_recv=T + i * MS, action="kill", issuer="t", reason=str(i))


def _write(directory: Path, n: int, *, start: int = 0, session_id: str = "s1") -> None:
    with FileJournalWriter(directory, session_id=session_id) as writer:
        for i in range(start, start + n):
            writer.append(T + i * MS, _command(i))
            if i % 10 == 9:
                writer.sync()  # as the heartbeat does


def test_writer_end_marker_names_last_synced_record_and_digest(tmp_path: Path) -> None:
    _write(tmp_path, 25)
    end = read_journal_end(tmp_path)
    assert end is not None
    assert (end.first_seq, end.last_seq, end.last_ts) == (1, 25, T + 24 * MS)
    assert (end.last_seq, end.digest) == journal_digest(tmp_path)
    assert journal_digest(tmp_path, 10) != journal_digest(tmp_path)
    _write(tmp_path, 5, start=25, session_id="s2")  # resumes the digest from the marker
    end = read_journal_end(tmp_path)
    assert end is not None and (end.last_seq, end.digest) == journal_digest(tmp_path)


def test_writer_journal_truncated_to_half_refused(tmp_path: Path) -> None:
    _write(tmp_path, 100)
    (path,) = journal_files(tmp_path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(AdapterError, match=r"it had reached seq 100.*--accept-journal-loss"):
        FileJournalWriter(tmp_path, session_id="s2").open()


def test_writer_journal_cut_at_a_record_boundary_refused(tmp_path: Path) -> None:
    _write(tmp_path, 30)
    (path,) = journal_files(tmp_path)
    _write(tmp_path / "copy", 20)  # the same records: the size of 20 of them
    cut = journal_files(tmp_path / "copy")[0].stat().st_size
    with path.open("r+b") as f:
        f.truncate(cut)
    with pytest.raises(AdapterError, match="records lost"):
        FileJournalWriter(tmp_path, session_id="s2").open()


def test_writer_one_torn_last_record_still_resumes(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    (path,) = journal_files(tmp_path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 3)  # the last record's write cut short
    with FileJournalWriter(tmp_path, session_id="s2") as writer:
        assert writer.torn_tails_cut == 1 and writer.next_seq == 10
        writer.append(T + 50 * MS, _command(50))
    assert [r.seq for r in FileJournalReader(tmp_path)] == list(range(1, 11))


def test_writer_journal_deleted_with_snapshots_left_refused(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    (tmp_path / "snapshot-000000000005.tls").write_bytes(b"a snapshot")
    for path in journal_files(tmp_path):
        path.unlink()
    with pytest.raises(AdapterError, match="the journal is gone, it had reached seq 10"):
        FileJournalWriter(tmp_path, session_id="s2").open()
    (tmp_path / END_FILE).unlink()  # the marker too: the snapshot still says
    with pytest.raises(AdapterError, match="no journal, but 1 snapshot or session files"):
        FileJournalWriter(tmp_path, session_id="s2").open()
    assert (tmp_path / "snapshot-000000000005.tls").exists()  # nothing set aside


def test_writer_session_files_without_journal_refused(tmp_path: Path) -> None:
    (tmp_path / "session-abc.json").write_text('{"session_id": "abc", "first_seq": 7}')
    with pytest.raises(AdapterError, match=r"session-abc\.json"):
        FileJournalWriter(tmp_path, session_id="s2").open()


def test_writer_accepted_truncation_journals_the_loss(tmp_path: Path) -> None:
    _write(tmp_path, 100)
    (path,) = journal_files(tmp_path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with FileJournalWriter(tmp_path, session_id="s2", accept_loss=True) as writer:
        assert writer.loss is not None and writer.loss.expected_last_seq == 100
        writer.append(T + 200 * MS, _command(200))
    records = list(FileJournalReader(tmp_path))
    losses = [r for r in records if isinstance(r, JournalLossRecord)]
    assert len(losses) == 1
    left = losses[0].loss.found_last_seq
    assert 0 < left < 100 and losses[0].seq == left + 1
    assert losses[0].ts_recv == T + 99 * MS  # time never steps back over the loss
    assert [r.seq for r in records] == list(range(1, left + 3))
    with FileJournalWriter(tmp_path, session_id="s3") as writer:  # the new end holds
        assert writer.loss is None and writer.next_seq == left + 3
    end = read_journal_end(tmp_path)
    assert end is not None and (end.last_seq, end.digest) == journal_digest(tmp_path)


def test_writer_accepted_deletion_journals_the_loss_after_the_old_sequence(
    tmp_path: Path,
) -> None:
    _write(tmp_path, 10)
    snapshot = tmp_path / "snapshot-000000000005.tls"
    snapshot.write_bytes(b"a snapshot")
    for path in journal_files(tmp_path):
        path.unlink()
    with FileJournalWriter(tmp_path, session_id="s2", accept_loss=True) as writer:
        assert writer.stale_snapshots == 1  # its journal is gone: set aside
    (record,) = FileJournalReader(tmp_path)
    assert isinstance(record, JournalLossRecord) and record.seq == 11
    assert record.loss == JournalLoss(
        expected_last_seq=10, found_last_seq=0, reason=record.loss.reason
    )
    assert not snapshot.exists() and snapshot.with_name(snapshot.name + ".stale").exists()


def test_writer_accept_loss_without_a_loss_journals_nothing(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    with FileJournalWriter(tmp_path, session_id="s2", accept_loss=True) as writer:
        assert writer.loss is None
    assert len(list(FileJournalReader(tmp_path))) == 10
    assert os.listdir(tmp_path).count(END_FILE) == 1


def test_writer_end_after_a_killed_writer_names_the_true_last_record(tmp_path: Path) -> None:
    killed = FileJournalWriter(tmp_path, session_id="killed")
    killed.open()
    for i in range(15):
        killed.append(T + i * MS, _command(i))
        if i == 9:
            killed.sync()  # the marker names seq 10; 11-15 follow unmarked
    os.close(killed._fd)  # kill -9: no close, no marker; the kernel drops the lock
    killed._lock.release()
    with FileJournalWriter(tmp_path, session_id="next"):
        pass  # opens and closes without a record of its own
    end = read_journal_end(tmp_path)
    assert end is not None and (end.last_seq, end.last_ts) == (15, T + 14 * MS)
    assert (end.last_seq, end.digest) == journal_digest(tmp_path)


def test_writer_digest_equals_journal_digest_of_the_files(tmp_path: Path) -> None:
    _write(tmp_path, 12)
    with FileJournalWriter(tmp_path, session_id="s2") as writer:
        assert (writer.next_seq - 1, writer.digest) == journal_digest(tmp_path)
        writer.append(T + 40 * MS, _command(40))
        writer.sync()
        assert (writer.next_seq - 1, writer.digest) == journal_digest(tmp_path)
        assert journal_digest(tmp_path, 12)[1] != writer.digest


def test_reader_journal_shorter_than_its_end_is_a_journal_error(tmp_path: Path) -> None:
    _write(tmp_path, 40)
    assert len(list(FileJournalReader(tmp_path))) == 40
    (path,) = journal_files(tmp_path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(JournalError, match="it had reached seq 40"):
        list(FileJournalReader(tmp_path))  # parity and replay refuse it too
