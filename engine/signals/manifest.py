"""Model manifests: what a model was trained on, pinned so it cannot be run on anything else.

A model folder holds the model file, ``manifest.json`` and ``manifest.sha256``:

- ``manifest.sha256`` covers the manifest's exact bytes, one line in ``sha256sum`` format
  (``<64 hex>  manifest.json``), so ``sha256sum -c manifest.sha256`` checks a folder by
  hand too. It is checked before the manifest is decoded: an edited or damaged manifest
  is refused as such, not half-read. Write both with :func:`write_manifest`.
- ``manifest.json`` is decoded strictly (unknown fields refused) and every field
  validated: ``kind`` and ``output`` are literals, hashes are 64 lowercase hex digits,
  ``model_file`` is a plain file name in the folder, numbers are finite and counts
  non-negative. A metric that was undefined (one class in a fold) is ``null``.
- ``model_sha256`` covers the model file, checked before its bytes are parsed; the
  engine then checks the manifest's feature fingerprint and names against the running
  ``FeatureSet`` before any data flows.

The hashes catch damage and edits after training; they are not a signature.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from engine.errors import ModelError

MANIFEST_FILE = "manifest.json"
MANIFEST_HASH_FILE = "manifest.sha256"

_MAX = sys.float_info.max
Finite = Annotated[float, msgspec.Meta(ge=-_MAX, le=_MAX)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0, le=_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0)]
TimeNs = Annotated[int, msgspec.Meta(ge=0)]
Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Text = Annotated[str, msgspec.Meta(min_length=1)]
FileName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=255)]
# None: the metric is undefined on that data (one class, no predictions, constant score)
Metric = Finite | None

_HASH_LINE = re.compile(rb"([0-9a-f]{64})  " + re.escape(MANIFEST_FILE.encode()) + rb"\n")


class LabelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Forward mid log-return over ``horizon_ns``; ``classification``: 1 above
    ``dead_zone_bps``, 0 below minus it, rows inside dropped from training."""

    kind: Literal["classification", "regression"] = "classification"
    horizon_ns: Annotated[int, msgspec.Meta(gt=0)] = 5_000_000_000
    dead_zone_bps: NonNegative = 0.0


class TimeRange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    start_ns: TimeNs
    end_ns: TimeNs

    def __post_init__(self) -> None:
        if self.end_ns < self.start_ns:
            raise ValueError(f"time range ends ({self.end_ns}) before it starts ({self.start_ns})")


class FoldBounds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a walk-forward fold's purge and embargo cut (``replay.research.training.folds``):
    enough to check the purge from the manifest alone (``tradeloop models show --folds``).

    The fold tests on the block ``[test_block_start_ns, test_block_end_ns)``. A row is fit
    on only if its label ends before ``purge_before_ns`` (the block's start minus
    ``embargo_ns``); a training row also only if its label ends before
    ``validation_purge_before_ns`` (the early-stopping rows' first time minus the embargo).
    ``*_label_end_ns``: the latest label end of the fold's training and early-stopping
    rows (the time of the quote each label reads).
    """

    test_block_start_ns: TimeNs
    test_block_end_ns: TimeNs
    embargo_ns: TimeNs
    purge_before_ns: int
    validation_purge_before_ns: int
    train_label_end_ns: TimeNs
    validation_label_end_ns: TimeNs


class FoldReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fold: Count
    train: TimeRange
    validation: TimeRange
    test: TimeRange
    train_rows: Count
    test_rows: Count
    best_iteration: Count
    metrics: dict[str, Metric]
    bounds: FoldBounds | None = None  # absent in manifests from before fold bounds


class DataFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: Text
    sha256: Sha256
    bytes: Count


Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


DriftScale = Literal[
    "none", "price_offset", "price_ticks", "return_ticks", "relative_ticks", "bps_ticks"
]


class ReferenceBins(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One series' distribution on the training rows, for drift (PSI) checks.

    A value ``v`` falls in bin ``searchsorted(edges, v, side="right")``: bin 0 is
    ``v < edges[0]``, bin k is ``edges[k-1] <= v < edges[k]``. ``edges`` are the distinct
    interior quantiles (fewer than asked for when values repeat) or, with ``binning =
    "values"``, half way between the series' few distinct values; ``fractions`` the share
    of rows in each of the ``len(edges) + 1`` bins, counted with that same rule, on values
    put on ``scale`` first (``engine.monitor.scales``: spreads in ticks, prices as their
    distance from the mid in ticks).
    ``drift_threshold`` is the calibrated PSI alarm threshold (None: too few rows to
    calibrate); ``conventional_false_alarm_rates`` the share of the calibration windows
    whose PSI exceeds the conventional 0.1 and 0.25 (keys ``"0.1"``, ``"0.25"``).
    """

    edges: list[Finite]
    fractions: Annotated[list[Fraction], msgspec.Meta(min_length=1)]
    drift_threshold: NonNegative | None = None
    conventional_false_alarm_rates: dict[str, Fraction] = {}
    # the scale the values were put on before binning (engine.monitor.scales), and
    # "values": one bin per distinct value; absent in manifests from before: as they came
    scale: DriftScale = "none"
    binning: Literal["quantiles", "values"] = "quantiles"

    def __post_init__(self) -> None:
        if len(self.fractions) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) + 1} fractions")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must increase strictly")
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ValueError(f"fractions sum to {sum(self.fractions)}, not 1")


