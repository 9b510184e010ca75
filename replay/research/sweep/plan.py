"""A sweep's plan: the grid expanded over a base config and validated up front, the
data's walk-forward blocks, and the identities (hashes) that key a sweep folder and
each of its trials.

The tick readers cannot filter by time, so for K > 1 the driver splits every tick file by
time into one folder per block (under ``OUT/.blocks``): each worker reads its block's
rows only. Rows are assigned by their position in the file (the running maximum of the
parsed ``ts_event``), so every row, a bad one included, lands in exactly one block. On a
cluster, ``DATA`` and ``--out`` must be on storage every worker sees.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl

from engine.config import config_from_dict, load_config, model_paths_relative_to
from engine.errors import ConfigError, DataError, PluginLoadError
from engine.plugins import load_model, load_strategy
from replay.files.discovery import discover

__all__ = [
    "Block",
    "Combination",
    "SweepPlan",
    "data_fingerprint",
    "digest",
    "load_grid",
    "model_fingerprint",
    "plan_sweep",
    "split_blocks",
    "trial_id",
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
    """A validated grid over a base config; nothing has run yet.

    ``config_sha256`` and ``grid_sha256`` hash the files' bytes (shown in the report);
    ``base_sha256`` hashes the base config's content (TOML parsed, keys sorted), so a
    comment or a reordering does not make a different sweep.
    """

    combinations: list[Combination]
    grid: dict[str, list[Any]]
    config_sha256: str
    grid_sha256: str
    config_file: str
    grid_file: str
    base_sha256: str


@dataclass(frozen=True)
class Block:
    """One walk-forward block: ticks with ``start_ns <= ts_event < end_ns``."""

    index: int
    start_ns: int
    end_ns: int
    data: str  # folder (or file) holding only this block's ticks


def digest(obj: Any) -> str:
    """sha256 of a JSON-able value, keys sorted (TOML dates as their text)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


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
    # absolute: the combinations are configs without a file, read in workers whose
    # working folder may be another
    base = model_paths_relative_to(
        tomllib.loads(Path(config_file).read_bytes().decode()), Path(config_file).parent.resolve()
    )
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
    return SweepPlan(
        combinations,
        grid,
        config_sha,
        grid_sha,
        str(config_file),
        str(grid_file),
        digest(base),
    )


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


def _files_of(path: Path) -> list[list[Any]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def model_fingerprint(plan: SweepPlan) -> str:
    """The identity of the model files the combinations read (``[model] path`` folders and
    registries; by name, size and modification time): a retrained model or a moved alias
    is a different sweep, though the config text is the same."""
    entries: list[list[Any]] = []
    paths = set()
    for c in plan.combinations:
        model = c.config.get("model")
        if isinstance(model, dict):
            paths |= {str(model[k]) for k in ("path", "registry") if model.get(k)}
    for path in sorted(paths):
        p = Path(path).expanduser()
        entries += _files_of(p) if p.exists() else [[path, None, None]]
    return digest(entries)


def data_fingerprint(data: str | Path) -> str:
    """The identity of the tick files under ``data``: each file's name, size and
    modification time (ns), hashed.

    Hashing the content of months of tick files would cost minutes on every start; a
    rewrite, append or replacement of a file changes its size or mtime (as for make and
    rsync). A file renamed, added or removed changes the name list.

    Raises:
        DataError: no tick files.
    """
    quotes, trades = discover(data)
    entries = []
    for p in sorted({*quotes, *trades}):
        st = p.stat()
        entries.append([p.name, st.st_size, st.st_mtime_ns])
    return digest(entries)


def trial_id(plan: SweepPlan, combination: Combination, block: Block, folds: int, data: str) -> str:
    """The key of one trial (a combination on a block): its grid values, the base config's
    content, the block's place and time span, and ``data``: the fingerprint of the input
    files (ticks and model). The same key
    means the same replay, so a stored result can stand in for running it again."""
    return digest(
        {
            "version": 1,
            "params": combination.values,
            "base_config": plan.base_sha256,
            "block": [block.index, folds, block.start_ns, block.end_ns],
            "data": data,
        }
    )[:32]
