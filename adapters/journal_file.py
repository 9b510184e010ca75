"""The input journal on disk: one file per UTC day, appended before the engine acts.

Files are ``journal-YYYY-MM-DD.tlj`` in one folder; the day is that of the record's
``ts_recv``, and a file only ever rotates forward (a receive time that steps back over
midnight stays in the current file). The byte format is ``engine/journal.py``'s.

Every ``append`` hands the frame to the kernel with ``os.write`` before it returns, so a
record survives the death of the process (``kill -9``) as soon as it is appended. The fsync
policy only decides when it also survives the machine (power loss, kernel panic):

- ``"always"``: fdatasync after every record.
- ``"batch"`` (the default): records are synced in groups. Reports, commands, timer firings
  and clock readings ("control" records) are synced by ``commit()``, which the daemon calls
  once per turn of its loop before acting, or as soon as 16 are pending or the oldest pending
  one is 1 ms older (by ``ts_recv``) than the newest record: on the caller's thread, so
  ``commit()`` returns only once they are on disk. Market data is synced when 1000 batches
  are pending or the oldest is 100 ms older than the newest record, on a background thread
  (``background_sync``): the append that fills the group starts the fdatasync and returns,
  so the loop acts on that batch while the sync runs (an fdatasync takes 0.1-10 ms; inline,
  it was the tick->order p99). Market data is thus on disk at most the group's limits plus
  one fdatasync after it arrived, and always before any later control record's ``commit()``
  returns (that fdatasync covers every byte written before it). The limits are
  ``FsyncLimits``.
- ``"never"``: the kernel writes back when it likes; ``sync()`` and ``close()`` still sync.

Delays are measured on the records' ``ts_recv``, never on a clock of the writer's own, so
they are checked when a record is appended or ``commit()`` is called; a daemon that goes
idle calls ``sync()`` from a timer.

One writer per folder: the writer holds ``journal.lock`` (``flock``, exclusive) from open
to close, with its pid, host, owner and session in it; a second writer is refused with
one line naming the holder. The journal knows its end: after ``sync()`` and ``close()``
the writer records its last durable record and the running digest of all records
(``journal.end``, ``JournalEnd``, written atomically). ``open`` refuses a journal that
no longer reaches it (beyond one torn last record), and snapshots or session files
without their journal; ``accept_loss`` opens it anyway and journals the loss first
(``JournalLossRecord``). Every file written by rename uses a temporary name of its own
(``atomic_write``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import msgspec

from adapters.journal_folder import (
    END_FILE,
    GENESIS,
    NS_PER_DAY,
    SNAPSHOT_PREFIX,
    SNAPSHOT_SUFFIX,
    JournalEnd,
    JournalLock,
    atomic_write,
    chain_digest,
    day_file,
    day_of_path,
    first_seq_of,
    journal_digest,
    journal_files,
    read_journal_end,
    snapshot_files,
    walk_frames,
)
from engine.errors import AdapterError, JournalError
from engine.journal import (
    FRAME_HEADER_BYTES,
    HEADER_PREFIX_BYTES,
    AnyRecord,
    ClockRecord,
    DepthRecord,
    JournalDecoder,
    JournalHeader,
    JournalLoss,
    MarketDataRecord,
    RecordBody,
    RecordEncoder,
    TornTail,
    encode_header,
    header_length,
    make_record,
)

log = logging.getLogger("tradeloop.journal")

FsyncMode = Literal["always", "batch", "never"]
WriterState = Literal["new", "open", "failed", "closed"]

_CHUNK_BYTES: Final = 1 << 20
_sync = getattr(os, "fdatasync", os.fsync)  # fdatasync skips the mtime update
ACCEPT_LOSS_HINT: Final = "start with --accept-journal-loss to accept the loss (it is journaled)"
# the digest is chained at sync time (~0.7 us a record), not on the tick->order path;
# bounded so a journal never synced holds at most this many heads
_HEADS_PENDING: Final = 4096


class JournalPosition(msgspec.Struct, frozen=True, kw_only=True):
    """A place in a journal folder: record ``seq`` starts at byte ``offset`` of ``file``
    (or will, if it is not written yet)."""

    file: str
    offset: int
    seq: int


class FsyncLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Group sizes of the ``"batch"`` policy.

    A control record (report, command, timer, clock reading) decides orders, so it waits for
    at most a small group; a market-data batch is re-sent by the feed's next quote anyway,
    so it is synced in larger groups where an fsync (~0.1-10 ms) is amortised.
    """

    control_records: int = 16
    control_delay_ns: int = 1_000_000
    market_data_records: int = 1000
    market_data_delay_ns: int = 100_000_000


