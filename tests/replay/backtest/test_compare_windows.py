"""``tradeloop compare`` says whether its runs cover the same data: runs over different
windows are flagged as not comparable (the demo once set a baseline over 24 h beside a
model over the last 8 h); a span short of the annualisation minimum says by how much."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.backtest.compare import compare_page
from replay.backtest.report import _hours, write_report
from replay.backtest.runner import run_replay
from replay.files.sample_data import split_by_time
from tests.conftest import make_config


@pytest.fixture(scope="module")
def runs(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    split_by_time(sample_dir, root / "first", root / "last", 2 / 3)
    out = {}
    for name, data in (("all", sample_dir), ("last", root / "last"), ("last_again", root / "last")):
        write_report(run_replay(make_config(), data, progress=False), root / "runs" / name)
        out[name] = root / "runs" / name
    return out


def test_compare_runs_over_different_windows_are_flagged(runs: dict[str, Path]) -> None:
    page = compare_page([runs["all"], runs["last"]])
    assert 'id="different-data"' in page and "not comparable" in page
    assert "all: " in page and "last: " in page


def test_compare_runs_over_the_same_window_say_so(runs: dict[str, Path]) -> None:
    page = compare_page([runs["last"], runs["last_again"]])
    assert 'id="same-data"' in page and 'id="different-data"' not in page


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (86_400 * 10**9, "24 h"),
        (86_389 * 10**9, "23 h 59 min 49 s"),  # the demo's sample: 11 s short of a day
        (3_600 * 10**9 + 60 * 10**9, "1 h 1 min"),
    ],
)
def test_span_shown_to_the_second_where_it_is_not_whole(ns: int, text: str) -> None:
    assert _hours(ns) == text
