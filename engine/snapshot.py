"""Snapshots of the engine's trading state, so a restart replays only the journal's tail.

A restarted daemon rebuilds its engine by applying every journal record (the state is a
function of the input stream). That costs time in proportion to the journal: 16-28 s
after 1.8 M ticks. A snapshot is the state after record ``seq``; a restart loads the
newest valid one and applies only the records after it. The state must then be *the
same* as a full rebuild's, or the decisions that follow differ from the replay's.

What is captured, and why all of it: orders and the fill ids seen, the portfolio
(positions, cash, realized, fees), the loss monitor's day figures, token buckets, the
trading-state claims with their sources, the desk's client order id counter and
waiting orders, the clock and its timers, the feature kernels' state (rings and
running sums: an EMA remembers every tick, so replaying "the last window" of the
journal would not reproduce it exactly), the signal zones, the model monitor, the
strategy's own attributes and the simulated venue (paper). It is the whole mutable
object graph hanging off the ``Engine``, pickled, so a field added to any of these
classes is captured without a list to keep up to date here.

What is not captured: the wiring the composition root makes again from the config
(instruments, the feature set and its compiled kernels, the model, the event sinks,
the order sender). These are written as references (pickle's persistent ids) and
resolved to the new engine's own objects on load (the model is the one the engine was
built with: a snapshot taken after a switch to another champion needs that champion loaded
in its place, which the daemon's rebuild does, ``ModelSwitcher.restored``). A few objects are referenced from
outside the engine (the engine itself, its clock, the model monitor, the daemon's
fill ledger): their state is restored in place, so every holder sees the restored
state.

A snapshot is only valid for the config that wrote it (``config_sha256``) and for
``STATE_VERSION``; anything else is refused and the restart replays in full.

Bytes, all integers little-endian::

    magic       8 bytes   b"TLSNAP\\r\\n"
    version     u32       FORMAT_VERSION
    header      frame     length u32, crc32 u32, SnapshotHeader (MessagePack)
    payload     bytes     the pickled state; its sha256 is in the header

Loading a snapshot runs pickle on its payload, which can run code: a snapshot is as
trusted as the journal folder it sits in (whose config copy names the plugins to
import). The loader only resolves classes defined in an allowed set of modules, named
directly (pickle would otherwise follow ``adapters.daemon`` + ``os.system`` to a
function), numpy's ``ndarray``/``dtype`` and the few functions numpy and msgspec rebuild
their objects with; the constructors of those classes still run, hence the trust.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import types
import zlib
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from engine.engine import Engine
from engine.errors import JournalError

MAGIC: Final = b"TLSNAP\r\n"
FORMAT_VERSION: Final = 1
# Bump when a class in the engine's state changes its attributes incompatibly: a snapshot
# of another layout is then ignored (a full replay), never half-loaded. 2: the trading
# state holds a claim per holder (shutdown, reconciliation, daemon beside the operator).
# 3: the feature kernels' time rings keep the time of their last update (gap resets), one
# more int per ring: an older row would be read shifted by one.
STATE_VERSION: Final = 3
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_CRC = struct.Struct("<I")
# the engine's attributes the composition root sets (not state)
_WIRING: Final = frozenset({"sinks", "observers"})
# modules whose classes a snapshot may name besides the engine's, the strategy's and the
# monitors' own (see ``_Unpickler.find_class``)
_ALLOWED_MODULES: Final = ("engine", "adapters", "strategies", "replay", "numpy", "msgspec")
_ALLOWED_STDLIB: Final = frozenset(
    {"collections", "copyreg", "datetime", "decimal", "fractions", "_collections", "enum"}
)
# the functions the pickles of numpy arrays and msgspec structs call to rebuild them
_ALLOWED_FUNCTIONS: Final = frozenset(
    {
        ("msgspec._utils", "rebuild"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
        ("copyreg", "_reconstructor"),
    }
)
# numpy's classes a state holds (not ``memmap``, whose constructor writes files)
_ALLOWED_NUMPY: Final = frozenset({"ndarray", "dtype"})
_ALLOWED_BUILTINS: Final = frozenset(
    {"set", "frozenset", "dict", "list", "tuple", "bytearray", "complex", "slice", "range"}
)


class SnapshotHeader(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a snapshot covers and how to check it.

    Attributes:
        seq: the last journal record applied to the captured state.
        ts_recv: that record's receive time.
        records: how many journal records the state includes (a rebuild's count).
        sessions: the sessions whose first record the state has seen, oldest first.
        journal_file: the journal file (name) in which the record after ``seq`` starts.
        journal_offset: its byte offset there (a restart reads from there).
        config_sha256: sha256 of the config the state was built with.
        state_version: ``STATE_VERSION`` of the build that wrote it.
        payload_bytes: length of the payload.
        payload_sha256: sha256 of the payload (hex).
    """

    seq: int
    ts_recv: int
    records: int
    sessions: list[str]
    journal_file: str
    journal_offset: int
    config_sha256: str
    state_version: int
    payload_bytes: int
    payload_sha256: str


