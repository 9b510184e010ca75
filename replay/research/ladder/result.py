"""What ``--ladder`` writes to ``ladder.json``: the folds, every family's figures with
their intervals, times and explanation, the best, the recommendation and its rule."""

from __future__ import annotations

import os
import platform

import msgspec

from engine.signals.manifest import Estimate
from replay.research.training.report import iso_utc as utc

__all__ = ["FamilyResult", "FoldRows", "Ladder", "machine", "utc"]


def machine() -> str:
    """The machine the times were measured on, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


class FoldRows(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One walk-forward fold, the same for every family."""

    fold: int
    train_rows: int
    validation_rows: int
    test_rows: int
    test_start_utc: str
    test_end_utc: str


class FamilyResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One family of the ladder. ``trained`` false: ``reason`` says why, no figures.

    ``metrics``: out-of-sample IC, AUC and accuracy over every fold with 95 % intervals
    and p-values against chance; ``versus_best``: IC(best) - IC(this family), paired
    (``p_value``: of a difference at or below 0, i.e. small when this family is
    significantly worse); ``net_edge_bps``: the expected net edge per trade at the
    strategy's thresholds after fees and half the spread (None: ``net_edge_note``).
    Times: ``training_seconds`` = walk-forward fits + final fit; ``scoring_us_per_row``:
    the served model's mean one-row call (``scorer`` says what was called)."""

    family: str
    trained: bool
    reason: str = ""
    folder: str = ""
    kind: str = ""
    output: str = ""
    fits: str = ""
    explanation: str = ""
    metrics: dict[str, Estimate] = {}
    versus_best: Estimate | None = None
    significantly_worse: bool | None = None
    net_edge_bps: Estimate | None = None
    trades: int | None = None
    net_edge_note: str = ""
    walk_forward_seconds: float | None = None
    final_fit_seconds: float | None = None
    training_seconds: float | None = None
    scoring_us_per_row: float | None = None
    scoring_rows: int = 0
    scorer: str = ""
    warnings: list[str] = []


class Ladder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data: str
    created_utc: str
    label: str
    horizon_ns: int
    sample_interval_ns: int
    dataset_rows: int
    test_rows: int
    folds: list[FoldRows]
    block_rows: int
    label_overlap_rows: int
    replicates: int
    alpha: float
    primary: str
    rule: str
    best: str | None
    recommended: str | None
    families: list[FamilyResult]
    machine: str
