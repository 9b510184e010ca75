"""A daily loss limit tripping mid-replay stops new risk, and the report says when and why."""

from __future__ import annotations

import json
from pathlib import Path

from engine.events import side_sign
from replay.backtest.report import write_report
from replay.backtest.runner import run_replay
from replay.cli import main
from tests.conftest import make_config


def test_daily_loss_limit_trips_mid_replay_and_report_shows_it(
    sample_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(risk={"daily_loss_limit": 40.0, "on_loss": "reduce_only"})
    runs = [run_replay(cfg, sample_dir, batch_size=b, progress=False) for b in (4096, 7)]
    states = [[(s.ts_event, s.state, s.reason) for s in r.recorder.states] for r in runs]
    assert states[0] == states[1]  # the trip does not depend on batching
    (trip_ts, state, reason), *_ = states[0]
    assert state == "REDUCE_ONLY" and "daily loss limit 40" in reason
    run = runs[0]
    first_ts = min(f.ts_event for f in run.recorder.fills)
    assert trip_ts > first_ts  # it tripped mid-replay, after trading started
    # no fill after the trip made any position larger
    pos: dict[str, float] = {}
    for f in run.recorder.fills:
        before = pos.get(f.instrument, 0.0)
        after = round(before + side_sign(f.side) * f.qty, 10)
        if f.ts_event > trip_ts:
            assert abs(after) <= abs(before) + 1e-9, f
        pos[f.instrument] = after
    # the strategies honour REDUCE_ONLY: a signal after the trip closes instead of flipping
    assert all(p == 0.0 for p in pos.values())
    assert run.engine.risk.rejections["trading_state"] == 0
    metrics = write_report(run, tmp_path / "r", "cfg")
    assert metrics["trading_states"][0]["ts_event"] == trip_ts
    page = (tmp_path / "r" / "report.html").read_text()
    assert "daily loss limit 40" in page and "REDUCE_ONLY" in page
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["trading_states"][0]["reason"] == reason


def test_cli_replay_with_risk_config_file(sample_dir: Path, tmp_path: Path) -> None:
    cfg = (Path(__file__).resolve().parents[3] / "replay" / "default_config.toml").read_text()
    cfg = cfg.replace(
        "[risk]\n", '[risk]\ndaily_loss_limit = 30.0\non_loss = "halted"\nmax_quote_age = "5s"\n'
    )
    (tmp_path / "c.toml").write_text(cfg)
    assert (
        main(
            [
                "replay",
                str(sample_dir),
                "--config",
                str(tmp_path / "c.toml"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["trading_states"] and metrics["trading_states"][0]["state"] == "HALTED"
