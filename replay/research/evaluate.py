"""``tradeloop evaluate MODEL DATA --out DIR``: out-of-sample figures of a model folder on
data after its training range (a model imported from elsewhere has none).

How the figures are recorded without breaking the manifest's hash: the evaluation writes a
new model folder, the same model file (same ``model_sha256``) with a re-written manifest,
so the evaluated model is a new registry version (versions are content-addressed and
immutable; the imported one stays what it was). In that manifest:

- ``folds`` gains one fold: ``train`` = the model's stated training range, ``test`` = the
  evaluation data's span, ``train_rows`` 0 (the rows it was fit on are not ours to count),
  ``test_rows`` and ``metrics`` as measured;
- ``metrics`` gets the figures as ``oos_*`` when the manifest had none (an imported
  model), else as ``evaluation_*`` beside training's own;
- ``data_files`` names the evaluation files with their sha256, and a line in ``warnings``
  says where the figures came from.

Data overlapping the training range (any tick at or before ``train_range.end_ns``) is
refused: figures on it would not be out of sample.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import msgspec
import numpy as np

from engine.config import ModelConfig, config_from_dict, load_config
from engine.errors import ConfigError, DataError
from engine.plugins import load_model
from engine.signals.manifest import (
    DataFile,
    FoldReport,
    Manifest,
    TimeRange,
    read_manifest,
    read_verified_model,
    sha256_file,
    write_manifest,
)
from replay.files.init_config import with_data_instruments
from replay.research.dataset import build_dataset
from replay.research.training.metrics import classification_metrics

IMPORT_WARNING_PREFIX = "imported from "


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``tradeloop evaluate``'s arguments."""
    parser.add_argument("model", metavar="MODEL", help="model folder (manifest + model file)")
    parser.add_argument("data", metavar="DATA", help="tick files after the model's training range")
    parser.add_argument("--out", required=True, help="the evaluated model folder to write")
    parser.add_argument("--config", help="config for the instruments and the sampling "
                        "(default: the bundled ML config; the features are the manifest's)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def cmd_evaluate(args: argparse.Namespace) -> int:
    manifest = evaluate(args.model, args.data, args.out, config_path=args.config, force=args.force)
    fold = manifest.folds[-1]
    shown = ", ".join(
        f"{k} {v:.4g}" for k, v in fold.metrics.items() if v is not None and k in _SHOWN
    )
    print(f"wrote {args.out}: {fold.test_rows} rows after the training range; {shown}")
    print(f"add it to the registry: tradeloop models add {args.out}")
    return 0


_SHOWN = ("auc", "ic", "accuracy", "rows")


def evaluate(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    config_path: str | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> Manifest:
    """Measure ``model_dir`` on ``data`` and write the evaluated folder ``out``.

    Raises:
        DataError: the data reaches into the training range, or gives no labelled row.
        ConfigError: ``out`` exists (without ``force``).
        ModelError, PluginLoadError: the folder does not load.
    """
    src = Path(model_dir)
    manifest = read_manifest(src)
    model = load_model(ModelConfig(kind=manifest.kind, name=manifest.name, path=str(src)))
    target = Path(out)
    if target.exists() and not force:
        raise ConfigError("--out", f"{target} exists (--force replaces it)")
    base, _ = load_config(config_path or str(resources.files("replay") / "ml_config.toml"))
    doc = msgspec.to_builtins(base)
    doc["features"] = manifest.feature_specs
    doc["train"] = {**doc["train"], "features": list(manifest.feature_names),
                    "horizon": manifest.label.horizon_ns,
                    "dead_zone_bps": manifest.label.dead_zone_bps, "label": manifest.label.kind}  # fmt: skip
    doc["model"] = None
    config, _, _ = with_data_instruments(config_from_dict(doc), data)
    ds = build_dataset(config, data, progress=progress)
    end = manifest.train_range.end_ns
    if ds.quotes.ts.shape[0] == 0:
        raise DataError(str(data), "no quotes: nothing to evaluate on")
    first = int(ds.quotes.ts.min())
    if first <= end:
        raise DataError(str(data), f"starts at {first} ns, at or before the model's training "
                        f"end {end} ns: figures on it would not be out of sample (give data "
                        "after the training range)")  # fmt: skip
    scores = model.predict(ds.X)
    usable = np.isfinite(scores) & np.isfinite(ds.forward_return)
    if not usable.any():
        raise DataError(str(data), "no row with both a score and a label")
    threshold = 0.5 if manifest.output == "probability" else 0.0
    measured = classification_metrics(
        scores[usable], ds.forward_return[usable], manifest.label.dead_zone_bps * 1e-4, threshold
    )
    span = TimeRange(start_ns=int(ds.ts[usable].min()), end_ns=int(ds.ts[usable].max()))
    fold = FoldReport(
        fold=len(manifest.folds),
        train=manifest.train_range,
        validation=TimeRange(start_ns=end, end_ns=end),
        test=span,
        train_rows=0,
        test_rows=int(usable.sum()),
        best_iteration=0,
        metrics={k: None if v is None else float(v) for k, v in measured.items()},
    )
    had_figures = any(k.startswith("oos_") for k in manifest.metrics) or bool(manifest.folds)
    prefix = "evaluation_" if had_figures else "oos_"
    note = (
        f"out-of-sample figures from `tradeloop evaluate` on {len(ds.files)} file(s), "
        f"{fold.test_rows} rows after the training range (fold {fold.fold})"
    )
    evaluated = msgspec.structs.replace(
        manifest,
        folds=[*manifest.folds, fold],
        metrics={**manifest.metrics, **{f"{prefix}{k}": v for k, v in fold.metrics.items()}},
        data_files=[
            *manifest.data_files,
            *(
                DataFile(path=p.name, sha256=sha256_file(p), bytes=p.stat().st_size)
                for p in ds.files
            ),
        ],
        warnings=[w for w in manifest.warnings if not w.startswith(IMPORT_WARNING_PREFIX)] + [note],
    )
    _write_folder(src, target, manifest, evaluated)
    return evaluated


def _write_folder(src: Path, target: Path, manifest: Manifest, evaluated: Manifest) -> None:
    _, model_bytes = read_verified_model(src, manifest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (tmp / manifest.model_file).write_bytes(model_bytes)
        write_manifest(tmp, evaluated)
        load_model(ModelConfig(kind=evaluated.kind, name=evaluated.name, path=str(tmp)))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
