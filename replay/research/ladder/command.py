"""``tradeloop train DATA --ladder --out DIR``: the ladder from the command line.

``run_ladder_command(cfg, source, out)`` is the command once the CLI has read the config,
the data and ``--out`` as ``tradeloop train`` does (its own helpers in ``replay.cli``).
``cmd_ladder(args)`` is what ``replay.cli`` calls today, before reading anything; it
reads them itself through ``replay.files`` (a concern may not import ``replay.cli``),
following the same rules: the ML config by default, DATA or ``--quotes``/``--trades``,
``[columns]`` and ``--columns``, ``--start``/``--end``, the data's symbols added to the
config, and an ``--out`` that is never the data and is replaced only with ``--force``.
``--workers`` and ``--scheduler`` are refused: the ladder times each family's fits in
this process, and fits spread over workers would time the pool.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from engine.config import Config, load_config
from engine.errors import ConfigError
from replay.files.discovery import DataSource
from replay.research.ladder.result import FamilyResult, Ladder


def cmd_ladder(args: argparse.Namespace) -> int:
    """Read the config and the data from ``args``, run the ladder, print its table.

    Raises:
        ConfigError: ``--workers``/``--scheduler`` given, ``--out`` may not be written,
            or the data arguments are wrong.
    """
    from replay.files.init_config import with_data_instruments

    if getattr(args, "workers", None) not in (None, 1) or getattr(args, "scheduler", None):
        raise ConfigError(
            "--ladder",
            "runs every fit in this process so its times compare; not with --workers or --scheduler",
        )
    out = Path(args.out)
    _check_out(out, args)
    default = Path(str(resources.files("replay") / "ml_config.toml"))
    cfg, _ = load_config(getattr(args, "config", None) or default)
    source = _source(args, cfg)
    cfg, found, notes = with_data_instruments(cfg, source)
    for line in found.warnings:
        print(f"tradeloop: warning: {line}", file=sys.stderr)
    for line in notes:
        print(f"tradeloop: note: {line}", file=sys.stderr)
    return run_ladder_command(cfg, source, out)


def run_ladder_command(cfg: Config, source: DataSource | str | Path, out: Path) -> int:
    """Run the ladder on ``source`` into ``out`` and print its table; 0 on success."""
    from replay.research.ladder.run import run_ladder

    started = time.perf_counter()
    ladder = run_ladder(cfg, source, out)
    for line in summary(ladder):
        print(line)
    print(
        f"ladder of {sum(f.trained for f in ladder.families)} families in "
        f"{time.perf_counter() - started:.1f}s: {out / 'ladder.html'}"
    )
    return 0


def _check_out(out: Path, args: argparse.Namespace) -> None:
    target = out.expanduser().resolve()
    given = [getattr(args, "data", None), *(getattr(args, "quotes", None) or ()),
             *(getattr(args, "trades", None) or ())]  # fmt: skip
    for item in given:
        if item is None:
            continue
        d = Path(item).expanduser().resolve()
        if target == d or d.is_relative_to(target) or (d.is_dir() and target.is_relative_to(d)):
            raise ConfigError(
                "--out", f"{out} is, holds or is inside the data ({item}): pick another folder"
            )
    if out.exists() and not getattr(args, "force", False):
        raise ConfigError("--out", f"{out} exists: pick another --out, or --force to replace it")


def _source(args: argparse.Namespace, cfg: Config) -> DataSource:
    from replay.files.formats import config_column_mapping, parse_column_mapping, parse_time_ns

    quotes = tuple(Path(p) for p in getattr(args, "quotes", None) or ())
    trades = tuple(Path(p) for p in getattr(args, "trades", None) or ())
    data = getattr(args, "data", None)
    if data is None and not quotes and not trades:
        raise ConfigError("DATA", "give a data folder or file, or --quotes/--trades files")
    columns = config_column_mapping(cfg.columns)
    if getattr(args, "columns", None):
        columns.update(parse_column_mapping(args.columns))
    times: list[int | None] = []
    for name in ("start", "end"):
        given = getattr(args, name, None)
        value, what = (given, f"--{name}") if given is not None else (
            getattr(cfg.replay, name), f"replay.{name}")  # fmt: skip
        times.append(None if value is None else parse_time_ns(str(value), what))
    if times[0] is not None and times[1] is not None and times[1] <= times[0]:
        raise ConfigError("--end", "must be after the start (--start or [replay] start)")
    return DataSource(
        path=None if data is None else Path(data),
        quotes=quotes,
        trades=trades,
        columns=columns,
        start_ns=times[0],
        end_ns=times[1],
    )


def _est(f: FamilyResult, key: str, spec: str) -> str:
    e = f.metrics.get(key)
    if e is None or e.value is None:
        return "n/a"
    if e.low is None or e.high is None:
        return format(e.value, spec)
    return f"{e.value:{spec}} [{e.low:{spec}}, {e.high:{spec}}]"


def summary(ladder: Ladder) -> list[str]:
    """One line per family and the recommendation, for the terminal."""
    lines = [
        f"{'family':<14} {'IC [95% CI]':<27} {'AUC':>6} {'vs best p':>9} "
        f"{'net bps':>8} {'train s':>8} {'us/row':>8}"
    ]
    for f in ladder.families:
        if not f.trained:
            lines.append(f"{f.family:<14} not trained: {f.reason}")
            continue
        auc = f.metrics.get("auc")
        p = f.versus_best.p_value if f.versus_best is not None else None
        edge = f.net_edge_bps.value if f.net_edge_bps is not None else None
        lines.append(
            f"{f.family:<14} {_est(f, 'ic', '.4f'):<27} "
            f"{'n/a' if auc is None or auc.value is None else format(auc.value, '.3f'):>6} "
            f"{'-' if p is None else format(p, '.3f'):>9} "
            f"{'n/a' if edge is None else format(edge, '+.2f'):>8} "
            f"{f.training_seconds or 0.0:>8.2f} {f.scoring_us_per_row or 0.0:>8.1f}"
        )
    lines.append(f"recommended: {ladder.recommended} (best IC: {ladder.best}); rule: {ladder.rule}")
    return lines