def encode_snapshot(header: SnapshotHeader, payload: bytes) -> bytes:
    """The snapshot file's bytes (``header`` must describe ``payload``)."""
    head = msgspec.msgpack.encode(header)
    return b"".join(
        (_PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)), _CRC.pack(zlib.crc32(head)), head, payload)
    )


def decode_snapshot(data: bytes, source: str = "snapshot") -> tuple[SnapshotHeader, bytes]:
    """Split and check a snapshot file: magic, version, header CRC, payload length and
    sha256 (a torn or flipped byte anywhere is caught).

    Raises:
        JournalError: the bytes are not a whole, intact snapshot.
    """
    fixed = _PREFIX.size + _CRC.size
    if len(data) < fixed:
        raise JournalError(source, 0, "shorter than a snapshot's header")
    magic, version, length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise JournalError(source, 0, "not a tradeloop snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise JournalError(source, 8, f"snapshot format {version}, this build reads 1")
    (crc,) = _CRC.unpack_from(data, _PREFIX.size)
    head = data[fixed : fixed + length]
    if len(head) != length or zlib.crc32(head) != crc:
        raise JournalError(source, fixed, "snapshot header torn or damaged (CRC)")
    try:
        header = msgspec.msgpack.decode(head, type=SnapshotHeader)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise JournalError(source, fixed, f"undecodable snapshot header: {exc}") from exc
    payload = data[fixed + length :]
    if len(payload) != header.payload_bytes:
        raise JournalError(
            source,
            fixed + length,
            f"payload of {len(payload)} bytes, the header says {header.payload_bytes}",
        )
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise JournalError(source, fixed + length, "payload sha256 mismatch")
    return header, payload


def payload_digest(payload: bytes) -> str:
    """The ``payload_sha256`` of ``payload``."""
    return hashlib.sha256(payload).hexdigest()


# the state


def _anchors(engine: Engine, extras: Mapping[str, object]) -> dict[str, object]:
    """Objects whose state is restored in place (others may hold them)."""
    anchors: dict[str, object] = {"engine": engine, "clock": engine.clock}
    for i, observer in enumerate(engine.observers):
        anchors[f"observer.{i}"] = observer
    for name, obj in extras.items():
        anchors[f"extra.{name}"] = obj
    return anchors


def _fixed(engine: Engine) -> dict[str, object]:
    """Wiring made again from the config: referenced, never pickled."""
    fixed: dict[str, object] = {
        "instruments": engine.instruments,
        "features": engine.features,
        "model": engine.model,
        "context": engine._context,
    }
    # the risk engine's warm-up test is set by ``bind`` from the config (a bound method
    # of the engine, or a constant lambda when warm-up is off): wiring too
    fixed["is_warm"] = getattr(engine.risk, "_is_warm", None)
    sender = getattr(engine.router, "sender", None)
    if sender is not None:
        fixed["sender"] = sender
    for i, sink in enumerate(engine.sinks):
        fixed[f"sink.{i}"] = sink
    return fixed


def _table(engine: Engine, extras: Mapping[str, object]) -> dict[str, object]:
    table = _fixed(engine)
    table.update(_anchors(engine, extras))  # an observer is also a sink: restored in place
    return {name: obj for name, obj in table.items() if obj is not None}


def _method(obj: object, name: str) -> Any:
    """A bound method again (pickle's own way is ``builtins.getattr``, which the loader
    does not allow: it reaches anything): a method of ``obj`` only, never a dunder."""
    if name.startswith("__"):
        raise pickle.UnpicklingError(f"a snapshot may not name method {name}")
    method = getattr(obj, name)
    if not isinstance(method, types.MethodType) or method.__self__ is not obj:
        raise pickle.UnpicklingError(f"{name} is not a method of {type(obj).__name__}")
    return method


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, ids: dict[int, str]) -> None:
        super().__init__(file, protocol=5)
        self._ids = ids

    def persistent_id(self, obj: Any) -> str | None:
        return self._ids.get(id(obj))

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.MethodType):  # the risk engine keeps ``engine._is_warm``
            return _method, (obj.__self__, obj.__func__.__name__)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, table: dict[str, object], modules: set[str]) -> None:
        super().__init__(file)
        self._table = table
        self._modules = modules

    def persistent_load(self, pid: Any) -> object:
        if not isinstance(pid, str) or pid not in self._table:
            raise pickle.UnpicklingError(f"reference {pid!r} is not part of this engine")
        return self._table[pid]

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return super().find_class(module, name)
        # decided before anything is imported: no dunder step (``X.__class__`` reaches
        # ``type``; ``pkg.__main__`` runs a program on import), numpy only by exact name
        if any(part.startswith("__") for part in (*module.split("."), *name.split("."))):
            raise pickle.UnpicklingError(f"a snapshot may not name {module}.{name}")
        root = module.split(".", 1)[0]
        allowed = (
            (module == "builtins" and name in _ALLOWED_BUILTINS)
            or (module == "numpy" and name in _ALLOWED_NUMPY)
            or (root in _ALLOWED_MODULES and root != "numpy")
            or root in _ALLOWED_STDLIB
            or module in self._modules
        )
        if not allowed:
            raise pickle.UnpicklingError(f"a snapshot may not name {module}.{name}")
        # pickle follows a dotted name through attributes (``os.system`` from an allowed
        # module that imports ``os``): only classes, step by step, each defined in an
        # allowed module, may be named
        try:
            found: Any = super().find_class(module, name.split(".", 1)[0])
        except (AttributeError, ImportError) as exc:
            raise pickle.UnpicklingError(f"a snapshot names {module}.{name}: {exc}") from exc
        for part in name.split(".")[1:]:
            if not isinstance(found, type):
                break
            found = getattr(found, part, None)
        home = getattr(found, "__module__", None) or ""
        home_ok = (
            home.split(".", 1)[0] in (*_ALLOWED_MODULES, *_ALLOWED_STDLIB)
            or home in self._modules
            or (home == "builtins" and getattr(found, "__name__", "") in _ALLOWED_BUILTINS)
        )
        if not isinstance(found, type) or not home_ok:
            raise pickle.UnpicklingError(f"a snapshot may only name classes, not {module}.{name}")
        return found


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def capture_state(engine: Engine, extras: Mapping[str, object] | None = None) -> bytes:
    """The engine's trading state (and that of ``extras``, objects outside the engine
    that follow its inputs, such as the daemon's fill ledger) as bytes.

    Raises:
        JournalError: something in the state cannot be pickled (a strategy that keeps
            an open file, say): no snapshot, a restart replays in full.
    """
    extras = extras or {}
    anchors = _anchors(engine, extras)
    table = _table(engine, extras)
    state: dict[str, object] = {
        "types": {name: _type_name(obj) for name, obj in anchors.items()},
    }
    for name, obj in anchors.items():
        attributes = dict(vars(obj))
        if obj is engine:
            for key in _WIRING:
                attributes.pop(key, None)
        state[name] = attributes
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, {id(obj): name for name, obj in table.items()}).dump(state)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise JournalError("snapshot", 0, f"the engine's state cannot be captured: {exc}") from exc
    return buffer.getvalue()


