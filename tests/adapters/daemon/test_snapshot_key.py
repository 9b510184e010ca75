"""A snapshot is valid only for the config and the code that wrote it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from adapters.daemon.snapshots import snapshot_key
from strategies.ema_cross import EmaCross


def _strategy_class(path: Path, body: str) -> type:
    path.write_text(f"class Plugin:\n    {body}\n")
    spec = importlib.util.spec_from_file_location(f"plugin_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Plugin  # type: ignore[no-any-return]


def test_snapshot_key_follows_config_and_plugin_code(tmp_path: Path) -> None:
    a = snapshot_key("a" * 64, EmaCross)
    assert a == snapshot_key("a" * 64, EmaCross)  # deterministic
    assert a != snapshot_key("b" * 64, EmaCross)  # another config
    plugin = _strategy_class(tmp_path / "mine.py", "x = 1")
    before = snapshot_key("a" * 64, plugin)
    assert before not in (a, "a" * 64)
    changed = _strategy_class(tmp_path / "mine.py", "x = 2")  # the plugin was edited
    assert snapshot_key("a" * 64, changed) != before
