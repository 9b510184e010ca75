"""``tradeloop replay JOURNAL --out RUN``: a live session's run folder has the shape of a
tick replay's (the same files, the same parquet schemas, the same metrics keys), holds
the session's own fills, and says where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from replay.cli import main
from replay.sessions.journal_replay import replay_journal
from tests.replay.sessions.test_journal_replay import record_live_session


@pytest.fixture(scope="module")
def tick_run(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tick") / "run"
    assert main(["replay", str(sample_dir), "--out", str(out)]) == 0
    return out


def test_journal_replay_with_out_writes_a_tick_replays_run_folder(
    tmp_path: Path, tick_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "journal"
    session = record_live_session(journal)
    out = tmp_path / "run"
    assert main(["replay", str(journal), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "replayed session s1 (live)" in printed and f"report: {out / 'report.html'}" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tick_run.iterdir())
    for name in ("trades.parquet", "round_trips.parquet", "equity.parquet"):
        assert pl.read_parquet(out / name).schema == pl.read_parquet(tick_run / name).schema, name
    metrics = json.loads((out / "metrics.json").read_text())
    reference = json.loads((tick_run / "metrics.json").read_text())
    assert metrics.keys() == reference.keys()
    assert metrics["header"].keys() == reference["header"].keys()
    # the session's fills, as its engine booked them (the replay is the same engine)
    trades = pl.read_parquet(out / "trades.parquet")
    assert trades.height == session.engine.counters["fills"] > 0
    replayed = replay_journal(journal)
    assert trades["position_after"].to_list()[-1] == pytest.approx(
        float(replayed.engine.portfolio.positions[0]) if trades["instrument"][-1] == "X"
        else float(replayed.engine.portfolio.positions[1])
    )  # fmt: skip
    assert metrics["header"]["instruments"] == ["X", "Y"]
    assert metrics["header"]["data_from"].startswith("2023-11-14")
    assert any("live session s1 (live) replayed from the journal" in n
               for n in metrics["data_notes"])  # fmt: skip
    page = (out / "report.html").read_text()
    assert "X: mid price and fills" in page and "Y: position" in page


def test_journal_replay_with_out_refuses_an_existing_folder_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "journal"
    record_live_session(journal)
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["replay", str(journal), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and (out / "mine.txt").exists()
    # without --out: the summary only, no folder
    assert main(["replay", str(journal)]) == 0
    assert "report:" not in capsys.readouterr().out
