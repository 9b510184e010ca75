"""Parameter sweeps over tick files on Dask distributed: ``tradeloop sweep``.

A grid (TOML: dotted config paths to lists of values) is expanded into combinations of
the base config; every combination is validated up front (config and plugin params),
so a bad value is refused before any task runs. The data's time range is cut into K
consecutive blocks (walk-forward); each combination x block is one independent task,
run on a Dask cluster (a ``LocalCluster`` by default, a scheduler address for a real
one). A task receives a config dict and a folder path, never the data, and returns the
replay's scalar metrics and its per-period return series only.

The tick readers cannot filter by time, so for K > 1 the driver splits every tick file by
time into one folder per block (under ``OUT/.blocks``, removed when the sweep ends): each
worker reads its block's rows only. Rows are assigned by their position in the file (the
running maximum of the parsed ``ts_event``), so every row, a bad one included, lands in
exactly one block. On a cluster, ``DATA`` and ``--out`` must be on storage every worker
sees.

The overfitting statistics are in ``replay/overfitting.py``, the files written in
``replay/sweep_report.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
from tqdm import tqdm

from engine.config import config_from_dict, load_config
from engine.errors import (
    AdapterError,
    ConfigError,
    DataError,
    PluginLoadError,
    SweepError,
    TradeloopError,
)
from engine.plugins import load_model, load_strategy
from replay import metrics as fig
from replay.readers import discover
from replay.report import compute_metrics, equity_frame, fills_frame
from replay.runner import run_replay
from replay.sweep_report import write_sweep

__all__ = [
    "Block",
    "Combination",
    "SweepError",
    "SweepPlan",
    "SweepTask",
    "TaskOutcome",
    "add_sweep_arguments",
    "cmd_sweep",
    "evaluate",
    "plan_sweep",
    "run_sweep",
    "run_tasks",
    "split_blocks",
]


@dataclass(frozen=True)
class Combination:
    """One point of the grid: its values by dotted path and the full config it makes."""

    index: int
    values: dict[str, Any]
    config: dict[str, Any]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in self.values.items())


@dataclass(frozen=True)
class SweepPlan:
    """A validated grid over a base config; nothing has run yet."""

    combinations: list[Combination]
    grid: dict[str, list[Any]]
    config_sha256: str
    grid_sha256: str
    config_file: str
    grid_file: str


@dataclass(frozen=True)
class Block:
    """One walk-forward block: ticks with ``start_ns <= ts_event < end_ns``."""

    index: int
    start_ns: int
    end_ns: int
    data: str  # folder (or file) holding only this block's ticks


@dataclass(frozen=True)
class SweepTask:
    """What a worker receives: a config as plain data and a path."""

    combination: int
    block: int
    config: dict[str, Any]
    data: str


@dataclass(frozen=True)
class TaskOutcome:
    """What a worker sends back: scalar metrics and per-period returns, or the user error
    that stopped it (as text: ``TradeloopError`` subclasses do not survive pickling)."""

    combination: int
    block: int
    metrics: dict[str, float | int | bool]
    period_end_ns: npt.NDArray[np.int64]
    returns: npt.NDArray[np.float64]
    error: str | None = None


_PART = re.compile(r"(?P<key>[^.\[\]]+)(?P<indices>(?:\[\d+\])*)")


def _path_segments(path: str) -> list[str | int]:
    segments: list[str | int] = []
    for part in path.split("."):
        m = _PART.fullmatch(part.strip())
        if m is None:
            raise ConfigError(
                f"grid {path}",
                "not a dotted config path like strategy.params.fast or features[1].span",
            )
        segments.append(m.group("key"))
        segments += [int(i) for i in re.findall(r"\[(\d+)\]", m.group("indices"))]
    return segments


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"strategy": {"params": {"fast": [..]}}}`` and ``{"strategy.params.fast": [..]}``
    alike become ``{"strategy.params.fast": [..]}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    segments = _path_segments(path)
    node: Any = data
    for depth, seg in enumerate(segments):
        last = depth == len(segments) - 1
        if isinstance(seg, int):
            if not isinstance(node, list) or seg >= len(node):
                raise ConfigError(f"grid {path}", f"the base config has no list item [{seg}]")
            if last:
                node[seg] = value
            else:
                node = node[seg]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"grid {path}", f"the base config has no table at {seg!r}")
        if last:
            node[seg] = value
        else:
            node = node.setdefault(seg, {})


def load_grid(path: str | Path) -> tuple[dict[str, list[Any]], str]:
    """Read a grid file: dotted config paths to non-empty lists of distinct values.

    Returns:
        The grid in file order and the sha256 of the file's bytes.

    Raises:
        ConfigError: unreadable, not TOML, a value that is not a non-empty list, or a
            value listed twice (it would count as two trials).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read grid: {exc.strerror}") from exc
    try:
        table = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(p), f"not a valid TOML grid: {exc}") from exc
    grid = _flatten(table)
    if not grid:
        raise ConfigError(str(p), 'the grid is empty: give e.g. "strategy.params.fast" = [5, 10]')
    for key, values in grid.items():
        _path_segments(key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid {key}", "must be a non-empty list of values")
        seen: list[str] = []
        for v in values:
            text = json.dumps(v, sort_keys=True, default=str)
            if text in seen:
                raise ConfigError(f"grid {key}", f"value {text} is listed twice")
            seen.append(text)
    return grid, hashlib.sha256(raw).hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(msgspec.to_builtins(obj), sort_keys=True)


def plan_sweep(config_file: str | Path, grid_file: str | Path) -> SweepPlan:
    """Expand a grid over a base config and validate every combination before anything runs.

    Every combination must build a valid config (``config_from_dict``) whose strategy and
    model plugins accept their params, and all must share one equity grid (the trials'
    returns are compared period by period).

    Raises:
        ConfigError, PluginLoadError: naming the field and the combination.
    """
    _, config_sha = load_config(config_file)  # the base itself, with its own errors
    base = tomllib.loads(Path(config_file).read_bytes().decode())
    grid, grid_sha = load_grid(grid_file)
    keys = list(grid)
    product = list(itertools.product(*(grid[k] for k in keys)))
    combinations: list[Combination] = []
    strategies: set[str] = set()
    models: set[str] = set()
    intervals: dict[int, int] = {}
    for index, values in enumerate(product):
        combo_values = dict(zip(keys, values))
        data = copy.deepcopy(base)
        which = f"grid combination {index + 1} of {len(product)}"
        combination = Combination(index, combo_values, data)
        try:
            for key, value in combo_values.items():
                _set_path(data, key, copy.deepcopy(value))
            cfg = config_from_dict(data, str(config_file))
            # plugins take their params as they are built: build each distinct one once
            if (text := _canonical(cfg.strategy)) not in strategies:
                load_strategy(cfg.strategy)
                strategies.add(text)
            if cfg.model is not None and (text := _canonical(cfg.model)) not in models:
                load_model(cfg.model)
                models.add(text)
        except ConfigError as exc:
            raise ConfigError(exc.where, f"{exc.reason} ({which}: {combination.label})") from exc
        except PluginLoadError as exc:
            raise PluginLoadError(exc.name, f"{exc.reason} ({which}: {combination.label})") from exc
        intervals.setdefault(cfg.replay.equity_interval_ns, index)
        if len(intervals) > 1:
            raise ConfigError(
                "grid replay.equity_interval",
                f"all combinations must share one equity grid to compare their returns "
                f"period by period ({which}: {combination.label})",
            )
        combinations.append(combination)
    return SweepPlan(combinations, grid, config_sha, grid_sha, str(config_file), str(grid_file))


_INT64_MIN = np.iinfo(np.int64).min


def _read_ts(path: Path) -> pl.Series:
    """``ts_event`` of a tick file as int64 ns; null where it does not parse (the reader
    decides what such a row is; here it only has to land in some block)."""
    try:
        if path.suffix.lower() == ".parquet":
            col = pl.read_parquet(path, columns=["ts_event"])["ts_event"]
        else:
            col = pl.read_csv(path, columns=["ts_event"], infer_schema=False)["ts_event"]
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(str(path), f"cannot read ts_event to split by time: {exc}") from exc
    if col.dtype.is_integer():
        return col.cast(pl.Int64)
    if isinstance(col.dtype, pl.Datetime):
        return col.dt.epoch("ns")
    if col.dtype == pl.String:
        text = col.str.strip_chars()
        ints = text.cast(pl.Int64, strict=False)
        try:
            dates = text.str.to_datetime(time_unit="ns", strict=False).dt.epoch("ns")
        except pl.exceptions.PolarsError:
            dates = pl.Series([None] * len(text), dtype=pl.Int64)
        return ints.fill_null(dates)
    return pl.Series([None] * len(col), dtype=pl.Int64)


def _write_rows(src: Path, dest: Path, start: int, stop: int) -> None:
    try:
        if src.suffix.lower() == ".parquet":
            pl.scan_parquet(src).slice(start, stop - start).sink_parquet(dest)
        else:  # as text, so the reader sees the same cells as in the original
            pl.scan_csv(src, infer_schema=False).slice(start, stop - start).sink_csv(dest)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(str(src), f"cannot split by time into {dest.parent}: {exc}") from exc


def split_blocks(data: str | Path, folds: int, scratch: str | Path) -> list[Block]:
    """Cut the data's time range into ``folds`` equal consecutive blocks.

    One block uses ``data`` itself. Otherwise each tick file is split by time into
    ``scratch/block-<k>/`` (same file names): block k holds the rows from the first whose
    running-maximum ``ts_event`` reaches its start up to the next block's first.

    Raises:
        DataError: no tick files, no parsable timestamp, or a block without ticks.
    """
    quotes, trades = discover(data)
    files = [*quotes, *trades]
    stamps = [_read_ts(p) for p in files]
    parsed = [s for s in stamps if s.null_count() < len(s)]
    if not parsed:
        raise DataError(str(data), "no parsable ts_event in any tick file")
    t0 = min(int(s.min()) for s in parsed)  # type: ignore[arg-type]
    t1 = max(int(s.max()) for s in parsed) + 1  # type: ignore[arg-type]
    if folds == 1:
        return [Block(0, t0, t1, str(Path(data).resolve()))]
    # integer cuts: blocks of equal span to the nanosecond
    cuts = [t0 + (t1 - t0) * k // folds for k in range(folds + 1)]
    root = Path(scratch).resolve()
    blocks = []
    rows = [0] * folds
    for k in range(folds):
        (root / f"block-{k}").mkdir(parents=True, exist_ok=True)
    for path, ts in zip(files, stamps):
        running = ts.cum_max().forward_fill().fill_null(_INT64_MIN).to_numpy()
        bounds = np.searchsorted(running, cuts[1:-1], side="left")
        edges = [0, *(int(b) for b in bounds), running.shape[0]]
        for k in range(folds):
            if edges[k + 1] > edges[k]:
                _write_rows(path, root / f"block-{k}" / path.name, edges[k], edges[k + 1])
                rows[k] += edges[k + 1] - edges[k]
    for k in range(folds):
        if rows[k] == 0:
            raise DataError(str(data), f"block {k + 1} of {folds} has no ticks: use fewer --folds")
        blocks.append(Block(k, cuts[k], cuts[k + 1], str(root / f"block-{k}")))
    return blocks


def evaluate(task: SweepTask) -> TaskOutcome:
    """Replay one combination on one block (runs on a worker).

    Returns:
        The scalar metrics of ``replay.report.compute_metrics`` and the per-period
        returns on the equity grid (``period_end_ns`` closes each period); or the user
        error as text.
    """
    try:
        cfg = config_from_dict(task.config)
        run = run_replay(cfg, task.data, progress=False)
        equity = equity_frame(run)
        metrics = compute_metrics(run, equity, fills_frame(run))
    except TradeloopError as exc:
        empty = np.empty(0)
        return TaskOutcome(
            task.combination,
            task.block,
            {},
            empty.astype(np.int64),
            empty,
            error=f"{type(exc).__name__}: {exc}",
        )
    scalars = {k: v for k, v in metrics.items() if isinstance(v, bool | int | float)}
    ts = equity["ts_event"].to_numpy()
    returns = fig.period_returns(equity["equity"].to_numpy(), cfg.replay.initial_cash)
    return TaskOutcome(task.combination, task.block, scalars, ts[1:].astype(np.int64), returns)


def make_tasks(plan: SweepPlan, blocks: Sequence[Block]) -> list[SweepTask]:
    return [
        SweepTask(c.index, b.index, c.config, b.data) for c in plan.combinations for b in blocks
    ]


def run_tasks(
    client: Any, tasks: Sequence[SweepTask], *, progress: bool | None = None
) -> list[TaskOutcome]:
    """Run tasks on a Dask client, with a progress bar over completed tasks.

    Raises:
        SweepError: a task stopped on a user error (the remaining tasks are cancelled).
    """
    from distributed import as_completed

    futures = client.map(evaluate, list(tasks), pure=False)
    outcomes: list[TaskOutcome] = []
    try:
        with tqdm(
            total=len(futures),
            unit="task",
            desc="sweep",
            disable=None if progress is None else not progress,
        ) as bar:
            for future in as_completed(futures):
                outcome: TaskOutcome = future.result()
                if outcome.error is not None:
                    raise SweepError(
                        f"task of combination {outcome.combination + 1}, block "
                        f"{outcome.block + 1} failed: {outcome.error}"
                    )
                outcomes.append(outcome)
                bar.update(1)
    finally:
        client.cancel(futures)
    return sorted(outcomes, key=lambda o: (o.combination, o.block))


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a ``LocalCluster`` of ``workers``
    single-threaded worker processes (default: one per CPU; a replay holds the GIL).

    Raises:
        AdapterError: the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise AdapterError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


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
) -> dict[str, Any]:
    """Run a sweep and write ``out``: results.parquet, returns.parquet, summary.json,
    report.png, report.html.

    Args:
        data: folder of tick files or one file (visible to every worker).
        config_file: base TOML config.
        grid_file: TOML grid of dotted config paths to lists of values.
        out: sweep folder (created; visible to every worker when ``folds > 1``).
        client: a Dask client to use; else one is made from ``scheduler`` or ``workers``.
        folds: K walk-forward blocks.
        partitions: S submatrices for PBO (even; lowered to what the periods allow).
        progress: progress bar (None: only on a terminal).

    Returns:
        The summary written to summary.json.

    Raises:
        ConfigError, PluginLoadError: the grid or a combination is invalid (before any
            task runs).
        DataError: the data cannot be split into ``folds`` blocks.
        SweepError: a task failed on the data or in the strategy.
        AdapterError: the scheduler cannot be reached.
    """
    if folds < 1:
        raise ConfigError("--folds", f"must be >= 1, got {folds}")
    if partitions < 2 or partitions % 2:
        raise ConfigError("--partitions", f"must be an even number >= 2, got {partitions}")
    plan = plan_sweep(config_file, grid_file)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".blocks"
    t0 = time.perf_counter()
    shutil.rmtree(scratch, ignore_errors=True)  # a crashed run's blocks are not this data's
    try:
        blocks = split_blocks(data, folds, scratch)
        tasks = make_tasks(plan, blocks)
        with contextlib.ExitStack() as stack:
            where = scheduler or (f"LocalCluster of {workers or os.cpu_count()} workers")
            if client is None:
                client = stack.enter_context(dask_client(scheduler, workers))
            else:
                where = str(client.scheduler.address) if client.scheduler else "given client"
            workers_seen = len(client.scheduler_info().get("workers", {}))
            outcomes = run_tasks(client, tasks, progress=progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    run_info = {
        "data": str(Path(data).resolve()),
        "files": [str(p) for group in discover(data) for p in group],
        "elapsed_s": time.perf_counter() - t0,
        "tasks": len(tasks),
        "workers": workers_seen,
        "scheduler": where,
    }
    return write_sweep(plan, blocks, outcomes, out_dir, partitions=partitions, run=run_info)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tradeloop sweep``."""
    parser.add_argument("data", help="folder of *quotes*/*trades* parquet|csv files, or one file")
    parser.add_argument("--config", help="base TOML config (default: the bundled one)")
    parser.add_argument(
        "--grid",
        required=True,
        help='TOML grid: dotted config paths to lists, e.g. "strategy.params.notional" = [1e4, 2e4]',
    )
    parser.add_argument("--out", required=True, help="sweep folder to write")
    parser.add_argument("--scheduler", help="Dask scheduler address (default: a LocalCluster)")
    parser.add_argument(
        "--workers", type=_positive, help="LocalCluster worker processes (default: one per CPU)"
    )
    parser.add_argument(
        "--folds", type=_positive, default=4, help="walk-forward blocks of equal time span"
    )
    parser.add_argument(
        "--partitions",
        type=_positive,
        default=8,
        help="CSCV submatrices for PBO (even; lowered to what the periods allow)",
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    """``tradeloop sweep``: run the sweep, print the chosen combination and its statistics."""
    if args.scheduler and args.workers:
        raise ConfigError("--workers", "sets the LocalCluster's size; not with --scheduler")
    config = args.config or str(resources.files("replay") / "default_config.toml")
    summary = run_sweep(
        args.data,
        config,
        args.grid,
        args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        folds=args.folds,
        partitions=args.partitions,
    )
    best = summary["best"]
    pbo = summary["pbo"]
    pbo_text = (
        f"PBO {pbo['value']:.2f} over {pbo['splits']} splits"
        if pbo["value"] is not None
        else f"PBO n/a ({pbo['reason']})"
    )
    dsr = best["deflated_sharpe"]
    print(
        f"swept {summary['trials']} combinations x {summary['folds']} blocks in "
        f"{summary['run']['elapsed_s']:.1f}s on {summary['run']['workers']} workers; best: "
        f"{best['label']} (sharpe per period {best['sharpe_per_period']:.4f}, deflated "
        f"sharpe {'n/a' if dsr is None else f'{dsr:.3f}'} of {summary['trials']} trials), "
        f"{pbo_text}"
    )
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
