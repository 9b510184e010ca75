"""The sweep example's grid ships with the package and plans against the bundled config;
the report's heatmap labels are whole (wrapped, never cut)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from replay.cli import _default_config_path
from replay.research.sweep.plan import plan_sweep
from replay.research.sweep.report import _short


def test_shipped_grid_plans_every_combination_on_the_bundled_config() -> None:
    grid = Path(str(resources.files("replay") / "sweep_grid.toml"))
    plan = plan_sweep(_default_config_path(), grid)
    assert len(plan.combinations) == 4
    assert set(plan.grid) == {"features[1].span", "features[2].span"}


def test_heatmap_labels_are_wrapped_whole_not_cut() -> None:
    # mutation tried: the old cut at 48 characters with "..." fails this
    label = ", ".join(f"strategy.params.parameter_{i}={i * 1000}" for i in range(5))
    shown = _short(label, 40)
    assert "..." not in shown
    assert shown.replace("\n", ", ") == label
    assert all(len(line) <= 40 for line in shown.splitlines())
    assert _short("features[1].span=200") == "features[1].span=200"
