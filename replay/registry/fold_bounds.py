"""A model's walk-forward folds from its manifest alone: the table ``tradeloop models show
--folds`` prints, and the checks of the purge it runs on it.

What is checked, per fold with recorded bounds (``FoldBounds``; manifests from before
them have none and are reported as unverifiable, not as wrong):

- the purge: the latest label end of the training rows and of the early-stopping rows
  lies before the purge boundary, the test block's start minus the embargo (no fit row's
  label reads a price inside the embargo or the test block); the training rows' labels
  also end before the early-stopping rows' own purge boundary;
- the boundaries are what the rule says: ``purge_before = test block start - embargo``,
  ``validation_purge_before = first early-stopping row - embargo``, and the embargo is at
  least the label horizon;
- the ranges are in order: training and early-stopping rows before the test rows, the test
  rows inside their block, and a label end no earlier than its last row plus the horizon;
- across folds: test blocks, and test ranges, do not overlap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

from engine.signals.manifest import FoldReport, Manifest


def iso_ms(ts_ns: int) -> str:
    """``2024-01-01 00:03:12.345`` (UTC, to the millisecond; what a purge boundary needs)."""
    seconds, ns = divmod(int(ts_ns), 10**9)
    return (
        datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{ns // 10**6:03d}"
    )


def fold_rows(m: Manifest) -> list[list[str]]:
    """One row per fold (a header first): its ranges, label ends and purge boundaries."""
    rows = [
        [
            "fold",
            "train rows",
            "train",
            "train labels end",
            "validation",
            "validation labels end",
            "purge before",
            "test block [start, end)",
            "test",
            "embargo",
        ]
    ]
    for f in m.folds:
        b = f.bounds
        span = f"{iso_ms(f.train.start_ns)} .. {iso_ms(f.train.end_ns)}"
        valid = f"{iso_ms(f.validation.start_ns)} .. {iso_ms(f.validation.end_ns)}"
        test = f"{iso_ms(f.test.start_ns)} .. {iso_ms(f.test.end_ns)}"
        if b is None:
            rows.append(
                [str(f.fold), f"{f.train_rows:,}", span, "-", valid, "-", "-", "-", test, "-"]
            )
            continue
        rows.append(
            [
                str(f.fold),
                f"{f.train_rows:,}",
                span,
                iso_ms(b.train_label_end_ns),
                valid,
                iso_ms(b.validation_label_end_ns),
                iso_ms(b.purge_before_ns),
                f"{iso_ms(b.test_block_start_ns)} .. {iso_ms(b.test_block_end_ns)}",
                test,
                f"{b.embargo_ns / 1e9:g}s",
            ]
        )
    return rows


def _fold_problems(f: FoldReport, horizon_ns: int) -> list[str]:
    b = f.bounds
    assert b is not None
    out: list[str] = []
    k = f"fold {f.fold}"
    if b.embargo_ns < horizon_ns:
        out.append(
            f"{k}: embargo {b.embargo_ns} ns is shorter than the label horizon {horizon_ns} ns"
        )
    if b.purge_before_ns != b.test_block_start_ns - b.embargo_ns:
        out.append(
            f"{k}: purge boundary {b.purge_before_ns} is not the test block's start "
            f"{b.test_block_start_ns} minus the embargo {b.embargo_ns}"
        )
    if b.validation_purge_before_ns != f.validation.start_ns - b.embargo_ns:
        out.append(
            f"{k}: validation purge boundary {b.validation_purge_before_ns} is not the "
            f"first early-stopping row {f.validation.start_ns} minus the embargo"
        )
    for what, end in (
        ("a training", b.train_label_end_ns),
        ("an early-stopping", b.validation_label_end_ns),
    ):
        if end >= b.purge_before_ns:
            out.append(
                f"{k}: {what} row's label ends at {iso_ms(end)}, at or after the purge "
                f"boundary {iso_ms(b.purge_before_ns)} (test block {iso_ms(b.test_block_start_ns)} "
                f"minus the embargo): it reads prices inside the embargo or the test block"
            )
    if b.train_label_end_ns >= b.validation_purge_before_ns:
        out.append(
            f"{k}: a training row's label ends at {iso_ms(b.train_label_end_ns)}, at or after "
            f"the early-stopping rows' purge boundary {iso_ms(b.validation_purge_before_ns)}"
        )
    if b.train_label_end_ns < f.train.end_ns + horizon_ns:
        out.append(
            f"{k}: the training labels end at {iso_ms(b.train_label_end_ns)}, before the last "
            f"training row plus the horizon: the label ends recorded are not the labels'"
        )
    if not f.train.end_ns < f.test.start_ns or not f.validation.end_ns < f.test.start_ns:
        out.append(f"{k}: training or early-stopping rows at or after the first test row")
    if not b.test_block_start_ns <= f.test.start_ns <= f.test.end_ns < b.test_block_end_ns:
        out.append(
            f"{k}: test rows {iso_ms(f.test.start_ns)} .. {iso_ms(f.test.end_ns)} are not "
            f"inside the test block"
        )
    return out


def fold_problems(m: Manifest) -> tuple[list[str], list[str]]:
    """What is wrong with the manifest's folds (see the module docstring), and notes
    (folds recorded without bounds: unverifiable)."""
    problems: list[str] = []
    notes: list[str] = []
    bounded = [f for f in m.folds if f.bounds is not None]
    unbounded = [f.fold for f in m.folds if f.bounds is None]
    if unbounded:
        notes.append(
            f"folds {unbounded} have no recorded bounds (a manifest from before fold "
            "bounds): their purge cannot be checked from the manifest"
        )
    for f in bounded:
        problems += _fold_problems(f, m.label.horizon_ns)
    ordered = sorted(m.folds, key=lambda f: f.test.start_ns)
    for a, b in pairwise(ordered):
        if a.test.end_ns >= b.test.start_ns:
            problems.append(f"folds {a.fold} and {b.fold}: their test ranges overlap")
        ab, bb = a.bounds, b.bounds
        if ab is not None and bb is not None and ab.test_block_end_ns > bb.test_block_start_ns:
            problems.append(f"folds {a.fold} and {b.fold}: their test blocks overlap")
    return problems, notes