class _SyncThread:
    """fdatasyncs journal files off the caller's thread, one request at a time, in order.

    ``os.fsync``/``fdatasync`` release the GIL, so the loop runs on while the disk works.
    A failed sync is kept in ``error`` and every later request is skipped: after a failed
    fsync the kernel may have dropped the dirty pages, so the writer must stop (it checks
    ``error`` on its next call).
    """

    def __init__(self, name: str) -> None:
        self.error: OSError | None = None
        self.synced = 0  # fdatasyncs completed
        self.sync_ns = 0  # their total duration
        self._requests: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._asked = 0  # written by the caller's thread only
        self._done = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self, fd: int) -> None:
        self._asked += 1
        self._requests.put(fd)  # SimpleQueue.put: C, never blocks, wakes the thread

    def wait(self) -> None:
        """Return once every request made so far is done (before the fd is closed)."""
        with self._cond:
            while self._done < self._asked:
                self._cond.wait()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._requests.put(None)
        self._thread.join()

    def _run(self) -> None:
        clock = time.perf_counter_ns
        while (fd := self._requests.get()) is not None:
            if self.error is None:
                t0 = clock()
                try:
                    _sync(fd)
                except OSError as exc:
                    self.error = exc
                else:
                    self.sync_ns += clock() - t0
                    self.synced += 1
            with self._cond:
                self._done += 1
                self._cond.notify_all()


