"""The journal folder: its day files and their names, its one owner (the ``flock`` of
``journal.lock``, naming the holder), its known end (``journal.end``: the last durable
record and the running digest of every record, which a truncation of the day files cannot
erase), and files written whole or not at all (``atomic_write``, a temporary name of its
own). ``adapters.journal_file`` writes and reads the records; snapshots tie themselves to
the journal's content through ``journal_digest``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Final

import msgspec

from engine.errors import AdapterError, JournalError
from engine.journal import FRAME_HEADER_BYTES, HEADER_PREFIX_BYTES, JournalDecoder, header_length
from engine.snapshot import SnapshotHeader, decode_snapshot, encode_snapshot

NS_PER_DAY: Final = 86_400 * 1_000_000_000
FILE_PREFIX: Final = "journal-"
FILE_SUFFIX: Final = ".tlj"
_EPOCH: Final = dt.date(1970, 1, 1)
LOCK_FILE: Final = "journal.lock"
"""Held (``flock``, exclusive) by the one writer of a folder for its lifetime; it names the
holder. The file stays when the lock is released: the kernel releases the lock itself when
its process dies, however it dies."""
END_FILE: Final = "journal.end"
"""The journal's end as its writer last made it durable (``JournalEnd``): a truncation of
the journal files cannot erase it."""
DIGEST_BYTES: Final = 16
GENESIS: Final = bytes(DIGEST_BYTES)


def chain_digest(digest: bytes, frame_head: bytes) -> bytes:
    # a chain over each record's frame head (payload length and CRC32): resumable from any
    # recorded digest, and one small hash per record on the append path
    return hashlib.blake2b(digest + frame_head, digest_size=DIGEST_BYTES).digest()


def fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file of its own (a name no other
    writer, process or thread, uses), fsync, rename over ``path``, fsync of the folder.

    Raises:
        OSError: the file system refused (the temporary file is removed).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class JournalLock:
    """The exclusive lock on a journal folder (``LOCK_FILE``), held from ``acquire`` to
    ``release``; the holder's pid, host, owner and session are written into the file so a
    refused writer can name it.

    Args:
        directory: the journal folder.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self, session_id: str, owner: str = "") -> None:
        """Take the lock or refuse.

        Raises:
            AdapterError: another writer holds it (the message names it, on one line), or
                the file system refused.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise AdapterError(f"journal lock {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _describe_holder(fd)
            os.close(fd)
            raise AdapterError(
                f"journal {self.path.parent} is held by {holder}: one daemon per journal "
                "folder (stop it, or give this one a journal.dir of its own)"
            ) from exc
        holder_info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "owner": owner,
            "session_id": session_id,  # its time part says since when
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder_info) + "\n").encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise AdapterError(f"journal lock {self.path}: {exc}") from exc
        self._fd = fd

    def release(self) -> None:
        """Let go (closing the file releases the lock). Safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _describe_holder(fd: int) -> str:
    info: object = {}
    for _ in range(50):  # a holder that just took the lock writes its name right after
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            info = {}
        if isinstance(info, dict) and "pid" in info:
            break
        time.sleep(0.01)
    if not isinstance(info, dict) or "pid" not in info:
        return "another process (it has not named itself yet)"
    parts = [f"pid {info.get('pid')} on {info.get('host', '?')}"]
    if info.get("owner"):
        parts.append(str(info["owner"]))
    parts.append(f"session {info.get('session_id', '?')}")
    return ", ".join(parts)


