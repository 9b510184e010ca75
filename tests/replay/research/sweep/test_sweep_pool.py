"""Sweeps on real worker processes: the local process pool (the default) and a Dask
LocalCluster give bit-identical trials; a sweep resumes without rerunning finished
trials (counted by the marker file each run leaves); a failed trial is recorded and the
sweep finishes; a worker killed mid-trial costs a retry, never a hang."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from distributed import Client

from engine.config import model_paths_relative_to
from engine.errors import ConfigError, SweepError
from replay.research.sweep.executor import WORKER_DIED, dask_client
from replay.research.sweep.plan import Combination, SweepPlan, model_fingerprint
from replay.research.sweep.run import run_sweep
from replay.research.sweep.store import FORMAT, SweepStore
from replay.research.sweep.trial import TaskOutcome
from tests.conftest import BASE_CONFIG
from tests.replay.research.sweep.test_sweep import _toml

FAULTY = "tests.replay.research.sweep.sweep_faults:FaultyEmaCross"
GRID = '"strategy.params.notional" = [5000.0, 20000.0]\n"features[1].span" = [10, 40]\n'


def _base(root: Path, markers: Path) -> Path:
    markers.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["strategy"] = {
        "name": FAULTY,
        "params": {"notional": 10_000.0, "marker_dir": str(markers)},
    }
    path = root / "base.toml"
    path.write_text(_toml(cfg))
    return path


def _runs(markers: Path) -> int:
    return sum(1 for p in markers.iterdir() if p.name.startswith("run-"))


def _bounded(seconds: float, **kwargs: Any) -> dict[str, Any]:
    """run_sweep in a thread the test gives up on after ``seconds`` (a hang fails the
    test instead of blocking the run)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["summary"] = run_sweep(**kwargs)
        except BaseException as exc:  # handed to the test below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the sweep did not finish within {seconds}s"
    result["elapsed_s"] = time.perf_counter() - t0
    if "error" in result:
        raise result["error"]
    return result


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> dict[str, Path]:
    """4 combinations x 2 blocks on a 2-process pool."""
    root = tmp_path_factory.mktemp("pool")
    markers = root / "markers"
    base = _base(root, markers)
    (root / "grid.toml").write_text(GRID)
    run_sweep(sample_dir, base, root / "grid.toml", root / "out", workers=2, folds=2)
    return {"root": root, "base": base, "grid": root / "grid.toml", "markers": markers}


def _numbers(out: Path) -> pl.DataFrame:
    """Each trial's objective and metrics, by trial id."""
    results = pl.read_parquet(out / "results.parquet").sort("trial_id")
    return results.drop("rank_in_block")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    """A LocalCluster of 2 worker processes, as ``dask_client`` makes it (one retry after
    a worker death)."""
    with dask_client(workers=2) as client:
        yield client


def test_sweep_pool_and_local_cluster_give_bit_identical_trials(
    pool_sweep: dict[str, Path], cluster: Client, sample_dir: Path, tmp_path: Path
) -> None:
    assert _runs(pool_sweep["markers"]) == 8
    summary = run_sweep(
        sample_dir, pool_sweep["base"], pool_sweep["grid"], tmp_path, client=cluster, folds=2
    )
    assert summary["run"]["scheduler"].startswith("Dask scheduler tcp://")
    assert _runs(pool_sweep["markers"]) == 16  # the cluster ran all 8 trials itself
    pool = _numbers(pool_sweep["root"] / "out")
    dask = _numbers(tmp_path)
    assert pool.height == 8 and set(pool["status"]) == {"ok"}
    assert pool["performance"].null_count() == 0
    # bit for bit: same trial ids, same objective and every metric (NaN equal to NaN)
    assert pool.equals(dask, null_equal=True)
    assert pool["performance"].to_list() == dask["performance"].to_list()
    pool_returns = pl.read_parquet(pool_sweep["root"] / "out" / "returns.parquet")
    assert pool_returns.equals(pl.read_parquet(tmp_path / "returns.parquet"))


