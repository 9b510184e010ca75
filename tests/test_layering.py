"""Imports point one way: engine never imports adapters, replay or strategies; strategies
import engine only; inside replay, each concern imports only the ones below it
(docs/architecture.md has the map); no import cycle among product modules; nothing but the
clock reads the wall clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (
            "engine",
            {"adapters", "replay", "strategies", "polars", "aiomqtt", "uvloop", "matplotlib"},
        ),
        ("strategies", {"adapters", "replay", "polars", "aiomqtt"}),
        ("adapters", {"replay", "strategies"}),
    ],
)
def test_layers_import_one_way(package: str, forbidden: set[str]) -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden)
        for p in (ROOT / package).rglob("*.py")
        if _imports(p) & forbidden
    }
    assert offenders == {}


PRODUCT = ("engine", "adapters", "replay", "strategies")


def _modules() -> dict[str, Path]:
    """Every product module by dotted name (a package by its ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for package in PRODUCT:
        for p in (ROOT / package).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = p
    return modules


def _module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules ``name`` imports anywhere in its text (top level, inside a
    function or under ``TYPE_CHECKING``: each is a dependency a reader has to follow). An
    import of one of its own parent packages is no edge: Python runs those first anyway."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    resolved: set[str] = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            resolved.add(target)
    return resolved


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _module_imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_product_modules_have_no_import_cycle() -> None:
    assert _cycles(_import_graph()) == []


# replay's concerns and what each may import of replay besides itself (engine and adapters
# are open to all of replay; replay.cli, the dispatcher, may import every concern)
REPLAY_LAYERS = {
    "replay.files": set(),
    "replay.pages": set(),
    "replay.sessions": set(),
    "replay.registry": set(),
    "replay.monitor": {"replay.sessions", "replay.pages"},
    "replay.backtest": {"replay.files", "replay.monitor", "replay.pages"},
    "replay.research": {"replay.files", "replay.backtest", "replay.pages"},
}


def _concern(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "replay" else parts[0]


def test_replay_concerns_import_one_way() -> None:
    offenders = {}
    for name, targets in _import_graph().items():
        concern = _concern(name)
        if concern not in REPLAY_LAYERS:
            continue
        allowed = REPLAY_LAYERS[concern] | {concern}
        bad = sorted(t for t in targets if t.startswith("replay") and _concern(t) not in allowed)
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_every_replay_module_belongs_to_a_concern() -> None:
    loose = [
        name
        for name in _modules()
        if name.startswith("replay.") and _concern(name) not in REPLAY_LAYERS
    ]
    assert loose == ["replay.cli"]


def test_only_the_clock_reads_wall_time() -> None:
    offenders = []
    for package in ("engine", "adapters", "strategies"):
        for p in (ROOT / package).rglob("*.py"):
            if p.name == "clock.py":
                continue
            text = p.read_text()
            if "time.time(" in text or "time.time_ns(" in text or "datetime.now(" in text:
                offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []


def test_docker_compose_is_valid_compose_yaml() -> None:
    import yaml

    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(doc["services"]) >= {"mosquitto", "tradeloop"}
    for service in doc["services"].values():
        assert "image" in service or "build" in service
