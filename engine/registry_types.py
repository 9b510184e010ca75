"""The model registry's records: stages, alias records, audit entries and the capital limit
per stage. Pure data and arithmetic; the files are read by ``engine.model_registry`` and written
by ``adapters.model_registry_store``.

A model version moves ``shadow`` -> ``paper`` -> ``live``. Its stage scales the configured
``max_position``: in shadow no position may be opened (0; reducing orders still go
out), in paper a quarter, live the whole limit (defaults of :class:`StageScale`, ``[registry] stage_scale`` in the config).
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Literal

import msgspec

Stage = Literal["shadow", "paper", "live"]
Alias = Literal["champion", "challenger"]
Action = Literal["add", "promote", "rollback"]

STAGES: tuple[Stage, ...] = ("shadow", "paper", "live")
ALIASES: tuple[Alias, ...] = ("champion", "challenger")

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Scale = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

GENESIS_SHA256 = "0" * 64  # the ``prev_sha256`` of the first audit entry


class StageScale(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[registry] stage_scale``: the share of ``max_position`` each stage may hold.

    Shadow sends nothing, so its share is 0; the shares widen in steps
    (``shadow <= paper <= live``).
    """

    shadow: Scale = 0.0
    paper: Scale = 0.25
    live: Scale = 1.0

    def __post_init__(self) -> None:
        if self.shadow != 0.0:
            raise ValueError("shadow opens no position: its scale must be 0")
        if not self.shadow <= self.paper <= self.live:
            raise ValueError(
                f"stage scales must widen in steps (shadow <= paper <= live), got "
                f"{self.shadow}, {self.paper}, {self.live}"
            )


DEFAULT_STAGE_SCALE = StageScale()


def stage_limits(
    stage: Stage, base_max_position: float, scale: StageScale = DEFAULT_STAGE_SCALE
) -> float:
    """The maximum position a model in ``stage`` may hold: ``base_max_position`` times the
    stage's share (0 in shadow).

    Raises:
        ValueError: ``base_max_position`` is negative or not finite, or ``stage`` unknown.
    """
    if not (math.isfinite(base_max_position) and base_max_position >= 0.0):
        raise ValueError(f"base_max_position must be finite and >= 0, got {base_max_position}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    share: float = getattr(scale, stage)
    return base_max_position * share


def stage_step(current: Stage, target: Stage) -> int:
    """How many steps ``target`` is above ``current`` (negative: a step down)."""
    return STAGES.index(target) - STAGES.index(current)


class AliasRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``aliases/<alias>``: the version an alias names, that version's stage, and the audit
    entry (``seq``, ``entry_sha256``) that was the log's head when the file was written."""

    alias: Alias
    version: Sha256
    stage: Stage
    seq: Annotated[int, msgspec.Meta(ge=0)]
    entry_sha256: Sha256


class AuditHead(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``audit.head``: the last audit entry written, so a cut tail is detected."""

    seq: Annotated[int, msgspec.Meta(ge=0)]
    entry_sha256: Sha256


class AuditContent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an audit entry says; its canonical JSON is what ``entry_sha256`` covers.

    ``seq`` counts entries from 0; ``ts_ns`` is wall time from the live clock; ``who`` and
    ``reason`` are the operator's. ``add`` puts ``version`` in at stage ``shadow`` (``alias``
    None); ``promote`` points ``alias`` at ``version`` and sets that version's ``stage``;
    ``rollback`` points ``alias`` back at the version it named before (``stage`` is that
    version's own). ``from_version``/``from_stage`` are what the alias named before and that
    version's stage (None when it was unset, and for ``add``). ``prev_sha256`` is the sha256
    of the previous entry's line bytes (newline included), ``GENESIS_SHA256`` for the first.
    """

    seq: Annotated[int, msgspec.Meta(ge=0)]
    ts_ns: Annotated[int, msgspec.Meta(ge=0)]
    who: Text
    action: Action
    alias: Alias | None
    version: Sha256
    from_version: Sha256 | None
    stage: Stage
    from_stage: Stage | None
    reason: Text
    prev_sha256: Sha256


class AuditEntry(AuditContent, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One line of ``audit.jsonl``: the content and the sha256 of its canonical JSON."""

    entry_sha256: Sha256


_encoder = msgspec.json.Encoder()
_entry_decoder = msgspec.json.Decoder(AuditEntry)


def content_sha256(content: AuditContent) -> str:
    """The sha256 of an entry's content in canonical JSON (fields in declared order)."""
    fields = {f: getattr(content, f) for f in AuditContent.__struct_fields__}
    return hashlib.sha256(_encoder.encode(AuditContent(**fields))).hexdigest()


def seal(content: AuditContent) -> tuple[AuditEntry, bytes]:
    """The entry with its content hash, and its line bytes (canonical JSON + newline)."""
    fields = {f: getattr(content, f) for f in AuditContent.__struct_fields__}
    entry = AuditEntry(**fields, entry_sha256=content_sha256(content))
    return entry, _encoder.encode(entry) + b"\n"


def encode_line(entry: AuditEntry) -> bytes:
    return _encoder.encode(entry) + b"\n"


def decode_entry(line: bytes) -> AuditEntry:
    """Decode one audit line (without checking the chain).

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not an audit entry.
    """
    return _entry_decoder.decode(line)
