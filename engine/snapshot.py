"""Snapshots of the engine's trading state, so a restart replays only the journal's tail.

A restarted daemon rebuilds its engine by applying every journal record (the state is a
function of the input stream). That costs time in proportion to the journal: 16-28 s
after 1.8 M ticks. A snapshot is the state after record ``seq``; a restart loads the
newest valid one and applies only the records after it. The state must then be *the
same* as a full rebuild's, or the decisions that follow differ from the replay's.

What is captured: orders and the fill ids seen, the portfolio (positions, cash,
realized, fees), the loss monitor's day figures, token buckets, the trading-state claims
with their sources, the desk's client order id counter and waiting orders, the clock and
its timers, the feature kernels' state (rings and running sums: an EMA remembers every
tick, so replaying "the last window" of the journal would not reproduce it exactly), the
signal zones, the model monitor, the simulated venue (paper), the objects the daemon
passes as ``extras`` (the fill ledger, the model memory) and the strategy's own state,
through its hook (``Strategy.snapshot_state``).

How, without pickle: the state of each of those objects is written as data, a tree of
plain values encoded with msgspec (MessagePack): numbers, strings, lists, maps, numpy
arrays as bytes with their dtype and shape, and the attributes of the engine's own
objects by name. Loading never runs code from the snapshot: an object is made again as
an instance of a class named in it only if that class is already imported and defined in
tradeloop's packages or the strategy's module (``object.__new__``, no constructor, no
``__reduce__``), and anything else (functions, files, foreign classes) refuses the
snapshot when it is taken (a restart then replays in full, never silently wrong).

What is not captured: the wiring the composition root makes again from the config
(instruments, the feature set and its compiled kernels, the model, the event sinks, the
order sender, the strategy object itself), written as references and resolved to the
new engine's own objects, and *every config value*: the risk limits, token bucket
rates, the strategy's params and the engine's switches are the fresh engine's, built
from the config, never the snapshot's (``_CONFIG``). A few objects are referenced from
outside the engine (the engine itself, its clock, the model monitor, the daemon's
fill ledger): their state is restored in place, so every holder sees the restored
state.

Trust: a snapshot is accepted only with a valid HMAC-SHA256 (key from the environment,
``[journal] snapshot_key_env``) over its header and payload, for the config that wrote
it (``config_sha256``), for ``STATE_VERSION``, and (checked by the daemon,
``adapters.daemon.snapshots``) with the digest of the journal up to its offset
(``journal_sha256``). Anything else is refused and the restart replays in full.

Bytes, all integers little-endian::

    magic       8 bytes   b"TLSNAP\\r\\n"
    version     u32       FORMAT_VERSION
    header      frame     length u32, crc32 u32, SnapshotHeader (MessagePack)
    payload     bytes     the state (MessagePack); its sha256 and HMAC are in the header
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
import sys
import types
import zlib
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
import numpy as np

from engine.engine import Engine
from engine.errors import JournalError

MAGIC: Final = b"TLSNAP\r\n"
# 2: the payload is MessagePack (no pickle), the header carries an HMAC and the journal's
# digest
FORMAT_VERSION: Final = 2
# Bump when a class in the engine's state changes its attributes incompatibly: a snapshot
# of another layout is then ignored (a full replay), never half-loaded. 2: the trading
# state holds a claim per holder (shutdown, reconciliation, daemon beside the operator).
# 3: the feature kernels' time rings keep the time of their last update (gap resets), one
# more int per ring: an older row would be read shifted by one. 4: pickle-free payload.
STATE_VERSION: Final = 4
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_CRC = struct.Struct("<I")
_MAC_DOMAIN: Final = b"tradeloop-snapshot-v2\x00"
# the engine's attributes the composition root sets (not state)
_WIRING: Final = frozenset({"sinks", "observers"})
# config values: kept from the fresh engine (built from the config), never the snapshot's
_CONFIG: Final = {
    "engine": ("strict", "arrival_order"),
    "risk": ("config", "limits", "_quote_age"),
    "desk": ("_timeout_ns",),
    "router": ("latency_ns", "fee_bps", "maker_fee_bps"),  # the simulated venue (paper)
    "bucket": ("rate", "burst"),
}
# packages whose classes a snapshot may name (besides the strategy's module)
_ALLOWED_ROOTS: Final = ("engine", "adapters", "strategies", "replay")
_FACTORIES: Final[dict[str, Callable[[], object]]] = {
    "list": list, "int": int, "float": float, "set": set, "dict": dict, "str": str,
}  # fmt: skip


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
        journal_sha256: sha256 of the journal's bytes before ``journal_file`` at
            ``journal_offset`` (``adapters.daemon.snapshots.journal_digest``).
        mac: HMAC-SHA256 (hex) over the header (with ``mac`` empty) and the payload.
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
    journal_sha256: str = ""
    mac: str = ""


def encode_snapshot(header: SnapshotHeader, payload: bytes) -> bytes:
    """The snapshot file's bytes (``header`` must describe ``payload``)."""
    head = msgspec.msgpack.encode(header)
    return b"".join(
        (_PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)), _CRC.pack(zlib.crc32(head)), head, payload)
    )


