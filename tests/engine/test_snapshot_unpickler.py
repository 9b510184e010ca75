"""A snapshot's unpickler resolves only classes of allowed modules, named directly: the
reviewed bypass (a dotted name followed through an allowed module to ``os.system``) and
its variants are refused before anything runs."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest

from engine.snapshot import _Unpickler


def _global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol 4: STACK_GLOBAL(module, name), then call it with one string argument."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return b"\x8c" + bytes([len(raw)]) + raw + b"\x94"

    return b"\x80\x04" + text(module) + text(name) + b"\x93" + text(arg) + b"\x85R."


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("adapters.daemon", "os.system"),  # the reviewed bypass
        ("engine.snapshot", "pickle.loads"),
        ("numpy", "memmap"),  # a numpy class whose constructor writes a file
        ("numpy", "lib.npyio.DataSource"),
        ("adapters.daemon", "subprocess.Popen"),  # a class, but of a forbidden module
        ("collections", "namedtuple"),  # an allowed module's function, not a class
        ("builtins", "eval"),
        ("numpy.f2py.__main__", "ndarray"),  # the second review: importing it runs f2py
        ("collections", "OrderedDict.__class__"),  # a dunder step reaches ``type``
        ("enum", "__class__"),
        ("engine.__main__", "X"),
    ],
)
def test_unpickler_refuses_anything_but_allowed_classes(
    module: str, name: str, tmp_path: Path
) -> None:
    """Mutation-checked: with ``find_class`` checking only the module's first part (the
    reviewed code), the first case ran the shell command and this test failed."""
    marker = tmp_path / "ran"
    payload = _global_call(module, name, f"touch {marker}")
    with pytest.raises(pickle.UnpicklingError):
        _Unpickler(io.BytesIO(payload), {}, set()).load()
    assert not marker.exists()


def test_unpickler_still_loads_the_state_kinds_a_snapshot_holds() -> None:
    import collections

    import numpy as np

    from engine.orders import OrderStatus

    state = {
        "array": np.arange(5, dtype=np.float64),
        "counter": collections.Counter(a=2),
        "deque": collections.deque([1, 2]),
        "status": next(iter(OrderStatus)),
        "set": {1, 2},
    }
    loaded = _Unpickler(io.BytesIO(pickle.dumps(state, protocol=5)), {}, set()).load()
    assert loaded.keys() == state.keys()
    assert np.array_equal(loaded["array"], state["array"])
    assert loaded["counter"] == state["counter"] and loaded["status"] is state["status"]
