"""No pickle anywhere in the product: nothing it loads (snapshots, journals, models,
messages) may run code on load. Product modules import none of the modules that unpickle
(``pickle``, ``cPickle``, ``_pickle``, ``dill``, ``shelve``, ``cloudpickle``), nor call
``__import__``/``importlib.import_module`` to reach them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("engine", "adapters", "replay", "strategies", "bench")
FORBIDDEN = frozenset({"pickle", "cPickle", "_pickle", "dill", "shelve", "cloudpickle"})


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            names = [node.args[0].value]
        found += [f"{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    return found


@pytest.mark.parametrize("package", PRODUCT)
def test_product_package_imports_no_pickle(package: str) -> None:
    offenders = {
        str(p.relative_to(ROOT)): _offences(p)
        for p in sorted((ROOT / package).rglob("*.py"))
        if _offences(p)
    }
    assert offenders == {}


def test_no_pickle_check_sees_an_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom pickle import loads\nx = __import__('dill')\n")
    assert _offences(module) == ["2: pickle", "3: dill"]