def restore_state(
    engine: Engine, payload: bytes, extras: Mapping[str, object] | None = None
) -> None:
    """Put a captured state into ``engine`` (built from the same config, nothing applied
    yet) and ``extras``. All or nothing: the payload is loaded and checked in full before
    any object changes.

    Raises:
        JournalError: the payload does not load, names a class outside the allowed
            modules, or was captured from objects of other types.
    """
    extras = extras or {}
    anchors = _anchors(engine, extras)
    modules = {type(obj).__module__ for obj in anchors.values()}
    modules.add(type(engine.strategy).__module__)
    try:
        state = _Unpickler(io.BytesIO(payload), _table(engine, extras), modules).load()
    except (Exception, SystemExit) as exc:  # whatever the bytes make pickle raise
        raise JournalError("snapshot", 0, f"the state does not load: {exc!r}") from exc
    if not isinstance(state, dict):
        raise JournalError("snapshot", 0, "the state is not a mapping")
    types = state.get("types")
    expected = {name: _type_name(obj) for name, obj in anchors.items()}
    if types != expected:
        raise JournalError("snapshot", 0, f"captured from {types}, this engine is {expected}")
    for name in anchors:
        if not isinstance(state.get(name), dict):
            raise JournalError("snapshot", 0, f"no state for {name}")
    for name, obj in anchors.items():
        attributes: dict[str, Any] = state[name]
        if obj is engine:
            kept = {key: vars(engine)[key] for key in _WIRING}
            vars(engine).clear()
            vars(engine).update(attributes, **kept)
        else:
            vars(obj).clear()
            vars(obj).update(attributes)


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "STATE_VERSION",
    "SnapshotHeader",
    "capture_state",
    "decode_snapshot",
    "encode_snapshot",
    "payload_digest",
    "restore_state",
]
