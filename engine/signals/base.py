"""The signal-model plugin protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from engine.errors import PluginLoadError


@runtime_checkable
class SignalModel(Protocol):
    """A model scores feature rows.

    Attributes:
        name: shown in ``Signal.model`` and reports.
        feature_names: the feature columns it expects, in order.
    """

    name: str
    feature_names: tuple[str, ...]

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Score each row of ``features`` (float64[n, k], columns = ``feature_names``).

        A row with any NaN must score NaN (a feature still warming up): the engine emits no
        signal on a NaN score, so no order can follow from unwarmed features.
        """
        ...


def select_columns(
    model_name: str, wanted: Sequence[str], available: Sequence[str]
) -> npt.NDArray[np.int64]:
    """Indices of ``wanted`` in the running feature set's columns.

    Raises:
        PluginLoadError: a wanted feature is not in the set.
    """
    missing = [n for n in wanted if n not in available]
    if missing:
        raise PluginLoadError(model_name, f"needs features {missing} that the feature set "
                                          f"does not compute (it has {list(available)})")  # fmt: skip
    return np.array([list(available).index(n) for n in wanted], np.int64)
