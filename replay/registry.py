"""The model registry: a folder of content-addressed model versions, two aliases, a stage
per version, and a hash-chained audit log that is the registry's only truth.

Layout under the registry folder::

    versions/<version>/        model file, manifest.json, manifest.sha256 (never changed)
    aliases/champion           AliasRecord JSON (a view of the log, written temp + rename)
    aliases/challenger
    audit.jsonl                one AuditEntry per line, append-only, hash-chained
    audit.head                 AuditHead JSON: the last entry written (catches a cut tail)
    .lock                      flock: one writer at a time, readers shared

``<version>`` is the sha256 of the canonical manifest (sorted-key JSON of the decoded
manifest) and the model file's bytes, so the same model added twice is the same version.

The state (which versions exist, their stages, what each alias names and its history) is
rebuilt from ``audit.jsonl`` on every command, after checking the chain; alias files and
``audit.head`` are views of it, rewritten after each change. A view behind the log (a crash
between the append and the rename) is rewritten by the next change; a view that matches no
state the log ever had is refused as tampering, like a broken chain.

The chain catches an edit, deletion or reordering of any entry. Whoever can rewrite the whole
log with recomputed hashes (and the views) is not caught by the chain alone: anchor the head
hash outside the folder (the daemon journals it at every switch).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from engine.clock import LiveClock
from engine.config import ModelConfig
from engine.errors import AuditChainError, ModelError, PluginLoadError, RegistryError
from engine.plugins import load_model
from engine.registry_types import (
    ALIASES,
    GENESIS_SHA256,
    STAGES,
    Alias,
    AliasRecord,
    AuditContent,
    AuditEntry,
    AuditHead,
    Stage,
    content_sha256,
    decode_entry,
    encode_line,
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

VERSIONS_DIR = "versions"
ALIASES_DIR = "aliases"
AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
LOCK_FILE = ".lock"
MIN_PREFIX = 6  # shortest version prefix accepted on the command line
_VERSION_DOMAIN = b"tradeloop-model-version-1\n"
_T = TypeVar("_T")

_canonical = msgspec.json.Encoder(order="sorted")
_alias_decoder = msgspec.json.Decoder(AliasRecord)
_head_decoder = msgspec.json.Decoder(AuditHead)
_encoder = msgspec.json.Encoder()


def version_id(manifest: Manifest, model_bytes: bytes) -> str:
    """The content address of a model: sha256 over a domain tag, the canonical manifest's
    length and bytes, then the model file's bytes (the length keeps the two apart)."""
    canon = _canonical.encode(manifest)
    h = hashlib.sha256(_VERSION_DOMAIN)
    h.update(len(canon).to_bytes(8, "big"))
    h.update(canon)
    h.update(model_bytes)
    return h.hexdigest()


@dataclass(frozen=True)
class VersionInfo:
    version: str
    stage: Stage
    created_ns: int
    added_by: str
    note: str


@dataclass
class RegistryState:
    """What the audit log says, rebuilt entry by entry.

    ``history[alias]`` is the alias's stack of versions (rollback pops it); ``snapshots[i]``
    is what each alias named (version, stage) after entry ``i``, to judge the views.
    """

    entries: list[AuditEntry] = field(default_factory=list)
    versions: dict[str, VersionInfo] = field(default_factory=dict)
    aliases: dict[Alias, str] = field(default_factory=dict)
    history: dict[Alias, list[str]] = field(default_factory=dict)
    snapshots: list[dict[Alias, tuple[str, Stage]]] = field(default_factory=list)
    head_sha256: str = GENESIS_SHA256  # sha256 of the last line's bytes

    def alias_view(self) -> dict[Alias, tuple[str, Stage]]:
        return {a: (v, self.versions[v].stage) for a, v in self.aliases.items()}

    def aliases_of(self, version: str) -> list[Alias]:
        return [a for a in ALIASES if self.aliases.get(a) == version]


@dataclass(frozen=True)
class Resolved:
    """A version found by alias or hash, its folder checked against its address.

    ``audit_seq`` and ``audit_entry_sha256`` name the audit log's last entry when it was
    read: the state this answer comes from (journal them beside a switch).
    """

    version: str
    path: Path
    stage: Stage
    aliases: tuple[Alias, ...]
    manifest: Manifest
    audit_seq: int
    audit_entry_sha256: str


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    head_sha256: str
    notes: tuple[str, ...]