class FileJournalWriter:
    """Appends sequenced records to the journal in ``directory``.

    On ``open`` it continues an existing journal: the newest file is scanned, a torn last
    record (a write cut short by a crash) is cut off, counted and logged, and the sequence
    goes on from the last good record. Use as a context manager.

    Args:
        directory: the journal folder (created if missing).
        session_id: written into the header of each file this writer creates.
        fsync: ``"always"``, ``"batch"`` or ``"never"`` (see the module docstring).
        limits: group sizes of ``"batch"``.
        first_seq: the sequence number of the first record of a new journal.
        background_sync: in ``"batch"``, sync market-data groups on a background thread
            (the default); False syncs them on the appending thread, as control records.
        owner: who this writer is, for the lock file (``"node n1"``).
        accept_loss: open a journal shorter than its recorded end (or snapshots and
            session files without their journal) instead of refusing it; the loss is
            journaled first (a ``JournalLossRecord``) and left in ``loss``.

    The writer holds the folder's lock (``JournalLock``) from ``open`` to ``close``, and
    records the journal's end (``JournalEnd``) whenever ``sync`` or ``close`` made records
    durable; ``open`` refuses a journal that no longer reaches it.

    Counters: ``fsyncs`` counts the syncs run on the caller's thread (what the loop
    waited for); ``background_syncs_started`` the market-data syncs handed to the thread,
    ``background_fsyncs`` those it completed (``background_sync_ns`` their total time).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        session_id: str,
        fsync: FsyncMode = "batch",
        limits: FsyncLimits | None = None,
        first_seq: int = 1,
        background_sync: bool = True,
        owner: str = "",
        accept_loss: bool = False,
    ) -> None:
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.directory = Path(directory)
        self.session_id = session_id
        self.fsync: FsyncMode = fsync
        self.limits = limits or FsyncLimits()
        self.state: WriterState = "new"
        self.next_seq = first_seq
        self.path: Path | None = None
        self.records_written = 0
        self.fsyncs = 0
        self.torn_tails_cut = 0
        self.torn_bytes_cut = 0
        self._fd = -1
        self._day = -1
        self._offset = 0  # size of the current file: where the next record starts
        self._encoder = RecordEncoder()
        self._control_pending = 0
        self._control_first_ns = 0
        self._market_pending = 0
        self._market_first_ns = 0
        self.background_sync = background_sync
        self.background_syncs_started = 0
        self.stale_snapshots = 0  # snapshots past the journal's end, set aside at open
        self._syncer: _SyncThread | None = None
        self.owner = owner
        self.accept_loss = accept_loss
        self.loss: JournalLoss | None = None
        self._lock = JournalLock(self.directory)
        self._first_seq = first_seq  # the journal's first (its oldest file's header)
        self._digest = GENESIS  # running digest of the records before ``_heads``
        self._heads: list[bytes] = []  # frame heads not chained yet (off the append path)
        self._last_ts = 0
        self._marked_seq = -1  # last_seq of the end marker on disk

    @property
    def background_fsyncs(self) -> int:
        return self._syncer.synced if self._syncer is not None else 0

    @property
    def background_sync_ns(self) -> int:
        return self._syncer.sync_ns if self._syncer is not None else 0

    def __enter__(self) -> FileJournalWriter:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Open the journal for append, recovering from a crash if the last write was torn.

        Raises:
            JournalError: the newest file is corrupt before its tail (an operator decides).
            AdapterError: the file system refused.
        """
        if self.state != "new":
            raise AdapterError(f"journal writer is {self.state}, cannot open")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AdapterError(f"journal {self.directory}: {exc}") from exc
        self._lock.acquire(self.session_id, self.owner)  # before anything is read
        try:
            loss = self._open_locked()
        except BaseException:
            self._release()
            raise
        self.state = "open"
        if loss is not None:
            self._journal_loss(*loss)

    def _open_locked(self) -> tuple[JournalLoss, int] | None:
        try:
            end = read_journal_end(self.directory)
            files = journal_files(self.directory)
            if files:
                self._resume(files[-1])
                loss = self._check_end(files, end)
            else:
                loss = self._check_nothing_left(end)
            if loss is not None:
                if not self.accept_loss:
                    raise AdapterError(
                        f"journal {self.directory}: {loss[0].reason}; refusing to start "
                        f"({ACCEPT_LOSS_HINT})"
                    )
                log.error("journal %s: %s; accepted by the operator (--accept-journal-loss)",
                          self.directory, loss[0].reason)  # fmt: skip
            self._set_aside_stale_snapshots(
                None if loss is None else (self.next_seq - 1 if files else 0)
            )
        except OSError as exc:
            raise AdapterError(f"journal {self.directory}: {exc}") from exc
        return loss

    def _check_end(
        self, files: list[Path], end: JournalEnd | None
    ) -> tuple[JournalLoss, int] | None:
        """After ``_resume``: the journal must reach its recorded end (but for one torn
        last record); sets the running digest."""
        self._first_seq = first_seq_of(files[0])
        last = self.next_seq - 1
        if end is not None and last >= end.last_seq:  # the newest file may hold no record
            self._last_ts = max(self._last_ts, end.last_ts)
        if end is None:  # a journal older than its end marker, or a fresh folder's
            self._digest = bytes.fromhex(journal_digest(self.directory)[1])
            return None
        names = [p.name for p in files]
        reason = ""
        if self._first_seq > end.first_seq:
            reason = (
                f"its oldest file starts at seq {self._first_seq}, the journal started at "
                f"seq {end.first_seq} (files deleted)"
            )
        elif last < end.last_seq - 1 or (last == end.last_seq - 1 and not self.torn_tails_cut):
            reason = (
                f"the journal ends at seq {last}, it had reached seq {end.last_seq} "
                f"(session {end.session_id}): {end.last_seq - last} records lost"
            )
        elif last == end.last_seq - 1:  # one torn record: its write was cut short
            log.warning("journal %s: the last record the end marker names (seq %d) was torn",
                        self.directory, end.last_seq)  # fmt: skip
            self._digest = bytes.fromhex(journal_digest(self.directory)[1])
            return None
        elif end.file not in names:
            reason = f"the file {end.file} of its last recorded record (seq {end.last_seq}) is gone"
        else:
            digest = bytes.fromhex(end.digest)
            walked, offset = 0, end.offset
            for path in files[names.index(end.file) :]:
                records, _, digest = walk_frames(path, offset, digest)
                walked += records
                offset = 0
            if end.last_seq + walked != last:
                reason = (
                    f"the journal does not match its end marker (seq {end.last_seq} at "
                    f"byte {end.offset} of {end.file})"
                )
            else:
                self._digest = digest
                self._marked_seq = end.last_seq
                return None
        # of what is left, if the loss is accepted
        self._digest = bytes.fromhex(journal_digest(self.directory)[1])
        return (
            JournalLoss(expected_last_seq=end.last_seq, found_last_seq=last, reason=reason),
            end.last_ts,
        )

    def _check_nothing_left(self, end: JournalEnd | None) -> tuple[JournalLoss, int] | None:
        """No journal file: a fresh folder, unless an end marker, a snapshot or a session
        file says a journal was here."""
        snapshots = snapshot_files(self.directory)
        own = f"session-{self.session_id}.json"  # written just before, by this session
        sessions = sorted(p for p in self.directory.glob("session-*.json") if p.name != own)
        if end is None and not snapshots and not sessions:
            return None
        if end is not None:
            reason = (
                f"the journal is gone, it had reached seq {end.last_seq} (session {end.session_id})"
            )
            expected, ts, next_seq = end.last_seq, end.last_ts, end.last_seq + 1
        else:
            left = [p.name for p in [*snapshots, *sessions]]
            reason = (
                f"no journal, but {len(left)} snapshot or session files of one are here "
                f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''})"
            )
            expected, ts, next_seq = 0, 0, 1
            for path in snapshots:
                stem = path.name.removeprefix(SNAPSHOT_PREFIX).removesuffix(SNAPSHOT_SUFFIX)
                expected = max(expected, int(stem))
            for path in sessions:
                try:
                    data = json.loads(path.read_bytes())
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict):
                    ts = max(ts, int(data.get("start_ns") or 0))
                    expected = max(expected, int(data.get("first_seq") or 1))
            next_seq = expected + 1  # never a sequence number an earlier session used
        self.next_seq = self._first_seq = next_seq
        return JournalLoss(expected_last_seq=expected, found_last_seq=0, reason=reason), ts

    def _journal_loss(self, loss: JournalLoss, ts_ns: int) -> None:
        # the loss is the first thing the journal says after it: what an audit reads
        self.loss = loss
        self.append(max(ts_ns, self._last_ts), loss)
        self.sync()

    def append(self, ts_recv_ns: int, body: RecordBody) -> AnyRecord:
        """Journal one input under the next sequence number; returns its record.

        Raises:
            AdapterError: the write failed; the writer is then ``failed`` and refuses more.
        """
        record = make_record(self.next_seq, ts_recv_ns, body)
        self._write(record)
        return record

    def append_clock(self, ts_ns: int) -> ClockRecord:
        """Journal a clock reading the core took."""
        record = ClockRecord(seq=self.next_seq, ts_recv=ts_ns)
        self._write(record)
        return record

    @property
    def digest(self) -> str:
        """The running digest of every record appended so far (up to ``next_seq - 1``),
        hex: what ``journal_digest(directory, next_seq - 1)`` computes from the files."""
        self._fold()
        return self._digest.hex()

    def _fold(self) -> None:
        digest = self._digest
        for head in self._heads:
            digest = chain_digest(digest, head)
        self._digest = digest
        self._heads.clear()

    def position(self) -> JournalPosition | None:
        """Where the next record will be written (None before the first file exists): a
        snapshot of the state after ``next_seq - 1`` stores it, so a restart reads the
        journal from there instead of from its start."""
        if self.path is None:
            return None
        return JournalPosition(file=self.path.name, offset=self._offset, seq=self.next_seq)

    def commit(self) -> None:
        """Make the records appended so far as durable as the policy asks before acting.

        ``"batch"`` syncs here if a control record is pending; market data waits for its
        own limits.
        """
        self._check_open()
        if self.fsync == "batch" and self._control_pending:
            self._fsync()  # after a background sync in flight, failing with it

    def sync(self) -> None:
        """fdatasync everything appended, whatever the policy: on return every record
        appended so far is on disk (market-data syncs handed to the background thread
        included: a snapshot relies on it)."""
        self._check_open()
        self._wait_background()
        if self._control_pending or self._market_pending:
            self._fsync()
        self._mark_end()

    def _mark_end(self) -> None:
        """Record the journal's end (``END_FILE``): only ever after the records it names
        are synced, so the journal on disk reaches it."""
        last = self.next_seq - 1
        if self.path is None or last <= self._marked_seq:
            return
        end = JournalEnd(
            session_id=self.session_id, first_seq=self._first_seq, last_seq=last,
            last_ts=self._last_ts, file=self.path.name, offset=self._offset,
            digest=self.digest,
        )  # fmt: skip
        try:
            atomic_write(self.directory / END_FILE, msgspec.json.encode(end))
        except OSError as exc:
            self.state = "failed"
            raise AdapterError(f"journal end {self.directory / END_FILE}: {exc}") from exc
        self._marked_seq = last

    def wait_synced(self) -> None:
        """Return once every market-data sync handed to the background thread so far is
        done.

        Raises:
            AdapterError: one of them failed; the writer is then ``failed``.
        """
        self._wait_background()
        self._check_open()

    def _wait_background(self) -> None:
        """Wait for the background syncs asked so far; raise if one failed."""
        syncer = self._syncer
        if syncer is not None:
            syncer.wait()
            self._check_open()

    def close(self) -> None:
        """Sync (unless the policy is ``"never"``) and close. Safe to call twice."""
        try:
            self._stop_syncer()
            if self.state == "open" and self.fsync != "never" and self._fd >= 0:
                self._fsync()
                self._mark_end()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self.state != "failed":
                self.state = "closed"
            self._release()

    def _release(self) -> None:
        self._lock.release()

    def _resume(self, path: Path) -> None:
        decoder = JournalDecoder(str(path))
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                decoder.skim(chunk)
        torn = decoder.finish()
        if torn is not None:
            self._cut(path, torn)
        assert decoder.header is not None and decoder.next_seq is not None
        self.next_seq = decoder.next_seq
        self._last_ts = decoder.last_ts
        self._offset = decoder.good_offset
        self._day = day_of_path(path) or 0
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.path = path
        log.info("journal %s: resumed at seq %d", path, self.next_seq)

    def _set_aside_stale_snapshots(self, kept_upto: int | None = None) -> None:
        """A snapshot of a state after a record the journal no longer holds (a machine
        crash lost the journal's tail after the snapshot reached the disk) belongs to a
        history that did not happen: renamed aside, counted and logged, before a new
        session's records reach its seq and make it look valid again. After an accepted
        loss, every snapshot past ``kept_upto`` (the last record left) goes aside."""
        limit = self.next_seq if kept_upto is None else kept_upto + 1
        for path in snapshot_files(self.directory):
            stem = path.name.removeprefix(SNAPSHOT_PREFIX).removesuffix(SNAPSHOT_SUFFIX)
            if int(stem) >= limit:
                path.rename(path.with_name(path.name + ".stale"))
                self.stale_snapshots += 1
                log.error(
                    "snapshot %s covers seq %s, past the journal's end (next seq %d): set "
                    "aside as %s.stale",
                    path.name, stem, self.next_seq, path.name,
                )  # fmt: skip

    def _cut(self, path: Path, torn: TornTail) -> None:
        with path.open("r+b") as f:
            f.truncate(torn.offset)
            f.flush()
            os.fsync(f.fileno())
        self.torn_tails_cut += 1
        self.torn_bytes_cut += torn.length
        log.warning(
            "journal %s: cut a torn last record, %d bytes at byte %d (%s)",
            path,
            torn.length,
            torn.offset,
            torn.reason,
        )

    def _write(self, record: AnyRecord) -> None:
        self._check_open()
        ts = record.ts_recv
        try:
            if ts // NS_PER_DAY > self._day:
                self._rotate(ts)
            view = self._encoder.encode_into(record)
            with view:
                written = os.write(self._fd, view)
                while written < len(view):  # a regular file only writes short on error
                    written += os.write(self._fd, view[written:])
                self._offset += written
                head = bytes(view[:FRAME_HEADER_BYTES])
        except OSError as exc:
            self.state = "failed"
            raise AdapterError(f"journal {self.path}: append of seq {record.seq}: {exc}") from exc
        heads = self._heads
        heads.append(head)
        if len(heads) >= _HEADS_PENDING:
            self._fold()
        self._last_ts = ts
        self.next_seq += 1
        self.records_written += 1
        # depth is market data: grouped for fsync like ticks, not synced at once as controls
        if isinstance(record, MarketDataRecord | DepthRecord):
            if not self._market_pending:
                self._market_first_ns = ts
            self._market_pending += 1
        else:
            if not self._control_pending:
                self._control_first_ns = ts
            self._control_pending += 1
        if self.fsync == "always":
            self._fsync()
        elif self.fsync == "batch" and self._group_full(ts):
            if self._control_pending or not self.background_sync:
                self._fsync()  # a control record is durable before anything acts on it
            else:
                self._fsync_in_background()

    def _group_full(self, ts_ns: int) -> bool:
        limits = self.limits
        control, market = self._control_pending, self._market_pending
        return (
            control >= limits.control_records
            or (control > 0 and ts_ns - self._control_first_ns >= limits.control_delay_ns)
            or market >= limits.market_data_records
            or (market > 0 and ts_ns - self._market_first_ns >= limits.market_data_delay_ns)
        )

    def _rotate(self, ts_ns: int) -> None:
        if self._fd >= 0:
            # no background sync may still hold the fd being closed, and a failed one stops
            # the writer here (the old file's last records may not be on disk); ``_fsync``
            # waits too, but a ``"never"`` journal does not call it
            self._wait_background()
            if self.fsync != "never":
                self._fsync()
            os.close(self._fd)
            self._fd = -1
        path = day_file(self.directory, ts_ns)
        if self.path is None:  # the journal's first file
            self._first_seq = self.next_seq
        # Built aside and renamed into place, so a journal file always has a whole header.
        header = JournalHeader(
            session_id=self.session_id, created_ns=ts_ns, first_seq=self.next_seq
        )
        head = encode_header(header)
        atomic_write(path, head)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._day = ts_ns // NS_PER_DAY
        self._offset = len(head)
        self.path = path

    def _fsync(self) -> None:
        # every inline sync first waits for a background one in flight and fails with it:
        # the kernel reports a failed fdatasync to one caller only (it clears the file's
        # error once told), so this sync would succeed over the lost pages (commit, a full
        # control group in _write, sync, rotation)
        self._wait_background()
        try:
            _sync(self._fd)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages: retrying
            # would report success for data that is gone, so the writer stops here.
            self.state = "failed"
            raise AdapterError(f"journal {self.path}: fsync: {exc}") from exc
        self.fsyncs += 1
        self._control_pending = 0
        self._market_pending = 0

    def _fsync_in_background(self) -> None:
        syncer = self._syncer
        if syncer is None:
            syncer = self._syncer = _SyncThread(f"journal-sync-{self.session_id}")
        syncer.request(self._fd)
        self.background_syncs_started += 1
        self._market_pending = 0

    def _stop_syncer(self) -> None:
        syncer = self._syncer
        if syncer is None or not syncer.running:
            return
        syncer.stop()  # after every request made so far; its counters stay readable
        if syncer.error is not None and self.state == "open":
            self.state = "failed"
            raise AdapterError(f"journal {self.path}: background fsync: {syncer.error}")

    def _check_open(self) -> None:
        if self.state != "open":
            raise AdapterError(f"journal writer is {self.state}")
        syncer = self._syncer
        if syncer is not None and syncer.error is not None:
            # see _fsync: the data of that sync may be gone, so the writer stops
            self.state = "failed"
            raise AdapterError(f"journal {self.path}: background fsync: {syncer.error}")


