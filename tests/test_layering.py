"""Imports point one way: engine never imports adapters, replay or strategies; strategies
import engine only; nothing but the clock reads the wall clock."""

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