class Registry:
    """A registry folder. Every method checks the audit chain first and refuses a broken one.

    Args:
        root: the registry folder (``models/``).
        now_ns: wall time for audit entries; the live clock unless a test gives one.
    """

    def __init__(self, root: str | Path, *, now_ns: Callable[[], int] | None = None) -> None:
        self.root = Path(root)
        self._now_ns = now_ns or LiveClock().now_ns

    @property
    def audit_path(self) -> Path:
        return self.root / AUDIT_FILE

    def version_dir(self, version: str) -> Path:
        return self.root / VERSIONS_DIR / version

    def alias_path(self, alias: Alias) -> Path:
        return self.root / ALIASES_DIR / alias

    def state(self) -> RegistryState:
        """The state the audit log describes, after checking the chain and the views.

        Raises:
            RegistryError: no registry at ``root``.
            AuditChainError: the chain or a view is broken.
        """
        with self._lock(exclusive=False):
            state = self._read_state()
            self._check_views(state)
            return state

    def verify(self) -> VerifyReport:
        """Check the chain, ``audit.head``, the alias files and every version folder.

        Raises:
            AuditChainError: first bad entry, or a view matching no state of the log.
            RegistryError: a version folder whose content is not its address.
        """
        with self._lock(exclusive=False):
            state = self._read_state()
            notes = self._check_views(state)
            for version in state.versions:
                self._check_version_dir(version)
            for folder in sorted((self.root / VERSIONS_DIR).glob("[0-9a-f]*")):
                if folder.name not in state.versions:
                    notes.append(
                        f"{VERSIONS_DIR}/{folder.name} is not in the audit log "
                        "(an interrupted add): add the model again to record it"
                    )
            return VerifyReport(len(state.entries), state.head_sha256, tuple(notes))

    def manifest(self, version: str) -> Manifest:
        """A version's manifest, its folder checked against its address.

        Raises:
            RegistryError: the folder is missing or was changed.
        """
        return self._check_version_dir(version)

    def lookup(self, ref: str) -> Resolved:
        """The version ``ref`` names: an alias, a full version or a unique prefix (>= 6 hex
        digits). Its folder is checked: manifest hash, model hash and content address.

        Raises:
            RegistryError: unknown, ambiguous, unset alias, or a damaged version folder.
            AuditChainError: the chain is broken.
        """
        with self._lock(exclusive=False):
            state = self._read_state()
            self._check_views(state)
            version = self._find(state, ref)
            manifest = self._check_version_dir(version)
            info = state.versions[version]
            last = state.entries[-1]
            return Resolved(
                version=version,
                path=self.version_dir(version),
                stage=info.stage,
                aliases=tuple(state.aliases_of(version)),
                manifest=manifest,
                audit_seq=last.seq,
                audit_entry_sha256=last.entry_sha256,
            )

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
        with self._lock(exclusive=True):
            state = self._read_state()
            self._check_views(state)
            self._repair_views(state)
            if version in state.versions:
                self._check_version_dir(version)
                return version, False
            target = self.version_dir(version)
            if not target.exists():
                self._copy_in(src, manifest, version)
            self._check_version_dir(version)  # a folder left by a crash must match too
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
        widens one step at a time (shadow -> paper -> live); it may narrow any number.

        Raises:
            RegistryError: unknown version, a skipped stage, nothing would change.
            AuditChainError: the chain is broken.
        """
        with self._lock(exclusive=True):
            state = self._read_state()
            self._check_views(state)
            self._repair_views(state)
            version = self._find(state, ref)
            self._check_version_dir(version)
            current = state.versions[version].stage
            target = stage or current
            if stage_step(current, target) > 1:
                raise RegistryError(
                    f"version {version[:12]} is in {current}: stages widen one step at a time "
                    f"({' -> '.join(STAGES)}), so the next is "
                    f"{STAGES[STAGES.index(current) + 1]}, not {target}"
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

    def rollback(self, alias: Alias, *, who: str, reason: str) -> AuditEntry:
        """Point ``alias`` back at the version it named before the current one (per the audit
        log; a second rollback goes one further back). The version keeps its own stage.

        Raises:
            RegistryError: the alias never named an earlier version.
            AuditChainError: the chain is broken.
        """
        with self._lock(exclusive=True):
            state = self._read_state()
            self._check_views(state)
            self._repair_views(state)
            stack = state.history.get(alias, [])
            if len(stack) < 2:
                raise RegistryError(
                    f"{alias} has no earlier version to roll back to "
                    f"(audit log: {len(stack)} in its history)"
                )
            back = stack[-2]
            self._check_version_dir(back)
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

    @contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        if not self.root.is_dir():
            raise RegistryError(
                f"{self.root}: no model registry here "
                "(create one with 'tradeloop models add MODEL_DIR --registry DIR')"
            )
        path = self.root / LOCK_FILE
        # a reader needs no write access once a writer made the file (a read-only mount)
        with path.open("rb" if not exclusive and path.exists() else "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _read_state(self) -> RegistryState:
        path = self.audit_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        state = RegistryState()
        if not data:
            return state
        lines = data.split(b"\n")
        if lines[-1] != b"":
            raise AuditChainError(str(path), len(lines), "incomplete last line (a torn write)")
        for i, body in enumerate(lines[:-1]):
            line = body + b"\n"
            entry = _checked_entry(str(path), i, line, state.head_sha256)
            _apply(str(path), state, entry)
            state.entries.append(entry)
            state.snapshots.append(state.alias_view())
            state.head_sha256 = hashlib.sha256(line).hexdigest()
        return state

    def _check_views(self, state: RegistryState) -> list[str]:
        """Judge ``audit.head`` and the alias files against the log; returns notes on views
        that are merely behind it (repaired at the next change)."""
        notes: list[str] = []
        audit = str(self.audit_path)
        last = len(state.entries) - 1
        head = _read_view(self.root / HEAD_FILE, _head_decoder)
        if head is None:
            if state.entries:
                notes.append(f"{HEAD_FILE} missing: rewritten at the next change")
        else:
            if head.seq > last:
                raise AuditChainError(
                    audit,
                    last + 2,
                    f"{HEAD_FILE} names entry {head.seq + 1} "
                    f"but the log ends at entry {last + 1}: entries were deleted",
                )
            if state.entries[head.seq].entry_sha256 != head.entry_sha256:
                raise AuditChainError(audit, head.seq + 1, f"does not match {HEAD_FILE}")
            if head.seq < last:
                notes.append(f"{HEAD_FILE} is behind the log: rewritten at the next change")
        for alias in ALIASES:
            record = _read_view(self.alias_path(alias), _alias_decoder)
            now = state.alias_view().get(alias)
            if record is None:
                if now is not None:
                    notes.append(f"alias file {alias} missing: rewritten at the next change")
                continue
            where = self.alias_path(alias)
            if record.alias != alias:
                raise RegistryError(f"{where}: names alias {record.alias!r}, not {alias!r}")
            if record.seq > last:
                raise AuditChainError(
                    audit,
                    last + 2,
                    f"{where} refers to entry {record.seq + 1} "
                    f"but the log ends at entry {last + 1}: entries were deleted",
                )
            if state.entries[record.seq].entry_sha256 != record.entry_sha256:
                raise AuditChainError(audit, record.seq + 1, f"does not match {where}")
            if state.snapshots[record.seq].get(alias) != (record.version, record.stage):
                raise RegistryError(
                    f"{where}: says {record.version[:12]} ({record.stage}), "
                    f"which the audit log never gave {alias}: the file was edited"
                )
            if (record.version, record.stage) != now:
                notes.append(f"alias file {alias} is behind the log: rewritten at the next change")
        return notes

    def _repair_views(self, state: RegistryState) -> None:
        if not state.entries:
            return
        last = state.entries[-1]
        head = AuditHead(seq=last.seq, entry_sha256=last.entry_sha256)
        if _read_view(self.root / HEAD_FILE, _head_decoder) != head:
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
            if _read_view(path, _alias_decoder) != record:
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
        _apply(str(self.audit_path), state, entry)
        state.entries.append(entry)
        state.snapshots.append(state.alias_view())
        state.head_sha256 = hashlib.sha256(line).hexdigest()
        self._repair_views(state)
        return entry

    def _find(self, state: RegistryState, ref: str) -> str:
        if ref in ALIASES:
            version = state.aliases.get(ref)
            if version is None:
                raise RegistryError(
                    f"alias {ref} is not set (tradeloop models promote VERSION --to {ref})"
                )
            return version
        text = ref.lower()
        if len(text) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in text):
            raise RegistryError(
                f"{ref!r} is neither an alias ({', '.join(ALIASES)}) nor a version "
                f"(at least {MIN_PREFIX} hex digits)"
            )
        found = [v for v in state.versions if v.startswith(text)]
        if not found:
            raise RegistryError(f"no version {ref!r} in {self.root}")
        if len(found) > 1:
            raise RegistryError(
                f"version prefix {ref!r} is ambiguous: {', '.join(v[:12] for v in found)}"
            )
        return found[0]

    def _check_version_dir(self, version: str) -> Manifest:
        folder = self.version_dir(version)
        try:
            manifest = read_manifest(folder)
            _, data = read_verified_model(folder, manifest)
        except ModelError as exc:
            raise RegistryError(f"version {version[:12]}: {exc}") from exc
        if version_id(manifest, data) != version:
            raise RegistryError(
                f"{folder}: content does not match its address (sha256 "
                f"{version_id(manifest, data)[:12]}...): the version was changed"
            )
        return manifest

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


def _checked_entry(file: str, index: int, line: bytes, prev_sha256: str) -> AuditEntry:
    n = index + 1
    try:
        entry = decode_entry(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AuditChainError(file, n, f"not an audit entry ({exc})") from exc
    if encode_line(entry) != line:
        raise AuditChainError(file, n, "bytes differ from the entry's canonical form")
    if content_sha256(entry) != entry.entry_sha256:
        raise AuditChainError(file, n, "content does not match its entry_sha256")
    if entry.seq != index:
        raise AuditChainError(
            file,
            n,
            f"has seq {entry.seq} where {index} belongs: "
            "entries were deleted, inserted or reordered",
        )
    if entry.prev_sha256 != prev_sha256:
        what = "the start of the log" if index == 0 else f"entry {index}'s bytes"
        raise AuditChainError(
            file,
            n,
            f"prev_sha256 does not match {what}: an earlier entry was edited, deleted or reordered",
        )
    return entry


def _apply(file: str, state: RegistryState, entry: AuditEntry) -> None:
    """One entry's effect on the state; an entry the rules could not have written is refused
    like a broken link."""
    n = entry.seq + 1
    if entry.action == "add":
        if entry.version in state.versions or entry.alias is not None:
            raise AuditChainError(file, n, "adds a version twice or names an alias")
        state.versions[entry.version] = VersionInfo(
            entry.version, entry.stage, entry.ts_ns, entry.who, entry.reason
        )
        return
    alias = entry.alias
    info = state.versions.get(entry.version)
    if alias is None or info is None:
        raise AuditChainError(file, n, f"{entry.action} of a version never added or without alias")
    before = state.aliases.get(alias)
    if before != entry.from_version:
        raise AuditChainError(file, n, f"from_version does not match what {alias} named")
    if entry.from_stage != (state.versions[before].stage if before else None):
        raise AuditChainError(file, n, f"from_stage does not match the stage {alias} had")
    if entry.action == "promote" and stage_step(info.stage, entry.stage) > 1:
        raise AuditChainError(file, n, "skips a stage, which promote never writes")
    stack = state.history.setdefault(alias, [])
    if entry.action == "rollback":
        if len(stack) < 2 or stack[-2] != entry.version:
            raise AuditChainError(
                file, n, f"rolls {alias} back to a version it did not name before"
            )
        stack.pop()
    elif entry.version != state.aliases.get(alias):
        stack.append(entry.version)
    state.aliases[alias] = entry.version
    state.versions[entry.version] = VersionInfo(
        info.version, entry.stage, info.created_ns, info.added_by, info.note
    )


def _read_view(path: Path, decoder: msgspec.json.Decoder[_T]) -> _T | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RegistryError(f"{path}: unreadable ({exc}): the file was edited") from exc


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
