"""Walk-forward folds on the sweep's executor: a process pool of 2 and a Dask LocalCluster
of 2 worker processes write the same model folder, byte for byte, as the serial path; a
fold that raises or kills its worker stops training with one line naming the fold."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from engine.errors import ModelError
from replay.cli import main
from replay.research.dataset import Dataset, build_dataset
from replay.research.sweep.executor import dask_client
from replay.research.training.folds import FoldSplit, walk_forward_splits
from replay.research.training.run import train
from replay.research.training.walk_forward import FOLD_WORKER_DIED, walk_forward_on_executor
from replay.research.training.worker import FoldMatrix, FoldOutcome, FoldTask, run_fold
from tests.replay.research.test_training import ml_config

FAILING_FOLD = 1


def raise_on_one_fold(task: FoldTask, matrix: FoldMatrix | None = None) -> FoldOutcome:
    """``run_fold``, except that one fold's fit raises a bug of ours (runs on a worker)."""
    if task.fold == FAILING_FOLD:
        raise_from_deep_inside()
    return run_fold(task, matrix)


def raise_from_deep_inside() -> None:
    raise RuntimeError("boom in the fit\nsecond line of the message")


def corrupt_one_fold(task: FoldTask, matrix: FoldMatrix | None = None) -> FoldOutcome:
    """``run_fold`` with one fold's test rows cut to two features: LightGBM's predict
    raises inside ``run_fold`` (runs on a pool worker, which ships arrays)."""
    if task.fold == FAILING_FOLD:
        assert task.arrays is not None
        narrow = dataclasses.replace(task.arrays, X_test=task.arrays.X_test[:, :2])
        task = dataclasses.replace(task, arrays=narrow)
    return run_fold(task, matrix)


def kill_on_one_fold(task: FoldTask, matrix: FoldMatrix | None = None) -> FoldOutcome:
    """``run_fold``, except that one fold kills its worker process, every time."""
    if task.fold == FAILING_FOLD:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_fold(task, matrix)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    """A LocalCluster of 2 worker processes, as ``dask_client`` makes it."""
    with dask_client(workers=2) as client:
        yield client


@pytest.fixture(scope="module")
def serial(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # every folder is named "model": the manifest records its folder's name
    out = tmp_path_factory.mktemp("serial") / "model"
    train(ml_config(), sample_dir, out, progress=False)
    return out


@pytest.fixture(scope="module")
def split(sample_dir: Path) -> tuple[Dataset, list[FoldSplit]]:
    ds = build_dataset(ml_config(), sample_dir, progress=False)
    splits, skipped = walk_forward_splits(ml_config(), ds)
    assert not skipped and len(splits) == 3
    return ds, splits


def _same_folder(a: Path, b: Path) -> None:
    for name in ("model.txt", "manifest.json", "training_report.html"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_train_on_process_pool_writes_serial_bytes(
    serial: Path, sample_dir: Path, tmp_path: Path
) -> None:
    result = train(ml_config(), sample_dir, tmp_path / "model", progress=False, workers=2)
    assert len(result.manifest.folds) == 3
    # model.txt (its sha256 is in the manifest), every fold's metrics and best iteration,
    # the out-of-sample and baseline figures, the report (scores by decile) all equal
    _same_folder(serial, result.folder)


def test_train_on_local_cluster_writes_serial_bytes(
    serial: Path, sample_dir: Path, tmp_path: Path, cluster: Client
) -> None:
    result = train(ml_config(), sample_dir, tmp_path / "model", progress=False, client=cluster)
    assert "baseline_logistic_oos_auc" in result.manifest.metrics
    _same_folder(serial, result.folder)


def test_walk_forward_fold_raising_on_pool_names_the_fold(
    split: tuple[Dataset, list[FoldSplit]],
) -> None:
    ds, splits = split
    with pytest.raises(ModelError) as caught:
        walk_forward_on_executor(
            ml_config(), ds, splits, workers=2, progress=False, fold_function=corrupt_one_fold
        )
    message = str(caught.value)
    # LightGBM's message has a second line (how to silence the check): one line is kept
    assert message.startswith(f"walk-forward fold {FAILING_FOLD} failed: LightGBMError: ")
    assert "number of features" in message and "\n" not in message
    # the bug's frames ride along for a traceback, not in the user's line
    assert "predict" in "".join(caught.value.__notes__)


def test_walk_forward_fold_raising_uncaught_on_local_cluster_names_the_fold(
    split: tuple[Dataset, list[FoldSplit]], cluster: Client
) -> None:
    ds, splits = split
    with pytest.raises(ModelError) as caught:
        walk_forward_on_executor(
            ml_config(), ds, splits, client=cluster, progress=False, fold_function=raise_on_one_fold
        )
    expected = f"walk-forward fold {FAILING_FOLD} failed: RuntimeError: boom in the fit"
    assert str(caught.value) == expected
    # the cluster is usable afterwards: the other folds were cancelled, not left running
    assert cluster.submit(sum, [1, 2], pure=False).result(timeout=30) == 3


def test_walk_forward_worker_killed_on_pool_names_the_fold_in_bounded_time(
    split: tuple[Dataset, list[FoldSplit]],
) -> None:
    ds, splits = split
    t0 = time.perf_counter()
    with pytest.raises(ModelError) as caught:
        walk_forward_on_executor(
            ml_config(), ds, splits, workers=2, progress=False, fold_function=kill_on_one_fold
        )
    assert str(caught.value) == f"walk-forward fold {FAILING_FOLD} failed: {FOLD_WORKER_DIED}"
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - t0 < 60


def test_cli_train_workers_with_scheduler_refused_in_one_line(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", str(sample_dir), "--out", str(tmp_path / "m")]
    assert main([*argv, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tradeloop: error: --workers: sizes the local process pool; not with --scheduler"
    assert not (tmp_path / "m").exists()
