"""The sweep folder as a resumable store: the sweep's identity, and one small file per
finished trial, written as the trial finishes.

Layout of ``OUT``:

- ``sweep.json``: what this folder is a sweep of (base config content, grid, data
  fingerprint, folds) and the key hashed from them;
- ``trials/<trial id>.msgpack``: one finished trial (succeeded or failed), written to a
  temporary name, fsynced, then renamed: a file under its final name is complete, so a
  sweep killed at any moment loses at most the trials in flight.

Re-running the same sweep on the same ``OUT`` skips the trials that succeeded; failed
ones run again (a worker crash may not recur; a bad value fails again quickly). A
different sweep (changed base config, grid, data, model files or folds) on an existing ``OUT`` is
refused unless ``force``, which removes this module's files and starts over: trials of
another sweep are never reused, even though their ids would not collide.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from engine.errors import ConfigError
from replay.research.sweep.trial import TaskOutcome

__all__ = ["SweepStore", "TrialRecord"]

FORMAT = "tradeloop-sweep/1"
# every file or folder a sweep writes into OUT: what --force may remove, nothing else
OWN_FILES = (
    "sweep.json",
    "trials",
    ".blocks",
    "results.parquet",
    "returns.parquet",
    "summary.json",
    "report.png",
    "report.html",
)


class TrialRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A finished trial as stored. Arrays are raw little-endian bytes (int64 period ends,
    float64 returns), so a resumed trial's numbers are bit-identical to a fresh run."""

    trial_id: str
    combination: int
    block: int
    error: str | None = None
    metrics: dict[str, Any] = {}
    period_end_ns: bytes = b""
    returns: bytes = b""

    @classmethod
    def of(cls, outcome: TaskOutcome) -> TrialRecord:
        return cls(
            trial_id=outcome.trial_id,
            combination=outcome.combination,
            block=outcome.block,
            error=outcome.error,
            metrics=outcome.metrics,
            period_end_ns=outcome.period_end_ns.astype("<i8").tobytes(),
            returns=outcome.returns.astype("<f8").tobytes(),
        )

    def outcome(self) -> TaskOutcome:
        return TaskOutcome(
            self.trial_id,
            self.combination,
            self.block,
            dict(self.metrics),
            np.frombuffer(self.period_end_ns, dtype="<i8").astype(np.int64),
            np.frombuffer(self.returns, dtype="<f8").astype(np.float64),
            self.error,
        )


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(TrialRecord)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class SweepStore:
    """An opened sweep folder. Use ``SweepStore.open``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.trials = root / "trials"

    @classmethod
    def open(cls, out: str | Path, identity: dict[str, Any], *, force: bool = False) -> SweepStore:
        """Open ``out`` for the sweep described by ``identity`` (JSON-able; its ``key``
        identifies the sweep).

        A missing or empty folder is created; a folder of the same sweep is resumed; a
        folder of a different sweep, or any other non-empty folder, is refused unless
        ``force`` (a different sweep's files are then removed; in a folder that is no sweep
        nothing is removed, the sweep's files are added).

        Raises:
            ConfigError: ``out`` holds something else and ``force`` is not set.
        """
        root = Path(out)
        store = cls(root)
        if root.exists() and not root.is_dir():
            raise ConfigError(str(root), "exists and is not a folder: pick another --out")
        existing = store.identity() if root.is_dir() else None
        if existing is not None and existing.get("key") != identity["key"]:
            if not force:
                changed = [
                    k
                    for k in ("base_config", "grid", "data", "model", "folds")
                    if existing.get(k) != identity.get(k)
                ]
                raise ConfigError(
                    str(root),
                    f"holds a different sweep (changed: {', '.join(changed) or 'format'}); "
                    "its results are not reused: pick another --out, or --force to start over",
                )
            store._clear()
        elif existing is None and root.is_dir() and any(root.iterdir()) and not force:
            raise ConfigError(
                str(root), "exists and is not a sweep folder: pick another --out, or --force"
            )
        store.trials.mkdir(parents=True, exist_ok=True)
        if existing is None or existing.get("key") != identity["key"]:
            _write_atomic(
                root / "sweep.json", (json.dumps(identity, indent=2, default=str) + "\n").encode()
            )
        return store

    def identity(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "sweep.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("format") == FORMAT else None

    def _clear(self) -> None:
        for name in OWN_FILES:
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def write(self, outcome: TaskOutcome) -> None:
        """Store one finished trial (durable when this returns)."""
        data = _ENCODER.encode(TrialRecord.of(outcome))
        _write_atomic(self.trials / f"{outcome.trial_id}.msgpack", data)

    def read(self, trial_ids: list[str]) -> dict[str, TaskOutcome]:
        """The stored outcomes among ``trial_ids``. A file that does not decode (a disk
        that lost its tail despite fsync) counts as not stored: that trial runs again."""
        found: dict[str, TaskOutcome] = {}
        for tid in trial_ids:
            try:
                record = _DECODER.decode((self.trials / f"{tid}.msgpack").read_bytes())
            except (OSError, msgspec.DecodeError):
                continue
            if record.trial_id == tid:
                found[tid] = record.outcome()
        return found
