"""One on-disk cache stamp for the whole feature program.

numba's cache stamps a compiled function with its own source file only. The interpreter
(``engine.features.program``) has the kernels and constants of ``engine.features.kernels``
compiled into it, so an edit of ``kernels.py`` alone would leave the interpreter's cached
machine code in place and every run would silently use the old kernels. The locators
registered here stamp every jitted function of this folder with a hash of all the folder's
modules that hold jitted code, so an edit of any of them recompiles all of them.

Imported by each of those modules before its first ``@njit(cache=True)``: numba picks a
function's locator when the function is decorated.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from numba.core import caching

_HERE = os.path.dirname(os.path.abspath(__file__))
# the modules whose jitted code is compiled into one another; the book's kernels are
# compiled into ``book_features.py``'s (paths relative to this folder)
FAMILY = ("kernels.py", "program.py", "book_features.py", "../book/book.py", "../book/batch.py")
# numba's locators of functions defined in a source file (not IPython cells, not zips)
_FILE_BACKED = {"UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator"}


def _family_stamp() -> str:
    digest = hashlib.sha256()
    for name in FAMILY:
        with open(os.path.join(_HERE, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _family_locator(base: Any) -> Any:
    class FamilyLocator(base):  # type: ignore[misc]
        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if os.path.dirname(os.path.abspath(py_file)) != _HERE:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self) -> str:
            return STAMP

    FamilyLocator.__name__ = FamilyLocator.__qualname__ = f"Family{base.__name__}"
    return FamilyLocator


def _register() -> None:
    # the class list is numba's (``CacheImpl`` since 0.61, ``_CacheImpl`` before): each
    # of its file-backed locators gets a family twin in front of it, so the cache lives
    # where numba would put it (NUMBA_CACHE_DIR, __pycache__, or the user-wide folder)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")  # noqa: B009
    classes: list[Any] = impl._locator_classes
    if any(c.__name__.startswith("Family") for c in classes):
        return
    for base in [c for c in classes if c.__name__.lstrip("_") in _FILE_BACKED]:
        classes.insert(classes.index(base), _family_locator(base))


STAMP = _family_stamp()
_register()
