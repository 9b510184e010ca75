"""Parameter sweeps over tick files: ``tradeloop sweep``.

A grid (TOML: dotted config paths to lists of values) is expanded into combinations of
the base config; every combination is validated up front (config and plugin params),
so a bad value is refused before any trial runs. The data's time range is cut into K
consecutive blocks (walk-forward); each combination x block is one trial, run on a local
process pool (default) or on a Dask cluster (``--scheduler ADDRESS``). A worker receives
a config and a folder path, never the data. Each finished trial is stored at once in the
sweep folder, so a re-run of the same command resumes; a failed trial is recorded and
the sweep goes on.

This module is imported by the ``tradeloop`` dispatcher at start-up, so it holds only
the arguments and the command and imports nothing heavy at its top; the work is in the
package's other modules: ``plan`` (grid, blocks, identities), ``trial`` (one trial),
``store`` (the resumable folder), ``executor`` (process pool or Dask), ``run`` and
``report``.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from engine.errors import ConfigError


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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
    parser.add_argument(
        "--out",
        required=True,
        help="sweep folder; the same sweep there is resumed (finished trials are not rerun)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start over in an --out that holds another sweep or other files",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        help="local process pool size (default: one per CPU)",
    )
    parser.add_argument(
        "--scheduler",
        help="run on the Dask cluster of this scheduler address instead of a local pool",
    )
    parser.add_argument(
        "--trial-timeout",
        type=_positive,
        metavar="SECONDS",
        help="local pool: end a trial's worker after this long; the trial is retried once, "
        "then recorded failed (default: no limit)",
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
    parser.add_argument(
        "--prior-trials",
        type=_count,
        default=0,
        metavar="N",
        help="trials run before on the same data (other grids, earlier ideas): counted in "
        "the deflated Sharpe's number of trials, as every one of them was a chance to be "
        "lucky (default 0)",
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    """``tradeloop sweep``: run (or resume) the sweep, print the chosen combination, its
    statistics and the failures."""
    from replay.research.sweep.run import run_sweep

    if args.scheduler and args.workers:
        raise ConfigError("--workers", "sizes the local process pool; not with --scheduler")
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
        force=getattr(args, "force", False),
        trial_timeout_s=getattr(args, "trial_timeout", None),
        prior_trials=getattr(args, "prior_trials", 0),
    )
    best = summary["best"]
    pbo = summary["pbo"]
    failed = summary["failed"]
    run = summary["run"]
    pbo_text = (
        f"PBO {pbo['value']:.2f} over {pbo['splits']} splits"
        if pbo["value"] is not None
        else f"PBO n/a ({pbo['reason']})"
    )
    dsr = best["deflated_sharpe"]
    failed_text = (
        f"; {failed['tasks']} trials failed, {failed['combinations']} combinations left out"
        if failed["tasks"]
        else ""
    )
    print(
        f"swept {summary['combinations']} combinations x {summary['folds']} blocks in "
        f"{run['elapsed_s']:.1f}s on {run['scheduler']} ({run['tasks_run']} trials run, "
        f"{run['tasks_resumed']} resumed{failed_text}); best: {best['label']} (sharpe per "
        f"period {best['sharpe_per_period']:.4f}, deflated sharpe "
        f"{'n/a' if dsr is None else f'{dsr:.3f}'} of {summary['trials_counted']} trials), "
        f"{pbo_text}"
    )
    print(summary["verdict"]["headline"])
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
