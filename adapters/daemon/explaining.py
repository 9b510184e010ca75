"""The hand-off of the champion's signals to the explanations worker, off the decision
path (``adapters.explanations``): the collector copies each signal's input row as the
engine emits it; after a turn's orders are in the outbox, its jobs go to the worker."""

from __future__ import annotations

from pathlib import Path

from adapters.daemon.core import LiveCore
from adapters.explanations import (
    Explainers,
    ExplanationCollector,
    ExplanationWorker,
    explanations_path,
)
from engine.config import Config
from engine.engine import Engine
from engine.errors import ConfigError
from engine.model_registry import RegistryReader

# kinds whose folders every family's explainer reads (``adapters.explanations.Explainers``)
EXPLAINED_KINDS = ("lightgbm", "linear", "onnx")


def explain_permutations(config: Config) -> int:
    """``[live] explain_permutations``: the sampled explainer's budget."""
    return config.live.explain_permutations


class ExplanationHandOff:
    """Collector and worker of a session's explanations (none when off or nothing to
    explain: ``explainer`` and ``collector`` stay None).

    Args:
        config: the session's config (``[model]``, ``[live] explain_top``).
        engine: the session's engine.
        enabled: explanations on (``[live] explain`` unless the caller decides).
    """

    def __init__(self, config: Config, engine: Engine, *, enabled: bool) -> None:
        self.config = config
        self.engine = engine
        self.enabled = enabled
        self.explainer: ExplanationWorker | None = None
        self.collector: ExplanationCollector | None = None

    def start(self, core: LiveCore, journal_dir: Path, session_id: str) -> None:
        """Collect the champion's signals from here on, explained into the session's file."""
        if not self.enabled or self.engine.model is None:
            return
        model_config = self.config.model
        assert model_config is not None
        registry = model_config.registry
        path = model_config.path
        if registry is None and (path is None or model_config.kind not in EXPLAINED_KINDS):
            return  # a model folder's manifest says its kind; a plugin without one is not explained

        def folder_of(version: str) -> Path:
            if version and registry is not None:
                return RegistryReader(registry).version_dir(version)
            if path is None:
                raise ConfigError("model.path", "no model folder to explain")
            return Path(path)

        self.collector = ExplanationCollector(self.engine)
        self.engine.sinks.append(self.collector)
        core.after_input = self.collector.end_input
        self.explainer = ExplanationWorker(
            explanations_path(journal_dir, session_id),
            Explainers(folder_of, permutations=explain_permutations(self.config)),
            top=self.config.live.explain_top,
        )

    def hand(self) -> None:
        """The jobs collected since the last hand-off, to the worker."""
        if self.collector is not None and self.explainer is not None:
            jobs = self.collector.take()
            if jobs:
                self.explainer.submit(jobs)

    def close(self) -> None:
        """The last jobs handed, the worker finished."""
        if self.explainer is not None:
            self.hand()
            self.explainer.close()


__all__ = ["EXPLAINED_KINDS", "ExplanationHandOff", "explain_permutations"]
