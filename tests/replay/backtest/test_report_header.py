"""Honest reports: what ran (header, effective config and its copy), readable fills,
round trips, PnL per instrument, units, a minimum order notional, an atomic run folder."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.config import config_from_dict
from engine.errors import ConfigError
from replay.backtest import metrics as fig
from replay.backtest import report
from replay.backtest.report import iso_time, round_trips_frame, write_report
from replay.backtest.runner import ReplayRun, run_replay
from replay.cli import main
from replay.files.init_config import effective_config_hash
from tests.conftest import make_config


@pytest.fixture(scope="module")
def run(sample_dir: Path) -> ReplayRun:
    return run_replay(make_config(), sample_dir, progress=False)


@pytest.fixture(scope="module")
def folder(run: ReplayRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    write_report(run, out, "file-sha")
    return out


def test_report_header_says_what_ran(folder: Path, run: ReplayRun) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    h = metrics["header"]
    assert h["strategy"] == "ema_cross"
    assert h["strategy_params"]["notional"] == 10_000.0
    assert h["model"]["kind"] == "linear" and h["model"]["manifest_sha256"] is None
    assert h["data_from"].endswith("Z") and h["data_to"] > h["data_from"]
    assert h["effective_config_sha256"] == effective_config_hash(run.config)
    assert metrics["config_sha256"] == h["effective_config_sha256"]
    assert metrics["config_file_sha256"] == "file-sha"


def test_report_config_copy_loads_to_the_config_that_ran(folder: Path, run: ReplayRun) -> None:
    copy = config_from_dict(tomllib.loads((folder / "config.toml").read_text()))
    assert copy == run.config
    header = json.loads((folder / "metrics.json").read_text())["header"]
    assert effective_config_hash(copy) == header["effective_config_sha256"]


def test_report_effective_hash_follows_what_ran_not_the_file(
    sample_dir: Path, tmp_path: Path
) -> None:
    a = tmp_path / "a"
    assert main(["replay", str(sample_dir), "--out", str(a)]) == 0
    cfg = tmp_path / "same.toml"
    # the same config said differently: comments, key order, defaults written out
    text = (a / "config.toml").read_text()
    cfg.write_text("# another file\n" + text.replace('mode = "replay"', 'mode = "replay"  # same'))
    c = tmp_path / "c"
    assert main(["replay", str(sample_dir), "--config", str(cfg), "--out", str(c)]) == 0
    ha = json.loads((a / "metrics.json").read_text())
    hc = json.loads((c / "metrics.json").read_text())
    assert ha["config_file_sha256"] != hc["config_file_sha256"]
    assert ha["header"]["effective_config_sha256"] == hc["header"]["effective_config_sha256"]


def test_report_fills_are_readable(folder: Path, run: ReplayRun) -> None:
    page = (folder / "report.html").read_text()
    fills = run.recorder.fills
    assert fills
    f = fills[0]
    inst = run.engine.instruments.by_symbol(f.instrument)
    assert iso_time(f.ts_event) in page
    decimals = len(f"{inst.tick_size:f}".rstrip("0").split(".")[1])
    assert f"{inst.round_price(f.price):,.{decimals}f}" in page
    assert f"{f.fee:,.4f}" in page
    assert iso_time(1_723_161_254_087_891_268) == "2024-08-08T23:54:14.087Z"
    assert "Round trips" in page and "PnL per instrument" in page


def test_report_round_trips_match_the_metric_definition(folder: Path) -> None:
    trades = pl.read_parquet(folder / "trades.parquet")
    trips = pl.read_parquet(folder / "round_trips.parquet")
    pnls, still_open = fig.round_trip_pnls(trades)
    closed = trips.filter(pl.col("close_ts").is_not_null()).sort("close_ts", maintain_order=True)
    assert closed.height == pnls.shape[0]
    assert np.allclose(np.sort(closed["pnl"].to_numpy()), np.sort(pnls))
    assert trips.filter(pl.col("close_ts").is_null()).height == still_open


def test_report_round_trips_split_a_flip() -> None:
    fills = pl.DataFrame(
        {
            "ts_event": [1, 2, 3],
            "instrument": ["X", "X", "X"],
            "side": ["buy", "sell", "buy"],
            "qty": [1.0, 2.0, 1.0],
            "price": [100.0, 110.0, 105.0],
            "fee": [0.0, 2.0, 0.0],
        }
    )
    trips = round_trips_frame(fills)
    assert trips["direction"].to_list() == ["long", "short"]
    assert trips["pnl"].to_list() == pytest.approx([9.0, 4.0])  # 10 - 1 fee; 5 - 1 fee
    assert trips["open_ts"].to_list() == [1, 2] and trips["close_ts"].to_list() == [2, 3]
    assert list(fig.round_trip_pnls(fills)[0]) == pytest.approx([9.0, 4.0])


def test_report_pnl_per_instrument_adds_up(folder: Path) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    per = metrics["pnl_by_instrument"]
    assert per and sum(v["pnl"] for v in per.values()) == pytest.approx(metrics["pnl"], abs=1e-6)
    assert sum(v["fees"] for v in per.values()) == pytest.approx(metrics["fees"])
    assert sum(v["fills"] for v in per.values()) == metrics["num_trades"]


def test_report_states_units_and_shows_fractions_as_percent(folder: Path) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    units = metrics["units"]
    for key in ("total_return", "max_drawdown", "hit_ratio"):
        assert "fraction" in units[key]
    page = (folder / "report.html").read_text()
    assert f"{metrics['total_return'] * 100:,.2f} %" in page
    assert f"{metrics['max_drawdown'] * 100:,.2f} %" in page


def test_report_failure_leaves_no_half_written_folder(
    run: ReplayRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    write_report(run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*_a: object, **_k: object) -> str:
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report, "plot_svg", broken)
    with pytest.raises(RuntimeError):
        write_report(run, out)
    with pytest.raises(RuntimeError):
        write_report(run, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old run intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left


def test_report_refuses_a_folder_that_is_not_a_run_folder(run: ReplayRun, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(ConfigError, match="not a run folder"):
        write_report(run, tmp_path)
    assert (tmp_path / "data.csv").read_text() == "x"


def test_min_order_notional_refuses_dust(sample_dir: Path) -> None:
    # 0.01 BTC is a few hundred of notional: below a 1000 minimum, never sent
    strategy = {"name": "ema_cross", "params": {"qty": 0.01}}
    dust = run_replay(
        make_config(strategy=strategy, risk={"min_order_notional": 1000.0}),
        sample_dir,
        progress=False,
    )
    assert dust.engine.risk.rejections["min_order_notional"] > 0
    assert not dust.recorder.fills
    rejected = dust.recorder.risk_rejections[0]
    assert rejected.check == "min_order_notional" and rejected.value < rejected.limit == 1000.0
    fine = run_replay(
        make_config(strategy=strategy, risk={"min_order_notional": 1.0}), sample_dir, progress=False
    )
    assert fine.recorder.fills and fine.engine.risk.rejections["min_order_notional"] == 0
    assert all(f.qty * f.price >= 1.0 for f in fine.recorder.fills)