def decode_snapshot(data: bytes, source: str = "snapshot") -> tuple[SnapshotHeader, bytes]:
    """Split and check a snapshot file: magic, version, header CRC, payload length and
    sha256 (a torn or flipped byte anywhere is caught). The HMAC is checked by
    ``check_mac`` (the key is the caller's).

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
        raise JournalError(
            source, 8, f"snapshot format {version}, this build reads {FORMAT_VERSION}"
        )
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


def _mac(header: SnapshotHeader, payload: bytes, key: bytes) -> str:
    unsigned = msgspec.msgpack.encode(msgspec.structs.replace(header, mac=""))
    signer = hmac.new(key, _MAC_DOMAIN, hashlib.sha256)
    signer.update(len(unsigned).to_bytes(8, "little"))
    signer.update(unsigned)
    signer.update(payload)
    return signer.hexdigest()


def sign_snapshot(header: SnapshotHeader, payload: bytes, key: bytes) -> SnapshotHeader:
    """``header`` with its ``mac``: HMAC-SHA256 with ``key`` over the header and payload."""
    if not key:
        raise ValueError("a snapshot key may not be empty")
    return msgspec.structs.replace(header, mac=_mac(header, payload, key))


def check_mac(header: SnapshotHeader, payload: bytes, key: bytes, source: str = "snapshot") -> None:
    """Refuse a snapshot whose HMAC is not ``key``'s over its header and payload (a
    forged, altered or unsigned one: checksums anyone can recompute prove nothing).

    Raises:
        JournalError: the HMAC is missing or wrong.
    """
    if not key or not header.mac:
        raise JournalError(source, 0, "snapshot not signed")
    if not hmac.compare_digest(_mac(header, payload, key), header.mac):
        raise JournalError(source, 0, "snapshot HMAC mismatch (forged, altered or another key)")


# the state: a tree of plain values, no code


class _Refused(Exception):
    """Something in the state is not data this module writes."""


def _type_name(obj: object) -> str:
    return _class_name(type(obj))


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and name not in names:
                names.append(name)
    return names


def _plain_new(cls: type) -> bool:
    """``cls`` is made by ``object.__new__`` (no constructor of its own to run)."""
    new: object = cls.__new__
    meta_new: object = type(cls).__new__
    return new is object.__new__ and meta_new is type.__new__


def _sorted(items: list[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return items


class _Encoder:
    """Walks a state into a tree of plain values: a value is a scalar (None, bool, int,
    float, str) or a list whose first item is its tag (``_Decoder`` reads them)."""

    def __init__(self, refs: Mapping[int, str], modules: set[str], *, plain: bool) -> None:
        self.refs = refs
        self.modules = modules
        self.plain = plain  # only numbers, strings, lists, maps and arrays
        self.memo: dict[int, int] = {}
        self.keep: list[object] = []  # objects memoized stay alive (ids stay unique)

    def _remember(self, obj: object) -> int:
        index = len(self.memo)
        self.memo[id(obj)] = index
        self.keep.append(obj)
        return index

    def encode(self, obj: Any, path: str) -> Any:
        kind = type(obj)
        if obj is None or kind in (bool, str, float):
            return obj
        if kind is int:
            return obj if -(2**63) <= obj < 2**63 else ["i", str(obj)]
        if not self.plain:
            ref = self.refs.get(id(obj))
            if ref is not None:
                return ["r", ref]
        seen = self.memo.get(id(obj))
        if seen is not None:
            return ["m", seen]
        if kind is bytes:
            return ["b", obj]
        if kind is tuple:
            return ["t", [self.encode(x, f"{path}[{i}]") for i, x in enumerate(obj)]]
        if kind is list:
            index = self._remember(obj)
            return ["l", index, [self.encode(x, f"{path}[{i}]") for i, x in enumerate(obj)]]
        if kind in (dict, Counter, OrderedDict, defaultdict):
            index = self._remember(obj)
            pairs = [
                [self.encode(k, path), self.encode(v, f"{path}[{k!r}]")] for k, v in obj.items()
            ]
            if kind is defaultdict:
                factory = obj.default_factory
                name = getattr(factory, "__name__", "")
                if factory is not None and _FACTORIES.get(name) is not factory:
                    raise _Refused(f"{path}: a defaultdict of {factory!r}")
                return ["dd", index, name if factory is not None else None, pairs]
            tag = {dict: "d", Counter: "C", OrderedDict: "od"}[kind]
            return [tag, index, pairs]
        if kind in (set, frozenset):
            index = self._remember(obj)
            items = _sorted([self.encode(x, path) for x in obj])
            return ["s" if kind is set else "fs", index, items]
        if kind is deque:
            index = self._remember(obj)
            return ["q", index, obj.maxlen, [self.encode(x, path) for x in obj]]
        if kind is np.ndarray:
            if obj.dtype.hasobject or obj.dtype.fields is not None:
                raise _Refused(f"{path}: an array of dtype {obj.dtype}")
            index = self._remember(obj)
            data = np.ascontiguousarray(obj).tobytes()
            return ["a", index, obj.dtype.str, list(obj.shape), data]
        if isinstance(obj, np.generic) and kind.__module__ == "numpy":
            if obj.dtype.hasobject:
                raise _Refused(f"{path}: a numpy object scalar")
            return ["n", obj.dtype.str, obj.tobytes()]
        if self.plain:
            raise _Refused(f"{path}: {kind.__qualname__} is not plain data")
        if isinstance(obj, types.MethodType):
            return ["M", self.encode(obj.__self__, path), obj.__func__.__name__]
        self._check_class(kind, path)
        if isinstance(obj, enum.Enum):
            return ["e", _class_name(kind), self.encode(obj.value, path)]
        if isinstance(obj, msgspec.Struct):
            index = self._remember(obj)
            fields = [
                self.encode(getattr(obj, name), f"{path}.{name}") for name in obj.__struct_fields__
            ]
            return ["S", index, _class_name(kind), fields]
        if isinstance(obj, type):
            raise _Refused(f"{path}: {obj!r} is code, not state")
        if not _plain_new(kind):
            raise _Refused(f"{path}: {kind.__qualname__} has its own __new__")
        index = self._remember(obj)
        attributes: list[list[Any]] = []
        for name, value in getattr(obj, "__dict__", {}).items():
            attributes.append([name, self.encode(value, f"{path}.{name}")])
        for name in _slots(kind):
            if hasattr(obj, name):
                attributes.append([name, self.encode(getattr(obj, name), f"{path}.{name}")])
        return ["o", index, _class_name(kind), attributes]

    def _check_class(self, kind: type, path: str) -> None:
        module = kind.__module__
        if module.split(".", 1)[0] not in _ALLOWED_ROOTS and module not in self.modules:
            raise _Refused(f"{path}: {module}.{kind.__qualname__} is not tradeloop's")
        if "<locals>" in kind.__qualname__:
            raise _Refused(f"{path}: {kind.__qualname__} is a local class")


class _Decoder:
    """Makes the values ``_Encoder`` wrote again; runs no code from the snapshot (classes
    are looked up among the modules already imported, instances made without a
    constructor)."""

    def __init__(self, refs: Mapping[str, object], modules: set[str], *, plain: bool) -> None:
        self.refs = refs
        self.modules = modules
        self.plain = plain
        self.memo: dict[int, object] = {}

    def _class(self, name: object) -> type:
        if not isinstance(name, str) or ":" not in name:
            raise _Refused(f"a class name {name!r}")
        module, qualname = name.split(":", 1)
        if module.split(".", 1)[0] not in _ALLOWED_ROOTS and module not in self.modules:
            raise _Refused(f"a snapshot may not name {module}.{qualname}")
        found: object = sys.modules.get(module)
        if found is None:
            raise _Refused(f"a snapshot may not name {module}.{qualname} (not imported)")
        for part in qualname.split("."):
            if part.startswith("__"):
                raise _Refused(f"a snapshot may not name {module}.{qualname}")
            found = getattr(found, part, None)
        if not isinstance(found, type) or found.__module__ != module:
            raise _Refused(f"a snapshot may only name classes, not {module}.{qualname}")
        return found

    def _store(self, index: object, obj: object) -> None:
        if not isinstance(index, int) or index in self.memo:
            raise _Refused(f"a bad memo index {index!r}")
        self.memo[index] = obj

    def decode(self, value: Any) -> Any:
        if value is None or type(value) in (bool, int, float, str):
            return value
        if type(value) is not list or not value or not isinstance(value[0], str):
            raise _Refused(f"an untagged value of type {type(value).__name__}")
        tag, *rest = value
        match tag:
            case "i":
                return int(rest[0])
            case "b":
                return bytes(rest[0])
            case "t":
                return tuple(self.decode(x) for x in rest[0])
            case "m":
                return self.memo[rest[0]]
            case "r" if not self.plain:
                return self.refs[rest[0]]
            case "l":
                out_list: list[Any] = []
                self._store(rest[0], out_list)
                out_list.extend(self.decode(x) for x in rest[1])
                return out_list
            case "d" | "C" | "od" | "dd":
                mapping: Any
                if tag == "dd":
                    factory = None if rest[1] is None else _FACTORIES[rest[1]]
                    mapping = defaultdict(factory)
                    pairs = rest[2]
                else:
                    mapping = {"d": dict, "C": Counter, "od": OrderedDict}[tag]()
                    pairs = rest[1]
                self._store(rest[0], mapping)
                for k, v in pairs:
                    mapping[self.decode(k)] = self.decode(v)
                return mapping
            case "s":
                out_set: set[Any] = set()
                self._store(rest[0], out_set)
                out_set.update(self.decode(x) for x in rest[1])
                return out_set
            case "fs":
                frozen = frozenset(self.decode(x) for x in rest[1])
                self._store(rest[0], frozen)
                return frozen
            case "q":
                out_deque: deque[Any] = deque(maxlen=rest[1])
                self._store(rest[0], out_deque)
                out_deque.extend(self.decode(x) for x in rest[2])
                return out_deque
            case "a":
                dtype = np.dtype(rest[1])
                if dtype.hasobject or dtype.fields is not None:
                    raise _Refused(f"an array of dtype {dtype}")
                array = np.frombuffer(rest[3], dtype=dtype).reshape(rest[2]).copy()
                self._store(rest[0], array)
                return array
            case "n":
                dtype = np.dtype(rest[0])
                if dtype.hasobject:
                    raise _Refused("a numpy object scalar")
                return np.frombuffer(rest[1], dtype=dtype)[0]
            case "M" if not self.plain:
                owner = self.decode(rest[0])
                name = rest[1]
                if not isinstance(name, str) or name.startswith("__"):
                    raise _Refused(f"a snapshot may not name method {name!r}")
                method = getattr(owner, name)
                if not isinstance(method, types.MethodType) or method.__self__ is not owner:
                    raise _Refused(f"{name} is not a method of {type(owner).__name__}")
                return method
            case "e" if not self.plain:
                enum_class = self._class(rest[0])
                if not issubclass(enum_class, enum.Enum):
                    raise _Refused(f"{rest[0]} is not an enum")
                return enum_class(self.decode(rest[1]))
            case "S" if not self.plain:
                struct_class = self._class(rest[1])
                if not issubclass(struct_class, msgspec.Struct):
                    raise _Refused(f"{rest[1]} is not a msgspec struct")
                fields = [self.decode(x) for x in rest[2]]
                names = struct_class.__struct_fields__
                if len(fields) != len(names):
                    raise _Refused(f"{rest[1]}: {len(fields)} fields, the class has {len(names)}")
                struct = struct_class(**dict(zip(names, fields, strict=True)))
                self._store(rest[0], struct)
                return struct
            case "o" if not self.plain:
                cls = self._class(rest[1])
                if issubclass(cls, enum.Enum | msgspec.Struct) or not _plain_new(cls):
                    raise _Refused(f"{rest[1]} is not made from its attributes")
                obj = object.__new__(cls)
                self._store(rest[0], obj)
                for name, v in rest[2]:
                    if not isinstance(name, str) or name.startswith("__"):
                        raise _Refused(f"{rest[1]}: an attribute {name!r}")
                    object.__setattr__(obj, name, self.decode(v))
                return obj
        raise _Refused(f"a value tagged {tag!r}")


def _anchors(engine: Engine, extras: Mapping[str, object]) -> dict[str, object]:
    """Objects whose state is restored in place (others may hold them)."""
    anchors: dict[str, object] = {"engine": engine, "clock": engine.clock}
    for i, observer in enumerate(engine.observers):
        anchors[f"observer.{i}"] = observer
    for name, obj in extras.items():
        anchors[f"extra.{name}"] = obj
    return anchors


def _fixed(engine: Engine) -> dict[str, object]:
    """Wiring made again from the config: referenced, never captured."""
    fixed: dict[str, object] = {
        "instruments": engine.instruments,
        "features": engine.features,
        "model": engine.model,
        "context": engine._context,
        "strategy": engine.strategy,  # its state goes through its own hook
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


def _modules(engine: Engine, anchors: Mapping[str, object]) -> set[str]:
    modules = {type(obj).__module__ for obj in anchors.values()}
    modules.add(type(engine.strategy).__module__)
    return modules


def capture_state(engine: Engine, extras: Mapping[str, object] | None = None) -> bytes:
    """The engine's trading state (and that of ``extras``, objects outside the engine
    that follow its inputs, such as the daemon's fill ledger) as bytes (MessagePack).

    Raises:
        JournalError: something in the state is not data (a strategy that keeps an open
            file or a function, say): no snapshot, a restart replays in full.
    """
    extras = extras or {}
    anchors = _anchors(engine, extras)
    table = _table(engine, extras)
    encoder = _Encoder(
        {id(obj): name for name, obj in table.items()}, _modules(engine, anchors), plain=False
    )
    state: dict[str, object] = {
        "types": {name: _type_name(obj) for name, obj in anchors.items()},
        "strategy_type": _type_name(engine.strategy),
    }
    try:
        objects: dict[str, object] = {}
        for name, obj in anchors.items():
            attributes = dict(vars(obj))
            if obj is engine:
                for key in _WIRING:
                    attributes.pop(key, None)
            objects[name] = [[k, encoder.encode(v, f"{name}.{k}")] for k, v in attributes.items()]
        state["objects"] = objects
        own = engine.strategy.snapshot_state()
        state["strategy"] = _Encoder({}, set(), plain=True).encode(own, "strategy")
        return msgspec.msgpack.encode(state)
    except (_Refused, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise JournalError("snapshot", 0, f"the engine's state cannot be captured: {exc}") from exc


def restore_state(
    engine: Engine, payload: bytes, extras: Mapping[str, object] | None = None
) -> None:
    """Put a captured state into ``engine`` (built from the same config, nothing applied
    yet) and ``extras``. All or nothing: the payload is decoded and checked in full
    before any object changes. Config values (risk limits, rates, the strategy's params,
    the engine's switches) stay the fresh engine's: they come from the config.

    Raises:
        JournalError: the payload does not load, names a class outside tradeloop's
            packages and the strategy's module, or was captured from objects of other
            types.
    """
    extras = extras or {}
    anchors = _anchors(engine, extras)
    try:
        state = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise JournalError("snapshot", 0, f"the state does not load: {exc!r}") from exc
    if not isinstance(state, dict):
        raise JournalError("snapshot", 0, "the state does not load: not a mapping")
    expected = {name: _type_name(obj) for name, obj in anchors.items()}
    if state.get("types") != expected or state.get("strategy_type") != _type_name(engine.strategy):
        raise JournalError(
            "snapshot", 0, f"captured from {state.get('types')}, this engine is {expected}"
        )
    objects = state.get("objects")
    if not isinstance(objects, dict) or set(objects) != set(anchors):
        raise JournalError("snapshot", 0, "the state does not load: no state for every object")
    decoder = _Decoder(_table(engine, extras), _modules(engine, anchors), plain=False)
    decoded: dict[str, dict[str, Any]] = {}
    try:
        for name in anchors:
            decoded[name] = {}
            for key, value in objects[name]:
                if not isinstance(key, str) or key.startswith("__"):
                    raise _Refused(f"{name}: an attribute {key!r}")
                decoded[name][key] = decoder.decode(value)
        own = _Decoder({}, set(), plain=True).decode(state.get("strategy"))
    except (
        _Refused, LookupError, TypeError, ValueError, AttributeError, RecursionError,
        OverflowError, MemoryError,
    ) as exc:  # fmt: skip
        raise JournalError("snapshot", 0, f"the state does not load: {exc!r}") from exc
    if not isinstance(own, dict):
        raise JournalError("snapshot", 0, "the state does not load: no strategy state")
    fresh = {name: getattr(engine, name) for name in ("risk", "desk", "router", "market")}
    for name, obj in anchors.items():
        attributes = decoded[name]
        if obj is engine:
            kept = {key: vars(engine)[key] for key in (*_WIRING, *_CONFIG["engine"])}
            vars(engine).clear()
            vars(engine).update(attributes)
            vars(engine).update(kept)
        else:
            vars(obj).clear()
            vars(obj).update(attributes)
    _config_values(engine, fresh)
    if engine._started:  # ``start`` bound the strategy to the engine's context
        engine.strategy.bind(engine._context)
    try:
        engine.strategy.restore_state(own)
    except Exception as exc:  # a plugin's own code: whatever it raises refuses the snapshot
        raise JournalError("snapshot", 0, f"the strategy's state does not load: {exc!r}") from exc


def _config_values(engine: Engine, fresh: Mapping[str, Any]) -> None:
    """Put the config's values back where the restored state holds them: the risk
    limits, token bucket rates, the loss monitor's limits, the order timeout, the equity
    interval and the simulated venue's latency and fees are the fresh engine's (the
    config's), never the snapshot's."""
    from engine.market import L_ARMED, L_DAILY_LIMIT, L_DRAWDOWN_LIMIT

    for name in ("desk", "router"):
        restored = getattr(engine, name)
        if restored is not fresh[name] and type(restored) is type(fresh[name]):
            for key in _CONFIG[name]:
                if hasattr(fresh[name], key):
                    setattr(restored, key, getattr(fresh[name], key))
    fresh_risk = fresh["risk"]
    risk = engine.risk
    if risk is not fresh_risk:
        for key in _CONFIG["risk"]:
            setattr(risk, key, getattr(fresh_risk, key))
        buckets = list(risk._buckets)
        risk._buckets = [
            _bucket(buckets[i] if i < len(buckets) else None, fresh_bucket)
            for i, fresh_bucket in enumerate(fresh_risk._buckets)
        ]
        risk._account_bucket = _bucket(risk._account_bucket, fresh_risk._account_bucket)
    market, fresh_market = engine.market, fresh["market"]
    for i in (L_DAILY_LIMIT, L_DRAWDOWN_LIMIT):
        market.loss[i] = fresh_market.loss[i]
    # armed: the state's (a breach disarms it until a resume), unless the config has no limit
    market.loss[L_ARMED] = min(market.loss[L_ARMED], fresh_market.loss[L_ARMED])
    market._sampler[1] = fresh_market._sampler[1]  # the equity interval


def _bucket(restored: Any, fresh: Any) -> Any:
    if fresh is None or restored is None or type(restored) is not type(fresh):
        return fresh
    for key in _CONFIG["bucket"]:
        setattr(restored, key, getattr(fresh, key))
    restored._tokens = min(restored._tokens, restored.burst)
    return restored


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "STATE_VERSION",
    "SnapshotHeader",
    "capture_state",
    "check_mac",
    "decode_snapshot",
    "encode_snapshot",
    "payload_digest",
    "restore_state",
    "sign_snapshot",
]
