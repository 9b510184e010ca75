"""Model governance in the live session: the registry versions the session runs
(``session_pins``), switches at journaled points (an operator's ``promote``/``rollback``
command, or an alias file changed by hand) and what the engine runs now.

A switch is an input: a worker thread loads the version and checks it against the
feature set first, and only then writes the registry's audit entry; the consumer then
journals a ``ModelSwitch`` and applies it like any input (``ModelSwitcher.apply``). A
version that fails is journaled as a refused switch: nothing changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from adapters.daemon.assembly import challenger_version
from adapters.daemon.background import Background
from adapters.daemon.core import LiveCore
from adapters.model_registry_store import Registry
from engine.assembly import (
    ModelPins,
    ModelSwitcher,
    PreparedModel,
    find_challenger,
    resolve_model_config,
)
from engine.config import Config
from engine.engine import Engine
from engine.errors import ConfigError, TradeloopError
from engine.events import Command, Event, ModelSwitched
from engine.journal import ModelSwitch
from engine.model_registry import ALIASES_DIR, RegistryReader, resolve_version
from engine.registry_types import STAGES, Alias

log = logging.getLogger("tradeloop.daemon")

SwitchResult = tuple[ModelSwitch, PreparedModel | None] | None
"""What a switch job found: the record to journal and, unless refused, the prepared model
(None: nothing to switch)."""


def session_pins(config: Config) -> ModelPins | None:
    """What the config's registry aliases name now, resolved once at start: the session
    runs these versions and records them, so its replay runs them too (None: no registry).

    Raises:
        RegistryError, AuditChainError: as ``resolve_model_config``.
    """
    _, source = resolve_model_config(config)
    if source is None:
        return None
    challenger = challenger_version(config) if config.registry.shadow_challenger else ""
    return ModelPins(version=source.version, stage=source.stage, challenger=challenger)


def model_switcher(config: Config, pins: ModelPins | None = None) -> ModelSwitcher | None:
    """The switcher of a registry model's config (None: the model cannot be switched).
    ``pins``: the versions the engine was built with (``build_live_engine``'s)."""
    if config.model is None or config.model.registry is None:
        return None
    return ModelSwitcher(config, pins)


class ModelGovernance:
    """The models a live session runs and the switches between them.

    Builds ``models`` (alias -> (version, stage) the engine runs now) from ``pins`` and
    follows it through the engine's ``ModelSwitched`` events (a sink it adds).

    Args:
        config: the session's config (``[registry] shadow_challenger``).
        engine: the session's engine.
        pins: the registry versions the session runs (``session_pins``).
        switcher: the engine's switcher (``model_switcher``).
        receive_clock: stamps the switches it journals.
        background: where the switch jobs run and how the consumer is woken.
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        pins: ModelPins | None,
        switcher: ModelSwitcher | None,
        receive_clock: Callable[[], int],
        background: Background,
    ) -> None:
        self.config = config
        self.engine = engine
        self.pins = pins
        self.switcher = switcher
        self.receive_clock = receive_clock
        self.background = background
        # (alias -> (version, stage)) the engine runs now, followed through ModelSwitched
        self.models: dict[str, tuple[str, str]] = {}
        if pins is not None:
            self.models["champion"] = (pins.version, pins.stage)
            if pins.challenger and switcher is not None:
                found = resolve_version(switcher.registry, pins.challenger)
                self.models["challenger"] = (pins.challenger, found.stage)
        engine.sinks.append(self._on_model_switched)
        self.switches: Counter[str] = Counter()  # applied, refused
        self._queue: deque[tuple[str, Callable[[], SwitchResult]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._results: deque[tuple[str, SwitchResult]] = deque()
        self._alias_stats: dict[str, tuple[int, int, int] | None] = {}

    def manifest_fields(self) -> dict[str, object]:
        """The pins as the session file records them (none without a registry)."""
        pins = self.pins
        if pins is None:
            return {}
        return {"model_version": pins.version, "model_stage": pins.stage,
                "challenger_version": pins.challenger}  # fmt: skip

    def sessions_without_versions(self) -> int:
        """Sessions the rebuild applied on the versions that ran before them."""
        return len(self.switcher.sessions_without_versions) if self.switcher is not None else 0

    def align_to_session(self, session_id: str) -> None:
        """After the rebuild, which left the engine on what the last session ran last: this
        session runs its own versions from its first record on, as a later rebuild does
        from this session's manifest (not journaled)."""
        if self.pins is not None and self.switcher is not None:
            self.switcher.align(self.engine, self.pins, reason=f"session {session_id} start")
            if find_challenger(self.engine) is None:  # detached: this session scores none
                self.models.pop("challenger", None)

    def realign(self, core: LiveCore, start_ns: int) -> None:
        """After the rebuild and the session-start ``align`` (which already put the
        engine on this session's versions, unjournaled, from its manifest): a journaled
        switch back only if the engine still runs another version (kept as a guard; a
        session of an older daemon journaled these switches, and they replay as
        recorded)."""
        pins = self.pins
        if pins is None or self.switcher is None:
            return
        if self.models.get("champion") != (pins.version, pins.stage):
            core.inject(start_ns, ModelSwitch(
                alias="champion", version=pins.version, stage=pins.stage, issuer="daemon",
                reason="session start: the version the registry names"), "model_switch")  # fmt: skip
        shadow = find_challenger(self.engine)
        if pins.challenger and (shadow is None or shadow.version != pins.challenger):
            stage = resolve_version(self.switcher.registry, pins.challenger).stage
            core.inject(start_ns, ModelSwitch(
                alias="challenger", version=pins.challenger, stage=stage, issuer="daemon",
                reason="session start: the version the registry names"), "model_switch")  # fmt: skip

    def watch_aliases(self) -> None:
        """From now on, an alias file that changes is a switch (``poll_aliases``)."""
        self._alias_stats = self._stat_aliases()

    def _on_model_switched(self, event: Event) -> None:
        if isinstance(event, ModelSwitched):
            self.models[event.alias] = (event.version, event.stage)

    def queue_commands(self, core: LiveCore) -> None:
        """The promote/rollback commands the core applied this turn, each a switch job."""
        for command in core.model_commands:
            self.queue_switch("command", functools.partial(self._command_switch, command))
        core.model_commands.clear()

    def queue_switch(self, origin: str, job: Callable[[], SwitchResult]) -> None:
        """Run ``job`` (load and check a version, write the registry) on a worker thread,
        one at a time, in the order asked; the consumer journals what it found."""
        self._queue.append((origin, job))
        self._next_switch()

    def _next_switch(self) -> None:
        tasks = self.background.tasks
        if self._task is not None or not self._queue or tasks is None:
            return
        origin, job = self._queue.popleft()

        async def run() -> None:
            try:
                result = await asyncio.to_thread(job)
            finally:
                self._task = None
            self._results.append((origin, result))
            self.background.wake()

        self._task = tasks.create_task(run(), name="model-switch")

    def _command_switch(self, command: Command) -> SwitchResult:
        """A ``promote``/``rollback`` command, on a worker thread: the version is loaded and
        checked first, and only then is the registry's audit entry written (who and why
        from the signed command), so a version that fails changes nothing anywhere."""
        switcher = self.switcher
        target = command.target or ("challenger" if command.action == "promote" else "")
        stage = command.stage if command.stage in STAGES else None
        champion_stage = self.models.get("champion", ("", "shadow"))[1]
        try:
            if switcher is None:
                raise ConfigError("model.registry", "the model is not a registry model")
            if command.stage and stage is None:
                raise ConfigError("stage", f"unknown stage {command.stage!r} ({', '.join(STAGES)})")
            if not command.issuer.strip() or not command.reason.strip():
                raise ConfigError("command", f"{command.action} needs an issuer and a reason "
                                  "(the audit log's who and why)")  # fmt: skip
            registry = Registry(switcher.registry)
            if command.action == "promote":
                prepared = switcher.prepare("champion", target, stage)
                entry = registry.promote(prepared.source.version, alias="champion",
                                         who=command.issuer, reason=command.reason,
                                         stage=stage)  # fmt: skip
            else:
                back = registry.rollback_target("champion")
                prepared = switcher.prepare("champion", back)
                entry = registry.rollback("champion", who=command.issuer,
                                          reason=command.reason, expect=back)  # fmt: skip
            if (entry.version, entry.stage) != (prepared.source.version, prepared.source.stage):
                prepared = switcher.prepare("champion", entry.version, entry.stage)
        except TradeloopError as exc:
            log.error("%s refused: %s", command.action, exc)
            return ModelSwitch(alias="champion", version=target or "rollback",
                               stage=stage or champion_stage,  # type: ignore[arg-type]
                               issuer=command.issuer, reason=command.reason,
                               refused=str(exc)), None  # fmt: skip
        switch = ModelSwitch(alias="champion", version=entry.version, stage=entry.stage,
                             audit_entry_sha256=entry.entry_sha256, issuer=entry.who,
                             reason=entry.reason)  # fmt: skip
        return switch, prepared

    def _alias_switch(self, alias: Alias) -> SwitchResult:
        """An alias file changed (``tradeloop models promote`` by hand): what it names now,
        loaded and checked, on a worker thread; None when that is what runs already."""
        switcher = self.switcher
        assert switcher is not None
        try:
            found = resolve_version(switcher.registry, alias)
            state = RegistryReader(switcher.registry).state()
            entry = next(e for e in reversed(state.entries) if e.alias == alias)
            if self.models.get(alias, ("", ""))[0] == found.version and (
                alias == "challenger" or self.models[alias][1] == found.stage
            ):
                return None
            prepared = switcher.prepare(alias, found.version, found.stage)
        except TradeloopError as exc:
            log.error("alias %s changed, its version refused: %s", alias, exc)
            stage = self.models.get("champion", ("", "shadow"))[1]
            return ModelSwitch(alias=alias, version="(alias file)", stage=stage,  # type: ignore[arg-type]
                               issuer="registry", reason=f"{alias} changed",
                               refused=str(exc)), None  # fmt: skip
        switch = ModelSwitch(alias=alias, version=found.version, stage=found.stage,
                             audit_entry_sha256=entry.entry_sha256, issuer=entry.who,
                             reason=entry.reason)  # fmt: skip
        return switch, prepared

    def finish_switches(self, core: LiveCore, on_switch: Callable[[], None]) -> None:
        """Between turns: journal and apply what the switch jobs found (``on_switch`` after
        each), then start the next job."""
        if not self._results:
            return
        while self._results:
            origin, result = self._results.popleft()
            if result is None:
                continue
            switch, prepared = result
            if prepared is not None and self.switcher is not None:
                current = self.models.get(switch.alias)
                if (
                    origin == "alias"
                    and current is not None
                    and current[0] == switch.version
                    and (switch.alias == "challenger" or current[1] == switch.stage)
                ):
                    continue  # a command of ours got there first
                self.switcher.offer(prepared)
            self.switches["refused" if switch.refused else "applied"] += 1
            core.inject(max(self.receive_clock(), core.last_ts), switch, "model_switch")
            on_switch()
        self._next_switch()

    def _stat_aliases(self) -> dict[str, tuple[int, int, int] | None]:
        if self.switcher is None:
            return {}
        folder = Path(self.switcher.registry) / ALIASES_DIR
        out: dict[str, tuple[int, int, int] | None] = {}
        for alias in ("champion", "challenger"):
            try:
                st = (folder / alias).stat()
                out[alias] = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                out[alias] = None
        return out

    def poll_aliases(self) -> None:
        """On the heartbeat: two ``stat`` calls; an alias file that changed (written by
        temp + rename, so a new inode) sends the version it names through the same
        load, check and journaled switch as a command."""
        if self.switcher is None or self._task is not None or self._queue:
            return
        stats = self._stat_aliases()
        for alias in ("champion", "challenger"):
            if stats.get(alias) == self._alias_stats.get(alias) or stats.get(alias) is None:
                continue
            if alias == "challenger" and not self.config.registry.shadow_challenger:
                continue
            self.queue_switch("alias", functools.partial(self._alias_switch, alias))
        self._alias_stats = stats


__all__ = ["ModelGovernance", "SwitchResult", "model_switcher", "session_pins"]