def test_sweep_on_dask_worker_killed_recorded_in_bounded_time(
    cluster: Client, sample_dir: Path, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    base = _base(tmp_path, markers)
    grid = tmp_path / "grid.toml"
    grid.write_text('"strategy.params.fault" = ["", "kill_once", "kill"]\n')
    done = _bounded(
        120.0,
        data=sample_dir,
        config_file=base,
        grid_file=grid,
        out=tmp_path / "out",
        client=cluster,
        folds=1,
    )
    results = pl.read_parquet(tmp_path / "out" / "results.parquet").sort("combination")
    assert results["status"].to_list() == ["ok", "ok", "failed"]
    assert results["error"][2].startswith("KilledWorker")
    assert done["summary"]["failed"]["tasks"] == 1 and done["summary"]["trials"] == 2
    assert sum(1 for p in markers.iterdir() if p.name.startswith("run-kill-")) == 2


def test_sweep_rerun_resumes_without_rerunning_finished_trials(
    pool_sweep: dict[str, Path],
    sample_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    shutil.copytree(pool_sweep["root"] / "out", out)
    before = _numbers(out)
    # an interruption: two finished trials lost
    lost = sorted((out / "trials").iterdir())[:2]
    for path in lost:
        path.unlink()
    markers = pool_sweep["markers"]
    runs = _runs(markers)
    summary = run_sweep(sample_dir, pool_sweep["base"], pool_sweep["grid"], out, workers=2, folds=2)
    assert "resumed: 6 of 8 trials already done" in capsys.readouterr().out
    assert _runs(markers) == runs + 2  # only the two lost trials ran again
    assert summary["run"]["tasks_run"] == 2 and summary["run"]["tasks_resumed"] == 6
    assert _numbers(out).equals(before, null_equal=True)
    assert {p.name for p in (out / "trials").iterdir()} == {
        p.name for p in (pool_sweep["root"] / "out" / "trials").iterdir()
    }
    # nothing left to run: no worker starts, the page says so
    summary = run_sweep(sample_dir, pool_sweep["base"], pool_sweep["grid"], out, workers=2, folds=2)
    assert "resumed: 8 of 8 trials already done" in capsys.readouterr().out
    assert _runs(markers) == runs + 2
    assert "8 trials read from an earlier run, 0 run now" in (out / "report.html").read_text()


def test_sweep_on_out_of_another_sweep_refused_unless_force(
    pool_sweep: dict[str, Path], sample_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(pool_sweep["root"] / "out", out)
    grid = tmp_path / "grid.toml"
    grid.write_text('"strategy.params.notional" = [5000.0]\n')
    with pytest.raises(ConfigError, match=r"holds a different sweep \(changed: grid\)"):
        run_sweep(sample_dir, pool_sweep["base"], grid, out, workers=1, folds=2)
    with pytest.raises(ConfigError, match=r"changed: base_config"):
        other_base = _base(tmp_path, tmp_path / "other_markers")
        run_sweep(sample_dir, other_base, pool_sweep["grid"], out, workers=1, folds=2)
    with pytest.raises(ConfigError, match=r"changed: folds"):
        run_sweep(sample_dir, pool_sweep["base"], pool_sweep["grid"], out, workers=1, folds=1)
    # changed data: a file rewritten (new mtime and size)
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    trades = pl.read_parquet(data / "trades.parquet")
    trades.head(trades.height - 1).write_parquet(data / "trades.parquet")
    with pytest.raises(ConfigError, match=r"changed: data"):
        run_sweep(data, pool_sweep["base"], pool_sweep["grid"], out, workers=1, folds=2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a sweep folder"):
        run_sweep(sample_dir, pool_sweep["base"], grid, other, workers=1, folds=1)
    with pytest.raises(ConfigError, match="is the data folder"):
        run_sweep(sample_dir, pool_sweep["base"], grid, sample_dir, workers=1, folds=1, force=True)
    assert len(list((out / "trials").iterdir())) == 8  # nothing of the old sweep touched
    runs = _runs(pool_sweep["markers"])
    summary = run_sweep(sample_dir, pool_sweep["base"], grid, out, workers=1, folds=1, force=True)
    assert _runs(pool_sweep["markers"]) == runs + 1  # a new key space: nothing reused
    assert summary["run"]["tasks_resumed"] == 0 and summary["combinations"] == 1
    assert len(list((out / "trials").iterdir())) == 1
    assert json.loads((out / "sweep.json").read_text())["grid"] == {
        "strategy.params.notional": [5000.0]
    }


def test_sweep_failed_trial_recorded_and_run_again_on_resume(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    markers = tmp_path / "markers"
    base = _base(tmp_path, markers)
    grid = tmp_path / "grid.toml"
    # raise_once: the first trial of that combination to start raises, later ones do not
    grid.write_text('"strategy.params.fault" = ["", "raise_once", "raise"]\n')
    out = tmp_path / "out"
    summary = run_sweep(sample_dir, base, grid, out, workers=2, folds=2)
    results = pl.read_parquet(out / "results.parquet")
    failed = results.filter(pl.col("status") == "failed")
    assert sorted(failed["combination"].to_list()) == [1, 2, 2]
    assert all("on purpose" in e for e in failed["error"].to_list())
    assert failed["performance"].null_count() == 3
    assert summary["failed"]["tasks"] == 3 and summary["failed"]["combinations"] == 2
    assert summary["trials"] == 1 and summary["combinations"] == 3
    assert summary["best"]["combination"] == 0 and summary["pbo"]["value"] is None
    html = (out / "report.html").read_text()
    assert "3 of 6 combination x block trials" in html and "Failed trials (3)" in html
    assert _runs(markers) == 6
    capsys.readouterr()
    summary = run_sweep(sample_dir, base, grid, out, workers=2, folds=2)
    printed = capsys.readouterr().out
    assert "resumed: 3 of 6 trials already done (3 failed before: run again)" in printed
    assert _runs(markers) == 9  # the three failed trials only
    assert summary["failed"]["tasks"] == 2 and summary["trials"] == 2  # raise_once passed
    assert summary["pbo"]["value"] is not None


def test_sweep_pool_worker_killed_retried_once_never_hangs(
    sample_dir: Path, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    base = _base(tmp_path, markers)
    grid = tmp_path / "grid.toml"
    # kill_once: its first run dies, a rerun succeeds; kill: dies every time
    grid.write_text('"strategy.params.fault" = ["", "kill_once", "kill"]\n')
    done = _bounded(
        120.0,
        data=sample_dir,
        config_file=base,
        grid_file=grid,
        out=tmp_path / "out",
        workers=2,
        folds=1,
    )
    results = pl.read_parquet(tmp_path / "out" / "results.parquet").sort("combination")
    assert results["status"].to_list() == ["ok", "ok", "failed"]
    assert results["error"][2] == WORKER_DIED
    assert done["summary"]["failed"] == {
        "tasks": 1,
        "combinations": 1,
        "errors": [
            {
                "combination": 2,
                "block": 0,
                "label": 'strategy.params.fault="kill"',
                "error": WORKER_DIED,
            }
        ],
    }
    # "kill" ran twice alone (its own deaths), plus once beside another trial if the
    # first death took a neighbour down with it: never more
    kills = sum(1 for p in markers.iterdir() if p.name.startswith("run-kill-"))
    assert kills in (2, 3)
    # kill_once died once (maybe beside "kill", then once more uncharged) and succeeded
    assert sum(1 for p in markers.iterdir() if p.name.startswith("run-kill_once-")) in (2, 3)


def test_sweep_trial_timeout_ends_a_hung_trial(sample_dir: Path, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    base = _base(tmp_path, markers)
    grid = tmp_path / "grid.toml"
    # the hung trial alone: a short timeout would also end a normal trial on a loaded box
    grid.write_text('"strategy.params.fault" = ["hang"]\n')
    with pytest.raises(SweepError, match="every combination failed"):
        _bounded(
            60.0,
            data=sample_dir,
            config_file=base,
            grid_file=grid,
            out=tmp_path / "out",
            workers=1,
            folds=1,
            trial_timeout_s=2,
        )
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results["status"].to_list() == ["failed"]
    assert results["error"][0] == WORKER_DIED and "--trial-timeout" in WORKER_DIED
    assert _runs(markers) == 2  # ended, retried once, ended again


def test_sweep_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, replay.research.sweep.command\n"
        "heavy = {'dask', 'distributed', 'lightgbm', 'polars', 'matplotlib', 'pyarrow', 'numba'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_model_fingerprint_changes_with_the_model_files(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.txt").write_text("tree 1")
    config = {"model": {"kind": "lightgbm", "path": str(folder)}}
    plan = SweepPlan([Combination(0, {}, config)], {}, "", "", "", "", "")
    before = model_fingerprint(plan)
    assert model_fingerprint(plan) == before
    (folder / "model.txt").write_text("tree 1 retrained")
    assert model_fingerprint(plan) != before
    # a relative path reads from the config file's folder, as load_config reads it
    resolved = model_paths_relative_to({"model": {"path": "model"}}, tmp_path.resolve())
    assert resolved["model"]["path"] == str(tmp_path.resolve() / "model")


def test_sweep_store_torn_trial_file_counts_as_not_done(tmp_path: Path) -> None:
    identity = {"format": FORMAT, "key": "k1"}
    store = SweepStore.open(tmp_path / "out", identity)
    ok = TaskOutcome(
        "a" * 32,
        0,
        1,
        {"num_trades": 3, "sharpe_per_period": float("nan"), "flat": True},
        np.array([5, 7], dtype=np.int64),
        np.array([0.1, -0.0], dtype=np.float64),
    )
    store.write(ok)
    store.write(TaskOutcome("b" * 32, 1, 0, error="ValueError: no"))
    got = store.read(["a" * 32, "b" * 32, "c" * 32])
    assert set(got) == {"a" * 32, "b" * 32} and got["b" * 32].failed
    back = got["a" * 32]
    assert back.metrics["num_trades"] == 3 and back.metrics["flat"] is True
    assert math.isnan(back.metrics["sharpe_per_period"])
    assert back.returns.tobytes() == ok.returns.tobytes()  # -0.0 kept, bit for bit
    assert np.array_equal(back.period_end_ns, ok.period_end_ns)
    path = tmp_path / "out" / "trials" / f"{'a' * 32}.msgpack"
    path.write_bytes(path.read_bytes()[:-5])  # a torn write
    assert set(store.read(["a" * 32, "b" * 32])) == {"b" * 32}
    # the same sweep reopens without --force; another is refused
    SweepStore.open(tmp_path / "out", identity)
    with pytest.raises(ConfigError, match="different sweep"):
        SweepStore.open(tmp_path / "out", {**identity, "key": "k2"})
