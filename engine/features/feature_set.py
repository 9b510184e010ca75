"""``FeatureSet``: features declared in config, validated, fused into one jitted update.

The set compiles to a small op table run by ``program.run_program``: a single compiled
function (cached on disk by numba) serves every feature set, so neither a replay nor a
daemon restart compiles anything for a new config. The column order and the
``fingerprint`` are what a model's manifest pins.

Memory: a time window or time lag keeps its values in a ring that starts at
``INITIAL_CAPACITY`` values and doubles as the data needs, up to the feature's
``capacity`` (default ``DEFAULT_CAPACITY``); a tick window allocates its window up front.
One instrument's state with every ring at its capacity must fit in ``MAX_ROW_BYTES``,
checked when the set is built, so a config cannot ask for terabytes.

Gaps: a time window, time lag or half-life EMA whose input is silent for longer than its
span (trade windows: no tick of the instrument) starts over, NaN until it has covered its
span again (``engine.features.kernels``); ``warmup()`` says so per feature.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from engine.errors import ConfigError
from engine.features import kernels as k
from engine.features import program
from engine.features.book_features import (
    BOOK_KERNEL_VERSION,
    DEFAULT_L2_LEVELS,
    L2_KINDS,
    L2_USES,
    BookFeatureSpec,
)
from engine.ticks import QUOTE, TRADE, TickBatch
from engine.units import parse_duration_ns

# bump when a kernel's arithmetic changes: models trained on old values must not load
# (2: growing rings, NaN while a window is truncated, equal-timestamp EMA, resum schedule;
# 3: time windows, time lags and half-life EMAs warm up again after a gap longer than
# their span)
KERNEL_VERSION = 3
# the most values a time window or time lag holds per instrument unless ``capacity`` says
# otherwise: 60 s at 1,092 updates/s; a full ring costs 1-1.5 MiB per instrument
DEFAULT_CAPACITY = 65_536
# rings start this small and double on demand: most windows never need more
INITIAL_CAPACITY = 16
# one instrument's feature state with every ring full may take at most this much memory
MAX_ROW_BYTES = 256 * 2**20

RAW_KINDS = ("mid", "spread_bps", "microprice", "book_imbalance", "last_price",
             "time_since_trade")  # fmt: skip


class FeatureSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One feature as declared in ``[[features]]``.

    ``window``/``lag`` take an int (ticks) or a duration string (time); ``ema`` takes
    ``span`` (ticks) or ``half_life`` (duration). ``capacity`` bounds how many values a
    time window or time lag may hold per instrument (its ring grows up to it).
    """

    name: str
    kind: str
    input: str | None = None
    span: int | None = None
    half_life: str | int | None = None
    lag: int | str | None = None
    window: int | str | None = None
    capacity: int | None = None
    # L2 book kinds (``engine.features.book_features``): levels per side, a band in bps
    levels: int | None = None
    bps: float | None = None


@dataclass(frozen=True, slots=True)
class _Op:
    """One op of the program; its state takes ``f0 + f1 * cap`` floats and
    ``i0 + i1 * cap`` ints per instrument, ``cap`` growing up to ``capmax`` if ``ring``."""

    opcode: int
    input: int
    f0: int
    i0: int
    iparam: int
    warmup: str
    canonical: dict[str, Any]
    f1: int = 0
    i1: int = 0
    capmax: int = 0
    ring: int = k.RING_NONE

    def initial_cap(self) -> int:
        return min(self.capmax, INITIAL_CAPACITY) if self.ring != k.RING_NONE else self.capmax

    def fsize(self, cap: int) -> int:
        return self.f0 + self.f1 * cap

    def isize(self, cap: int) -> int:
        return self.i0 + self.i1 * cap

    def full_bytes(self) -> int:
        return 8 * (self.fsize(self.capmax) + self.isize(self.capmax))


_PARAMS = ("input", "span", "half_life", "lag", "window", "capacity", "levels", "bps")

_WARMUP_NOTES = {
    "mid": "first quote", "spread_bps": "first quote", "microprice": "first quote",
    "book_imbalance": "first quote", "last_price": "first trade",
    "time_since_trade": "first trade",
}  # fmt: skip


