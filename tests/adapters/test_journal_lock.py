"""One owner per journal folder (issue 20, defect 1): a writer holds an exclusive lock on
its folder for its lifetime, a second one is refused with the holder's name, and every file
written by rename goes through a temporary name of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapters.journal_file import FileJournalReader, FileJournalWriter
from adapters.journal_folder import LOCK_FILE, atomic_write
from engine.errors import AdapterError
from engine.events import Command

ROOT = Path(__file__).resolve().parents[2]
T = 1_723_161_254_087_891_268


def _command(i: int) -> Command:
    return Command(ts_event=T + i, ts_recv=T + i, action="kill", issuer="test", reason=str(i))


def test_writer_second_on_one_folder_refused_naming_holder(tmp_path: Path) -> None:
    with FileJournalWriter(tmp_path, session_id="first", owner="node n1") as first:
        first.append(T, _command(0))
        second = FileJournalWriter(tmp_path, session_id="second")
        with pytest.raises(AdapterError) as refused:
            second.open()
        message = str(refused.value)
        assert "held by" in message and f"pid {os.getpid()}" in message
        assert "session first" in message and "node n1" in message
        assert "\n" not in message  # one line
        first.append(T + 1, _command(1))
    assert [r.seq for r in FileJournalReader(tmp_path)] == [1, 2]
    with FileJournalWriter(tmp_path, session_id="third") as third:  # released at close
        assert third.next_seq == 3
    assert (tmp_path / LOCK_FILE).exists()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from adapters.journal_file import FileJournalWriter
    from engine.errors import AdapterError
    from engine.events import Command
    T = 1_723_161_254_087_891_268
    barrier = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    if barrier is not None:  # imported: say so, then open when the parent says go
        (barrier / sys.argv[2]).touch()
        while not (barrier / "go").exists():
            time.sleep(0.001)
    try:
        writer = FileJournalWriter(sys.argv[1], session_id=sys.argv[2], fsync="always")
        writer.open()
    except AdapterError as exc:
        print(exc, flush=True)
        sys.exit(3)
    try:
        for i in range(200):
            writer.append(T + i, Command(ts_event=T + i, ts_recv=T + i, action="kill",
                                         issuer=sys.argv[2], reason=str(i)))
        time.sleep(float(sys.argv[3]))
    finally:
        writer.close()
    """
)


def _child(
    directory: Path, session_id: str, hold_s: float, barrier: Path | None = None
) -> subprocess.Popen[str]:
    extra = [] if barrier is None else [str(barrier)]
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(directory), session_id, str(hold_s), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_writers_in_two_processes_on_an_empty_folder_one_refused_journal_readable(
    tmp_path: Path,
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    journal = tmp_path / "journal"
    children = [_child(journal, f"s{i}", 3.0, barrier) for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((barrier / f"s{i}").exists() for i in range(2)):  # both imported
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (barrier / "go").touch()  # both open at once on the empty folder
    results = [(c.wait(30), *c.communicate()) for c in children]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results  # neither crashed on the other's temporary file
    refused = next(out for code, out, _ in results if code == 3)
    assert "held by pid" in refused
    seqs = [r.seq for r in FileJournalReader(journal)]
    assert seqs == list(range(1, 201))


def test_writer_lock_released_when_its_process_dies(tmp_path: Path) -> None:
    child = _child(tmp_path, "dies", 60.0)
    try:
        lock = tmp_path / LOCK_FILE
        deadline = time.monotonic() + 120  # a loaded machine imports slowly
        while not (lock.exists() and b"dies" in lock.read_bytes()):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        with pytest.raises(AdapterError, match=f"pid {child.pid}"):
            FileJournalWriter(tmp_path, session_id="second").open()
    finally:
        child.kill()
        child.communicate()
    with FileJournalWriter(tmp_path, session_id="after") as writer:  # the kernel released it
        assert writer.state == "open"
    list(FileJournalReader(tmp_path))  # and the journal reads


def test_atomic_write_temporary_names_never_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporaries: list[str] = []
    replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        temporaries.append(Path(src).name)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    for i in range(5):
        atomic_write(tmp_path / "session-x.json", f"{i}".encode())
    assert len(set(temporaries)) == 5
    assert (tmp_path / "session-x.json").read_bytes() == b"4"
    assert [p.name for p in tmp_path.iterdir()] == ["session-x.json"]
