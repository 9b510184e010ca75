"""``tradeloop train``: walk-forward training with purging and an embargo, out-of-sample
metrics, and a model folder the engine can load (model file + manifest + report).

Labels: a row at time ``t`` is labelled with the forward mid return read at the first
quote at or after ``t + horizon``; that quote's time is the row's label end ``L``. Rows
whose forward quote is later than ``t + horizon + label_tolerance`` are dropped in
``build_dataset`` (counted; the default tolerance is ``max(sample_interval, horizon /
10)``), so a "2 s" label never measures a 100 s return across a data gap.

The folds, purged and embargoed: ``replay/research/training/folds.py``; where they run:
``replay/research/training/walk_forward.py``.

The model is one family of the ladder (``[train] model``, ``families.py``): each fold
fits it on its training rows (early-stopped on its validation rows where the family
stops early), and every family but the logistic model is compared with the logistic
model on the same folds (classification labels). ``train_family`` is the path from a
built dataset and its folds on, shared with ``tradeloop train --ladder``.

Final model: refit on every usable row (all fit rows, no validation hold-out) for the
median of the folds' best iterations (epochs for the MLP; the fixed count of the tree
and the forest); ``train_range`` in the manifest is the first and last time of the rows
it was fit on. Its file (``model_files.py``): LightGBM text, linear JSON, or ONNX.

Degenerate folds: a metric that is undefined on a fold (no labelled rows, one class, no
"up" prediction, a constant score) is ``None``, never NaN. A fold that cannot be fit
(too few rows, one class in its training window) is skipped with a warning in the
manifest.

Warnings a user can act on (manifest ``warnings``, printed by ``tradeloop train`` and
listed in the report): the model no better than the logistic baseline out of sample (AUC
not above the baseline's), a degenerate fold (gbdt's best iteration 1: early stopping kept
only the first tree; or one class predicted on every test row), the SVM's fit capped, and a third or more of the
rows with features unlabelled (no forward quote in time, or inside the dead zone); and
from ``assessment.py``: the model not significantly better than chance, or than the
best baseline (one feature alone, the logistic model), and a negative expected net edge
per trade at the strategy's thresholds after fees and the spread (manifest
``statistics``: every out-of-sample metric with its interval and p-value).

Leaks: ``leakage.py``'s checks on the out-of-sample scores (an implausible AUC; scores
that know where the label ends) stop training with ``LeakageError`` before any model
file is written, unless ``[train] allow_failed_leak_checks`` names the check (then a
warning); the manifest's ``leak_checks`` records each outcome.

Counts (rows, iterations, nanoseconds) are written as JSON integers.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import msgspec
import numpy as np
import numpy.typing as npt

from engine.config import Config
from engine.errors import LeakageError, ModelError
from engine.features import FeatureSet
from engine.monitor import calibrate_drift
from engine.monitor.alarms import accuracy_reference, alarm_references, out_of_sample
from engine.monitor.drift import CALIBRATION_METHOD
from engine.monitor.scales import apply_scales, own_quote_mids, scales_of
from engine.monitor.stats import binning_of
from engine.signals.manifest import (
    DataFile,
    FoldReport,
    LabelSpec,
    Manifest,
    MonitorReference,
    ReferenceBins,
    sha256_file,
    write_manifest,
)
from replay.files.discovery import DataSource
from replay.research.dataset import Dataset, ExtraColumn, build_dataset
from replay.research.training.assessment import assess
from replay.research.training.families import (
    EARLY_STOPPED,
    canonical,
    output_of,
    score_threshold,
)
from replay.research.training.fit import _fit, min_data_in_leaf
from replay.research.training.folds import (
    FoldSplit,
    _fit_rows,
    _range,
    _train_problem,
    usable_rows,
    walk_forward_splits,
)
from replay.research.training.leakage import screen_leaks
from replay.research.training.metrics import Metrics, classification_metrics
from replay.research.training.model_files import write_model_file
from replay.research.training.report import _count, _write_report
from replay.research.training.trained import TrainedModel
from replay.research.training.walk_forward import (
    WalkForward,
    walk_forward,
    walk_forward_on_executor,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


# a third or more of the rows unlabelled: the label (horizon, dead zone, tolerance) does
# not fit the data, and the metrics rest on the remaining few
UNLABELED_WARN_FRACTION = 1 / 3


@dataclass
class TrainResult:
    manifest: Manifest
    folder: Path
    oos_score: F64
    oos_forward: F64
    baseline_metrics: Metrics
    final_fit_seconds: float = 0.0
    final: TrainedModel | None = None


def final_iterations(folds: list[FoldReport]) -> int:
    """The final model's LightGBM iterations: the median of the folds' early-stopped best
    iterations (rounded half up), so the refit on all rows needs no hold-out of its own."""
    return max(1, int(np.floor(np.median([f.best_iteration for f in folds]) + 0.5)))


def train(
    cfg: Config,
    data: str | Path | DataSource,
    out: str | Path,
    *,
    extra_columns: dict[str, ExtraColumn] | None = None,
    allow_lookahead: bool = False,
    label_tolerance_ns: int | None = None,
    progress: bool | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    client: Any = None,
) -> TrainResult:
    """Build the dataset, evaluate walk-forward, fit the final model, write the model folder.

    Args:
        data: a folder or file of ticks, or a ``DataSource`` (named files, a column
            mapping, a time range), as replay reads them.
        label_tolerance_ns: how late a label's forward quote may be (default
            ``max(sample_interval, horizon / 10)``); later rows are dropped and counted.
        workers: the folds on a local process pool of this many workers; 1 (the default)
            runs them here, one after the other. Each fit takes one thread, so no more
            workers than cores.
        scheduler: the folds on the Dask cluster of this scheduler address.
        client: the folds on the Dask cluster of this ``distributed.Client``.
        The model folder is the same bytes for each of these.

    Raises:
        LeakageError: an extra column looks ahead (unless ``allow_lookahead``).
        ModelError: not enough data for the split, one class in all the data, or a fold
            that failed on a worker.
    """
    ds = build_dataset(
        cfg,
        data,
        extra_columns=extra_columns,
        label_tolerance_ns=label_tolerance_ns,
        progress=progress,
    )
    if ds.lookahead and not allow_lookahead:
        raise LeakageError(
            str(data),
            f"columns {ds.lookahead} change when future data is removed: they look "
            "ahead and would score well in research and fail live",
        )
    warnings = [
        f"look-ahead column {c!r} (audit failed): results are not achievable live"
        for c in ds.lookahead
    ]
    splits, skipped = walk_forward_splits(cfg, ds)
    warnings += skipped
    return train_family(
        cfg,
        ds,
        splits,
        out,
        data_name=str(data),
        warnings=warnings,
        progress=progress,
        workers=workers,
        scheduler=scheduler,
        client=client,
    )


def train_family(
    cfg: Config,
    ds: Dataset,
    splits: list[FoldSplit],
    out: str | Path,
    *,
    data_name: str,
    warnings: list[str],
    progress: bool | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    client: Any = None,
    walked: WalkForward | None = None,
) -> TrainResult:
    """``train`` from a built dataset and its folds on: the ``[train] model`` family's
    walk-forward (or ``walked``, already run on these ``splits``: the ladder's, with the
    logistic model's scores as the baseline), the checks, the final fit and the folder.

    Raises:
        LeakageError: a leak check failed and was not allowed by name.
        ModelError: no fold could be fit, or the final model cannot be.
    """
    t = cfg.train
    warnings = list(warnings)
    dz = t.dead_zone_bps * 1e-4
    family = canonical(t.model)
    threshold = score_threshold(family, t.label)
    baseline: Metrics = {}
    baseline_score: F64 | None = None  # the logistic model's out-of-sample scores, if fit
    if walked is not None:
        folds, oos_score, oos_fwd = walked.folds, walked.score, walked.forward
        baseline_score = walked.baseline_score
        if baseline_score is not None:
            baseline = classification_metrics(baseline_score, oos_fwd, dz, 0.5)
    elif workers <= 1 and scheduler is None and client is None:
        folds, oos_score, oos_fwd = walk_forward(cfg, ds, t.model, splits, progress)
        if has_logistic_baseline(cfg):
            _, baseline_score, b_fwd = walk_forward(cfg, ds, "logistic", splits, progress)
            baseline = classification_metrics(baseline_score, b_fwd, dz, 0.5)
    else:
        wf = walk_forward_on_executor(
            cfg, ds, splits, workers=workers, scheduler=scheduler, client=client, progress=progress
        )
        folds, oos_score, oos_fwd = wf.folds, wf.score, wf.forward
        baseline_score = wf.baseline_score
        if wf.baseline_score is not None:
            baseline = classification_metrics(wf.baseline_score, oos_fwd, dz, 0.5)
    overall = classification_metrics(oos_score, oos_fwd, dz, threshold)
    warnings += baseline_warnings(overall, baseline)
    warnings += fold_warnings(family, folds)
    unlabeled, with_features = unlabeled_rows(cfg, ds)
    if with_features and unlabeled >= UNLABELED_WARN_FRACTION * with_features:
        warnings.append(
            f"{unlabeled:,} of {with_features:,} rows with features ({unlabeled / with_features:.0%}) "
            f"have no label (no quote within {ds.label_tolerance_ns / 1e9:g}s after the "
            f"{t.horizon_ns / 1e9:g}s horizon, or a return within the {t.dead_zone_bps:g} bps "
            "dead zone, e.g. an unchanged mid): the metrics rest on the rest; a longer "
            "horizon labels more rows"
        )
    # the leak checks (replay/research/training/leakage.py): a failure not allowed by name
    # in [train] allow_failed_leak_checks stops here, before any model file is written
    leaks = screen_leaks(cfg, ds, splits, oos_score, overall, data_name)
    warnings += leaks.warnings
    # intervals, p-values, baselines and the net edge after costs (assessment.py)
    assessment = assess(cfg, ds, splits, oos_score, oos_fwd, baseline_score, family=family)
    warnings += assessment.warnings
    usable = usable_rows(ds)
    fit_rows = _fit_rows(cfg, ds, usable)
    problem = _train_problem(cfg, ds, fit_rows)
    if problem:
        raise ModelError(f"the final model cannot be fit: {problem}")
    rounds = final_iterations(folds) if family in EARLY_STOPPED else 0
    started = time.perf_counter()
    final = _fit(cfg, ds, t.model, fit_rows, None, rounds)
    final_fit_seconds = time.perf_counter() - started
    warnings += list(final.notes)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    fs = FeatureSet(list(cfg.features))
    written = write_model_file(
        folder, final, ds.feature_names, ds.X[fit_rows], output_of(family, t.label)
    )
    model_file, importance = written.model_file, written.importance
    reference = monitor_reference(cfg, ds, usable, final, overall)
    if reference.score.drift_threshold is None:
        warnings.append(
            f"{reference.rows} usable rows, fewer than two [monitor] drift_window = "
            f"{reference.window}: no drift thresholds, the monitor will not alarm on drift"
        )
    elif (reference.false_alarm_bound or 0.0) > reference.configured_false_alarm_rate:
        warnings.append(
            f"{reference.independent_windows} disjoint drift windows of {reference.window} "
            f"rows cannot state a false-alarm rate of {reference.configured_false_alarm_rate:g}: "
            f"the drift thresholds are the held-out maxima and their stated bound is "
            f"{reference.false_alarm_bound:.4f} (more rows or a shorter drift_window)"
        )
    # dataset and final-fit facts ride in ``metrics`` until the manifest has a home for them
    facts: Metrics = {
        "data_rows": len(ds),
        "data_usable_rows": int(usable.shape[0]),
        "data_unlabeled_rows": unlabeled,
        "data_late_label_rows": int(ds.late_label_rows),
        "data_label_tolerance_ns": int(ds.label_tolerance_ns),
        "final_fit_rows": int(fit_rows.shape[0]),
        "final_iterations": int(final.iterations),
    }
    if final.booster is not None:
        facts["final_min_data_in_leaf"] = min_data_in_leaf(cfg, int(fit_rows.shape[0]))
    manifest = Manifest(
        name=folder.name,
        kind=written.kind,
        model_file=model_file,
        model_sha256=sha256_file(folder / model_file),
        output=written.output,
        feature_names=ds.feature_names,
        feature_fingerprint=fs.fingerprint,
        feature_specs=[msgspec.to_builtins(s) for s in cfg.features],
        label=LabelSpec(kind=t.label, horizon_ns=t.horizon_ns, dead_zone_bps=t.dead_zone_bps),
        train_range=_range(ds.ts, fit_rows),
        folds=folds,
        metrics={
            **{f"oos_{k}": v for k, v in overall.items()},
            **{f"baseline_logistic_oos_{k}": v for k, v in baseline.items()},
            **facts,
        },
        feature_importance=importance,
        data_files=[
            DataFile(path=p.name, sha256=sha256_file(p), bytes=p.stat().st_size) for p in ds.files
        ],
        library_versions=library_versions(written.onnx is not None),
        warnings=warnings,
        reference=reference,
        leak_checks=leaks.checks,
        statistics=assessment.statistics,
        family=family,
        onnx=written.onnx,
    )
    write_manifest(folder, manifest)
    _write_report(folder, manifest, oos_score, oos_fwd)
    return TrainResult(manifest, folder, oos_score, oos_fwd, baseline, final_fit_seconds, final)


def has_logistic_baseline(cfg: Config) -> bool:
    """Every family but the logistic model itself is compared with it on the same folds
    (a classification label: the logistic model needs classes)."""
    return canonical(cfg.train.model) != "logistic" and cfg.train.label == "classification"


def library_versions(onnx: bool) -> dict[str, str]:
    """The libraries that made the model file (and scikit-learn's and the ONNX
    converter's for an ONNX model)."""
    out = {
        "lightgbm": lgb.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "tradeloop": _version(),
    }
    if onnx:
        import onnx as onnx_lib
        import skl2onnx
        import sklearn

        out.update(onnx=onnx_lib.__version__, skl2onnx=skl2onnx.__version__, sklearn=sklearn.__version__)  # fmt: skip
    return out


def baseline_warnings(overall: Metrics, baseline: Metrics) -> list[str]:
    """A warning when the model's out-of-sample AUC is not above the logistic baseline's
    (both defined); nothing without a baseline."""
    ours, theirs = overall.get("auc"), baseline.get("auc")
    if ours is None or theirs is None or ours > theirs:
        return []
    return [
        f"out-of-sample AUC {ours:.3f} is no better than the logistic baseline's "
        f"{theirs:.3f}: the model adds nothing the logistic model lacks on this data; "
        'more data, or model = "logistic"'
    ]


def fold_warnings(kind: str, folds: list[FoldReport]) -> list[str]:
    """A warning per degenerate fold: LightGBM's best iteration 1 (early stopping kept
    only the first tree: nothing learnt), or every test row scored as one class."""
    out: list[str] = []
    for f in folds:
        if canonical(kind) == "gbdt" and f.best_iteration <= 1:
            out.append(
                f"fold {f.fold}: best iteration {f.best_iteration} of {f.train_rows:,} training "
                f"rows (min_data_in_leaf {_count(f.metrics.get('min_data_in_leaf'))}): no tree "
                "after the first improved the validation loss, the fold learnt nothing"
            )
        up, rows = f.metrics.get("predicted_up_rows"), f.metrics.get("rows")
        if up is not None and rows and up in (0, rows):
            side = "up" if up else "not up"
            out.append(
                f"fold {f.fold}: every one of its {int(rows):,} test rows predicted {side!r}"
            )
    return out


def unlabeled_rows(cfg: Config, ds: Dataset) -> tuple[int, int]:
    """Rows with every feature but no label (no forward quote in time, or for
    classification a return inside the dead zone), and rows with every feature."""
    with_features = ~np.isnan(ds.X).any(axis=1)
    fwd = ds.forward_return[with_features]
    labeled = ~np.isnan(fwd)
    if cfg.train.label == "classification":
        labeled &= np.abs(np.nan_to_num(fwd)) > cfg.train.dead_zone_bps * 1e-4
    n = int(with_features.sum())
    return n - int(labeled.sum()), n


def monitor_reference(
    cfg: Config, ds: Dataset, rows: I64, model: TrainedModel, oos: Metrics | None = None
) -> MonitorReference:
    """The model monitor's reference: bins of every feature and of the final model's
    score over ``rows``, on the scale each is monitored on (``engine.monitor.scales``:
    tick-grid features in ticks at the row's own mid, price levels as their distance from
    it), one bin per value where a series takes few, with PSI thresholds calibrated on
    held-out time blocks of them (``engine.monitor.drift``: each block's windows against
    bins of the others); and the low-IC, accuracy and losing-streak alarms calibrated from the
    out-of-sample figures ``oos`` (``engine.monitor.alarms``), each with its rate.

    ``rows`` are every usable row (all features and a label), not only the rows the
    classifier was fit on: the monitor sees every sampled row, and dropping the dead
    zone (at 0 bps, every unchanged mid) would skew features tied to quiet markets.
    """
    m = cfg.monitor
    values = np.column_stack((ds.X[rows], model.predict(ds.X[rows])))
    specs = [msgspec.to_builtins(s) for s in cfg.features]
    scales = [*scales_of(ds.feature_names, specs), "none"]
    if any(s != "none" for s in scales):
        q, inst = ds.quotes, ds.instrument[rows]
        mid = own_quote_mids(q.ts, q.instrument, q.mid, ds.ts[rows], inst)
        tick = np.array([i.tick_size for i in cfg.instruments], np.float64)[inst]
        values = apply_scales(values, scales, mid, tick)
    refs, cal = calibrate_drift(values, m.reference_bins, m.drift_window, m.false_alarm_rate)
    bins = [
        ReferenceBins(
            edges=edges.tolist(),
            fractions=fractions.tolist(),
            drift_threshold=None if cal is None else cal.thresholds[j],
            conventional_false_alarm_rates={} if cal is None else cal.series_conventional_rates[j],
            scale=scales[j],
            binning=binning_of(values[:, j], m.reference_bins),
        )
        for j, (edges, fractions) in enumerate(refs)
    ]
    measured = {f"oos_{k}": v for k, v in (oos or {}).items()}
    oos_figures = out_of_sample(measured, cfg.train.horizon_ns, cfg.train.sample_interval_ns)
    low_ic, streak = alarm_references(oos_figures, m)
    return MonitorReference(
        rows=int(rows.shape[0]),
        sample_interval_ns=cfg.train.sample_interval_ns,
        label_tolerance_ns=ds.label_tolerance_ns,
        window=m.drift_window,
        configured_false_alarm_rate=m.false_alarm_rate,
        false_alarm_rate=None if cal is None else cal.false_alarm_rate,
        windows=0 if cal is None else cal.windows,
        conventional_false_alarm_rates={} if cal is None else cal.conventional_rates,
        calibration_method=CALIBRATION_METHOD,
        calibration_blocks=0 if cal is None else cal.blocks,
        calibration_block_rows=[] if cal is None else cal.block_rows,
        independent_windows=0 if cal is None else cal.independent_windows,
        effective_windows=0 if cal is None else cal.effective_windows,
        false_alarm_bound=None if cal is None else cal.false_alarm_bound,
        features=dict(zip(ds.feature_names, bins[:-1], strict=True)),
        score=bins[-1],
        tick_sizes={i.symbol: i.tick_size for i in cfg.instruments},
        low_ic=low_ic,
        losing_streak=streak,
        accuracy=accuracy_reference(oos_figures, m),
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tradeloop")
    except PackageNotFoundError:
        return "unknown"