def _bad(spec: FeatureSpec, reason: str) -> ConfigError:
    return ConfigError(f"features.{spec.name}", reason)


def _allowed(spec: FeatureSpec, allowed: set[str]) -> None:
    for p in _PARAMS:
        if getattr(spec, p) is not None and p not in allowed:
            raise _bad(spec, f"kind {spec.kind!r} takes no parameter {p!r} "
                             f"(it takes: {', '.join(sorted(allowed)) or 'none'})")  # fmt: skip


def _positive_int(spec: FeatureSpec, name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _bad(spec, f"{name} must be an int >= 1, got {value!r}")
    return value


def _duration(spec: FeatureSpec, name: str, value: object) -> int:
    try:
        ns = parse_duration_ns(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _bad(spec, f"{name}: {exc}") from exc
    if ns <= 0:
        raise _bad(spec, f"{name} must be > 0")
    return ns


def _capacity(spec: FeatureSpec) -> int:
    cap = spec.capacity if spec.capacity is not None else DEFAULT_CAPACITY
    return _positive_int(spec, "capacity", cap)


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _time_ring(
    opcode: int,
    input_index: int,
    window_ns: int,
    capacity: int,
    warmup: str,
    canon: dict[str, Any],
    *,
    rings: int = 1,
    pushes: int = k.RING_UPDATES,
) -> _Op:
    # a time window or lag: ``rings`` float rings and a ts ring, growing up to ``capacity``
    return _Op(
        opcode,
        input_index,
        k.RF_V0,
        k.R_TS0,
        window_ns,
        warmup,
        canon,
        f1=rings,
        i1=1,
        capmax=capacity,
        ring=pushes,
    )


def book_feature_spec(spec: FeatureSpec) -> BookFeatureSpec:
    """The L2 feature a ``[[features]]`` entry of an L2 kind declares.

    Raises:
        ConfigError: a parameter the kind does not take, or one out of range.
    """
    op = L2_KINDS[spec.kind]
    uses = set(L2_USES[op])
    _allowed(spec, uses)
    levels = _positive_int(spec, "levels", spec.levels) if spec.levels is not None else None
    bps = spec.bps
    if bps is not None and not (isinstance(bps, int | float) and bps > 0 and math.isfinite(bps)):
        raise _bad(spec, f"bps must be > 0, got {bps!r}")
    hl = _duration(spec, "half_life", spec.half_life) if spec.half_life is not None else None
    return BookFeatureSpec(
        name=spec.name,
        kind=spec.kind,
        levels=levels if levels is not None else DEFAULT_L2_LEVELS,
        bps=float(bps) if bps is not None else 10.0,
        half_life_ns=hl if hl is not None else 1_000_000_000,
    )


def split_features(
    specs: list[FeatureSpec] | tuple[FeatureSpec, ...],
) -> tuple[list[FeatureSpec], list[BookFeatureSpec]]:
    """Tick features (for ``FeatureSet``) and L2 book features (``BookFeatureSet``), each
    in declared order.

    Raises:
        ConfigError: a tick feature reads an L2 feature (they run on different streams),
            or an L2 feature's parameters are bad.
    """
    book_names = {s.name for s in specs if s.kind in L2_KINDS}
    for s in specs:
        if s.input is not None and s.input in book_names:
            raise _bad(s, f"input {s.input!r} is an L2 book feature; tick features cannot read it")
    ticks = [s for s in specs if s.kind not in L2_KINDS]
    book = [book_feature_spec(s) for s in specs if s.kind in L2_KINDS]
    return ticks, book


def _compile_op(spec: FeatureSpec, input_index: int) -> _Op:
    kind = spec.kind
    if kind not in KINDS:
        raise _bad(spec, f"unknown kind {kind!r}; known: {', '.join((*KINDS, *L2_KINDS))}")
    canon: dict[str, Any] = {"name": spec.name, "kind": kind}
    if kind in RAW_KINDS:
        _allowed(spec, set())
        opcode = {"mid": k.OP_MID, "spread_bps": k.OP_SPREAD_BPS,
                  "microprice": k.OP_MICROPRICE, "book_imbalance": k.OP_BOOK_IMBALANCE,
                  "last_price": k.OP_LAST_PRICE, "time_since_trade": k.OP_TIME_SINCE_TRADE}[kind]  # fmt: skip
        return _Op(opcode, -1, 0, 2, 0, _WARMUP_NOTES[kind], canon)
    if kind in ("trade_flow_imbalance", "vwap"):
        _allowed(spec, {"window", "capacity"})
        w = _duration(spec, "window", spec.window)
        cap = _capacity(spec)
        canon |= {"window_ns": w, "capacity": cap}
        op = k.OP_TRADE_FLOW_IMBALANCE if kind == "trade_flow_imbalance" else k.OP_VWAP
        note = f"{w} ns after the first tick, and again after {w} ns without a tick"
        return _time_ring(op, -1, w, cap, note, canon, rings=2, pushes=k.RING_TRADES)
    # every kind below reads another feature
    if spec.input is None:
        raise _bad(spec, f'kind {kind!r} needs an input feature (e.g. input = "mid")')
    canon["input"] = spec.input
    if kind == "vwap_distance":
        _allowed(spec, {"input", "window", "capacity"})
        w = _duration(spec, "window", spec.window)
        cap = _capacity(spec)
        canon |= {"window_ns": w, "capacity": cap}
        note = (
            f"{w} ns after the first trade, and a trade in the window; again after {w} ns "
            "without a trade or an input update"
        )
        return _time_ring(
            k.OP_VWAP_DISTANCE_BPS, input_index, w, cap, note, canon, rings=2, pushes=k.RING_TRADES
        )
    if kind == "ema":
        _allowed(spec, {"input", "span", "half_life"})
        if (spec.span is None) == (spec.half_life is None):
            raise _bad(spec, "ema takes exactly one of span (ticks) or half_life (duration)")
        if spec.span is not None:
            span = _positive_int(spec, "span", spec.span)
            canon["span"] = span
            return _Op(k.OP_EMA, input_index, 1, 1, span, f"{span} input updates", canon)
        hl = _duration(spec, "half_life", spec.half_life)
        canon["half_life_ns"] = hl
        note = f"{hl} ns of input history, again after {hl} ns without an update"
        return _Op(k.OP_EMA_TIME, input_index, 3, 3, hl, note, canon)
    if kind == "log_return":
        _allowed(spec, {"input", "lag", "capacity"})
        if isinstance(spec.lag, int) and not isinstance(spec.lag, bool):
            if spec.capacity is not None:
                raise _bad(spec, "capacity applies to a time lag only")
            lag = _positive_int(spec, "lag", spec.lag)
            canon["lag"] = lag
            return _Op(
                k.OP_LOG_RETURN, input_index, lag + 1, 2, lag, f"{lag + 1} input updates", canon
            )
        lag_ns = _duration(spec, "lag", spec.lag)
        cap = _capacity(spec)
        canon |= {"lag_ns": lag_ns, "capacity": cap}
        note = f"{lag_ns} ns of input history, again after {lag_ns} ns without an update"
        return _time_ring(k.OP_LOG_RETURN_TIME, input_index, lag_ns, cap, note, canon)
    if kind in ("rolling_mean", "rolling_std", "zscore"):
        _allowed(spec, {"input", "window", "capacity"})
        if isinstance(spec.window, int) and not isinstance(spec.window, bool):
            if spec.capacity is not None:
                raise _bad(spec, "capacity applies to a time window only")
            n = _positive_int(spec, "window", spec.window)
            if kind != "rolling_mean" and n < 2:
                raise _bad(spec, f"{kind} needs window >= 2")
            canon["window"] = n
            op = {"rolling_mean": k.OP_ROLLING_MEAN, "rolling_std": k.OP_ROLLING_STD,
                  "zscore": k.OP_ZSCORE}[kind]  # fmt: skip
            # the ring is the window; it has no timestamps to keep
            return _Op(
                op, input_index, k.RF_V0 + n, k.R_TS0, n, f"{n} input updates", canon, capmax=n
            )
        w = _duration(spec, "window", spec.window)
        cap = _capacity(spec)
        canon |= {"window_ns": w, "capacity": cap}
        op = {"rolling_mean": k.OP_ROLLING_MEAN_TIME, "rolling_std": k.OP_ROLLING_STD_TIME,
              "zscore": k.OP_ZSCORE_TIME}[kind]  # fmt: skip
        note = f"{w} ns of input history, again after {w} ns without an update"
        return _time_ring(op, input_index, w, cap, note, canon)
    if kind == "realized_vol":
        _allowed(spec, {"input", "window", "capacity"})
        w = _duration(spec, "window", spec.window)
        cap = _capacity(spec)
        canon |= {"window_ns": w, "capacity": cap}
        note = f"{w} ns of input history, again after {w} ns without an update"
        return _time_ring(k.OP_REALIZED_VOL_TIME, input_index, w, cap, note, canon, rings=2)
    raise _bad(spec, f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


KINDS = (*RAW_KINDS, "trade_flow_imbalance", "vwap", "vwap_distance", "ema", "log_return",
         "rolling_mean", "rolling_std", "zscore", "realized_vol")  # fmt: skip


@dataclass(slots=True)
class FeatureState:
    """Mutable per-instrument kernel state; carried across micro-batches.

    ``ops`` is the program with this state's layout (ring sizes and offsets): rings grow,
    so ``FeatureSet.grow`` may replace ``ops``, ``fstate`` and ``istate`` between calls.
    """

    fstate: npt.NDArray[np.float64]
    istate: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    ops: npt.NDArray[np.int64]

    def copy(self) -> FeatureState:
        return FeatureState(
            self.fstate.copy(),
            self.istate.copy(),
            self.values.copy(),
            self.ops.copy(),
        )


class FeatureSet:
    """An ordered, validated set of features, fused into one kernel call per batch.

    Args:
        specs: feature declarations, in output column order. An ``input`` may name any
            feature of the set (declared earlier or later); the set is evaluated in
            dependency order but its columns keep the declared order.

    Raises:
        ConfigError: unknown kind, bad parameter, duplicate name, unknown or cyclic input;
            one instrument's state with every ring at its capacity over ``MAX_ROW_BYTES``.
    """

    def __init__(self, specs: list[FeatureSpec]) -> None:
        if not specs:
            raise ConfigError("features", "at least one feature is required")
        names = [s.name for s in specs]
        for s in specs:
            if not s.name or not s.name.replace("_", "").isalnum():
                raise ConfigError("features", f"bad feature name {s.name!r} (letters, digits, _)")
            if names.count(s.name) > 1:
                raise ConfigError(f"features.{s.name}", "duplicate feature name")
        tick_specs, book_specs = split_features(specs)
        by_name = {s.name: s for s in tick_specs}
        order = self._dependency_order(tick_specs, by_name)
        # L2 book features come after the program's ops (``book_specs``: their values are
        # computed from depth data and handed to ``update``)
        order += [b.name for b in book_specs]
        position = {name: idx for idx, name in enumerate(order)}
        self.specs: tuple[FeatureSpec, ...] = tuple(specs)
        self.names: tuple[str, ...] = tuple(names)
        self.book_specs: tuple[BookFeatureSpec, ...] = tuple(book_specs)
        self._program_order = tuple(order)
        ops = [_compile_op(by_name[n], position.get(by_name[n].input or "", -1))
               for n in order[: len(order) - len(book_specs)]]  # fmt: skip
        self._ops = ops
        self._check_memory()
        # program order -> declared column order
        self._columns = np.array([position[n] for n in names], np.int64)
        self._identity = bool(np.array_equal(self._columns, np.arange(len(names))))
        book_canon = [{"name": b.name, "kind": b.kind, "levels": b.levels, "bps": b.bps,
                       "half_life_ns": b.half_life_ns} for b in book_specs]  # fmt: skip
        canonical = {"kernel_version": KERNEL_VERSION,
                     "features": sorted([op.canonical for op in ops] + book_canon, key=lambda c: names.index(c["name"]))}  # fmt: skip
        if book_specs:
            canonical["book_kernel_version"] = BOOK_KERNEL_VERSION
        self.fingerprint: str = hashlib.sha256(
            json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()

    @staticmethod
    def _dependency_order(
        specs: list[FeatureSpec], by_name: Mapping[str, FeatureSpec]
    ) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ConfigError(f"features.{name}", "cyclic input: " + " -> ".join([*path, name]))
            state[name] = 1
            spec = by_name[name]
            if spec.input is not None:
                if spec.input not in by_name:
                    raise ConfigError(f"features.{name}",
                                      f"input {spec.input!r} is not a feature of this set "
                                      f"(declare e.g. a 'mid' feature first)")  # fmt: skip
                visit(spec.input, [*path, name])
            state[name] = 2
            order.append(name)

        for s in specs:
            visit(s.name, [])
        return order

    def _check_memory(self) -> None:
        full = [op.full_bytes() for op in self._ops]
        for op, size in zip(self._ops, full, strict=True):
            if size > MAX_ROW_BYTES:
                what = (
                    f"capacity {op.capmax:,}"
                    if op.ring != k.RING_NONE
                    else f"a window or lag of {op.iparam:,} ticks"
                )
                raise ConfigError(
                    f"features.{op.canonical['name']}",
                    f"{what} needs {_bytes(size)} of state per instrument; the bound "
                    f"is {_bytes(MAX_ROW_BYTES)} per instrument (MAX_ROW_BYTES)",
                )
        if sum(full) > MAX_ROW_BYTES:
            largest = sorted(zip(full, (op.canonical["name"] for op in self._ops)), reverse=True)[
                :3
            ]
            raise ConfigError(
                "features",
                f"the set needs {_bytes(sum(full))} of state per instrument with every "
                f"ring at its capacity; the bound is {_bytes(MAX_ROW_BYTES)} "
                f"(MAX_ROW_BYTES); largest: "
                + ", ".join(f"{name} {_bytes(b)}" for b, name in largest),
            )

    def _layout(self, caps: list[int]) -> tuple[npt.NDArray[np.int64], int, int]:
        table = np.zeros((len(self._ops), k.N_OPCOLS), np.int64)
        fofs = iofs = 0
        for j, (op, cap) in enumerate(zip(self._ops, caps, strict=True)):
            table[j] = (op.opcode, op.input, fofs, iofs, cap, op.iparam, op.capmax, op.ring, 0)
            fofs += op.fsize(cap)
            iofs += op.isize(cap)
        return table, max(fofs, 1), max(iofs, 1)

    def __len__(self) -> int:
        return len(self.names)

    def warmup(self) -> dict[str, str]:
        """Each feature's warm-up, in words; before it the value is NaN."""
        notes = {op.canonical["name"]: op.warmup for op in self._ops}
        for b in self.book_specs:
            flow = "half_life" in L2_USES[L2_KINDS[b.kind]]
            notes[b.name] = "the first depth update of a readable book" + (
                f", then {b.half_life_ns} ns (again after the book was out of sync)" if flow else ""
            )
        return notes

    def new_state(self, n_instruments: int) -> FeatureState:
        """Fresh state for ``n_instruments`` (dense indices), every ring at its initial size."""
        table, fsize, isize = self._layout([op.initial_cap() for op in self._ops])
        return FeatureState(
            np.zeros((n_instruments, fsize)),
            np.zeros((n_instruments, isize), np.int64),
            np.full((n_instruments, len(self._ops) + len(self.book_specs)), np.nan),
            table,
        )

    def grow(self, state: FeatureState) -> None:
        """Reallocate ``state`` with its rings as big as the last call asked (doubling at
        least, never past a feature's capacity), keeping every value in time order.

        The kernels call for this (``run_program`` stops early); no value depends on a
        ring's size, so growing is invisible in the results.
        """
        old = state.ops
        caps = [int(c) for c in old[:, k.C_CAP]]
        for j, op in enumerate(self._ops):
            need = int(old[j, k.C_NEED])
            if op.ring != k.RING_NONE and need > caps[j]:
                caps[j] = min(op.capmax, max(2 * caps[j], 1 << (need - 1).bit_length()))
        if caps == [int(c) for c in old[:, k.C_CAP]]:
            raise RuntimeError("feature state asked to grow but no ring can")  # a bug of ours
        table, fsize, isize = self._layout(caps)
        n = state.values.shape[0]
        fnew = np.zeros((n, fsize))
        inew = np.zeros((n, isize), np.int64)
        rows = np.arange(n)[:, None]
        for j, op in enumerate(self._ops):
            fo, io, cap = (int(x) for x in old[j, [k.C_FOFS, k.C_IOFS, k.C_CAP]])
            fo2, io2, cap2 = (int(x) for x in table[j, [k.C_FOFS, k.C_IOFS, k.C_CAP]])
            if cap2 == cap:
                fnew[:, fo2 : fo2 + op.fsize(cap)] = state.fstate[:, fo : fo + op.fsize(cap)]
                inew[:, io2 : io2 + op.isize(cap)] = state.istate[:, io : io + op.isize(cap)]
                continue
            fnew[:, fo2 : fo2 + op.f0] = state.fstate[:, fo : fo + op.f0]
            inew[:, io2 : io2 + op.i0] = state.istate[:, io : io + op.i0]
            # unroll each ring oldest first into slots 0.. of the bigger ring
            head = state.istate[:, io + k.R_HEAD]
            count = state.istate[:, io + k.R_COUNT]
            src = (head - count)[:, None] + np.arange(cap)[None, :]
            src %= cap
            for r in range(op.f1):
                ring = state.fstate[:, fo + op.f0 + r * cap : fo + op.f0 + (r + 1) * cap]
                fnew[:, fo2 + op.f0 + r * cap2 : fo2 + op.f0 + r * cap2 + cap] = ring[rows, src]
            ring_ts = state.istate[:, io + op.i0 : io + op.i0 + cap]
            inew[:, io2 + op.i0 : io2 + op.i0 + cap] = ring_ts[rows, src]
            inew[:, io2 + k.R_HEAD] = count  # count <= cap < cap2
        state.fstate, state.istate, state.ops = fnew, inew, table

    def overflow_counts(self, state: FeatureState) -> dict[str, int]:
        """Values dropped per time-window feature because its ring was at its capacity
        (the feature reads NaN while a dropped value would still be in its window)."""
        counts: dict[str, int] = {}
        for j, op in enumerate(self._ops):
            if op.ring != k.RING_NONE:
                io = int(state.ops[j, k.C_IOFS])
                counts[op.canonical["name"]] = int(state.istate[:, io + k.R_OVERFLOW].sum())
        return counts

    def capacities(self, state: FeatureState) -> dict[str, int]:
        """Each time-window feature's current ring size (values per instrument) in ``state``."""
        return {
            op.canonical["name"]: int(state.ops[j, k.C_CAP])
            for j, op in enumerate(self._ops)
            if op.ring != k.RING_NONE
        }

    def program_columns(self) -> npt.NDArray[np.int64] | None:
        """Where each declared feature sits in a kernel result row, or None if in order."""
        return None if self._identity else self._columns.copy()

    def state_columns(self, names: list[str]) -> npt.NDArray[np.int64]:
        """Where the named features sit in ``FeatureState.values`` (program order).

        Raises:
            ConfigError: a name is not a feature of this set.
        """
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ConfigError("features", f"features {missing} are required but not declared")
        return np.array([self._columns[self.names.index(n)] for n in names], np.int64)

    def current(self, state: FeatureState, instrument: int) -> dict[str, float]:
        """The latest value of every feature for one instrument, by name."""
        return self.values_of(state.values[instrument])

    def values_of(self, values: npt.NDArray[np.float64]) -> dict[str, float]:
        """Every feature by name from one instrument's row of ``FeatureState.values``."""
        return {name: float(values[self._columns[c]]) for c, name in enumerate(self.names)}

    def named(self, row: npt.NDArray[np.float64]) -> dict[str, float]:
        """Every feature by name from one row of ``update``'s result (the set's order)."""
        return {name: float(row[c]) for c, name in enumerate(self.names)}

    def update(
        self,
        batch: TickBatch,
        state: FeatureState,
        *,
        parallel: bool = False,
        book: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Advance ``state`` over ``batch``; return the feature row after each tick, [n, k].

        The result is a column-major view (features are computed one column at a time).
        ``parallel`` spreads instruments over all cores (same values; for batch work, not
        for the live loop, whose other core is busy reading). ``book``: the L2 features
        (``book_specs`` order) as of each tick, [n, len(book_specs)]; without it they are
        NaN.
        """
        n = len(batch)
        n_ops = len(self._ops)
        res = np.empty((n_ops + len(self.book_specs), n))
        if self.book_specs:
            if book is None:
                res[n_ops:] = np.nan
            else:
                res[n_ops:] = book.T
                if n:
                    # the last value per instrument, for ``current`` (the engine's
                    # features_now between batches)
                    last = np.unique(batch.instrument[::-1], return_index=True)
                    rows = n - 1 - last[1]
                    state.values[last[0], n_ops:] = book[rows]
        run = (
            program.run_program_parallel
            if parallel and n >= program.PARALLEL_MIN_TICKS and state.values.shape[0] > 1
            else program.run_program
        )
        done = 0
        prog = res[:n_ops] if self.book_specs else res
        while True:
            done = run(
                batch.ts_event, batch.instrument, batch.kind, batch.bid, batch.ask,
                batch.bid_size, batch.ask_size, batch.price, batch.size, batch.side,
                state.ops, state.fstate, state.istate, state.values, prog, done,
            )  # fmt: skip
            if done == n:
                break
            self.grow(state)  # a ring must grow before tick ``done``; resume there
        return res.T if self._identity else res[self._columns].T

    def compute(self, frame: Any, n_instruments: int | None = None) -> npt.NDArray[np.float64]:
        """Batch path for training and analysis: features of every row of a tick frame.

        ``frame`` is any column container (a polars or pandas DataFrame, a dict of arrays)
        with ``ts_event`` and ``bid, ask, bid_size, ask_size`` for quotes and/or
        ``price, size, side`` for trades, in time order; an ``instrument`` column of dense
        indices is optional (default: one instrument); ``kind`` (0 quote, 1 trade) is
        needed when both kinds are present. Fresh state, same kernels as the live loop.
        """
        batch = batch_from_columns(frame)
        n_inst = n_instruments or (int(batch.instrument.max()) + 1 if len(batch) else 1)
        return self.update(batch, self.new_state(n_inst), parallel=True)


def _column(frame: Any, name: str) -> npt.NDArray[Any] | None:
    # membership, not a caught lookup error: polars, pandas and dicts all answer ``in``
    # for column names, and a real error inside a frame must not read as "no column"
    if name not in frame:
        return None
    return np.asarray(frame[name])


def batch_from_columns(frame: Any) -> TickBatch:
    """Build a ``TickBatch`` from named columns (see ``FeatureSet.compute``)."""
    ts = _column(frame, "ts_event")
    if ts is None:
        raise ConfigError("frame", "missing column 'ts_event'")
    n = ts.shape[0]
    inst = _column(frame, "instrument")
    inst = np.zeros(n, np.int32) if inst is None else inst.astype(np.int32)
    kind = _column(frame, "kind")
    has_quotes = _column(frame, "bid") is not None
    has_trades = _column(frame, "price") is not None
    if kind is None:
        if has_quotes and has_trades:
            raise ConfigError("frame", "both quote and trade columns but no 'kind' column")
        kind = np.full(n, QUOTE if has_quotes else TRADE, np.int8)

    def col(name: str) -> npt.NDArray[np.float64]:
        c = _column(frame, name)
        return np.full(n, np.nan) if c is None else np.ascontiguousarray(c, np.float64)

    side = _column(frame, "side")
    if side is None:
        side_arr = np.zeros(n, np.int8)
    elif side.dtype.kind in "OUS":
        side_arr = np.where(side == "buy", 1, np.where(side == "sell", -1, 0)).astype(np.int8)
    else:
        side_arr = side.astype(np.int8)
    return TickBatch(
        np.ascontiguousarray(ts, np.int64), np.ascontiguousarray(ts, np.int64),
        np.ascontiguousarray(inst), np.ascontiguousarray(kind, np.int8),
        col("bid"), col("ask"), col("bid_size"), col("ask_size"),
        col("price"), col("size"), np.ascontiguousarray(side_arr),
    )  # fmt: skip
