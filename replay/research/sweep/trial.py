"""One sweep trial (a grid combination replayed on one walk-forward block): what a worker
receives, what it sends back, and the function it runs.

A worker receives a config as plain data and a folder path, never the data, and returns
the replay's scalar metrics and its per-period returns, or the error that stopped the
trial as text (exceptions of ours and of plugins do not all survive pickling, and a
failed trial is a result to record, not a reason to stop the sweep).
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.config import config_from_dict
from engine.errors import TradeloopError
from replay.backtest import metrics as fig
from replay.backtest.report import compute_metrics, equity_frame, fills_frame
from replay.backtest.runner import run_replay
from replay.research.sweep.plan import Block, SweepPlan, trial_id

__all__ = ["SweepTask", "TaskOutcome", "evaluate", "evaluate_with_deadline", "make_tasks"]

_EMPTY_NS = np.empty(0, dtype=np.int64)
_EMPTY_F = np.empty(0, dtype=np.float64)


@dataclass(frozen=True)
class SweepTask:
    """What a worker receives: a config as plain data and a path."""

    trial_id: str
    combination: int
    block: int
    config: dict[str, Any]
    data: str


@dataclass(frozen=True)
class TaskOutcome:
    """What a worker sends back: scalar metrics and per-period returns (``period_end_ns``
    closes each period), or the error text that stopped the trial (then ``failed``)."""

    trial_id: str
    combination: int
    block: int
    metrics: dict[str, float | int | bool] = field(default_factory=dict)
    period_end_ns: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_NS)
    returns: npt.NDArray[np.float64] = field(default_factory=lambda: _EMPTY_F)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def failed_outcome(task: SweepTask, error: str) -> TaskOutcome:
    return TaskOutcome(task.trial_id, task.combination, task.block, error=error)


def _scalar(value: Any) -> float | int | bool:
    # numpy scalars become the Python type of the same value (exact), for msgpack
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return float(value)


def evaluate(task: SweepTask) -> TaskOutcome:
    """Replay one combination on one block (runs on a worker).

    Any exception is caught and returned as the outcome's error: a user error
    (``TradeloopError``) as its one line, anything else (a plugin that raised, a bug)
    with the innermost frames of its traceback, since nobody sees the worker's stderr.
    """
    try:
        cfg = config_from_dict(task.config)
        run = run_replay(cfg, task.data, progress=False)
        equity = equity_frame(run)
        metrics = compute_metrics(run, equity, fills_frame(run))
        returns = fig.period_returns(equity["equity"].to_numpy(), cfg.replay.initial_cash)
        ends = equity["ts_event"].to_numpy()[1:].astype(np.int64)
    except TradeloopError as exc:
        return failed_outcome(task, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a failed trial is recorded, never fatal to the sweep
        frames = "".join(traceback.format_tb(exc.__traceback__, limit=-3))
        return failed_outcome(task, f"{type(exc).__name__}: {exc}\n{frames}".rstrip())
    scalars = {
        k: _scalar(v)
        for k, v in metrics.items()
        if isinstance(v, bool | int | float | np.bool_ | np.integer | np.floating)
    }
    return TaskOutcome(
        task.trial_id,
        task.combination,
        task.block,
        scalars,
        np.ascontiguousarray(ends),
        np.ascontiguousarray(returns, dtype=np.float64),
    )


def evaluate_with_deadline(task: SweepTask, timeout_s: int | None) -> TaskOutcome:
    """``evaluate`` in a pool worker that the kernel ends after ``timeout_s`` seconds.

    SIGALRM with its default action terminates the process even inside a numba kernel or
    a C call that never returns to Python (a Python-level timeout could not interrupt
    those); the driver sees the worker die and handles it as any worker death. POSIX
    only: elsewhere the timeout is not applied.
    """
    if timeout_s is None or not hasattr(signal, "alarm"):
        return evaluate(task)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(timeout_s)
    try:
        return evaluate(task)
    finally:
        signal.alarm(0)


def make_tasks(plan: SweepPlan, blocks: Sequence[Block], data_id: str) -> list[SweepTask]:
    """Every combination on every block, in combination-major order."""
    return [
        SweepTask(trial_id(plan, c, b, len(blocks), data_id), c.index, b.index, c.config, b.data)
        for c in plan.combinations
        for b in blocks
    ]
