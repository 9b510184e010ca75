"""A session's files (issue 20, defect 9): the manifest is written whole or not at all
(a temporary file of its own, fsync, rename, fsync of the folder), and session ids stay
unique and sorted in start order when the wall clock steps back."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.daemon.session import new_session_id, session_ms, write_session_files
from engine.config import config_from_dict
from engine.errors import AdapterError
from tests.conftest import BASE_CONFIG

T = 1_765_000_000_000_000_000  # 2025-12-06
HOUR = 3_600_000_000_000


def _write(folder: Path, session_id: str, start_ns: int = T) -> Path:
    config = config_from_dict(copy.deepcopy(BASE_CONFIG))
    files = write_session_files(config, b"mode = 'paper'\n", folder, session_id, start_ns,
                                f"n1-{session_id}", first_seq=1)  # fmt: skip
    return files.manifest


def test_write_session_files_manifest_renamed_into_place_after_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        calls.append("fsync")
        fsync(fd)

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(f"replace {Path(src).name} -> {Path(dst).name}")
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    manifest = _write(tmp_path, "abc")
    renames = [c for c in calls if c.endswith(f"-> {manifest.name}")]
    assert len(renames) == 1 and ".tmp" in renames[0]
    at = calls.index(renames[0])
    assert calls[at - 1] == "fsync" and calls[at + 1] == "fsync"  # the file, then the folder
    assert json.loads(manifest.read_text())["session_id"] == "abc"
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_session_files_failed_rename_leaves_the_old_manifest_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _write(tmp_path, "abc")
    before = manifest.read_bytes()

    def power_loss(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_loss)
    with pytest.raises(AdapterError, match="session file"):
        _write(tmp_path, "abc", T + 1)
    assert manifest.read_bytes() == before  # never half a manifest
    assert not list(tmp_path.glob(".*.tmp"))


def test_new_session_id_after_the_clock_stepped_back_sorts_after_the_last(
    tmp_path: Path,
) -> None:
    first = new_session_id(T, tmp_path)
    _write(tmp_path, first)
    again = new_session_id(T - HOUR, tmp_path)  # the wall clock stepped back an hour
    assert again > first and again[:-4] != first[:-4]
    assert session_ms(again) == T // 1_000_000 + 1


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.integers(-2 * HOUR, 2 * HOUR), min_size=1, max_size=12))
def test_new_session_id_unique_and_sorted_whatever_the_clock_does(
    tmp_path_factory: pytest.TempPathFactory, steps: list[int]
) -> None:
    # mutation check: ``ms = now_ns // 1_000_000`` without the ``max`` over the folder's
    # last session makes a step back give a smaller (or the same ms) id
    folder = tmp_path_factory.mktemp("journal")
    now = T
    ids: list[str] = []
    for step in steps:
        now += step
        session_id = new_session_id(now, folder)
        _write(folder, session_id, now)
        ids.append(session_id)
    assert ids == sorted(ids) and len(set(id_[:-4] for id_ in ids)) == len(ids)
