"""Out-of-sample metrics of a model's scores against forward returns: accuracy,
precision, recall and AUC outside the dead zone, the information coefficient (Spearman)
on every row. A metric undefined on the rows is ``None``, never NaN."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Metrics = dict[str, float | int | None]


@dataclass(frozen=True)
class Ranking:
    """A series sorted once: ``order`` (rows by value), the tie groups in that order
    (``first`` row of each, ``size``), and every row's rank 0..n-1 in row order, ties
    given their average rank (so the statistics match the textbook definitions)."""

    order: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    ranks: F64


def ranking(x: F64) -> Ranking:
    n = x.shape[0]
    # the average rank of a tie group does not depend on the order inside it: any sort
    order = np.argsort(x)
    xs = x[order]
    first = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1]))) if n else order[:0]
    size = np.diff(np.append(first, n))
    ranks = np.empty(n)
    ranks[order] = np.repeat((2 * first + size - 1) / 2.0, size)
    return Ranking(order, first, size, ranks)


def _ranks(x: F64) -> F64:
    return ranking(x).ranks


def auc(y: npt.NDArray[np.int64], score: F64) -> float | None:
    """Area under the ROC curve (ties count half); None unless both classes occur."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = _ranks(score)
    return float((r[pos].sum() - n_pos * (n_pos - 1) / 2.0) / (n_pos * n_neg))


def spearman(a: F64, b: F64) -> float | None:
    """Spearman rank correlation; None for fewer than 3 rows or a constant input."""
    if a.shape[0] < 3:
        return None
    return rank_correlation(_ranks(a), _ranks(b))


def rank_correlation(ra: F64, rb: F64) -> float | None:
    """The Pearson correlation of two rank series (``spearman`` from ranks already
    computed); None for fewer than 3 rows or a constant series."""
    if ra.shape[0] < 3 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def classification_metrics(score: F64, fwd: F64, dead_zone: float, threshold: float) -> Metrics:
    """Accuracy, precision, recall, AUC on rows outside the dead zone; IC on all rows.

    A metric undefined on these rows is None: accuracy with no labelled row, precision
    with no "up" prediction, recall with no "up" label, AUC without both classes, IC with
    fewer than 3 rows or a constant score or return. Row counts are always defined.
    """
    labeled = np.abs(fwd) > dead_zone
    y = (fwd[labeled] > 0).astype(np.int64)
    pred = (score[labeled] >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    return {
        "rows": int(score.shape[0]),
        "labeled_rows": int(y.shape[0]),
        "predicted_up_rows": int((score >= threshold).sum()),
        "accuracy": _ratio(int((pred == y).sum()), int(y.shape[0])),
        "precision": _ratio(tp, int(pred.sum())),
        "recall": _ratio(tp, int(y.sum())),
        "auc": auc(y, score[labeled]),
        "ic": spearman(score, fwd),
    }
