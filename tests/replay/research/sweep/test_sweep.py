"""A real sweep on generated ticks with a LocalCluster: every combination x block present,
results bit-equal to run_replay on the same block, bad grids refused before any task."""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from distributed import Client, LocalCluster

from engine.config import config_from_dict
from engine.errors import ConfigError, PluginLoadError, SweepError
from replay.backtest import metrics as fig
from replay.backtest.report import compute_metrics, equity_frame, fills_frame
from replay.backtest.runner import run_replay
from replay.research.sweep.command import add_sweep_arguments, cmd_sweep
from replay.research.sweep.plan import load_grid, plan_sweep, split_blocks
from replay.research.sweep.run import run_sweep
from tests.conftest import BASE_CONFIG

GRID = '"features[1].span" = [10, 40]\n[strategy.params]\nnotional = [5000.0, 10000.0, 20000.0]\n'


def _toml(data: dict[str, Any]) -> str:
    """The test base config as TOML (tables of scalars, arrays of tables, inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = []
    for key, v in data.items():
        if isinstance(v, list):
            for item in v:
                lines += [f"[[{key}]]", *(f"{k} = {value(x)}" for k, x in item.items())]
        elif isinstance(v, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {value(x)}" for k, x in v.items()]
        else:
            lines.insert(0, f"{key} = {value(v)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep")
    (root / "base.toml").write_text(_toml(BASE_CONFIG))
    (root / "grid.toml").write_text(GRID)
    return {"base": root / "base.toml", "grid": root / "grid.toml", "root": root}


@pytest.fixture(scope="module")
def swept(client: Client, files: dict[str, Path], sample_dir: Path) -> dict[str, Any]:
    out = files["root"] / "out"
    summary = run_sweep(
        sample_dir, files["base"], files["grid"], out, client=client, folds=3, progress=False
    )
    return {"summary": summary, "out": out}


def _direct(values: dict[str, Any], data: Path) -> tuple[dict[str, Any], np.ndarray]:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["features"][1]["span"] = values["features[1].span"]
    cfg["strategy"]["params"]["notional"] = values["strategy.params.notional"]
    run = run_replay(config_from_dict(cfg), data, progress=False)
    equity = equity_frame(run)
    metrics = compute_metrics(run, equity, fills_frame(run))
    return metrics, fig.period_returns(equity["equity"].to_numpy(), 100_000.0)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_sweep_writes_every_combination_and_block(swept: dict[str, Any]) -> None:
    out = swept["out"]
    results = pl.read_parquet(out / "results.parquet")
    assert results.height == 6 * 3
    pairs = set(zip(results["combination"].to_list(), results["block"].to_list()))
    assert pairs == {(c, b) for c in range(6) for b in range(3)}
    assert results["strategy.params.notional"].dtype == pl.Float64
    assert sorted(set(results["features[1].span"].to_list())) == [10, 40]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == swept["summary"]
    assert summary["trials"] == 6 and summary["folds"] == 3
    assert summary["failed"] == {"tasks": 0, "combinations": 0, "errors": []}
    assert set(results["status"].to_list()) == {"ok"}
    assert summary["run"]["tasks_resumed"] == 0 and summary["run"]["tasks_run"] == 18
    assert summary["pbo"]["partitions"] == 8 and summary["pbo"]["splits"] == 70
    assert 0.0 <= summary["pbo"]["value"] <= 1.0
    assert 0.0 <= summary["best"]["deflated_sharpe"] <= summary["best"]["probabilistic_sharpe"]
    assert len(summary["best"]["block_ranks"]) == 3
    assert {"deflated_sharpe", "pbo", "trials", "expected_max_sharpe"} <= set(
        summary["definitions"]
    )
    returns = pl.read_parquet(out / "returns.parquet")
    assert returns.height == summary["periods"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "deflated sharpe (6 trials counted)" in html
    assert "0 of 18 combination x block trials" in html
    assert not (out / ".blocks").exists()
    assert len(list((out / "trials").iterdir())) == 18


def test_sweep_block_results_bit_equal_to_run_replay(
    swept: dict[str, Any], sample_dir: Path, tmp_path: Path
) -> None:
    results = pl.read_parquet(swept["out"] / "results.parquet")
    row = results.filter((pl.col("combination") == 4) & (pl.col("block") == 1)).row(0, named=True)
    # the block's ticks, cut independently of the sweep
    for name in ("quotes.parquet", "trades.parquet"):
        ticks = pl.read_parquet(sample_dir / name)
        ticks.filter(
            (pl.col("ts_event") >= row["block_start_ns"])
            & (pl.col("ts_event") < row["block_end_ns"])
        ).write_parquet(tmp_path / name)
    metrics, returns = _direct(json.loads(row["params"]), tmp_path)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, bool | int | float)}
    assert len(scalars) > 20
    assert {k: v for k, v in scalars.items() if not _same(v, row[k])} == {}
    assert metrics["num_trades"] > 0
    matrix = pl.read_parquet(swept["out"] / "returns.parquet").filter(pl.col("block") == 1)
    assert np.array_equal(matrix["combination_4"].to_numpy(), returns)


def test_sweep_one_block_is_the_whole_data(
    client: Client, files: dict[str, Path], sample_dir: Path, tmp_path: Path
) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('"strategy.params.notional" = [20000.0]\n"features[1].span" = [10, 40]\n')
    run_sweep(
        sample_dir, files["base"], grid, tmp_path / "out", client=client, folds=1, progress=False
    )
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = results.filter(pl.col("combination") == 1).row(0, named=True)
    metrics, _ = _direct(json.loads(row["params"]), sample_dir)
    assert row["sharpe_per_period"] == metrics["sharpe_per_period"]
    assert row["final_equity"] == metrics["final_equity"]
    assert row["num_trades"] == metrics["num_trades"]
    assert summary["best"]["block_ranks"] == [1.0]
    assert summary["winner_next_block_rank"] == []


class _NoTasks:
    """A client that fails the test if any task is submitted."""

    scheduler = None

    def map(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a task was submitted")

    def scheduler_info(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    ("grid", "error", "where", "words"),
    [
        (
            '"risk.max_order_qty" = [10.0, -1.0]',
            ConfigError,
            "risk.max_order_qty",
            "grid combination 2 of 2: risk.max_order_qty=-1.0",
        ),
        (
            '"strategy.params.notional" = [1000.0, 2000.0]\n"features[2].span" = [100, 0]',
            ConfigError,
            "features",
            "grid combination 2 of 4: strategy.params.notional=1000.0, features[2].span=0",
        ),
        (
            '"strategy.params.notional" = [1000.0, -5.0]',
            PluginLoadError,
            "ema_cross",
            "grid combination 2 of 2: strategy.params.notional=-5.0",
        ),
        ('"strategy.params.nope" = [1]', PluginLoadError, "ema_cross", "grid combination 1 of 1"),
        (
            '"replay.equity_interval" = ["1s", "2s"]',
            ConfigError,
            "grid replay.equity_interval",
            "one equity grid",
        ),
        ('"features[9].span" = [1]', ConfigError, "grid features[9].span", "no list item [9]"),
        (
            '"strategy.params.notional" = 5.0',
            ConfigError,
            "grid strategy.params.notional",
            "non-empty list",
        ),
        (
            '"strategy.params.notional" = [5.0, 5.0]',
            ConfigError,
            "grid strategy.params.notional",
            "listed twice",
        ),
    ],
)
def test_sweep_bad_grid_refused_before_any_task_runs(
    files: dict[str, Path],
    sample_dir: Path,
    tmp_path: Path,
    grid: str,
    error: type[Exception],
    where: str,
    words: str,
) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(grid + "\n")
    with pytest.raises(error) as caught:
        run_sweep(sample_dir, files["base"], path, tmp_path / "out", client=_NoTasks(), folds=2)
    text = str(caught.value)
    assert where in text and words in text
    assert "\n" not in text
    assert not (tmp_path / "out").exists()


def test_load_grid_flattens_tables_and_keeps_file_order(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text('"features[1].span" = [10, 20]\n[strategy.params]\nnotional = [1.0]\n')
    grid, digest = load_grid(path)
    assert grid == {"features[1].span": [10, 20], "strategy.params.notional": [1.0]}
    assert len(digest) == 64
    plan = plan_sweep(_base(tmp_path), path)
    assert [c.values for c in plan.combinations] == [
        {"features[1].span": 10, "strategy.params.notional": 1.0},
        {"features[1].span": 20, "strategy.params.notional": 1.0},
    ]
    assert plan.combinations[1].config["features"][1]["span"] == 20


def _base(tmp_path: Path) -> Path:
    path = tmp_path / "base.toml"
    path.write_text(_toml(BASE_CONFIG))
    return path


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_split_blocks_puts_every_row_in_one_block_in_time(
    sample_dir: Path, tmp_path: Path, suffix: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    originals = {}
    for name in ("quotes", "trades"):
        frame = pl.read_parquet(sample_dir / f"{name}.parquet")
        originals[name] = frame
        if suffix == "csv":
            frame.write_csv(src / f"{name}.csv")
        else:
            frame.write_parquet(src / f"{name}.parquet")
    blocks = split_blocks(src, 4, tmp_path / "blocks")
    assert [b.index for b in blocks] == [0, 1, 2, 3]
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(blocks))
    for name, frame in originals.items():
        parts = []
        for b in blocks:
            path = Path(b.data) / f"{name}.{suffix}"
            part = pl.read_parquet(path) if suffix == "parquet" else pl.read_csv(path)
            ts = part["ts_event"]
            assert b.start_ns <= ts.min() and ts.max() < b.end_ns  # type: ignore[operator]
            parts.append(part)
        assert pl.concat(parts).equals(frame)


def test_sweep_every_combination_failing_on_a_block_is_recorded_then_refused(
    client: Client, files: dict[str, Path], sample_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pl.read_parquet(sample_dir / "trades.parquet").write_parquet(data / "trades.parquet")
    quotes = pl.read_parquet(sample_dir / "quotes.parquet")
    # a crossed quote late in the data: only the last block's tasks meet it
    bad = quotes.with_columns(
        pl.when(pl.int_range(pl.len()) == quotes.height - 10)
        .then(pl.col("ask") + 1.0)
        .otherwise(pl.col("bid"))
        .alias("bid")
    )
    bad.write_parquet(data / "quotes.parquet")
    with pytest.raises(
        SweepError, match=r"every combination failed \(6 trials\).*block 2: DataError"
    ):
        run_sweep(
            data,
            files["base"],
            files["grid"],
            tmp_path / "out",
            client=client,
            folds=2,
            progress=False,
        )
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results.height == 12
    by_block = dict(results.group_by("block").agg(pl.col("status").unique().sort()).iter_rows())
    assert by_block == {0: ["ok"], 1: ["failed"]}
    errors = results.filter(pl.col("status") == "failed")["error"].to_list()
    assert all("crossed" in e for e in errors)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trials"] == 0 and summary["failed"]["tasks"] == 6


def test_cmd_sweep_on_a_scheduler_address_prints_the_choice(
    client: Client,
    files: dict[str, Path],
    sample_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    grid = tmp_path / "grid.toml"
    grid.write_text('"features[1].span" = [10, 40]\n')
    args = parser.parse_args(
        [
            str(sample_dir),
            "--config",
            str(files["base"]),
            "--grid",
            str(grid),
            "--out",
            str(tmp_path / "out"),
            "--folds",
            "2",
            "--scheduler",
            client.scheduler.address,
        ]
    )
    assert cmd_sweep(args) == 0
    printed = capsys.readouterr().out
    assert "swept 2 combinations x 2 blocks" in printed and "deflated sharpe" in printed
    args.workers = 2
    with pytest.raises(ConfigError, match="--workers"):
        cmd_sweep(args)
