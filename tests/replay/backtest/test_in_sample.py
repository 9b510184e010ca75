"""Replaying a model over its own training range is said to be in sample, with the overlap:
in ``tradeloop replay``'s output, the run report (``metrics.json`` and ``report.html``) and
the monitor page; a held-out replay says nothing of the kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.signals.in_sample import in_sample
from engine.signals.manifest import LabelSpec, Manifest, TimeRange, read_manifest
from replay.backtest.report import write_report
from replay.backtest.runner import run_replay
from replay.files.sample_data import split_by_time
from replay.monitor.cli import cmd_monitor_report
from replay.research.training.run import train
from tests.replay.monitor.test_monitor_report_cli import config, parse

S = 1_000_000_000


@pytest.fixture(scope="module")
def split(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A model trained on the sample's first two thirds, that part, and the last third."""
    root = tmp_path_factory.mktemp("in_sample")
    split_by_time(sample_dir, root / "train", root / "hold", 2 / 3)
    train(config(), root / "train", root / "model", progress=False)
    return root / "model", root / "train", root / "hold"


def _run(model: Path, data: Path, out: Path) -> dict:  # type: ignore[type-arg]
    write_report(run_replay(config(model), data, progress=False), out)
    return json.loads((out / "metrics.json").read_text())


def test_replay_over_the_training_range_is_reported_in_sample_with_the_overlap(
    split: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, train_part, _ = split
    m = read_manifest(model)
    metrics = _run(model, train_part, tmp_path / "run")
    overlap = metrics["header"]["model"]["in_sample"]
    assert overlap is not None
    assert (overlap["train_start_ns"], overlap["train_end_ns"]) == (
        m.train_range.start_ns,
        m.train_range.end_ns,
    )
    # the whole training part is inside the training range, but for its warm-up and the
    # last labels' horizon at both ends
    assert overlap["share_of_run"] > 0.95
    assert overlap["text"].startswith("in sample: ")
    page = (tmp_path / "run" / "report.html").read_text()
    assert 'id="in-sample"' in page and "in sample: " in page
    # the monitor page states it as well
    assert cmd_monitor_report(parse(str(tmp_path / "run"), "--out", str(tmp_path / "page"))) == 0
    assert "in sample: " in (tmp_path / "page" / "monitor.html").read_text()


def test_held_out_replay_is_not_in_sample(split: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, _, hold = split
    metrics = _run(model, hold, tmp_path / "run")
    assert metrics["header"]["model"]["in_sample"] is None
    assert "in sample" not in (tmp_path / "run" / "report.html").read_text()
    assert "in_sample" not in json.loads((tmp_path / "run" / "monitor.json").read_text())


def test_replay_over_both_states_the_overlap_and_its_share(
    split: tuple[Path, Path, Path], sample_dir: Path, tmp_path: Path
) -> None:
    model, _, _ = split
    overlap = _run(model, sample_dir, tmp_path / "run")["header"]["model"]["in_sample"]
    assert 0.6 < overlap["share_of_run"] < 0.7  # two thirds of the 15 minutes
    assert overlap["end_ns"] == read_manifest(model).train_range.end_ns


def test_cli_replay_warns_in_sample_on_stderr(
    split: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replay.cli import main

    model, train_part, hold = split
    toml = tmp_path / "c.toml"
    from replay.files.init_config import config_toml

    toml.write_text(config_toml(config(model), "test"))
    assert (
        main(["replay", str(train_part), "--config", str(toml), "--out", str(tmp_path / "a")]) == 0
    )
    err = capsys.readouterr().err
    assert "tradeloop: warning: in sample: " in err and "overstate" in err
    assert main(["replay", str(hold), "--config", str(toml), "--out", str(tmp_path / "b")]) == 0
    assert "in sample" not in capsys.readouterr().err


def _manifest(start: int, end: int) -> Manifest:
    return Manifest(
        name="m",
        kind="linear",
        model_file="linear.json",
        model_sha256="0" * 64,
        output="probability",
        feature_names=["x"],
        feature_fingerprint="f",
        feature_specs=[],
        label=LabelSpec(),
        train_range=TimeRange(start_ns=start, end_ns=end),
    )


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ((0, 100 * S), (50 * S, 100 * S)),  # overlaps the start of the training range
        ((60 * S, 70 * S), (60 * S, 70 * S)),  # inside it
        ((150 * S, 300 * S), (150 * S, 200 * S)),  # overlaps its end
        ((200 * S, 300 * S), (200 * S, 200 * S)),  # touches its last row
        ((201 * S, 300 * S), None),  # after it: out of sample
        ((0, 49 * S), None),  # before it
    ],
)
def test_in_sample_overlap_of_ranges(
    run: tuple[int, int], expected: tuple[int, int] | None
) -> None:
    overlap = in_sample(_manifest(50 * S, 200 * S), *run)
    if expected is None:
        assert overlap is None
        return
    assert overlap is not None and (overlap.start_ns, overlap.end_ns) == expected
    span = run[1] - run[0]
    assert overlap.share_of_run == pytest.approx((expected[1] - expected[0]) / span)
    assert "in sample: " in overlap.text() and "1970-01-01T00:03:20Z" in overlap.text()
