"""The walk-forward folds of ``tradeloop train``: which rows each fold fits on, stops
early on and is tested on.

Split: the usable rows' time span is cut into ``folds + 1`` equal blocks; fold k tests on
block k+1 ``[start, end)`` and trains on rows before it (expanding window).

Purge and embargo (López de Prado, *Advances in Financial Machine Learning*, 7.4), one
rule for every block a model is evaluated on (a test block, and the early-stopping
validation block inside each training window): a row ``(t, L)`` may be fit on only if
``L < start - embargo`` or ``t >= end + embargo``. So no training label reads a price
within ``embargo`` before the block or inside it (purging by the *actual* label end, not
``t + horizon``), and no training row starts within ``embargo`` after the block ends. In
this expanding walk-forward every training row precedes its block, so only the first
condition removes rows; the second keeps the rule the textbook one for any split.
``embargo`` defaults to the horizon (and may not be shorter).

Validation: the last ``validation_fraction`` of a fold's fit rows (rows with a label;
for classification, outside the dead zone), with the rows before it purged against it as
above. LightGBM stops early on it; the fold records its best iteration.

A fold that cannot be fit (too few rows, one class in its training window) is skipped
with a reason, which becomes a warning in the manifest.

Each fold's cut points go into the manifest (``FoldBounds``: the test block, the embargo,
the purge boundaries and the latest label end of its training and early-stopping rows),
so the purge can be checked from the manifest alone (``tradeloop models show --folds``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.config import Config
from engine.errors import ModelError
from engine.signals.manifest import FoldBounds, TimeRange
from replay.research.dataset import Dataset

I64 = npt.NDArray[np.int64]


# below these a fold's fit or its scores say nothing; the fold is skipped with a warning
MIN_TRAIN_ROWS = 50
MIN_VALIDATION_ROWS = 10
MIN_TEST_ROWS = 10


def purge(ds: Dataset, rows: I64, start_ns: int, end_ns: int, embargo_ns: int) -> I64:
    """The ``rows`` that may be fit on when a model is evaluated on ``[start_ns, end_ns)``:
    a row ``(t, label end L)`` stays only if ``L < start_ns - embargo_ns`` or
    ``t >= end_ns + embargo_ns``."""
    before = ds.label_end_ns[rows] < start_ns - embargo_ns
    after = ds.ts[rows] >= end_ns + embargo_ns
    return rows[before | after]


@dataclass(frozen=True)
class FoldSplit:
    """One walk-forward fold: the rows fit on, the early-stopping rows, the test rows."""

    fold: int
    test_start_ns: int
    test_end_ns: int  # the test block is [test_start_ns, test_end_ns)
    train: I64
    validation: I64
    test: I64
    purged_rows: int  # fit rows before the test block removed by purge + embargo


def _fit_rows(cfg: Config, ds: Dataset, rows: I64) -> I64:
    """Rows a model learns from: a label, and for classification outside the dead zone."""
    if cfg.train.label != "classification":
        return rows
    return rows[np.abs(ds.forward_return[rows]) > cfg.train.dead_zone_bps * 1e-4]


def usable_rows(ds: Dataset) -> I64:
    """Rows with every feature and a label (in time order)."""
    return np.flatnonzero(~np.isnan(ds.X).any(axis=1) & ~np.isnan(ds.forward_return))


def walk_forward_splits(cfg: Config, ds: Dataset) -> tuple[list[FoldSplit], list[str]]:
    """The purged, embargoed walk-forward folds, and a reason for each fold skipped.

    Raises:
        ModelError: fewer than two usable rows.
    """
    t = cfg.train
    usable = usable_rows(ds)
    if usable.shape[0] < 2:
        raise ModelError(f"{usable.shape[0]} usable rows: more data or a shorter sample_interval")
    ts, embargo = ds.ts, t.embargo_ns
    t0, t1 = int(ts[usable[0]]), int(ts[usable[-1]])
    edges = [t0 + (t1 - t0) * k // (t.folds + 1) for k in range(t.folds + 2)]
    edges[-1] = t1 + 1
    splits: list[FoldSplit] = []
    skipped: list[str] = []
    for k in range(t.folds):
        start, end = edges[k + 1], edges[k + 2]
        test = usable[(ts[usable] >= start) & (ts[usable] < end)]
        before = _fit_rows(cfg, ds, usable[ts[usable] < start])
        candidates = purge(ds, before, start, end, embargo)
        n_valid = max(1, int(candidates.shape[0] * t.validation_fraction))
        validation = candidates[-n_valid:]
        train = candidates[:-n_valid]
        if validation.shape[0]:
            block_end = int(ts[validation[-1]]) + 1
            train = purge(ds, train, int(ts[validation[0]]), block_end, embargo)
        reason = _unfit_reason(cfg, ds, train, validation, test)
        if reason:
            skipped.append(f"fold {k} skipped: {reason}")
            continue
        purged = int(before.shape[0] - candidates.shape[0])
        splits.append(FoldSplit(k, start, end, train, validation, test, purged))
    return splits, skipped


def _unfit_reason(cfg: Config, ds: Dataset, train: I64, validation: I64, test: I64) -> str:
    if test.shape[0] < MIN_TEST_ROWS:
        return f"{test.shape[0]} test rows (< {MIN_TEST_ROWS})"
    if validation.shape[0] < MIN_VALIDATION_ROWS:
        return f"{validation.shape[0]} validation rows (< {MIN_VALIDATION_ROWS})"
    return _train_problem(cfg, ds, train)


def _train_problem(cfg: Config, ds: Dataset, train: I64) -> str:
    if train.shape[0] < MIN_TRAIN_ROWS:
        return f"{train.shape[0]} training rows after purging (< {MIN_TRAIN_ROWS})"
    if cfg.train.label == "classification" and np.unique(ds.forward_return[train] > 0).shape[0] < 2:
        return "one class in the training rows"
    return ""


def fold_bounds(cfg: Config, ds: Dataset, s: FoldSplit) -> FoldBounds:
    """Where the fold's purge and embargo cut, and the latest label end of the rows it
    fits on (``FoldBounds``)."""
    embargo = cfg.train.embargo_ns
    return FoldBounds(
        test_block_start_ns=s.test_start_ns,
        test_block_end_ns=s.test_end_ns,
        embargo_ns=embargo,
        purge_before_ns=s.test_start_ns - embargo,
        validation_purge_before_ns=int(ds.ts[s.validation[0]]) - embargo,
        train_label_end_ns=int(ds.label_end_ns[s.train].max()),
        validation_label_end_ns=int(ds.label_end_ns[s.validation].max()),
    )


def _range(ts: I64, rows: I64) -> TimeRange:
    return TimeRange(start_ns=int(ts[rows[0]]), end_ns=int(ts[rows[-1]]))
