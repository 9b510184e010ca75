from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from replay.cli import main


def test_cli_sample_data_is_deterministic_and_valid(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["sample-data", str(tmp_path / name), "--hours", "0.05", "--symbols", "3"]) == 0
    for f in ("quotes.parquet", "trades.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    q = pl.read_parquet(tmp_path / "a" / "quotes.parquet")
    assert set(q["symbol"].unique()) == {"BTC-USD", "ETH-USD", "SOL-USD"}
    assert (q["bid"] < q["ask"]).all()
    assert q["ts_event"].is_sorted()


def test_cli_replay_writes_full_run_folder(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["replay", str(sample_dir), "--strategy", "ema_cross", "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "total_return",
        "sharpe",
        "sortino",
        "annualisation",
        "max_drawdown",
        "num_trades",
        "hit_ratio",
        "turnover",
        "fees",
    ):
        assert key in metrics
    trades = pl.read_parquet(out / "trades.parquet")
    assert trades.height == metrics["num_trades"] > 0
    equity = pl.read_parquet(out / "equity.parquet")
    assert equity.height > 100 and equity["ts_event"].is_sorted()
    svg = (out / "report.svg").read_text()
    assert svg.startswith("<svg") and "<polyline" in svg and "drawdown %" in svg
    page = (out / "report.html").read_text()
    # the page draws the run with interactive charts (report.svg is the still image)
    assert 'id="chart-run"' in page and "drawdown %" in page and "max_drawdown" in page


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["replay", "/nonexistent/data", "--out", "x"], "no such file or folder"),
        (["replay", "{data}", "--strategy", "nope", "--out", "{tmp}/o"], "no entry point 'nope'"),
        (["replay", "{data}", "--strategy", "os:path", "--out", "{tmp}/o"], "not a subclass"),
        (
            ["replay", "{data}", "--config", "{tmp}/missing.toml", "--out", "{tmp}/o"],
            "cannot read config",
        ),
        (["replay", "--out", "{tmp}/o"], "give a data folder or file, or --quotes/--trades"),
        (["replay", "{data}", "--columns", "mid=m", "--out", "{tmp}/o"], "'mid' is not a tick"),
        (["replay", "{data}", "--start", "yesterday", "--out", "{tmp}/o"], "neither ISO-8601"),
        (["replay", "--quotes", "{tmp}/nope.csv", "--out", "{tmp}/o"], "no such file"),
        (["init", "{tmp}", "--out", "{tmp}/c.toml"], "no tick files found"),
    ],
)
def test_cli_user_errors_print_one_line_and_exit_2(
    sample_dir: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    argv = [a.format(data=sample_dir, tmp=tmp_path) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "replay.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tradeloop: error:") and needle in lines[0]


def test_cli_bad_config_value_names_the_field(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[instruments]]\nsymbol = "BTC-USD"\n[[features]]\nname = "m"\nkind = "mid"\n'
        '[risk]\nmax_order_qty = "lots"\n'
    )
    assert (
        main(["replay", str(sample_dir), "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    )
    assert "risk.max_order_qty" in capsys.readouterr().err


def test_cli_bad_data_names_file_row_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "quotes.csv").write_text(
        "ts_event,symbol,bid,ask,bid_size,ask_size\n"
        "1700000000000000001,BTC-USD,100,101,1,1\n1700000000000000002,BTC-USD,102,101,1,1\n"
    )
    assert main(["replay", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "quotes.csv, row 1, column 'ask': crossed" in err


def test_cli_demo_runs_end_to_end_with_a_model_that_learned_something(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--hours", "0.5"]) == 0
    demo = tmp_path / "demo"
    assert (demo / "replay" / "report.html").exists()
    manifest = json.loads((demo / "model" / "manifest.json").read_text())
    assert manifest["metrics"]["oos_ic"] > 0.0
    ml = json.loads((demo / "ml_replay" / "metrics.json").read_text())
    assert ml["signals"] > 0 and ml["num_trades"] > 0
    # the held-out replay starts after the training data ends
    holdout_start = pl.read_parquet(demo / "holdout" / "quotes.parquet")["ts_event"].min()
    assert manifest["train_range"]["end_ns"] < holdout_start
    captured = capsys.readouterr()
    out = captured.out
    assert "out-of-sample AUC" in out and str(demo / "ml_replay" / "report.html") in out
    # every step announced and timed; stderr without the monitor's alarms (they are in
    # the run folder and on the monitor page) and without matplotlib's warnings
    for step in range(1, 9):
        assert f"demo [{step}/8]" in out
    assert "demo done in " in out
    assert "monitor alarm" not in captured.err and "Warning" not in captured.err
    # the monitor page of the model's replay and both runs side by side
    assert (demo / "ml_replay" / "monitor" / "monitor.html").stat().st_size > 0
    # the two runs compared cover the same held-out window: the baseline replayed there too
    page = (demo / "compare.html").read_text()
    assert str(demo / "baseline_holdout") in page and str(demo / "ml_replay") in page
    assert 'id="same-data"' in page and 'id="different-data"' not in page
    base = json.loads((demo / "baseline_holdout" / "metrics.json").read_text())
    assert base["header"]["data_from"] == ml["header"]["data_from"]
    assert base["header"]["data_to"] == ml["header"]["data_to"]
    # the sample covers the span it is called (the annualisation rule's minimum is a span)
    quotes = pl.read_parquet(demo / "data" / "quotes.parquet")["ts_event"]
    assert quotes.max() - quotes.min() >= 0.5 * 3.6e12
    assert ml["header"]["model"]["in_sample"] is None  # held out: not in sample


def test_cli_parity_on_a_folder_without_a_session_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["parity", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tradeloop: error:")


def test_cli_tick_replay_without_out_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err