class JournalEnd(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a writer last made durable (``END_FILE``, JSON): the journal's first sequence
    number, its last record (``last_seq``, received at ``last_ts``, ending at byte
    ``offset`` of ``file``) and the running digest of every record up to it
    (``journal_digest``). Written only after those records are synced, so the journal on
    disk always reaches it (but for one torn last record)."""

    session_id: str
    first_seq: int
    last_seq: int
    last_ts: int
    file: str
    offset: int
    digest: str


def read_journal_end(directory: Path) -> JournalEnd | None:
    """The folder's ``JournalEnd`` (None: no journal ever marked its end here).

    Raises:
        JournalError: the marker is unreadable (it is written atomically: not a crash).
    """
    path = directory / END_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AdapterError(f"journal end {path}: {exc}") from exc
    try:
        return msgspec.json.decode(data, type=JournalEnd)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise JournalError(str(path), 0, f"undecodable journal end marker: {exc}") from exc


def walk_frames(
    path: Path, offset: int, digest: bytes, stop_after: int | None = None
) -> tuple[int, int, bytes]:
    """Chain the frame heads of ``path`` from byte ``offset`` (0: after the header) to its
    end (or after ``stop_after`` records): (records walked, end offset, digest). An
    incomplete last frame ends the walk (a torn tail)."""
    records = 0
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset == 0:
            prefix = f.read(HEADER_PREFIX_BYTES)
            offset = header_length(prefix)
        f.seek(offset)
        while stop_after is None or records < stop_after:
            head = f.read(FRAME_HEADER_BYTES)
            if len(head) < FRAME_HEADER_BYTES:
                break
            end = offset + FRAME_HEADER_BYTES + int.from_bytes(head[:4], "little")
            if end > size:
                break
            digest = chain_digest(digest, head)
            records += 1
            offset = end
            f.seek(offset)
    return records, offset, digest


def first_seq_of(path: Path) -> int:
    decoder = JournalDecoder(str(path))
    with path.open("rb") as f:
        prefix = f.read(HEADER_PREFIX_BYTES)
        decoder.feed(prefix + f.read(header_length(prefix) - len(prefix)))
    assert decoder.header is not None
    return decoder.header.first_seq


def journal_digest(directory: str | Path, upto_seq: int | None = None) -> tuple[int, str]:
    """The running digest of a journal folder's records up to ``upto_seq`` (None: all):
    (the last sequence number it covers, hex digest). It chains each record's frame head
    (payload length and CRC32) in sequence order, as the writer does on append, so a
    snapshot or an end marker that records it ties itself to the journal's content.

    Raises:
        JournalError: a file's header is damaged.
        AdapterError: the folder cannot be read.
    """
    digest = GENESIS
    last = 0
    try:
        for path in journal_files(Path(directory)):
            first = first_seq_of(path)
            if upto_seq is not None and first > upto_seq:
                break
            limit = None if upto_seq is None else upto_seq - first + 1
            records, _, digest = walk_frames(path, 0, digest, limit)
            last = first + records - 1 if records else max(last, first - 1)
    except OSError as exc:
        raise AdapterError(f"journal {directory}: {exc}") from exc
    return last, digest.hex()


def journal_files(directory: Path) -> list[Path]:
    """The journal files of ``directory``, oldest day first."""
    return sorted(
        p for p in directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}") if day_of_path(p) is not None
    )


def day_file(directory: Path, ts_ns: int) -> Path:
    """The file that holds records received at ``ts_ns`` (UTC day)."""
    day = _EPOCH + dt.timedelta(days=ts_ns // NS_PER_DAY)
    return directory / f"{FILE_PREFIX}{day.isoformat()}{FILE_SUFFIX}"


def day_of_path(path: Path) -> int | None:
    stem = path.name.removeprefix(FILE_PREFIX).removesuffix(FILE_SUFFIX)
    try:
        return (dt.date.fromisoformat(stem) - _EPOCH).days
    except ValueError:
        return None


# snapshots of the engine's state (``engine.snapshot``), next to the journal
SNAPSHOT_PREFIX: Final = "snapshot-"
SNAPSHOT_SUFFIX: Final = ".tls"
# the newest valid snapshot is used; the one before it is kept in case the newest is
# damaged (a restart then replays a longer tail, never the whole journal)
SNAPSHOTS_KEPT: Final = 2


def snapshot_files(directory: Path) -> list[Path]:
    """The snapshot files of ``directory``, newest (highest seq) first."""
    found: list[tuple[int, Path]] = []
    for path in directory.glob(f"{SNAPSHOT_PREFIX}*{SNAPSHOT_SUFFIX}"):
        stem = path.name.removeprefix(SNAPSHOT_PREFIX).removesuffix(SNAPSHOT_SUFFIX)
        if stem.isdigit():
            found.append((int(stem), path))
    return [path for _, path in sorted(found, reverse=True)]


def write_snapshot(directory: Path, header: SnapshotHeader, payload: bytes) -> Path:
    """Write a snapshot atomically (a temporary file, fsync, rename, fsync of the folder)
    and delete all but the newest ``SNAPSHOTS_KEPT``.

    Raises:
        AdapterError: the file system refused (nothing half-written is left as a snapshot).
    """
    path = directory / f"{SNAPSHOT_PREFIX}{header.seq:012d}{SNAPSHOT_SUFFIX}"
    try:
        atomic_write(path, encode_snapshot(header, payload))
        for old in snapshot_files(directory)[SNAPSHOTS_KEPT:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise AdapterError(f"snapshot {path}: {exc}") from exc
    return path


def read_snapshot(path: Path) -> tuple[SnapshotHeader, bytes]:
    """A snapshot file, checked (``engine.snapshot.decode_snapshot``).

    Raises:
        JournalError: torn or damaged.
        AdapterError: unreadable.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdapterError(f"snapshot {path}: {exc}") from exc
    return decode_snapshot(data, str(path))
