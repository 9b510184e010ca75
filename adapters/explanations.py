"""Explanations in the audit trail, off the decision path.

For each champion ``Signal`` the daemon keeps the model's input row (``Engine.signal_inputs``)
and the client order ids the strategy sent on that tick (``ExplanationCollector``, an engine
sink: a copy of one row, nothing computed). Once the turn's orders are in the outbox, the
turn's jobs go to ``ExplanationWorker``: a thread that explains each with its family's
explainer (``engine.signals.explain``: exact TreeSHAP for LightGBM trees, exact coefficient
x input for linear and logistic models, a sampled Shapley estimate with a stated budget
for ONNX graphs) and appends one JSON line per signal to ``explanations-{session}.jsonl``
in the journal folder; each line names its ``method`` (and ``budget`` for an estimate).
Its queue is bounded: a worker that falls behind drops jobs and counts them, it never
holds the loop.

A line is a function of the journal (the row, the version and the orders are all decided by
the input stream), so a replay recomputes the same file (``replay.sessions.journal_replay.
recompute_explanations``). ``tradeloop why JOURNAL_DIR --at TIME`` reads it back.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from engine.engine import Engine
from engine.errors import DataError, TradeloopError
from engine.events import Event, OrderRequest, Signal
from engine.signals.explain import (
    DEFAULT_PERMUTATIONS,
    Explainer,
    LinearExplainer,
    SampledShapleyExplainer,
    TreeExplainer,
)
from engine.signals.linear import LinearModel
from engine.signals.manifest import read_manifest, read_verified_model

log = logging.getLogger("tradeloop.explanations")

TOP_K: Final = 5
QUEUE_CAPACITY: Final = 4096  # signals are sparse: this is minutes of backlog at any real rate
EXPLANATIONS_PREFIX: Final = "explanations-"


def explanations_path(journal_dir: Path, session_id: str) -> Path:
    return journal_dir / f"{EXPLANATIONS_PREFIX}{session_id}.jsonl"


@dataclass
class ExplanationJob:
    """One champion signal to explain: what was decided, on which row, by which version."""

    ts_event: int
    instrument: str
    model: str
    version: str
    score: float
    names: tuple[str, ...]
    row: npt.NDArray[np.float64]
    order_ids: list[str] = field(default_factory=list)


class ExplanationCollector:
    """Engine sink: a job per champion ``Signal`` (its input row copied, nothing computed),
    with the client order ids of the orders sent on the same tick while the same input
    is applied (``end_input`` closes it, live and in replay at the same boundary).

    Args:
        engine: the engine whose signals are explained.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._jobs: list[ExplanationJob] = []
        self._open: ExplanationJob | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Signal):
            row = self.engine.signal_inputs()
            model = self.engine.model
            if row is None or model is None:
                return
            self._open = ExplanationJob(
                ts_event=event.ts_event,
                instrument=event.instrument,
                model=event.model,
                version=self.engine.model_version,
                score=event.score,
                names=tuple(model.feature_names),
                row=row.copy(),
            )
            self._jobs.append(self._open)
        elif isinstance(event, OrderRequest):
            job = self._open
            if job is not None and event.ts_event == job.ts_event:
                job.order_ids.append(event.client_order_id)

    def end_input(self) -> None:
        """One input of the stream was applied: later orders belong to no signal of it."""
        self._open = None

    def take(self) -> list[ExplanationJob]:
        """The jobs collected since the last call."""
        jobs, self._jobs = self._jobs, []
        return jobs


