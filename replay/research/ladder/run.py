"""``tradeloop train DATA --ladder --out DIR``: every family of the ladder on the same
dataset and the same purged walk-forward folds, a model folder each, and one comparison.

The dataset is built once and split once; each family's walk-forward runs on those
splits, then ``train_family`` (the one training path: checks, assessment with the
logistic model's scores as its baseline, final fit, manifest, monitor reference, report)
writes ``OUT/<family>/``. A family that cannot be trained here (the logistic model on a
regression label, a failed leak check, too few rows) is listed with its reason; the
others go on.

Times, measured in this process: training is the walk-forward fits plus the final fit
(wall clock, one thread each); scoring is the served model (loaded from its folder as
the engine loads it) called on one row at a time over the last test rows
(``scoring.SCORING_ROWS``), the fastest chunk's mean per call (``scoring.time_scoring``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from engine.config import Config
from engine.errors import LeakageError, ModelError
from engine.signals.manifest import Estimate
from replay.files.discovery import DataSource
from replay.research.dataset import Dataset, build_dataset
from replay.research.ladder.compare import RULE, Comparison, Scored, compare
from replay.research.ladder.result import FamilyResult, FoldRows, Ladder, machine, utc
from replay.research.ladder.scoring import time_scoring
from replay.research.training.families import FAMILIES, SPECS, canonical
from replay.research.training.folds import FoldSplit, walk_forward_splits
from replay.research.training.run import TrainResult, train_family
from replay.research.training.significance import (
    ALPHA,
    REPLICATES,
    block_rows,
    label_overlap_rows,
    resampling,
)
from replay.research.training.walk_forward import WalkForward, walk_forward

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Trained:
    family: str
    result: TrainResult | None
    walk_seconds: float
    reason: str = ""


def run_ladder(
    cfg: Config,
    data: str | Path | DataSource,
    out: str | Path,
    *,
    families: Sequence[str] = FAMILIES,
    progress: bool | None = None,
    replicates: int = REPLICATES,
) -> Ladder:
    """Train every family of ``families`` (ladder order) on the same folds into
    ``out/<family>/``, compare them, write ``out/ladder.json`` and ``out/ladder.html``.

    Raises:
        ModelError: the data gives no walk-forward fold, or no family could be trained.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ds = build_dataset(cfg, data, progress=progress)
    splits, skipped = walk_forward_splits(cfg, ds)
    if not splits:
        raise ModelError("no walk-forward fold had enough rows: more data or fewer folds")
    order = [canonical(f) for f in families]
    classify = cfg.train.label == "classification"
    logistic: F64 | None = None
    trained: list[_Trained] = []
    disable = None if progress is None else not progress
    # the logistic model first when it is a baseline for the others; reported in its place
    fit_order = sorted(order, key=lambda f: f != "logistic") if classify else order
    bar = tqdm(fit_order, desc="ladder", unit="family", disable=disable)
    for family in bar:
        bar.set_postfix_str(family)
        fam_cfg = _for_family(cfg, family)
        started = time.perf_counter()
        try:
            # its folds' own bar under the ladder's ("walk-forward <family>", not kept)
            folds, score, fwd = walk_forward(fam_cfg, ds, family, splits, progress=progress)
        except ModelError as exc:
            trained.append(_Trained(family, None, 0.0, str(exc)))
            continue
        walk_seconds = time.perf_counter() - started
        if family == "logistic":
            logistic = score
        baseline = logistic if classify and family != "logistic" else None
        try:
            result = train_family(
                fam_cfg,
                ds,
                splits,
                folder / family,
                data_name=str(data),
                warnings=list(skipped),
                progress=False,
                walked=WalkForward(folds, score, fwd, baseline),
            )
        except (ModelError, LeakageError) as exc:
            trained.append(_Trained(family, None, walk_seconds, str(exc)))
            continue
        trained.append(_Trained(family, result, walk_seconds))
    by_family = {t.family: t for t in trained}
    ordered = [by_family[f] for f in order]
    if all(t.result is None for t in ordered):
        reasons = "; ".join(f"{t.family}: {t.reason}" for t in ordered)
        raise ModelError(f"no family of the ladder could be trained ({reasons})")
    ladder = _ladder(cfg, ds, splits, ordered, str(data), replicates)
    from replay.research.ladder.report import write_ladder

    write_ladder(folder, ladder)
    return ladder