class FileJournalReader:
    """Every record of a journal folder, in sequence order across the day files.

    Iterating checks framing, CRCs and that sequence numbers run on without a gap from one
    file to the next. A torn last record of the newest file ends the iteration and is left
    in ``torn`` (the writer cuts it on its next open); damage anywhere else raises, and so
    does a journal that ends before its recorded end (``JournalEnd``, read before the
    files, so a writer appending meanwhile never makes it look short).

    Args:
        directory: the journal folder.
    """

    def __init__(self, directory: str | Path, *, start: JournalPosition | None = None) -> None:
        self.directory = Path(directory)
        self.torn: TornTail | None = None
        self.start = start

    @property
    def files(self) -> list[Path]:
        return journal_files(self.directory)

    def __iter__(self) -> Iterator[AnyRecord]:
        """Yield every record.

        Raises:
            JournalError: a file is corrupt, the sequence has a gap between files, or
                the journal ends before its recorded end.
            AdapterError: the folder or a file cannot be read.
        """
        self.torn = None
        if not self.directory.is_dir():
            raise AdapterError(f"journal {self.directory}: not a folder")
        end = read_journal_end(self.directory)
        files = self.files
        expected: int | None = None
        start = self.start
        if start is not None:
            names = [p.name for p in files]
            if start.file not in names:
                raise JournalError(start.file, start.offset, "the start position's file is gone")
            files = files[names.index(start.file) :]
        for index, path in enumerate(files):
            decoder = JournalDecoder(str(path), expected_seq=expected)
            try:
                with path.open("rb") as f:
                    if start is not None and index == 0:
                        # the header, then straight to the position: the decoder checks
                        # that the first record there is ``start.seq``
                        prefix = f.read(HEADER_PREFIX_BYTES)
                        head = prefix + f.read(header_length(prefix) - len(prefix))
                        decoder.feed(head)
                        decoder.seek(start.offset, start.seq)
                        if os.fstat(f.fileno()).st_size < start.offset:
                            raise JournalError(str(path), start.offset, "the file ends before it")
                        f.seek(start.offset)
                    while chunk := f.read(_CHUNK_BYTES):
                        yield from decoder.feed(chunk)
            except OSError as exc:
                raise AdapterError(f"journal {path}: {exc}") from exc
            torn = decoder.finish()
            if torn is not None:
                if index != len(files) - 1:
                    raise JournalError(
                        str(path), torn.offset, f"{torn.reason}, and a later day's file follows"
                    )
                self.torn = torn
            expected = decoder.next_seq
        reached = 0 if expected is None else expected - 1
        if end is not None and reached < end.last_seq - (self.torn is not None):
            raise JournalError(
                str(files[-1] if files else self.directory / END_FILE), 0,
                f"the journal ends at seq {reached}, it had reached seq {end.last_seq} "
                f"(session {end.session_id}): records lost",
            )  # fmt: skip