class Explainers:
    """The explainer of each model version, built on first use from the version's folder
    (the bytes checked against the manifest's sha256), by the folder's kind: TreeSHAP for
    ``lightgbm``, coefficient x input for ``linear``, sampled Shapley for ``onnx`` (its
    own ONNX Runtime session, on the worker's thread).

    Args:
        folder_of: the model folder of a version ("" is the config's ``[model] path``).
        permutations: the sampled explainer's budget (``[live] explain_permutations``).
    """

    def __init__(
        self, folder_of: Callable[[str], Path], *, permutations: int = DEFAULT_PERMUTATIONS
    ) -> None:
        self._folder_of = folder_of
        self.permutations = permutations
        self._cache: dict[str, Explainer | None] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> Explainer | None:
        """None for a folder of a kind no explainer knows."""
        with self._lock:
            if version not in self._cache:
                self._cache[version] = self._build(version)
            return self._cache[version]

    def _build(self, version: str) -> Explainer | None:
        folder = self._folder_of(version)
        manifest = read_manifest(folder)
        if manifest.kind == "lightgbm":
            path, data = read_verified_model(folder, manifest)
            return TreeExplainer.from_text(data, str(path))
        if manifest.kind == "linear":
            p = LinearModel.load(str(folder)).params
            return LinearExplainer(p.weights, p.bias, p.link, p.features)
        if manifest.kind == "onnx":
            # imported here: onnxruntime loads only for a session that runs an ONNX model
            from engine.signals.onnx_model import OnnxModel, explanation_background

            model = OnnxModel.load(folder)
            background, note = explanation_background(manifest)
            return SampledShapleyExplainer(
                model.predict, background, note, permutations=self.permutations
            )
        return None


_encoder = msgspec.json.Encoder()


def explain_line(job: ExplanationJob, explainer: Explainer, k: int = TOP_K) -> bytes:
    """The JSON line of one job: the top ``k`` contributions (largest ``|share|`` first),
    the sum of the others (``rest``) and the base (``expected_value``: TreeSHAP's expected
    value, a linear model's intercept, a sampled explanation's background score); with the
    raw score (the trees' sum, the logit, the graph's score, computed apart) they satisfy
    ``sum(top) + rest + expected_value == raw_score`` to rounding, for every family.
    ``method`` says how they were computed; ``budget`` what an estimate cost (samples,
    evaluations, its largest standard error), absent for exact methods."""
    phi = explainer.explain(job.row)
    n = explainer.n_features
    order = sorted(range(n), key=lambda j: (-abs(phi[j]), j))
    top = order[:k]
    raw = explainer.raw_score(job.row)
    when = dt.datetime.fromtimestamp(job.ts_event / 1e9, dt.UTC)
    doc: dict[str, Any] = {
        "ts_ns": job.ts_event,
        "ts_utc": when.isoformat(timespec="microseconds"),
        "instrument": job.instrument,
        "model": job.model,
        "version": job.version,
        "score": job.score,
        "raw_score": raw,
        "expected_value": float(phi[n]),
        "features": {name: float(v) for name, v in zip(job.names, job.row.tolist())},
        "contributions": [[job.names[j], float(phi[j])] for j in top],
        "rest": float(sum(float(phi[j]) for j in order[k:])),
        "order_ids": list(job.order_ids),
        "method": explainer.method,
    }
    if explainer.budget:
        doc["budget"] = dict(explainer.budget)
    return _encoder.encode(doc) + b"\n"


