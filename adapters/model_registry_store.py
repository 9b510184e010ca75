"""The model registry's writing half: add a model folder as a content-addressed version,
point the aliases (champion, challenger) at versions with a stage each, roll back, verify.

It lives in ``adapters`` so that both writers can use the one implementation: the
``tradeloop models`` commands (``replay.registry.cli``) and the live daemon,
which carries out an operator's ``promote``/``rollback`` command itself and writes the
audit entry (``adapters`` may not import ``replay``).

The layout, the version address, the audit chain and every read (``state``, ``lookup``)
are ``engine.model_registry.RegistryReader``'s, which the engine loads models through;
``Registry`` adds the writes. Each write holds the exclusive lock, rebuilds the state from
the log (refusing a broken chain), appends one audit entry (fsynced) and only then rewrites
the views (``audit.head``, ``aliases/*``, temp + rename), so a crash leaves views behind
the log, which the next change repairs, never ahead of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.clock import LiveClock
from engine.config import ModelConfig
from engine.errors import ModelError, PluginLoadError, RegistryError
from engine.model_registry import (
    ALIASES_DIR,
    AUDIT_FILE,
    HEAD_FILE,
    MIN_PREFIX,
    VERSIONS_DIR,
    RegistryReader,
    RegistryState,
    Resolved,
    VersionInfo,
    out_of_sample_evidence,
    read_view,
    version_id,
)
from engine.plugins import load_model
from engine.registry_types import (
    STAGES,
    Alias,
    AliasRecord,
    AuditContent,
    AuditEntry,
    AuditHead,
    Stage,
    decode_entry,
    seal,
    stage_step,
)
from engine.signals.manifest import (
    MANIFEST_FILE,
    MANIFEST_HASH_FILE,
    Manifest,
    read_manifest,
    read_verified_model,
)

__all__ = [
    "AUDIT_FILE",
    "HEAD_FILE",
    "MIN_PREFIX",
    "Registry",
    "RegistryState",
    "Resolved",
    "VerifyReport",
    "VersionInfo",
    "resolve",
    "version_id",
]

_encoder = msgspec.json.Encoder()
_alias_decoder = msgspec.json.Decoder(AliasRecord)
_head_decoder = msgspec.json.Decoder(AuditHead)


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    head_sha256: str
    notes: tuple[str, ...]


class Registry(RegistryReader):
    """A registry folder to read and write. Every method checks the audit chain first and
    refuses a broken one; reads are ``RegistryReader``'s.

    Args:
        root: the registry folder (``models/``).
        now_ns: wall time for audit entries; the live clock unless a test gives one.
    """

    def __init__(self, root: str | Path, *, now_ns: Callable[[], int] | None = None) -> None:
        super().__init__(root)
        self._now_ns = now_ns or LiveClock().now_ns

    def verify(self) -> VerifyReport:
        """Check the chain, ``audit.head``, the alias files and every version folder.

        Raises:
            AuditChainError: first bad entry, or a view matching no state of the log.
            RegistryError: a version folder whose content is not its address.
        """
        with self.lock(exclusive=False):
            state = self.read_state()
            notes = self.check_views(state)
            for version in state.versions:
                self.check_version(version)
            for folder in sorted((self.root / VERSIONS_DIR).glob("[0-9a-f]*")):
                if folder.name not in state.versions:
                    notes.append(
                        f"{VERSIONS_DIR}/{folder.name} is not in the audit log "
                        "(an interrupted add): add the model again to record it"
                    )
            return VerifyReport(len(state.entries), state.head_sha256, tuple(notes))

    def add(self, folder: str | Path, *, who: str, note: str = "") -> tuple[str, bool]:
        """Copy a model folder in as a version (stage ``shadow``). The folder is loaded with
        the engine's own loader first (manifest hash, model hash, parse); the copy is checked
        again before it is renamed into place. Adding the same content again changes nothing.

        Returns:
            The version and whether it was new.

        Raises:
            RegistryError: the folder does not load (tampered, damaged, unknown kind).
            AuditChainError: the chain is broken.
        """
        src = Path(folder)
        manifest = _load_checked(src)
        _, model_bytes = read_verified_model(src, manifest)
        version = version_id(manifest, model_bytes)
        (self.root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        with self.lock(exclusive=True):
            state = self.read_state()
            self.check_views(state)
            self._repair_views(state)
            if version in state.versions:
                self.check_version(version)
                return version, False
            target = self.version_dir(version)
            if not target.exists():
                self._copy_in(src, manifest, version)
            self.check_version(version)  # a folder left by a crash must match too
            content = AuditContent(
                seq=len(state.entries),
                ts_ns=self._now_ns(),
                who=who,
                action="add",
                alias=None,
                version=version,
                from_version=None,
                stage="shadow",
                from_stage=None,
                reason=note or "added",
                prev_sha256=state.head_sha256,
            )
            self._append(state, content)
            return version, True

    def promote(
        self, ref: str, *, alias: Alias, who: str, reason: str, stage: Stage | None = None
    ) -> AuditEntry:
        """Point ``alias`` at the version ``ref`` names, optionally moving its stage. A stage
        widens one step at a time (shadow -> paper -> live); it may narrow any number. A
        version whose manifest states no out-of-sample figures stays at shadow.

        Raises:
            RegistryError: unknown version, a skipped stage, a stage above shadow for a
                version without out-of-sample figures, nothing would change.
            AuditChainError: the chain is broken.
        """
        with self.lock(exclusive=True):
            state = self.read_state()
            self.check_views(state)
            self._repair_views(state)
            version = self.find(state, ref)
            self.check_version(version)
            current = state.versions[version].stage
            target = stage or current
            if stage_step(current, target) > 1:
                raise RegistryError(
                    f"version {version[:12]} is in {current}: stages widen one step at a time "
                    f"({' -> '.join(STAGES)}), so the next is "
                    f"{STAGES[STAGES.index(current) + 1]}, not {target}"
                )
            if target != "shadow" and out_of_sample_evidence(self.manifest(version)) is None:
                raise RegistryError(
                    f"version {version[:12]} has no out-of-sample figures (a model imported "
                    f"from elsewhere): it stays at the shadow stage, not {target}, until "
                    "`tradeloop evaluate MODEL DATA --out DIR` has measured it on data after "
                    "its training range and the evaluated folder is added"
                )
            before = state.aliases.get(alias)
            if before == version and target == current:
                raise RegistryError(f"{alias} is already {version[:12]} in stage {current}")
            content = AuditContent(
                seq=len(state.entries),
                ts_ns=self._now_ns(),
                who=who,
                action="promote",
                alias=alias,
                version=version,
                from_version=before,
                stage=target,
                from_stage=state.versions[before].stage if before else None,
                reason=reason,
                prev_sha256=state.head_sha256,
            )
            return self._append(state, content)

    def rollback_target(self, alias: Alias) -> str:
        """The version a ``rollback`` of ``alias`` would point it at now (load and check
        it before rolling back; ``rollback(expect=...)`` refuses if the log moved on).

        Raises:
            RegistryError: the alias never named an earlier version.
            AuditChainError: the chain is broken.
        """
        with self.lock(exclusive=False):
            state = self.read_state()
            self.check_views(state)
            return _rollback_stack(self.root, state, alias)[-2]

    def rollback(
        self, alias: Alias, *, who: str, reason: str, expect: str | None = None
    ) -> AuditEntry:
        """Point ``alias`` back at the version it named before the current one (per the audit
        log; a second rollback goes one further back). The version keeps its own stage.

        Raises:
            RegistryError: the alias never named an earlier version.
            AuditChainError: the chain is broken.
        """
        with self.lock(exclusive=True):
            state = self.read_state()
            self.check_views(state)
            self._repair_views(state)
            stack = _rollback_stack(self.root, state, alias)
            back = stack[-2]
            if expect is not None and back != expect:
                raise RegistryError(
                    f"{alias} would roll back to {back[:12]}, not {expect[:12]}: "
                    "the audit log changed meanwhile"
                )
            self.check_version(back)
            content = AuditContent(
                seq=len(state.entries),
                ts_ns=self._now_ns(),
                who=who,
                action="rollback",
                alias=alias,
                version=back,
                from_version=stack[-1],
                stage=state.versions[back].stage,
                from_stage=state.versions[stack[-1]].stage,
                reason=reason,
                prev_sha256=state.head_sha256,
            )
            return self._append(state, content)

    def _repair_views(self, state: RegistryState) -> None:
        if not state.entries:
            return
        last = state.entries[-1]
        head = AuditHead(seq=last.seq, entry_sha256=last.entry_sha256)
        if read_view(self.root / HEAD_FILE, _head_decoder) != head:
            _write_atomic(self.root / HEAD_FILE, _encoder.encode(head) + b"\n")
        (self.root / ALIASES_DIR).mkdir(exist_ok=True)
        for alias, (version, stage) in state.alias_view().items():
            record = AliasRecord(
                alias=alias,
                version=version,
                stage=stage,
                seq=last.seq,
                entry_sha256=last.entry_sha256,
            )
            path = self.alias_path(alias)
            if read_view(path, _alias_decoder) != record:
                _write_atomic(path, _encoder.encode(record) + b"\n")

    def _append(self, state: RegistryState, content: AuditContent) -> AuditEntry:
        entry, line = seal(content)
        try:
            decode_entry(line)  # constraints (non-empty who/reason) are checked on decode
        except msgspec.ValidationError as exc:
            raise RegistryError(f"audit entry refused: {exc}") from exc
        # the entry is on disk before any view names it: a crash leaves views behind the log
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        state.apply(str(self.audit_path), entry, line)
        self._repair_views(state)
        return entry

    def _copy_in(self, src: Path, manifest: Manifest, version: str) -> None:
        versions = self.root / VERSIONS_DIR
        tmp = Path(tempfile.mkdtemp(prefix=f".{version[:12]}-", dir=versions))
        try:
            for name in (manifest.model_file, MANIFEST_FILE, MANIFEST_HASH_FILE):
                shutil.copyfile(src / name, tmp / name)
                os.chmod(tmp / name, 0o444)
            # the copy is what is kept: check it, not the source that was read before
            copied = read_manifest(tmp)
            _, data = read_verified_model(tmp, copied)
            if version_id(copied, data) != version:
                raise RegistryError(f"{src}: the folder changed while it was being added")
            _fsync_dir(tmp)
            os.rename(tmp, versions / version)
            _fsync_dir(versions)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _rollback_stack(root: Path, state: RegistryState, alias: Alias) -> list[str]:
    stack = state.history.get(alias, [])
    if len(stack) < 2:
        raise RegistryError(
            f"{alias} has no earlier version to roll back to "
            f"(audit log: {len(stack)} in its history)"
        )
    return stack


def resolve(registry: str | Path, alias_or_version: str) -> Path:
    """The folder of the version an alias (``champion``, ``challenger``) or a version hash
    names, checked against its content address; load it with ``ModelConfig(path=...)``.

    Raises:
        RegistryError: unknown or unset, or the folder was changed.
        AuditChainError: the audit log's chain is broken.
    """
    return Registry(registry).lookup(alias_or_version).path


def _load_checked(folder: Path) -> Manifest:
    """Load ``folder`` with the engine's loader (what the daemon will do) before adding it."""
    try:
        manifest = read_manifest(folder)
        load_model(ModelConfig(kind=manifest.kind, name=manifest.name, path=str(folder)))
    except ModelError as exc:
        raise RegistryError(f"{folder}: not added: {exc}") from exc
    except PluginLoadError as exc:
        raise RegistryError(f"{folder}: not added: {exc.reason}") from exc
    return manifest


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old bytes or the new, never a mix:
    a temporary file in the same folder, fsynced, renamed over the target."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
