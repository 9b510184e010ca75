"""What the daemon says about itself: the retained status (at every heartbeat and every
change, the newest only), the models' monitor figures on Prometheus, and the models'
summary in the session file at the stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from pathlib import Path

from adapters.daemon.core import LiveCore
from adapters.daemon.session import LiveSession
from adapters.explanations import ExplanationWorker
from adapters.journal_folder import atomic_write
from adapters.metrics import DaemonMetrics, publish_engine_monitors, publish_monitor
from adapters.mqtt.status import ModelStatus, Status, encode_status
from engine.assembly import ModelPins, find_challenger
from engine.challenger import ChallengerShadow
from engine.config import Config
from engine.engine import Engine
from engine.monitor import ModelMonitor

log = logging.getLogger("tradeloop.daemon")


def _model_status(
    role: str, model: str, version: str, stage: str, monitor: ModelMonitor
) -> ModelStatus:
    fig = monitor.latest()
    return ModelStatus(role=role, model=model, version=version, stage=stage, ic=fig["ic"],
                       hit_ratio=fig["hit_ratio"], scored=int(fig["scored"]),
                       alarms={k: int(v) for k, v in fig["alarms"].items()})  # fmt: skip


def _challenger_label(shadow: ChallengerShadow) -> str:
    return f"{shadow.model.name}@{shadow.version[:12]} (challenger)"


class StatusBoard:
    """The daemon's status and its models' figures, published.

    Args:
        config: the session's config (node and mode).
        engine: the session's engine.
        metrics: the daemon's metrics.
        pins: the registry versions the session runs (None: no registry).
        models: alias -> (version, stage) the engine runs now (``ModelGovernance.models``).
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        metrics: DaemonMetrics,
        pins: ModelPins | None,
        models: dict[str, tuple[str, str]],
    ) -> None:
        self.config = config
        self.engine = engine
        self.metrics = metrics
        self.pins = pins
        self.models = models
        self.heartbeat_seq = 0
        self._slot: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

    def status(
        self, core: LiveCore | None, *, online: bool = True, state: str | None = None
    ) -> Status:
        """The status now (``core`` None: before the session's core exists)."""
        e = self.engine
        if core is not None:
            positions, pnl = core.book()
            core.dirty = False
        else:
            positions, pnl = [0.0] * len(e.instruments), [0.0]
        return Status(
            node=self.config.live.node,
            mode=self.config.mode,
            state=state or e.risk.state,
            online=online,
            ts_ns=e.clock.now_ns(),
            positions=dict(zip(e.instruments.symbols, positions)),
            pnl=float(sum(pnl)),
            heartbeat_seq=self.heartbeat_seq,
            models=self.model_statuses(),
            claims={
                source: claim
                for source, claim in e.risk.trading.claims().items()
                if claim != "ACTIVE"
            },
        )

    def model_statuses(self) -> list[ModelStatus]:
        """Champion and challenger monitor figures for the status (what the monitors hold,
        nothing recomputed)."""
        engine = self.engine
        out: list[ModelStatus] = []
        monitor = next((o for o in engine.observers if isinstance(o, ModelMonitor)), None)
        if monitor is not None and engine.model is not None:
            stage = self.models.get("champion", ("", ""))[1]
            out.append(_model_status("champion", engine.model.name, engine.model_version,
                                     stage, monitor))  # fmt: skip
        shadow = find_challenger(engine)
        if shadow is not None and shadow.monitor is not None:
            stage = self.models.get("challenger", ("", ""))[1]
            out.append(_model_status("challenger", shadow.model.name, shadow.version, stage,
                                     shadow.monitor))  # fmt: skip
        return out

    def offer(self, core: LiveCore | None) -> None:
        """The status now, to be published (replacing one not yet published)."""
        payload = encode_status(self.status(core))
        slot = self._slot
        if slot.full():  # only the newest status matters
            slot.get_nowait()
        slot.put_nowait(payload)

    async def publish(self, session: LiveSession) -> None:
        """Publish each status offered, the newest only, for as long as the session runs."""
        while True:
            payload = await self._slot.get()
            await session.publish_status(payload)

    def discard_waiting(self) -> None:
        """Drop a status not yet published (the goodbye goes after it)."""
        with contextlib.suppress(asyncio.QueueEmpty):
            self._slot.get_nowait()

    def publish_monitors(self) -> None:
        """Both models' monitor figures on Prometheus. A registry model's are labelled by
        version and role (``name@version``, ``name@version (challenger)``): each label then
        has one monitor for good (``ModelSwitcher`` keeps a version's monitor across
        switches, and a snapshot restores them), so a label's counters follow one
        monitor; ``publish_monitor`` starts a new baseline if a label's monitor is ever
        replaced or reset."""
        engine = self.engine
        if self.pins is None:
            publish_engine_monitors(self.metrics, engine)
            return
        model = engine.model
        monitor = next((o for o in engine.observers if isinstance(o, ModelMonitor)), None)
        if monitor is not None and model is not None:
            label = f"{model.name}@{engine.model_version[:12]}"
            publish_monitor(self.metrics, monitor, label=label)
        shadow = find_challenger(engine)
        if shadow is not None and shadow.monitor is not None:
            publish_monitor(self.metrics, shadow.monitor, label=_challenger_label(shadow))


def write_model_summary(
    manifest: Path,
    engine: Engine,
    models: dict[str, tuple[str, str]],
    switches: Counter[str],
    signals_at_start: int,
    explainer: ExplanationWorker | None,
) -> None:
    """Champion and challenger side by side in the session file, at the stop."""
    monitor = next((o for o in engine.observers if isinstance(o, ModelMonitor)), None)
    figures = monitor.latest() if monitor is not None else {}
    champion = {
        "version": engine.model_version,
        "stage": models.get("champion", ("", ""))[1],
        "model": engine.model.name if engine.model is not None else "",
        "signals": engine.counters["signals"] - signals_at_start,
        "ic": figures.get("ic"),
        "hit_ratio": figures.get("hit_ratio"),
        "scored": figures.get("scored"),
    }
    shadow = find_challenger(engine)
    summary: dict[str, object] = {"champion": champion, "switches": dict(switches)}
    if shadow is not None:
        summary["challenger"] = shadow.summary()
    if explainer is not None:
        worker = explainer
        summary["explanations"] = {
            "written": worker.written, "dropped": worker.dropped, "failed": worker.failed,
            "mean_us": round(worker.seconds / worker.written * 1e6, 1) if worker.written else None,
        }  # fmt: skip
    try:
        doc = json.loads(manifest.read_text())
        doc["models"] = summary
        atomic_write(manifest, (json.dumps(doc, indent=2) + "\n").encode())  # never torn
    except (OSError, ValueError) as exc:
        log.error("session file %s: model summary not written: %s", manifest, exc)


__all__ = ["StatusBoard", "write_model_summary"]