class ExplanationWorker:
    """The thread that explains and writes, behind a bounded queue.

    Args:
        path: the explanations file (appended to).
        explainers: the explainer of each version.
        capacity: jobs waiting at most; more are dropped and counted (``dropped``).
        top: contributions per line (``[live] explain_top``).
    """

    def __init__(
        self,
        path: Path,
        explainers: Explainers,
        *,
        capacity: int = QUEUE_CAPACITY,
        top: int = TOP_K,
    ) -> None:
        self.path = path
        self.explainers = explainers
        self.top = top
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self.seconds = 0.0  # spent explaining (the kernel and the line), for the cost figure
        self._queue: queue.Queue[ExplanationJob | None] = queue.Queue(maxsize=capacity)
        self._file: IO[bytes] = path.open("ab")
        self._thread = threading.Thread(target=self._run, name="explanations", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[ExplanationJob]) -> None:
        """Queue the jobs without waiting; a full queue drops (and counts) the rest."""
        for job in jobs:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self.dropped += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish what is queued (up to ``timeout_s``), then close the file."""
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.error("explanations: the worker is stuck; %d queued lost", self._queue.qsize())
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive() and not self._file.closed:
            self._file.close()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            t0 = time.perf_counter()
            try:
                explainer = self.explainers.get(job.version)
                if explainer is None:
                    continue
                line = explain_line(job, explainer, self.top)
            except (TradeloopError, OSError) as exc:  # a bad version folder: logged, counted
                self.failed += 1
                log.error("explanation of %s at %d failed: %s", job.instrument, job.ts_event, exc)
                continue
            finally:
                self.seconds += time.perf_counter() - t0
            self._file.write(line)
            if self._queue.empty():  # a burst is written in one flush
                self._file.flush()
            self.written += 1
        self._file.flush()


# tradeloop why


def _parse_time(text: str) -> int:
    """The last nanosecond of the microsecond ``text`` names (ISO times stop at the
    microsecond, explanations are stamped to the nanosecond: the time ``why`` prints for a
    decision finds that decision)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise DataError("--at", f"not an ISO time: {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000 + 999


def decisions_at(path: Path, at_ns: int) -> list[dict[str, Any]]:
    """The explanation lines of the last signal time at or before ``at_ns`` (several when
    instruments signalled at the same tick).

    Raises:
        DataError: the file is missing or a line is not JSON.
    """
    if not path.is_file():
        raise DataError(str(path), "missing: no explanations for this session")
    best: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                doc = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise DataError(str(path), f"line {number} is not JSON: {exc}") from exc
            ts = int(doc["ts_ns"])
            if ts > at_ns:
                continue
            if not best or ts > int(best[0]["ts_ns"]):
                best = [doc]
            elif ts == int(best[0]["ts_ns"]):
                best.append(doc)
    return best


def describe(doc: dict[str, Any]) -> list[str]:
    """What ``tradeloop why`` prints for one decision."""
    orders = ", ".join(doc["order_ids"]) or "none"
    lines = [
        f"{doc['ts_utc']}  {doc['instrument']}  orders: {orders}",
        f"  model {doc['model']} version {doc['version'][:12] or '(model folder)'}: "
        f"score {doc['score']:.6g} (raw {doc['raw_score']:.6g} = expected "
        f"{doc['expected_value']:.6g} + contributions)",
        "  features: " + ", ".join(f"{k}={v:.6g}" for k, v in doc["features"].items()),
        "  contributions:",
    ]
    lines += [f"    {name:<16} {value:+.6g}" for name, value in doc["contributions"]]
    if doc["rest"]:
        lines.append(f"    {'(the rest)':<16} {doc['rest']:+.6g}")
    # lines from before the method was written are TreeSHAP's (the only one then)
    lines.append(f"  method: {doc.get('method', 'TreeSHAP (exact)')}")
    budget = doc.get("budget")
    if budget:
        error = budget.get("max_std_error")
        lines.append(
            f"  budget: {int(budget['permutations'])} permutations, "
            f"{int(budget['evaluations'])} model evaluations"
            + ("" if error is None else f", largest standard error {error:.3g}")
        )
    return lines


def cmd_why(args: argparse.Namespace) -> int:
    """``tradeloop why JOURNAL_DIR --at ISO_TIME [--session ID]``.

    Raises:
        DataError: no session, no explanations file, a bad time, no decision at or
            before the time.
    """
    journal_dir = Path(args.journal_dir)
    at_ns = _parse_time(args.at)
    session = args.session or _latest_session(journal_dir)
    found = decisions_at(explanations_path(journal_dir, session), at_ns)
    if not found:
        raise DataError("--at", f"no decision at or before {args.at} in session {session}")
    for doc in found:
        for line in describe(doc):
            print(line)
    return 0


def _latest_session(journal_dir: Path) -> str:
    files = sorted(
        journal_dir.glob(f"{EXPLANATIONS_PREFIX}*.jsonl"), key=lambda p: p.stat().st_mtime_ns
    )
    if not files:
        raise DataError(str(journal_dir), f"no {EXPLANATIONS_PREFIX}*.jsonl here")
    return files[-1].name[len(EXPLANATIONS_PREFIX) : -len(".jsonl")]


def add_why_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("journal_dir", metavar="JOURNAL_DIR", help="the daemon's journal folder")
    parser.add_argument("--at", required=True, help="ISO time (UTC unless it says otherwise)")
    parser.add_argument("--session", help="session id (default: the latest)")


__all__ = [
    "EXPLANATIONS_PREFIX",
    "TOP_K",
    "Explainers",
    "ExplanationCollector",
    "ExplanationJob",
    "ExplanationWorker",
    "add_why_arguments",
    "cmd_why",
    "decisions_at",
    "describe",
    "explain_line",
    "explanations_path",
]
