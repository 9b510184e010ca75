"""``tradeloop why JOURNAL_DIR --at ISO`` through the dispatcher (``replay.cli.main``): the
decision at or just before the time, with its orders, signal, model version, score,
features and contributions; several instruments at the same tick are all shown; a time
before any decision, a bad time, or a folder without explanations is one line on stderr
and exit 2. The lines are written by the daemon's own ``explain_line`` from a small real
LightGBM model trained here."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from adapters.explanations import ExplanationJob, explain_line, explanations_path
from engine.signals.explain import TreeExplainer
from replay.cli import main

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
S = 1_000_000_000
NAMES = ("imb", "imb_ema", "spread", "ret")
VERSION = "ab" * 32


@pytest.fixture(scope="module")
def explainer() -> TreeExplainer:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, len(NAMES)))
    y = (x[:, 0] + 0.5 * x[:, 2] + rng.normal(scale=0.3, size=400) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1,
                         "min_data_in_leaf": 10}, lgb.Dataset(x, y, feature_name=list(NAMES)),
                        num_boost_round=8)  # fmt: skip
    return TreeExplainer.from_text(booster.model_to_string(), "test model")


def _job(ts: int, instrument: str, row: list[float], orders: list[str]) -> ExplanationJob:
    return ExplanationJob(ts_event=ts, instrument=instrument, model="m", version=VERSION,
                          score=0.61, names=NAMES, row=np.asarray(row, np.float64),
                          order_ids=orders)  # fmt: skip


@pytest.fixture
def journal(tmp_path: Path, explainer: TreeExplainer) -> Path:
    jobs = [
        _job(T0 + 10 * S, "BTC-USD", [0.4, 0.2, 0.01, 0.0], ["n1-s-1"]),
        _job(T0 + 20 * S, "BTC-USD", [-0.9, -0.3, 0.02, 0.1], ["n1-s-2", "n1-s-3"]),
        _job(T0 + 20 * S, "ETH-USD", [0.1, 0.0, 0.03, -0.2], []),
        _job(T0 + 30 * S, "ETH-USD", [1.5, 0.9, 0.01, 0.3], ["n1-s-4"]),
        _job(T0 + 40 * S + 5_123, "BTC-USD", [0.2, 0.1, 0.02, 0.0], ["n1-s-5"]),  # 5.123 us
    ]
    lines = b"".join(explain_line(job, explainer, 3) for job in jobs)
    explanations_path(tmp_path, "s1").write_bytes(lines)
    return tmp_path


def why(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["why", *args])
    return code, out.getvalue(), err.getvalue()


def _docs(journal: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in explanations_path(journal, "s1").read_text().splitlines()]


def test_why_between_decisions_prints_the_one_just_before(journal: Path) -> None:
    code, out, err = why(str(journal), "--at", "2026-01-01T00:00:15")
    assert (code, err) == (0, "")
    doc = _docs(journal)[0]
    assert "BTC-USD" in out and "orders: n1-s-1" in out and "ETH-USD" not in out
    assert f"version {VERSION[:12]}" in out and "score 0.61" in out
    assert "features: imb=0.4, imb_ema=0.2, spread=0.01, ret=0" in out
    for name, value in doc["contributions"]:  # type: ignore[attr-defined]
        assert f"{name:<16} {value:+.6g}" in out
    assert len(doc["contributions"]) == 3  # type: ignore[arg-type]


def test_why_at_an_exact_tick_shows_every_instrument_of_it(journal: Path) -> None:
    code, out, _ = why(str(journal), "--at", "2026-01-01T00:00:20+00:00", "--session", "s1")
    assert code == 0
    assert "orders: n1-s-2, n1-s-3" in out and "orders: none" in out
    assert out.count(f"version {VERSION[:12]}") == 2
    # a time zone is honoured: 01:00:25 in +01:00 is 00:00:25 UTC, still the 20 s tick
    code, later, _ = why(str(journal), "--at", "2026-01-01T01:00:25+01:00")
    assert (code, later) == (0, out)


def test_why_before_any_decision_is_a_one_line_error(journal: Path) -> None:
    code, out, err = why(str(journal), "--at", "2026-01-01T00:00:09.999999")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "no decision at or before" in err and "s1" in err


@pytest.mark.parametrize("at", ["yesterday", "2026-13-01T00:00:00", ""])
def test_why_with_a_bad_time_is_a_one_line_error(journal: Path, at: str) -> None:
    code, out, err = why(str(journal), "--at", at)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "not an ISO time" in err


def test_why_without_explanations_is_a_one_line_error(tmp_path: Path) -> None:
    code, out, err = why(str(tmp_path), "--at", "2026-01-01T00:00:15")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "explanations" in err


def test_why_at_the_printed_time_of_a_decision_finds_it(journal: Path) -> None:
    """A decision stamped inside a microsecond (ns) is found at the time ``why`` prints for
    it (ISO, to the microsecond). Fails if ``--at`` meant the microsecond's first ns."""
    doc = _docs(journal)[-1]
    assert doc["ts_utc"] == "2026-01-01T00:00:40.000005+00:00"
    code, out, err = why(str(journal), "--at", str(doc["ts_utc"]))
    assert (code, err) == (0, "") and "orders: n1-s-5" in out
