"""``tradeloop monitor-report`` on a replay run folder: the self-contained HTML page and
its figure, with every section; a folder that is neither a run nor a journal is refused
with a ``TradeloopError``."""

from __future__ import annotations

import argparse
import base64
import logging
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from engine.config import Config, config_from_dict
from engine.errors import TradeloopError
from replay.backtest.report import write_report
from replay.backtest.runner import run_replay
from replay.files.sample_data import generate, split_by_time
from replay.monitor.cli import add_monitor_report_arguments, cmd_monitor_report
from replay.research.training.run import train

FEATURES = ["imb", "imb_ema", "flow_2s", "ret_1s", "z_mid_10s"]


def config(model: Path | None = None) -> Config:
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = data["instruments"][:2]
    data["train"] |= {"folds": 3, "sample_interval": "200ms", "min_data_in_leaf": 50,
                      "features": FEATURES}  # fmt: skip
    data["monitor"] = {"window": 500, "drift_window": 500, "false_alarm_rate": 0.01,
                       "check_every": 10, "ic_min": -0.05, "on_low_ic": "reduce_only",
                       "losing_streak": None}  # fmt: skip
    if model is not None:
        data["model"]["path"] = str(model)
    return config_from_dict(data)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tradeloop monitor-report")
    add_monitor_report_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A replay run folder of a model trained on the first half of 40 minutes whose
    regime changes at three quarters: alarms and a trading-state change to show."""
    root = tmp_path_factory.mktemp("monitor_cli")
    generate(root / "all", symbols=2, hours=40 / 60, seed=12, regime_change_at=0.75)
    split_by_time(root / "all", root / "train", root / "rest", 0.5)
    train(config(), root / "train", root / "model", progress=False)
    run = run_replay(config(root / "model"), root / "rest", progress=False)
    write_report(run, root / "run")
    return root / "run"


def test_monitor_report_run_folder_writes_html_and_png_with_sections(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_monitor_report(parse(str(run_folder), "--out", str(tmp_path / "page"))) == 0
    html = (tmp_path / "page" / "monitor.html").read_text()
    png = (tmp_path / "page" / "monitor_page.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "wrote" in capsys.readouterr().out
    for section in ("performance", "calibration", "drift", "timeline"):
        assert f'<h2 id="{section}">' in html
    # self-contained: the figure is inlined, nothing is fetched
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in html
    # (bokeh's inlined bundle names a MathJax CDN in code this page never runs: no tag
    # loads anything; tests/replay/backtest/test_interactive_report.py shows in Chromium
    # that nothing is fetched)
    assert not re.search(r"<(?:script|link|img|iframe)[^>]*\s(?:src|href)=\"?https?:", html)
    assert "<link" not in html and "Bokeh.embed.embed_item" in html
    # drift per feature against its calibrated threshold, alarms and state changes
    for name in (*FEATURES, "score"):
        assert f"<td>{name}</td>" in html
    assert "calibrated threshold" in html
    assert "low_ic (reduce_only)" in html and "<td>REDUCE_ONLY</td>" in html
    # same run folder, same page
    cmd_monitor_report(parse(str(run_folder), "--out", str(tmp_path / "again")))
    assert (tmp_path / "again" / "monitor.html").read_text() == html
    assert (tmp_path / "again" / "monitor_page.png").read_bytes() == png


def test_monitor_report_neither_run_nor_journal_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TradeloopError, match="neither a run folder"):
        cmd_monitor_report(parse(str(tmp_path), "--out", str(tmp_path / "page")))


def test_replay_cli_puts_monitor_alarms_in_the_report_not_on_stderr(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # the fixture's run raises alarms (regime change); the CLI replay of the same data
    # logs them at INFO (shown with -v), not as WARNING lines on stderr, and says where
    # they are in one line (mutation tried: the monitor's alarm_log_level left at WARNING)
    from replay.cli import main
    from replay.files.init_config import config_toml

    root = run_folder.parent
    cfg = tmp_path / "ml.toml"
    cfg.write_text(config_toml(config(root / "model")))
    caplog.set_level(logging.INFO, logger="tradeloop.monitor")
    assert main(["replay", str(root / "rest"), "--config", str(cfg), "--out",
                 str(tmp_path / "run")]) == 0  # fmt: skip
    alarms = [r for r in caplog.records if r.getMessage().startswith("monitor alarm")]
    assert alarms and all(r.levelno == logging.INFO for r in alarms)
    captured = capsys.readouterr()
    assert "monitor alarm" not in captured.err
    assert f"model monitor: {len(alarms)} alarms (" in captured.out
