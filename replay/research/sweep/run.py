"""``run_sweep``: plan, open the sweep folder, run the trials not yet stored, write the
results.

The pieces: ``replay/research/sweep/plan.py`` (grid, blocks, identities), ``replay/research/sweep/trial.py``
(what one trial does), ``replay/research/sweep/store.py`` (the resumable folder),
``replay/research/sweep/executor.py`` (process pool or Dask), ``replay/research/sweep/report.py`` (results
and statistics, ``replay/research/overfitting.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engine.errors import ConfigError
from replay.files.discovery import discover
from replay.research.sweep.executor import dask_client, run_on_dask, run_on_pool
from replay.research.sweep.plan import (
    data_fingerprint,
    digest,
    model_fingerprint,
    plan_sweep,
    split_blocks,
)
from replay.research.sweep.report import write_sweep
from replay.research.sweep.store import FORMAT, SweepStore
from replay.research.sweep.trial import SweepTask, TaskOutcome, make_tasks

__all__ = ["run_sweep"]


def _refuse_data_as_out(data: str | Path, out: Path) -> None:
    d = Path(data).resolve()
    o = out.resolve()
    if o == d or (d.is_file() and o == d.parent):
        raise ConfigError(str(out), "is the data folder: pick another --out")


def run_sweep(
    data: str | Path,
    config_file: str | Path,
    grid_file: str | Path,
    out: str | Path,
    *,
    client: Any | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    folds: int = 4,
    partitions: int = 8,
    progress: bool | None = None,
    force: bool = False,
    trial_timeout_s: int | None = None,
    prior_trials: int = 0,
) -> dict[str, Any]:
    """Run a sweep, or resume it, and write ``out``: sweep.json, trials/, results.parquet,
    returns.parquet, summary.json, report.png, report.html.

    Args:
        data: folder of tick files or one file (visible to every worker).
        config_file: base TOML config.
        grid_file: TOML grid of dotted config paths to lists of values.
        out: sweep folder. The same sweep there is resumed (its stored trials are not run
            again); a different one is refused unless ``force``.
        client: a Dask client to run on; else ``scheduler``'s, else a local process pool.
        scheduler: a Dask scheduler address.
        workers: local pool processes (default: one per CPU).
        folds: K walk-forward blocks.
        partitions: S submatrices for PBO (even; lowered to what the periods allow).
        progress: progress bar (None: only on a terminal).
        force: start over in an ``out`` that holds something else.
        trial_timeout_s: local pool only: a trial running longer has its worker ended
            and counts as a worker death.
        prior_trials: trials run before on the same data, counted in the deflated
            Sharpe's number of trials (not in the sweep's identity: a resumed sweep may
            count differently).

    Returns:
        The summary written to summary.json.

    Raises:
        ConfigError, PluginLoadError: the grid or a combination is invalid, or ``out`` is
            refused (before any trial runs).
        DataError: the data cannot be split into ``folds`` blocks.
        SweepError: every combination failed (the results are written first).
        AdapterError: the scheduler cannot be reached.
    """
    if folds < 1:
        raise ConfigError("--folds", f"must be >= 1, got {folds}")
    if prior_trials < 0:
        raise ConfigError("--prior-trials", f"must be >= 0, got {prior_trials}")
    if partitions < 2 or partitions % 2:
        raise ConfigError("--partitions", f"must be an even number >= 2, got {partitions}")
    if trial_timeout_s is not None and (client is not None or scheduler is not None):
        raise ConfigError("--trial-timeout", "applies to the local process pool only")
    t0 = time.perf_counter()
    plan = plan_sweep(config_file, grid_file)
    out_dir = Path(out)
    _refuse_data_as_out(data, out_dir)
    data_fp = data_fingerprint(data)
    model_fp = model_fingerprint(plan)
    # the model files are inputs like the data: a retrained model invalidates every trial
    inputs_id = digest([data_fp, model_fp])
    identity: dict[str, Any] = {
        "format": FORMAT,
        "base_config": plan.base_sha256,
        "grid": plan.grid,
        "data": data_fp,
        "model": model_fp,
        "folds": folds,
        "config_file": plan.config_file,
        "grid_file": plan.grid_file,
        "data_path": str(Path(data).resolve()),
    }
    identity["key"] = _key(identity)
    store = SweepStore.open(out_dir, identity, force=force)
    scratch = out_dir / ".blocks"
    shutil.rmtree(scratch, ignore_errors=True)  # a crashed run's blocks are not this data's
    try:
        blocks = split_blocks(data, folds, scratch)
        tasks = make_tasks(plan, blocks, inputs_id)
        stored = store.read([t.trial_id for t in tasks])
        resumed = sum(1 for o in stored.values() if not o.failed)
        todo = [t for t in tasks if t.trial_id not in stored or stored[t.trial_id].failed]
        if stored:
            print(
                f"resumed: {resumed} of {len(tasks)} trials already done"
                + (
                    f" ({len(stored) - resumed} failed before: run again)"
                    if len(stored) > resumed
                    else ""
                )
            )
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(
                tqdm(
                    total=len(tasks),
                    initial=resumed,
                    unit="trial",
                    desc="sweep",
                    disable=None if progress is None else not progress,
                )
            )
            failed_now = 0

            def done(task: SweepTask, outcome: TaskOutcome) -> None:
                nonlocal failed_now
                store.write(outcome)
                failed_now += outcome.failed
                bar.update(1)
                bar.set_postfix(failed=failed_now, refresh=False)

            n = workers or os.cpu_count() or 1
            if client is None and scheduler is None:
                where = f"process pool of {n} workers"
                workers_seen = n
                if todo:
                    run_on_pool(todo, n, done, trial_timeout_s=trial_timeout_s)
            else:
                if client is None:
                    client = stack.enter_context(dask_client(scheduler))
                    where = f"Dask scheduler {scheduler}"
                else:
                    address = client.scheduler.address if client.scheduler else None
                    where = f"Dask scheduler {address or 'of the given client'}"
                workers_seen = len(client.scheduler_info().get("workers", {}))
                if todo:
                    run_on_dask(client, todo, done)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # every outcome read back from the store: a resumed sweep and a fresh one are
    # summarised from the same bytes
    final = store.read([t.trial_id for t in tasks])
    outcomes = [final[t.trial_id] for t in tasks if t.trial_id in final]
    run_info = {
        "data": str(Path(data).resolve()),
        "files": [str(p) for group in discover(data) for p in group],
        "elapsed_s": time.perf_counter() - t0,
        "tasks": len(tasks),
        "tasks_run": len(todo),
        "tasks_resumed": resumed,
        "workers": workers_seen,
        "scheduler": where,
    }
    return write_sweep(
        plan,
        blocks,
        outcomes,
        out_dir,
        partitions=partitions,
        run=run_info,
        prior_trials=prior_trials,
    )


def _key(identity: dict[str, Any]) -> str:
    # the data's path is not in the key: a moved folder is the same data
    fields = ("format", "base_config", "grid", "data", "model", "folds")
    return digest({k: identity[k] for k in fields})