class LowIcReference(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The low-IC alarm for training's ``[monitor]`` window and false-alarm rate
    (``engine.monitor.alarms``): ``threshold = expected_ic - z * standard_error`` with
    ``expected_ic`` the out-of-sample IC over ``training_predictions`` and the standard
    error of the window's IC minus training's, each over its effective labels
    (predictions / ``labels_per_horizon``); ``false_alarm_rate`` is the stated chance
    that a window of unchanged data falls below it. ``calibrated`` false: a fixed
    ``ic_min`` from the config, with the rate it has."""

    expected_ic: Finite
    training_predictions: Count
    labels_per_horizon: Annotated[float, msgspec.Meta(ge=1.0, le=_MAX)]
    window: Count
    effective_labels: NonNegative
    standard_error: NonNegative
    threshold: Finite
    false_alarm_rate: Fraction
    calibrated: bool = True


class AccuracyReference(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The accuracy alarm for training's ``[monitor]`` window and false-alarm rate
    (``engine.monitor.alarms``): ``threshold = expected_accuracy - z * standard_error``,
    ``expected_accuracy`` the out-of-sample accuracy over ``training_labelled`` labelled
    predictions, the standard error of a window's hit ratio minus training's, each
    ``p (1 - p)`` over its effective labels (labelled predictions / ``labels_per_horizon``),
    stated at ``window_labelled`` labelled predictions per window of ``window`` (the
    monitor recomputes it at each window's own count); ``false_alarm_rate`` is the stated
    chance that a window of unchanged data falls below it. ``margin`` set: a fixed
    ``accuracy_margin`` from the config (``threshold = expected_accuracy - margin``),
    with the rate it has."""

    expected_accuracy: Fraction
    training_labelled: Count
    labels_per_horizon: Annotated[float, msgspec.Meta(ge=1.0, le=_MAX)]
    window: Count
    window_labelled: NonNegative
    effective_labels: NonNegative
    standard_error: NonNegative
    threshold: Finite
    false_alarm_rate: Fraction
    margin: Fraction | None = None


class LosingStreakReference(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The losing-streak alarm for training's ``[monitor]``: ``length`` losing round trips
    in a row, the shortest whose chance within ``window`` round trips (each a loss with
    probability ``1 - hit_ratio``, the out-of-sample accuracy over
    ``labelled_predictions``, averaged over its standard error) is at most the configured
    rate; ``false_alarm_rate`` is that chance. ``calibrated`` false: a fixed length."""

    hit_ratio: Fraction
    hit_ratio_standard_error: NonNegative
    labelled_predictions: Count
    window: Annotated[int, msgspec.Meta(ge=1)]
    length: Annotated[int, msgspec.Meta(ge=1)]
    false_alarm_rate: Fraction
    calibrated: bool = True


class MonitorReference(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the model monitor compares live data with, written by ``tradeloop train``.

    ``rows``: training rows the bins were counted on (every usable row of the final
    fit's span). Rows are sampled every ``sample_interval_ns`` per instrument and labels
    read at most ``label_tolerance_ns`` late, as in training. Drift thresholds are
    calibrated for windows of ``window`` consecutive rows (``engine.monitor.drift``).

    ``calibration_method``:

    - ``"time_blocks"``: the rows were cut into ``calibration_blocks`` contiguous time
      blocks of ``calibration_block_rows`` rows; each block's ``windows`` (all blocks
      together) were scored against bins counted on the other blocks, so no window was
      scored against bins of its own rows. ``false_alarm_rate``: the share of those
      held-out windows above the thresholds on at least one series.
      ``false_alarm_bound``: the stated rate for new unchanged windows, ``(j + 1) /
      (n + 1)`` with j disjoint windows allowed over, ``n`` the ``effective_windows``
      (the disjoint ones after the dependence correction; ``independent_windows`` in
      manifests without it); when the thresholds are the series' maxima, ``(m + 1) / (n +
      1)`` with m the windows holding a maximum. At most the configured rate, unless too
      few rows: training then warns.
    - ``"in_sample"``: a manifest from before held-out calibration (the field is absent):
      thresholds were taken on windows of the very rows the bins were counted on, which
      understates the rate on new data (1.5-3 % measured at a stated 1 %). Such a
      manifest still loads and its thresholds still alarm, but no bound is stated for
      them (``false_alarm_bound`` is None) and the monitor logs that the model should
      be retrained for one.

    ``conventional_false_alarm_rates``: the conventional fixed thresholds' shares on the
    same windows, for comparison.
    """

    rows: Count
    sample_interval_ns: Annotated[int, msgspec.Meta(gt=0)]
    label_tolerance_ns: TimeNs
    window: Annotated[int, msgspec.Meta(gt=0)]
    configured_false_alarm_rate: Fraction
    false_alarm_rate: Fraction | None = None
    windows: Count = 0
    conventional_false_alarm_rates: dict[str, Fraction] = {}
    calibration_method: Literal["in_sample", "time_blocks"] = "in_sample"
    calibration_blocks: Count = 0
    calibration_block_rows: list[Count] = []
    independent_windows: Count = 0
    false_alarm_bound: Fraction | None = None
    features: dict[str, ReferenceBins]
    score: ReferenceBins
    # disjoint windows after the dependence correction (0: not counted, a manifest from
    # before); each instrument's tick size, for series on a tick scale; the low-IC and
    # losing-streak (and accuracy) alarms as calibrated (None: before calibration, or
    # nothing to go on)
    effective_windows: Count = 0
    tick_sizes: dict[str, Annotated[float, msgspec.Meta(gt=0.0, le=_MAX)]] = {}
    low_ic: LowIcReference | None = None
    losing_streak: LosingStreakReference | None = None
    accuracy: AccuracyReference | None = None

    def __post_init__(self) -> None:
        if self.calibration_method == "in_sample" and self.false_alarm_bound is not None:
            raise ValueError("an in-sample calibration states no false_alarm_bound")
        if len(self.calibration_block_rows) != self.calibration_blocks:
            raise ValueError(f"{self.calibration_blocks} calibration blocks but "
                             f"{len(self.calibration_block_rows)} block sizes")  # fmt: skip


class LeakCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One leak check of training (``replay.research.training.leakage``) and its outcome.

    ``outcome``: ``"passed"``, ``"failed"`` (training stopped unless ``allowed``: the
    check was named in ``[train] allow_failed_leak_checks``, and the model was written
    anyway) or ``"not_run"`` (too little data; ``detail`` says why). ``rule``: the test
    and its thresholds in words; ``statistics``: what it measured.
    """

    name: Text
    outcome: Literal["passed", "failed", "not_run"]
    allowed: bool = False
    rule: Text
    detail: str = ""
    statistics: dict[str, Metric] = {}


# --- out-of-sample significance, baselines and costs (replay.research.training.assessment)


class Estimate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An out-of-sample figure with its uncertainty (``replay.research.training.significance``).

    ``low``/``high``: its 95 % block-bootstrap interval; ``chance``: its mean with the
    forward returns rotated against the scores (what a model without skill scores on
    these rows); ``p_value``: one-sided, of a figure at least this high without skill
    (for a difference: of a difference at or below 0). None: undefined or not testable.
    """

    value: Metric = None
    low: Metric = None
    high: Metric = None
    chance: Metric = None
    p_value: Fraction | None = None


class FoldSignificance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One walk-forward fold's test metrics (as in ``FoldReport.metrics``) with their
    intervals and p-values."""

    fold: Count
    metrics: dict[str, Estimate]


class BaselineScore(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The model or a baseline on the same out-of-sample rows, ranked by IC (1: highest).

    ``kind``: ``"model"``; ``"logistic"`` (the logistic model fit on the same folds);
    ``"feature"`` (one feature as the score, its sign per fold, ``signs``, chosen on the
    fold's training rows, never on its test rows).
    """

    name: Text
    kind: Literal["model", "logistic", "feature"]
    rank: Annotated[int, msgspec.Meta(ge=1)]
    metrics: dict[str, Estimate]
    signs: list[Literal[-1, 1]] = []


class BaselineComparison(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The model's IC minus the best baseline's, resampled pairwise (the same blocks for
    both); ``significant``: its p-value below ``alpha``."""

    baseline: Text
    difference: Estimate
    significant: bool


class NetEdge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The expected net edge per trade at the strategy's thresholds, from out-of-sample
    scores and realised forward returns; ``formula`` says how, in words.

    ``rows``: out-of-sample rows; ``trades``: rows whose score would trade (``long_trades``
    at or above ``upper``, ``short_trades`` below ``lower``); ``half_spread_bps`` and
    ``cost_bps``: means over the trades; ``gross_edge_bps`` and ``net_edge_bps``: with
    their intervals, chance levels and p-values.
    """

    formula: Text
    upper: Finite
    lower: Finite
    allow_short: bool
    fee_bps: NonNegative
    rows: Count
    trades: Count
    long_trades: Count
    short_trades: Count
    half_spread_bps: Metric = None
    cost_bps: Metric = None
    gross_edge_bps: Estimate = Estimate()
    net_edge_bps: Estimate = Estimate()


class OutOfSampleStatistics(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How far the out-of-sample figures can be trusted (``method``: how they were
    resampled, in words). ``block_rows``: the bootstrap block and the shortest shift, at
    least ``label_overlap_rows`` (the most rows one label's span holds). ``metrics``: the
    model's over all folds, ``folds`` per fold; ``baselines``: the model and every
    baseline ranked by IC (the model at ``model_rank``); ``better_than_chance``: AUC and
    IC each with a p-value below ``alpha`` (None: not testable, too few rows);
    ``net_edge`` (None: no thresholds to trade at, ``net_edge_note`` says why).
    """

    method: Text
    alpha: Fraction
    confidence: Fraction
    replicates: Count
    block_rows: Annotated[int, msgspec.Meta(ge=1)]
    label_overlap_rows: Annotated[int, msgspec.Meta(ge=1)]
    metrics: dict[str, Estimate]
    folds: list[FoldSignificance] = []
    baselines: list[BaselineScore] = []
    model_rank: Annotated[int, msgspec.Meta(ge=1)] | None = None
    versus_best_baseline: BaselineComparison | None = None
    better_than_chance: bool | None = None
    net_edge: NetEdge | None = None
    net_edge_note: str = ""


class OnnxSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How an ONNX model folder is run (``[model] kind = "onnx"``).

    ``input``: the graph's one input, float32 ``[rows, len(feature_names)]`` in
    ``feature_names`` order; ``output``: the output read; ``column``: its column holding
    the score (the class-1 probability of a ``[rows, 2]`` output), or -1 for a
    ``[rows]`` or ``[rows, 1]`` output. ``scaling``: the standardisation applied to the
    inputs inside the graph (``mean``, ``scale`` per feature), recorded to explain a
    decision in the units the model saw; None when the graph takes raw features.
    ``producer``: who wrote the graph (``skl2onnx 1.20.0``, or the importer's note).
    """

    input: Text
    output: Text
    column: Annotated[int, msgspec.Meta(ge=-1)] = -1
    scaling: dict[str, list[Finite]] | None = None
    producer: str = ""


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything needed to check that a model runs on what it was trained on.

    ``output``: ``"probability"`` for a model whose scores are probabilities (LightGBM
    ``binary``, the logistic baseline), ``"raw"`` for scores in the label's units (what
    ``Booster.predict`` returns for a regression objective, its transform applied).
    """

    name: Text
    kind: Literal["lightgbm", "linear", "onnx"]
    model_file: FileName
    model_sha256: Sha256
    output: Literal["probability", "raw"]
    feature_names: Annotated[list[Text], msgspec.Meta(min_length=1)]
    feature_fingerprint: Text
    feature_specs: list[dict[str, Any]]
    label: LabelSpec
    train_range: TimeRange
    folds: list[FoldReport] = []
    metrics: dict[str, Metric] = {}
    feature_importance: dict[str, NonNegative] = {}
    data_files: list[DataFile] = []
    library_versions: dict[str, str] = {}
    warnings: list[str] = []
    reference: MonitorReference | None = None  # absent in manifests from before monitoring
    leak_checks: list[LeakCheck] = []  # absent in manifests from before the leak checks
    statistics: OutOfSampleStatistics | None = None  # absent before significance testing
    # the ladder's family (config ``[train] model``) that wrote it; None: before the ladder,
    # or a model imported from elsewhere
    family: str | None = None
    onnx: OnnxSpec | None = None  # set exactly when kind is "onnx"

    def __post_init__(self) -> None:
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError("feature_names repeats a name")
        if self.model_file in (MANIFEST_FILE, MANIFEST_HASH_FILE):
            raise ValueError(f"model_file may not be {self.model_file!r}")
        if (self.kind == "onnx") != (self.onnx is not None):
            raise ValueError("an onnx model needs its onnx spec, and only an onnx model has one")
        if self.reference is not None and set(self.reference.features) != set(self.feature_names):
            raise ValueError("reference.features must name exactly the model's features")


_decoder = msgspec.json.Decoder(Manifest)
_encoder = msgspec.json.Encoder()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _decode(data: bytes, where: Path) -> Manifest:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ModelError(f"{where}: invalid manifest: {exc}") from exc


def read_manifest(folder: str | Path) -> Manifest:
    """The folder's manifest, after checking its bytes against ``manifest.sha256``.

    Raises:
        ModelError: manifest or its hash file missing or unreadable, hash mismatch, or an
            invalid field (names the JSON path).
    """
    path = Path(folder) / MANIFEST_FILE
    hash_path = Path(folder) / MANIFEST_HASH_FILE
    try:
        data = path.read_bytes()
        recorded = hash_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{exc.filename}: cannot read: {exc.strerror} (a model folder holds "
                         f"{MANIFEST_FILE} and {MANIFEST_HASH_FILE}, written by write_manifest)") from exc  # fmt: skip
    line = _HASH_LINE.fullmatch(recorded)
    if line is None:
        raise ModelError(f"{hash_path}: expected one line '<64 lowercase hex>  {MANIFEST_FILE}'")
    digest = hashlib.sha256(data).hexdigest()
    if digest.encode() != line.group(1):
        raise ModelError(f"{path}: sha256 {digest[:12]}... does not match {MANIFEST_HASH_FILE} "
                         f"({line.group(1)[:12].decode()}...): the manifest was changed after it was written")  # fmt: skip
    return _decode(data, path)


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` and its ``manifest.sha256``; the manifest is validated by the
    same decoder the loader uses first, so a folder this writes always loads.

    NaN and infinite metrics are written as ``null`` (undefined).

    Raises:
        ModelError: a field is invalid (``output = "banana"``, a negative count, ...).
    """
    path = Path(folder) / MANIFEST_FILE
    data = msgspec.json.format(_encoder.encode(manifest), indent=2) + b"\n"
    _decode(data, path)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (Path(folder) / MANIFEST_HASH_FILE).write_bytes(f"{digest}  {MANIFEST_FILE}\n".encode())
    return path


def read_verified_model(folder: str | Path, manifest: Manifest) -> tuple[Path, bytes]:
    """The model file's path and bytes, after checking them against ``model_sha256``. The
    bytes returned are the bytes checked: parse these, do not read the file again.

    Raises:
        ModelError: the file is missing or its bytes differ from what was trained.
    """
    path = Path(folder) / manifest.model_file
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: model file missing") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.model_sha256:
        raise ModelError(f"{path}: sha256 {digest[:12]}... does not match the manifest's "
                         f"{manifest.model_sha256[:12]}...: the file was changed after training")  # fmt: skip
    return path, data


def verified_model_path(folder: str | Path, manifest: Manifest) -> Path:
    """The model file, after checking its sha256 against the manifest.

    Raises:
        ModelError: the file is missing or its bytes differ from what was trained.
    """
    return read_verified_model(folder, manifest)[0]


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
