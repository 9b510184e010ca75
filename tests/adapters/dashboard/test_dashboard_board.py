"""The dashboard's document parts without a daemon: the recent-events sink keeps what the
page lists and nothing else, and the explanations tail reads a growing file (a torn last
line waits, a bad line is counted, a huge backlog is read from its end)."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.dashboard.board import RECENT_ROWS, ExplanationTail, RecentEvents, iso
from engine.events import Fill, OrderAccepted, Signal


def _fill(i: int) -> Fill:
    return Fill(ts_event=i, ts_recv=i, client_order_id=f"o{i}", fill_id=f"f{i}",
                instrument="BTC", side="buy", qty=1.0, price=100.0, fee=0.0,
                liquidity="taker")  # fmt: skip


def test_recent_events_keeps_the_last_rows_of_what_the_page_lists() -> None:
    recent = RecentEvents()
    for i in range(RECENT_ROWS + 5):
        recent(_fill(i))
    recent(OrderAccepted(ts_event=1, ts_recv=1, client_order_id="o1", venue_order_id="v"))
    recent(Signal(ts_event=2, ts_recv=2, instrument="BTC", model="m", score=0.7, zone=1,
                  previous_zone=0))  # fmt: skip
    assert recent.fills[0].fill_id == "f5" and len(recent.fills) == RECENT_ROWS
    assert len(recent.signals) == 1
    assert recent.changes == RECENT_ROWS + 5 + 1  # the ack is not listed: no change


def _line(i: int) -> bytes:
    doc = {"ts_ns": i, "instrument": "BTC", "contributions": [["mid", 0.1 * i]], "rest": 0.0}
    return json.dumps(doc).encode() + b"\n"


def test_explanation_tail_reads_appended_lines_and_waits_for_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "explanations.jsonl"
    tail = ExplanationTail(path)
    assert not tail.poll()  # no file yet
    path.write_bytes(_line(1) + _line(2)[:10])
    assert tail.poll()
    assert [d["ts_ns"] for d in tail.lines] == [1]
    with path.open("ab") as f:
        f.write(_line(2)[10:] + b"{not json\n" + _line(3))
    assert tail.poll()
    assert [d["ts_ns"] for d in tail.lines] == [1, 2, 3] and tail.unreadable == 1
    assert not tail.poll()  # nothing new


def test_explanation_tail_of_a_large_backlog_reads_its_end_only(tmp_path: Path) -> None:
    path = tmp_path / "explanations.jsonl"
    path.write_bytes(b"".join(_line(i) for i in range(20_000)))  # ~1.3 MB
    tail = ExplanationTail(path)
    assert tail.poll()
    assert [d["ts_ns"] for d in tail.lines] == list(range(20_000 - RECENT_ROWS, 20_000))
    assert tail.unreadable == 0  # the line the seek cut is skipped, not misread


def test_iso_is_utc_microseconds() -> None:
    assert iso(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
    assert iso(0) == ""


def test_document_joins_each_signal_with_its_explanation_and_nulls_non_finite(
    tmp_path: Path,
) -> None:
    """A signal and the explanations worker's line for it (written by the daemon's own
    ``explain_line`` from a small LightGBM model trained here) meet in the document's
    signal row; a signal without a line has no contributions; a NaN PnL is null."""
    import lightgbm as lgb
    import numpy as np

    from adapters.daemon.assembly import build_live_engine
    from adapters.dashboard.board import BoardSources, build_document, encode_document
    from adapters.explanations import ExplanationJob, explain_line
    from adapters.live_sender import ShadowSender
    from engine.config import load_config
    from engine.ports import SendOnly
    from engine.signals.explain import TreeExplainer
    from tests.integration.test_daemon import write_config

    names = ("imb", "spread")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 5, "verbose": -1,
                         "min_data_in_leaf": 10}, lgb.Dataset(x, y, feature_name=list(names)),
                        num_boost_round=5)  # fmt: skip
    explainer = TreeExplainer.from_text(booster.model_to_string(), "test model")
    job = ExplanationJob(ts_event=2_000, instrument="BTC", model="m", version="v" * 64,
                         score=0.8, names=names, row=np.array([1.2, -0.3]), order_ids=["o1"])  # fmt: skip
    path = tmp_path / "explanations.jsonl"
    path.write_bytes(explain_line(job, explainer, 2))
    line = json.loads(path.read_bytes())

    config, _ = load_config(write_config(tmp_path, "shadow", 1883))
    engine = build_live_engine(config, SendOnly(ShadowSender()), order_id_prefix="p")
    recent = RecentEvents()
    for ts in (1_000, 2_000):
        recent(Signal(ts_event=ts, ts_recv=ts + 5, instrument="BTC", model="m", score=0.8,
                      zone=1, previous_zone=0))  # fmt: skip
    tail = ExplanationTail(path)
    tail.poll()
    sources = BoardSources(
        engine=engine, node="n1", mode="shadow", book=lambda: ([0.0], [float("nan")]),
        models=lambda: [], feed=lambda: (True, False), session_counters=lambda: {},
        wall_clock=lambda: 3_000,
    )  # fmt: skip
    doc = json.loads(encode_document(build_document(sources, recent, tail)))
    newest, older = doc["signals"]
    assert newest["contributions"] == line["contributions"] and newest["order_ids"] == ["o1"]
    assert len(newest["contributions"]) == 2 and newest["rest"] == line["rest"]
    assert older["contributions"] == [] and older["rest"] is None
    assert doc["instruments"][0]["pnl"] is None and doc["pnl"] is None
    assert doc["state"] == "ACTIVE" and doc["orders"] == [] and doc["orders_total"] == 0
