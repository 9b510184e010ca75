"""The read-only half of the model registry: find the version an alias or a version id
names, with its folder checked against its content address and the audit log's chain
checked first. Every composition root (replay, the daemon, the replay of a journal) loads
a registry model through this; ``adapters.model_registry_store.Registry`` adds the writing half (add,
promote, rollback) on top of it.

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
rebuilt from ``audit.jsonl`` on every read, after checking the chain; alias files and
``audit.head`` are views of it. A view behind the log (a crash between the append and the
rename) is only noted; a view that matches no state the log ever had is refused as
tampering, like a broken chain.

The chain catches an edit, deletion or reordering of any entry. Whoever can rewrite the whole
log with recomputed hashes (and the views) is not caught by the chain alone: anchor the head
hash outside the folder (``Resolved.audit_entry_sha256``, journaled by the daemon).
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from engine.errors import AuditChainError, ModelError, RegistryError
from engine.registry_types import (
    ALIASES,
    GENESIS_SHA256,
    Alias,
    AliasRecord,
    AuditEntry,
    AuditHead,
    Stage,
    content_sha256,
    decode_entry,
    encode_line,
    stage_step,
)
from engine.signals.manifest import Manifest, read_manifest, read_verified_model

VERSIONS_DIR = "versions"
ALIASES_DIR = "aliases"
AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
LOCK_FILE = ".lock"
MIN_PREFIX = 6  # shortest version prefix accepted (config or command line)
_VERSION_DOMAIN = b"tradeloop-model-version-1\n"
_T = TypeVar("_T")

_canonical = msgspec.json.Encoder(order="sorted")
_alias_decoder = msgspec.json.Decoder(AliasRecord)
_head_decoder = msgspec.json.Decoder(AuditHead)


def out_of_sample_evidence(manifest: Manifest) -> str | None:
    """What out-of-sample figures the manifest states, in words, or None when it states
    none (a model imported from elsewhere, before ``tradeloop evaluate``): the registry
    holds such a version at the shadow stage.

    Figures count when a fold tested rows and measured something (walk-forward training,
    or the evaluation ``tradeloop evaluate`` records as a fold after the training range),
    or when an ``oos_`` metric is defined.
    """
    tested = [
        f
        for f in manifest.folds
        if f.test_rows > 0 and any(v is not None for v in f.metrics.values())
    ]
    oos = sorted(k for k, v in manifest.metrics.items() if k.startswith("oos_") and v is not None)
    if not tested and not oos:
        return None
    rows = sum(f.test_rows for f in tested)
    return f"{len(tested)} tested fold(s), {rows} rows; {', '.join(oos) or 'no oos_ metric'}"


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

    def apply(self, file: str, entry: AuditEntry, line: bytes) -> None:
        """Add one checked entry (its line bytes, newline included) to the state.

        Raises:
            AuditChainError: an entry the registry's rules could not have written.
        """
        _apply(file, self, entry)
        self.entries.append(entry)
        self.snapshots.append(self.alias_view())
        self.head_sha256 = hashlib.sha256(line).hexdigest()


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


class RegistryReader:
    """A registry folder, read only. Every read checks the audit chain first and refuses a
    broken one; a version is only handed out after its folder is checked against its
    address.

    Args:
        root: the registry folder (``models/``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

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
        with self.lock(exclusive=False):
            state = self.read_state()
            self.check_views(state)
            return state

    def manifest(self, version: str) -> Manifest:
        """A version's manifest, its folder checked against its address.

        Raises:
            RegistryError: the folder is missing or was changed.
        """
        return self.check_version(version)

    def lookup(self, ref: str) -> Resolved:
        """The version ``ref`` names: an alias, a full version or a unique prefix (>= 6 hex
        digits). Its folder is checked: manifest hash, model hash and content address.

        Raises:
            RegistryError: unknown, ambiguous, unset alias, or a damaged version folder
                (names the file).
            AuditChainError: the chain is broken (names the file and the entry).
        """
        with self.lock(exclusive=False):
            state = self.read_state()
            self.check_views(state)
            version = self.find(state, ref)
            manifest = self.check_version(version)
            last = state.entries[-1]
            return Resolved(
                version=version,
                path=self.version_dir(version),
                stage=state.versions[version].stage,
                aliases=tuple(state.aliases_of(version)),
                manifest=manifest,
                audit_seq=last.seq,
                audit_entry_sha256=last.entry_sha256,
            )

    @contextmanager
    def lock(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the registry's lock: shared to read, exclusive to write. ``read_state``
        and ``check_views`` answer for the log only while it is held (a writer appends
        the entry before it rewrites the views).

        Raises:
            RegistryError: no registry folder, or the lock file cannot be opened.
        """
        if not self.root.is_dir():
            raise RegistryError(
                f"{self.root}: no model registry here "
                "(create one with 'tradeloop models add MODEL_DIR --registry DIR')"
            )
        path = self.root / LOCK_FILE
        # a reader needs no write access once a writer made the file (a read-only mount)
        mode = "rb" if not exclusive and path.exists() else "a+b"
        try:
            f = path.open(mode)
        except OSError as exc:
            raise RegistryError(f"{path}: cannot open the lock: {exc.strerror}") from exc
        with f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def read_state(self) -> RegistryState:
        """Rebuild the state from ``audit.jsonl``, checking every link (hold ``lock``).

        Raises:
            AuditChainError: the first entry that breaks the chain or the rules.
        """
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
            state.apply(str(path), entry, line)
        return state

    def check_views(self, state: RegistryState) -> list[str]:
        """Judge ``audit.head`` and the alias files against the log (hold ``lock``);
        returns notes on views that are merely behind it (repaired at the next change).

        Raises:
            AuditChainError, RegistryError: a view that matches no state the log had.
        """
        notes: list[str] = []
        audit = str(self.audit_path)
        last = len(state.entries) - 1
        head = read_view(self.root / HEAD_FILE, _head_decoder)
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
            record = read_view(self.alias_path(alias), _alias_decoder)
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

    def find(self, state: RegistryState, ref: str) -> str:
        """The full version ``ref`` names in ``state``: an alias, a version or a unique
        prefix of at least ``MIN_PREFIX`` hex digits.

        Raises:
            RegistryError: an unset alias, an unknown or ambiguous version.
        """
        alias = next((a for a in ALIASES if a == ref), None)
        if alias is not None:
            version = state.aliases.get(alias)
            if version is None:
                raise RegistryError(
                    f"{self.root}: alias {alias} is not set "
                    f"(tradeloop models promote VERSION --to {alias})"
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
                f"version prefix {ref!r} is ambiguous in {self.root}: "
                f"{', '.join(v[:12] for v in found)}"
            )
        return found[0]

    def check_version(self, version: str) -> Manifest:
        """The version folder's manifest, after checking the manifest's hash, the model
        file's hash and that both together are the folder's address.

        Raises:
            RegistryError: a file is missing or changed (names it), or the content is not
                the address.
        """
        folder = self.version_dir(version)
        try:
            manifest = read_manifest(folder)
            _, data = read_verified_model(folder, manifest)
        except ModelError as exc:
            raise RegistryError(f"version {version[:12]}: {exc}") from exc
        actual = version_id(manifest, data)
        if actual != version:
            raise RegistryError(
                f"{folder}: content does not match its address (sha256 "
                f"{actual[:12]}...): the version was changed"
            )
        return manifest


def resolve_version(registry: str | Path, ref: str) -> Resolved:
    """The version an alias (``champion``, ``challenger``), a version id or a unique prefix
    names in ``registry``, its folder checked against its address and the audit chain
    checked first.

    Raises:
        RegistryError: no registry, an unknown, unset or ambiguous ref, a changed folder.
        AuditChainError: the audit log's chain is broken.
    """
    return RegistryReader(registry).lookup(ref)


def read_view(path: Path, decoder: msgspec.json.Decoder[_T]) -> _T | None:
    """A view file (alias record, audit head) decoded; None when it does not exist.

    Raises:
        RegistryError: the file does not decode (it was edited).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RegistryError(f"{path}: unreadable ({exc}): the file was edited") from exc


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