def _for_family(cfg: Config, family: str) -> Config:
    return msgspec.structs.replace(cfg, train=msgspec.structs.replace(cfg.train, model=family))


def _ladder(
    cfg: Config,
    ds: Dataset,
    splits: list[FoldSplit],
    trained: list[_Trained],
    data: str,
    replicates: int,
) -> Ladder:
    t = cfg.train
    rows = np.concatenate([s.test for s in splits])
    bounds = np.concatenate(([0], np.cumsum([s.test.shape[0] for s in splits]))).astype(np.int64)
    overlap = label_overlap_rows(ds.ts[rows], ds.label_end_ns[rows], bounds)
    block = block_rows(overlap, int(rows.shape[0]))
    rs = resampling(bounds, block, t.seed, replicates)
    fwd = ds.forward_return[rows]
    ok = [x for x in trained if x.result is not None]
    scored = [
        Scored(x.family, x.result.oos_score, _statistics(x.result))
        for x in ok
        if x.result is not None
    ]
    comparison = compare(scored, fwd, rs)
    test_rows = ds.X[rows]
    results = [_family_result(x, comparison, test_rows) for x in trained]
    return Ladder(
        data=data,
        created_utc=utc(time.time_ns()),
        label=t.label,
        horizon_ns=t.horizon_ns,
        sample_interval_ns=t.sample_interval_ns,
        dataset_rows=len(ds),
        test_rows=int(rows.shape[0]),
        folds=[
            FoldRows(
                fold=s.fold,
                train_rows=int(s.train.shape[0]),
                validation_rows=int(s.validation.shape[0]),
                test_rows=int(s.test.shape[0]),
                test_start_utc=utc(s.test_start_ns),
                test_end_utc=utc(s.test_end_ns),
            )
            for s in splits
        ],
        block_rows=block,
        label_overlap_rows=overlap,
        replicates=replicates,
        alpha=ALPHA,
        primary="ic",
        rule=RULE,
        best=comparison.best,
        recommended=comparison.recommended,
        families=results,
        machine=machine(),
    )


def _statistics(result: TrainResult) -> dict[str, Estimate]:
    st = result.manifest.statistics
    return {} if st is None else dict(st.metrics)


def _family_result(x: _Trained, comparison: Comparison, test_rows: F64) -> FamilyResult:
    spec = SPECS[canonical(x.family)]
    if x.result is None:
        return FamilyResult(
            family=x.family,
            trained=False,
            reason=x.reason,
            fits=spec.fits,
            explanation=spec.explanation,
        )
    r = x.result
    m = r.manifest
    c = next(c for c in comparison.families if c.family == x.family)
    st = m.statistics
    edge = st.net_edge if st is not None else None
    timing = time_scoring(r.folder, m, test_rows)
    return FamilyResult(
        family=x.family,
        trained=True,
        folder=r.folder.name,
        kind=m.kind,
        output=m.output,
        fits=spec.fits,
        explanation=spec.explanation,
        metrics={k: c.metrics[k] for k in ("ic", "auc", "accuracy") if k in c.metrics},
        versus_best=c.versus_best,
        significantly_worse=c.significantly_worse,
        net_edge_bps=None if edge is None else edge.net_edge_bps,
        trades=None if edge is None else edge.trades,
        net_edge_note="" if st is None else st.net_edge_note,
        walk_forward_seconds=x.walk_seconds,
        final_fit_seconds=r.final_fit_seconds,
        training_seconds=x.walk_seconds + r.final_fit_seconds,
        scoring_us_per_row=timing.us_per_row,
        scoring_rows=timing.rows,
        scorer=timing.scorer,
        warnings=list(m.warnings),
    )
