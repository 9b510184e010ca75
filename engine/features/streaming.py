"""The live path for one tick at a time: scalars in, the instrument's feature row out.

A daemon receiving one quote should not build a ``TickBatch`` of eleven one-element
arrays: ``push`` hands the scalars to ``program.run_one``, which runs the same compiled
``run_program`` over one-row scratch columns. Same kernel, same state, same values as
the batch path. When a ring must grow, the kernel does nothing and says so; ``push`` grows
the state (``FeatureSet.grow``) and pushes the tick again.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.errors import ConfigError
from engine.features.feature_set import FeatureSet, FeatureState
from engine.features.program import run_one


class StreamingFeatures:
    """Feature state of a set, advanced one tick at a time.

    Args:
        feature_set: the set to compute (tick features only).
        n_instruments: instruments (dense indices).
        state: existing state to continue from (e.g. warmed up by a replay).

    Raises:
        ConfigError: the set has L2 book features.
    """

    def __init__(
        self, feature_set: FeatureSet, n_instruments: int, state: FeatureState | None = None
    ) -> None:
        if feature_set.book_specs:
            # its rows would leave the L2 columns unwritten: the engine's batch path reads
            # them from a ``BookSource``
            raise ConfigError(
                "features",
                "StreamingFeatures computes tick features only; L2 book features "
                f"{[b.name for b in feature_set.book_specs]} need the engine's book source",
            )
        self.feature_set = feature_set
        self.state = state if state is not None else feature_set.new_state(n_instruments)
        self._scratch_i = np.zeros((4, 1), np.int64)
        self._scratch_f = np.zeros((6, 1))
        self._res = np.empty((len(feature_set), 1))
        self._upd = np.zeros((len(feature_set), 1), np.bool_)
        self._row = self._res[:, 0]  # a view: refreshed in place by every push
        self._columns = feature_set.program_columns()
        self._order = np.zeros(1, np.int64)
        self._starts = np.zeros(self.state.values.shape[0] + 1, np.int64)
        self._bind()
        # Call the compiled entry point directly: numba's dispatcher would re-resolve the
        # types of 20 arguments on every tick, a quarter of the whole cost of a push.
        run_one(0, 0, -1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, *self._probe_args())
        signature = next(s for s in run_one.signatures if len(s) == 20 and str(s[0]) == "int64")
        self._entry = run_one.overloads[signature].entry_point  # type: ignore[attr-defined]

    def _bind(self) -> None:
        # the state's arrays, taken again after a ring grew (growing replaces them)
        st = self.state
        self._args = (self._scratch_i, self._scratch_f, st.ops, st.fstate, st.istate, st.values,
                      self._res, self._upd, self._order, self._starts)  # fmt: skip

    def _probe_args(self) -> tuple[object, ...]:
        # a no-op tick (kind -1 matches no kernel) on an empty copy of the state, so the
        # signature gets compiled/loaded without touching the real state
        st = self.state
        return (np.zeros((4, 1), np.int64), np.zeros((6, 1)), st.ops[:0], st.fstate[:1].copy(),
                st.istate[:1].copy(), st.values[:1].copy(), np.empty((0, 1)), np.zeros((0, 1), np.bool_),
                np.zeros(1, np.int64), np.zeros(2, np.int64))  # fmt: skip

    def push(self, ts_event: int, instrument: int, kind: int, bid: float, ask: float, bid_size: float,
             ask_size: float, price: float, size: float, side: int) -> npt.NDArray[np.float64]:  # fmt: skip
        """Advance by one tick; returns the instrument's feature row in the set's column
        order. The array is reused by the next push: copy it to keep it."""
        while not self._entry(
            ts_event, instrument, kind, bid, ask, bid_size, ask_size, price, size, side, *self._args
        ):
            self.feature_set.grow(self.state)
            self._bind()
        return self._row if self._columns is None else self._row[self._columns]
