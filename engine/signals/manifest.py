"""Model manifests: what a model was trained on, pinned so it cannot be run on anything else.

A model folder holds the model file and ``manifest.json``. Loading checks the file's
sha256 against the manifest before parsing it, and the engine checks the manifest's
feature fingerprint and names against the running ``FeatureSet`` before any data flows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import ModelError

MANIFEST_FILE = "manifest.json"


class LabelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Forward mid log-return over ``horizon_ns``; ``classification``: 1 above
    ``dead_zone_bps``, 0 below minus it, rows inside dropped from training."""

    kind: str = "classification"
    horizon_ns: int = 5_000_000_000
    dead_zone_bps: float = 0.0


class TimeRange(msgspec.Struct, frozen=True, kw_only=True):
    start_ns: int
    end_ns: int


class FoldReport(msgspec.Struct, frozen=True, kw_only=True):
    fold: int
    train: TimeRange
    validation: TimeRange
    test: TimeRange
    train_rows: int
    test_rows: int
    best_iteration: int
    metrics: dict[str, float]


class DataFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    sha256: str
    bytes: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything needed to check that a model runs on what it was trained on."""

    name: str
    kind: str  # "lightgbm" | "linear"
    model_file: str
    model_sha256: str
    output: str  # "probability" | "raw"
    feature_names: list[str]
    feature_fingerprint: str
    feature_specs: list[dict[str, Any]]
    label: LabelSpec
    train_range: TimeRange
    folds: list[FoldReport] = []
    metrics: dict[str, float] = {}
    feature_importance: dict[str, float] = {}
    data_files: list[DataFile] = []
    library_versions: dict[str, str] = {}
    warnings: list[str] = []


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: str | Path) -> Manifest:
    """Raises: ModelError: missing or invalid manifest."""
    path = Path(folder) / MANIFEST_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=Manifest)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read manifest: {exc.strerror}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ModelError(f"{path}: invalid manifest: {exc}") from exc


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST_FILE
    path.write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
    return path


def verified_model_path(folder: str | Path, manifest: Manifest) -> Path:
    """The model file, after checking its sha256 against the manifest.

    Raises:
        ModelError: the file is missing or its bytes differ from what was trained.
    """
    path = Path(folder) / manifest.model_file
    if not path.is_file():
        raise ModelError(f"{path}: model file missing")
    digest = sha256_file(path)
    if digest != manifest.model_sha256:
        raise ModelError(f"{path}: sha256 {digest[:12]}... does not match the manifest's "
                         f"{manifest.model_sha256[:12]}...: the file was changed after training")  # fmt: skip
    return path


def check_against_features(manifest: Manifest, names: tuple[str, ...], fingerprint: str) -> None:
    """Refuse a model whose features differ from the running feature set.

    Raises:
        ModelError: fingerprint or feature names/order differ.
    """
    missing = [n for n in manifest.feature_names if n not in names]
    if missing:
        raise ModelError(f"model {manifest.name!r} needs features {missing} that the running feature "
                         f"set does not declare")  # fmt: skip
    if fingerprint != manifest.feature_fingerprint:
        raise ModelError(f"model {manifest.name!r} was trained on feature set {manifest.feature_fingerprint[:12]}... "
                         f"but the config declares {fingerprint[:12]}...: same names, different "
                         "kinds, parameters or order")  # fmt: skip
