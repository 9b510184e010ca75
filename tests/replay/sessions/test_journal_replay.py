"""Replay of a live session's journal, and parity of its decisions with the session's log.

``LiveSession`` records a session the way the daemon does, without a broker: the engine
is built with the live settings (replay clock advanced by the journal, arrival order, the
session's order id prefix, the order timeout in live mode, not strict), every input is
journaled before it is applied with the daemon's ``apply_input``, and the decisions go to
the jsonl log through a sink. The engine here is composed on its own, not with the
daemon's or the replay's builder, so a mistake in the replay's composition shows as a
difference. With ``journal_timers`` a timer is also journaled as it comes due (the
journal format allows it; the daemon does not do it today), to show such records are
checked.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import pytest

from adapters.daemon.core import apply_input
from adapters.journal_file import FileJournalReader, FileJournalWriter
from adapters.journal_folder import journal_files
from adapters.sim_venue import SimulatedVenue
from engine.clock import ReplayClock, TimerFired
from engine.codec import EventCodec
from engine.config import Config, load_config
from engine.engine import Engine
from engine.errors import ConfigError, DataError, JournalError
from engine.events import (
    Alarm,
    CancelRequest,
    Command,
    CommandAction,
    Event,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRequest,
    RiskRejected,
    Signal,
    TradingState,
)
from engine.features import FeatureSet
from engine.instruments import InstrumentTable
from engine.journal import (
    AnyRecord,
    ClockRecord,
    CommandRecord,
    FeedRecord,
    FeedStatus,
    MarketDataRecord,
    ReportRecord,
    TimerRecord,
)
from engine.plugins import load_model, load_strategy
from engine.ports import ExecutionReport, OrderRouter, SendOnly
from engine.risk import RiskEngine
from engine.strategy import Strategy
from engine.ticks import TickBatch
from replay.sessions.journal_replay import is_journal_dir, replay_journal
from replay.sessions.parity import MAX_SHOWN, cmd_parity, parity

T = 1_700_000_000_000_000_000
MS = 1_000_000
LOGGED = (Signal, OrderRequest, CancelRequest, RiskRejected, TradingState, Alarm)


class Action(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    at_ns: int
    do: Literal["market", "limit"]
    symbol: str = "X"
    side: Literal["buy", "sell"] = "buy"
    qty: float = 1.0
    price: float = 0.0


class ScriptParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    actions: list[Action] = []
    thresholds: list[float] = []
    heartbeat_ns: int = 0


class JournalScript(Strategy):
    """Orders at set times (one timer each), a repeating heartbeat timer, a buy on the
    first signal into the upper zone: decisions that depend on timers, signals, reports
    and the trading state."""

    name = "journal_script"
    Params = ScriptParams

    def __init__(self, params: ScriptParams) -> None:
        super().__init__(params)
        self.script = params
        self.signal_orders = 0

    def thresholds(self) -> list[float]:
        return self.script.thresholds

    def on_start(self) -> None:
        for i, action in enumerate(self.script.actions):
            self.ctx.set_timer(f"action-{i}", action.at_ns)
        if self.script.heartbeat_ns:
            now = self.ctx.now_ns()
            self.ctx.set_timer(
                "heartbeat", now + self.script.heartbeat_ns, self.script.heartbeat_ns
            )

    def on_timer(self, timer: TimerFired) -> None:
        if not timer.name.startswith("action-"):
            return
        action = self.script.actions[int(timer.name.removeprefix("action-"))]
        if action.do == "market":
            self.ctx.submit_market(action.symbol, action.side, action.qty)
        else:
            self.ctx.submit_limit(action.symbol, action.side, action.qty, action.price)

    def on_signal(self, signal: Signal) -> None:
        if signal.zone == 1 and signal.previous_zone == 0 and not self.signal_orders:
            self.signal_orders += 1
            self.ctx.submit_limit(signal.instrument, "buy", 0.5, 95.0)


STRATEGY = f"{__name__}:JournalScript"


def config_text(mode: str, actions: list[Action], *, heartbeat_ns: int = 20 * MS) -> str:
    rows = ",\n  ".join(
        f'{{ at_ns = {a.at_ns}, do = "{a.do}", symbol = "{a.symbol}", side = "{a.side}", '
        f"qty = {a.qty!r}, price = {a.price!r} }}"
        for a in actions
    )
    return f"""mode = "{mode}"

[[instruments]]
symbol = "X"
tick_size = 0.5
lot_size = 0.1

[[instruments]]
symbol = "Y"
tick_size = 0.5
lot_size = 0.1

[[features]]
name = "mid"
kind = "mid"

[model]
kind = "linear"
name = "mid_level"
params = {{ features = ["mid"], weights = [1.0], bias = -100.0 }}

[strategy]
name = "{STRATEGY}"

[strategy.params]
thresholds = [0.0]
heartbeat_ns = {heartbeat_ns}
actions = [
  {rows}
]

[risk]
max_order_qty = 10.0

[venue.sim]
latency = "1ms"
fee_bps = 1.0

[live]
order_timeout = "100ms"
"""


class Outbox:
    def __init__(self) -> None:
        self.orders: list[OrderRequest] = []

    def submit(self, order: OrderRequest) -> None:
        self.orders.append(order)

    def cancel(self, request: CancelRequest) -> None:
        pass


class JournaledClock(ReplayClock):
    """A replay clock that journals a timer as it comes due, before it fires."""

    def __init__(self) -> None:
        super().__init__()
        self.writer: FileJournalWriter | None = None

    def pop_due(self, ts_ns: int) -> list[TimerFired]:
        due = super().pop_due(ts_ns)
        if self.writer is None:
            return due
        for timer in due:
            self.writer.append(max(timer.ts_event, self.now_ns()), timer)
        return due


class LiveSession:
    """A session recorded as the daemon records it; use as a context manager."""

    def __init__(
        self,
        folder: Path,
        text: str,
        *,
        session_id: str = "s1",
        started_ns: int = T,
        first_seq: int | None = None,
        journal_timers: bool = False,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.session_id = session_id
        config_path = folder / f"session-{session_id}.toml"
        config_path.write_text(text)
        cfg: Config
        cfg, digest = load_config(config_path)
        self.mode = cfg.mode
        self.prefix = f"{session_id}-O"
        info: dict[str, object] = {
            "session_id": session_id,
            "config_sha256": digest,
            "mode": cfg.mode,
            "start_ns": started_ns,
            "order_id_prefix": self.prefix,
        }
        if first_seq is not None:
            info["first_seq"] = first_seq
        (folder / f"session-{session_id}.json").write_bytes(msgspec.json.encode(info))
        self.writer = FileJournalWriter(folder, session_id=session_id, fsync="never")
        self.writer.open()
        self.clock = JournaledClock()
        if journal_timers:
            self.clock.writer = self.writer
        self.outbox = Outbox()
        instruments = InstrumentTable(list(cfg.instruments))
        router: OrderRouter
        if cfg.mode == "paper":
            sim = cfg.venue.sim
            router = SimulatedVenue(sim.latency_ns, sim.fee_bps, sim.maker_fee_bps)
        else:
            router = SendOnly(self.outbox)
        self.engine = Engine(
            instruments=instruments,
            clock=self.clock,
            router=router,
            features=FeatureSet(list(cfg.features)),
            model=load_model(cfg.model) if cfg.model is not None else None,
            strategy=load_strategy(cfg.strategy),
            risk=RiskEngine(cfg.risk, instruments.symbols),
            equity_interval_ns=cfg.replay.equity_interval_ns,
            initial_cash=cfg.replay.initial_cash,
            strict=False,
            order_id_prefix=self.prefix,
            arrival_order=True,
            order_timeout_ns=cfg.live.order_timeout_ns if cfg.mode == "live" else None,
        )
        self.codec = EventCodec("json")
        self.log = (folder / f"decisions-{session_id}.jsonl").open("wb")
        self.engine.sinks.append(self._log)
        self.logged: list[Event] = []

    def _log(self, event: Event) -> None:
        if isinstance(event, LOGGED):
            self.logged.append(event)
            self.log.write(self.codec.encode(event) + b"\n")

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()
        self.log.close()

    def market(self, batch: TickBatch) -> None:
        self._input(int(batch.ts_recv[-1]), batch)

    def report(self, report: ExecutionReport) -> None:
        self._input(report.ts_recv, report)

    def command(self, action: CommandAction, ts: int) -> None:
        self._input(ts, Command(ts_event=ts, ts_recv=ts, action=action, issuer="op", reason="test"))

    def clock_reading(self, ts: int) -> None:
        self._input(ts, None)

    def feed(self, status: Literal["lost", "restored", "overflow"], ts: int) -> None:
        dropped = 3 if status == "overflow" else 0
        self._input(ts, FeedStatus(status=status, reason=f"test {status}", dropped=dropped))

    def _input(
        self, ts: int, body: TickBatch | ExecutionReport | Command | FeedStatus | None
    ) -> None:
        if body is None:
            self.writer.append_clock(ts)
        else:
            self.writer.append(ts, body)
        apply_input(self.engine, ts, body)


def quote_batch(rows: list[tuple[int, int, int, float, float]]) -> TickBatch:
    """(ts_event, ts_recv, instrument, bid, ask) with sizes of 5."""
    n = len(rows)
    return TickBatch.quotes(
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.int64),
        np.array([r[2] for r in rows], np.int32),
        np.array([r[3] for r in rows], np.float64),
        np.array([r[4] for r in rows], np.float64),
        np.full(n, 5.0),
        np.full(n, 5.0),
    )


def fill(
    order: OrderRequest, fill_id: str, ts: int, price: float, qty: float | None = None
) -> Fill:
    return Fill(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id, fill_id=fill_id,
                instrument=order.instrument, side=order.side, qty=order.qty if qty is None else qty,
                price=price, fee=0.01, liquidity="taker")  # fmt: skip


def ack(order: OrderRequest, ts: int) -> OrderAccepted:
    return OrderAccepted(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id,
                         venue_order_id=f"V{order.client_order_id}")  # fmt: skip


LIVE_ACTIONS = [
    Action(at_ns=T + 10 * MS, do="market", qty=1.0),
    Action(at_ns=T + 50 * MS, do="limit", qty=1.0, price=99.0),
    Action(at_ns=T + 60 * MS, do="market", qty=50.0),  # above max_order_qty: RiskRejected
    Action(at_ns=T + 70 * MS, do="market", symbol="Y", side="sell", qty=2.0),
]


def record_live_session(
    folder: Path, *, mode: str = "live", session_id: str = "s1", journal_timers: bool = False
) -> LiveSession:
    """A live session with every kind of input: quotes (a ts_event going backwards),
    acks, fills and duplicates, an order timeout, feed lost and restored, kill, resume
    and flatten, a fill nobody ordered."""
    text = config_text(mode, LIVE_ACTIONS)
    with LiveSession(folder, text, session_id=session_id, journal_timers=journal_timers) as s:
        s.clock_reading(T)
        # Y's venue clock runs 3 ms behind X's: later arrivals stamped earlier
        s.market(quote_batch([(T + 1 * MS, T + 1 * MS, 0, 99.0, 100.0),
                              (T - 2 * MS, T + 2 * MS, 1, 49.5, 50.5),
                              (T + 3 * MS, T + 3 * MS, 0, 100.0, 101.0)]))  # fmt: skip
        s.market(quote_batch([(T + 2 * MS, T + 4 * MS, 1, 50.0, 51.0),
                              (T + 5 * MS, T + 5 * MS, 0, 99.0, 100.0)]))  # fmt: skip
        s.clock_reading(T + 10 * MS)  # action 0: market buy 1 X
        first = next(o for o in s.outbox.orders if o.order_type == "market")
        s.report(ack(first, T + 11 * MS))
        s.report(fill(first, "F1", T + 12 * MS, 100.5, 0.5))
        s.report(fill(first, "F1", T + 12 * MS, 100.5, 0.5))  # a duplicate
        s.report(fill(first, "F2", T + 13 * MS, 101.0, 0.5))
        s.report(ack(first, T + 13 * MS))  # a late, repeated ack
        # the heartbeat at T+20ms fires inside this batch; the signal re-arms on the cross
        s.market(quote_batch([(T + 15 * MS, T + 15 * MS, 0, 100.0, 101.0),
                              (T + 25 * MS, T + 25 * MS, 0, 98.0, 99.0),
                              (T + 24 * MS, T + 26 * MS, 1, 50.0, 51.0),
                              (T + 30 * MS, T + 30 * MS, 0, 100.5, 101.5)]))  # fmt: skip
        s.clock_reading(T + 50 * MS)  # action 1: a limit nobody answers
        s.clock_reading(T + 65 * MS)  # action 2: refused by max_order_qty
        s.market(quote_batch([(T + 66 * MS, T + 66 * MS, 0, 100.0, 101.0)]))
        s.clock_reading(T + 160 * MS)  # action 3, then the limit's order timeout: UNKNOWN
        waiting = next(o for o in s.outbox.orders if o.order_type == "limit" and o.qty == 1.0)
        y_sell = next(o for o in s.outbox.orders if o.instrument == "Y")
        on_signal = next(o for o in s.outbox.orders if o.limit_price == 95.0)
        s.report(ack(on_signal, T + 161 * MS))
        s.report(ack(waiting, T + 161 * MS))  # both answered late: back to ACTIVE
        s.report(ack(y_sell, T + 161 * MS))
        s.report(fill(y_sell, "F3", T + 162 * MS, 50.0))
        s.feed("lost", T + 170 * MS)  # HALTED: the working limit is cancelled
        s.report(OrderCancelled(ts_event=T + 171 * MS, ts_recv=T + 171 * MS,
                                client_order_id=waiting.client_order_id, reason="halted"))  # fmt: skip
        s.market(quote_batch([(T + 180 * MS, T + 180 * MS, 0, 100.0, 101.0),
                              (T + 181 * MS, T + 181 * MS, 1, 50.0, 51.0)]))  # fmt: skip
        s.feed("restored", T + 182 * MS)
        s.command("kill", T + 190 * MS)
        s.command("reduce_only", T + 191 * MS)  # refused during a kill: an Alarm
        s.command("resume", T + 192 * MS)
        s.command("flatten", T + 200 * MS)  # sells the X bought, buys back the Y sold
        for i, order in enumerate(o for o in s.outbox.orders if o.strategy == "operator:flatten"):
            s.report(ack(order, T + 201 * MS))
            price = 100.0 if order.instrument == "X" else 51.0
            s.report(fill(order, f"FL{i}", T + 202 * MS, price))
        s.report(Fill(ts_event=T + 210 * MS, ts_recv=T + 210 * MS, client_order_id="NOBODY",
                      fill_id="F9", instrument="X", side="buy", qty=0.3, price=100.25, fee=0.0,
                      liquidity="maker"))  # fmt: skip
        s.feed("overflow", T + 215 * MS)
        s.market(quote_batch([(T + 220 * MS, T + 220 * MS, 0, 99.0, 100.0)]))
        s.clock_reading(T + 300 * MS)
    return s


def rewrite_journal(folder: Path, records: list[AnyRecord]) -> None:
    """Write the journal again as ``records``, numbered afresh (no gap, as if the daemon
    had received exactly these)."""
    session_id = next(folder.glob("session-*.json")).stem.removeprefix("session-")
    for path in journal_files(folder):
        path.unlink()
    with FileJournalWriter(folder, session_id=session_id, fsync="never") as writer:
        for record in records:
            match record:
                case MarketDataRecord():
                    writer.append(record.ts_recv, record.ticks.to_batch())
                case ReportRecord():
                    writer.append(record.ts_recv, record.report)
                case CommandRecord():
                    writer.append(record.ts_recv, record.command)
                case TimerRecord():
                    writer.append(record.ts_recv, record.timer)
                case FeedRecord():
                    writer.append(record.ts_recv, record.feed)
                case ClockRecord():
                    writer.append_clock(record.ts_recv)


def test_journal_replay_of_a_live_session_gives_its_decisions_and_counts(tmp_path: Path) -> None:
    session = record_live_session(tmp_path)
    result = replay_journal(tmp_path)
    assert result.decisions == session.logged
    assert result.records == {
        "clock": 6,
        "market_data": 6,
        "report": 15,
        "command": 4,
        "feed": 3,
    }
    assert result.ticks == session.engine.counters["ticks"] == 13
    assert result.orders == len(session.outbox.orders) == session.engine.counters["orders_sent"]
    assert result.timer_differences == []
    assert result.engine.counters == session.engine.counters
    assert result.engine.portfolio.positions.tolist() == session.engine.portfolio.positions.tolist()
    # the session exercised what it claims to
    counters = session.engine.counters
    assert counters["ts_event_backwards"] >= 2
    assert counters["fills_duplicate"] == 1 and counters["reports_redundant"] >= 1
    assert counters["orders_unknown"] == 2 and counters["commands_refused"] == 1
    assert counters["flatten_orders"] == 2 and counters["fills_unknown_order"] == 1
    assert counters["market_data_lost"] == 2 and counters["risk_rejected"] >= 1
    kinds = {type(e).__name__ for e in session.logged}
    assert kinds == {"Signal", "OrderRequest", "CancelRequest", "RiskRejected", "TradingState",
                     "Alarm"}  # fmt: skip
    assert result.timers_fired > len(LIVE_ACTIONS)  # the heartbeat fired too
    assert result.timers_journaled == 0 and result.timer_differences == []
    assert is_journal_dir(tmp_path) and not is_journal_dir(tmp_path / "nothing")


def test_parity_of_an_untouched_live_session_is_ok(tmp_path: Path) -> None:
    session = record_live_session(tmp_path)
    result = parity(tmp_path)
    assert result.ok, result.differences
    assert result.differences == [] and result.difference_count == 0
    assert result.decisions_equal == result.decisions_replayed == len(session.logged)
    assert result.decisions_logged == len(session.logged)
    assert result.session_id == "s1"


def test_parity_of_a_paper_session_on_the_simulated_venue_is_ok(tmp_path: Path) -> None:
    actions = [
        Action(at_ns=T + 10 * MS, do="market", qty=1.0),
        Action(at_ns=T + 12 * MS, do="limit", qty=2.0, price=99.0),
        Action(at_ns=T + 40 * MS, do="market", symbol="Y", side="sell", qty=1.5),
    ]
    with LiveSession(tmp_path, config_text("paper", actions)) as s:
        s.clock_reading(T)
        for k in range(60):
            ts = T + k * MS
            bid = 99.0 + (k % 7) * 0.5 - (k % 11 == 0) * 1.5
            backwards = 2 * MS if k % 5 == 0 else 0
            s.market(quote_batch([(ts - backwards, ts, k % 2, bid, bid + 1.0)]))
            if k == 20:
                s.command("flatten", ts)
            if k == 30:
                s.command("resume", ts)
            if k == 45:
                s.feed("lost", ts)
            if k == 50:
                s.feed("restored", ts)
            if k % 9 == 0:
                s.clock_reading(ts + MS // 2)
        s.clock_reading(T + 200 * MS)
    orders = [e for e in s.logged if isinstance(e, OrderRequest)]
    assert len(orders) >= 4 and s.engine.counters["fills"] >= 3
    result = parity(tmp_path)
    assert result.ok, result.differences
    assert result.decisions_equal == len(s.logged)
    assert "report" not in result.replay.records  # the simulator's fills are not inputs


def test_parity_a_changed_price_in_the_decisions_log_is_exactly_that_difference(
    tmp_path: Path,
) -> None:
    record_live_session(tmp_path)
    log = tmp_path / "decisions-s1.jsonl"
    lines = log.read_bytes().splitlines()
    index = next(i for i, line in enumerate(lines) if b'"limit_price":99.0' in line)
    lines[index] = lines[index].replace(b'"limit_price":99.0', b'"limit_price":99.5')
    log.write_bytes(b"\n".join(lines) + b"\n")
    result = parity(tmp_path)
    assert not result.ok
    assert result.difference_count == 1
    assert result.differences == [
        f"decision {index} (order_request): limit_price: log 99.5, replay 99.0"
    ]


def test_parity_a_fill_price_changed_in_the_journal_shows_in_its_alarm(tmp_path: Path) -> None:
    record_live_session(tmp_path)
    records = list(FileJournalReader(tmp_path))

    def reprice(record: AnyRecord) -> AnyRecord:
        if isinstance(record, ReportRecord) and getattr(record.report, "fill_id", "") == "F9":
            report = msgspec.structs.replace(record.report, price=100.75)
            return msgspec.structs.replace(record, report=report)
        return record

    rewrite_journal(tmp_path, [reprice(r) for r in records])
    result = parity(tmp_path)
    assert result.difference_count == 1
    (line,) = result.differences
    assert "(alarm): message: " in line and "@ 100.25" in line and "@ 100.75" in line


def test_parity_a_dropped_report_in_the_journal_is_a_difference(tmp_path: Path) -> None:
    record_live_session(tmp_path)
    records = list(FileJournalReader(tmp_path))
    rewrite_journal(
        tmp_path,
        [
            r
            for r in records
            if not (isinstance(r, ReportRecord) and getattr(r.report, "fill_id", "") == "F2")
        ],
    )
    result = parity(tmp_path)
    assert not result.ok
    assert result.difference_count >= 1
    assert result.replay.records["report"] == 14
    assert len(result.differences) <= MAX_SHOWN


def test_parity_timer_records_that_match_the_replayed_firings_are_ok(tmp_path: Path) -> None:
    session = record_live_session(tmp_path, journal_timers=True)
    result = parity(tmp_path)
    assert result.ok, result.differences
    assert result.replay.timers_journaled == result.replay.timers_fired
    assert result.replay.timers_fired == session.engine.counters["timers"] > 0


def test_parity_a_dropped_timer_record_is_a_difference(tmp_path: Path) -> None:
    record_live_session(tmp_path, journal_timers=True)
    records = list(FileJournalReader(tmp_path))
    first_timer = next(i for i, r in enumerate(records) if isinstance(r, TimerRecord))
    rewrite_journal(tmp_path, records[:first_timer] + records[first_timer + 1 :])
    result = parity(tmp_path)
    assert not result.ok
    assert result.decisions_equal == result.decisions_logged  # decisions alone agree
    assert any(line.startswith("timer 0: ") for line in result.differences)


def test_parity_a_timer_journaled_at_another_point_is_a_difference(tmp_path: Path) -> None:
    record_live_session(tmp_path, journal_timers=True)
    records = list(FileJournalReader(tmp_path))
    timers = [r for r in records if isinstance(r, TimerRecord)]
    moved = timers[0]
    others = [r for r in records if r is not moved]
    at = len(others) - 1  # just before the last clock reading
    rewrite_journal(tmp_path, [*others[:at], moved, *others[at:]])
    result = parity(tmp_path)
    assert not result.ok
    assert result.decisions_equal == result.decisions_logged


def test_cmd_parity_exits_0_on_equality_and_1_on_a_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = record_live_session(tmp_path)
    args = argparse.Namespace(journal_dir=str(tmp_path), session=None)
    assert cmd_parity(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"parity: {len(session.logged)} decisions equal")
    log = tmp_path / "decisions-s1.jsonl"
    lines = log.read_bytes().splitlines()
    del lines[3]
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert cmd_parity(args) == 1
    out = capsys.readouterr().out
    assert out.startswith("parity: ") and "differences in session s1" in out
    assert "\n  decision 3: type: " in out


@pytest.mark.parametrize("first_seq", [False, True], ids=["first_clock_reading", "first_seq"])
def test_parity_picks_the_latest_session_or_the_one_named(tmp_path: Path, first_seq: bool) -> None:
    record_live_session(tmp_path, session_id="a")
    if first_seq:
        info = tmp_path / "session-a.json"
        info.write_bytes(info.read_bytes().replace(b"}", b',"first_seq":1}'))
    # session b continues the same journal folder after a restart
    next_seq = sum(1 for _ in FileJournalReader(tmp_path)) + 1
    actions = [Action(at_ns=T + 400 * MS, do="market", qty=1.0)]
    with LiveSession(tmp_path, config_text("shadow", actions), session_id="b",
                     started_ns=T + 350 * MS, first_seq=next_seq if first_seq else None) as s:  # fmt: skip
        s.clock_reading(T + 350 * MS)
        s.market(quote_batch([(T + 360 * MS, T + 360 * MS, 0, 100.0, 101.0)]))
        s.clock_reading(T + 400 * MS)
    assert s.engine.counters["orders_sent"] == 1
    latest = parity(tmp_path)
    assert latest.ok, latest.differences
    assert latest.session_id == "b" and latest.decisions_equal == len(s.logged)
    assert latest.replay.record_count == 3
    earlier = parity(tmp_path, session="a")
    assert earlier.ok, earlier.differences
    assert earlier.session_id == "a" and earlier.replay.record_count == next_seq - 1
    with pytest.raises(DataError, match="no session 'c'"):
        parity(tmp_path, session="c")


def test_parity_of_a_folder_without_a_session_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no session-"):
        parity(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        parity(tmp_path / "missing")


def test_parity_refuses_a_config_copy_that_is_not_the_one_that_ran(tmp_path: Path) -> None:
    record_live_session(tmp_path)
    config = tmp_path / "session-s1.toml"
    config.write_text(config.read_text().replace("max_order_qty = 10.0", "max_order_qty = 20.0"))
    assert (
        hashlib.sha256(config.read_bytes()).hexdigest()
        not in (tmp_path / "session-s1.json").read_text()
    )
    with pytest.raises(ConfigError, match="not the config that ran"):
        parity(tmp_path)


def test_parity_of_a_journal_with_a_sequence_gap_is_a_journal_error(tmp_path: Path) -> None:
    record_live_session(tmp_path)
    records = list(FileJournalReader(tmp_path))
    # a second day's file that does not continue the sequence
    with FileJournalWriter(tmp_path, session_id="s1", fsync="never",
                           first_seq=len(records) + 5) as writer:  # fmt: skip
        writer.next_seq = len(records) + 5
        writer.append_clock(T + 86_400 * 1_000_000_000)
    with pytest.raises(JournalError):
        parity(tmp_path)


def test_parity_a_log_cut_short_is_a_difference(tmp_path: Path) -> None:
    session = record_live_session(tmp_path)
    log = tmp_path / "decisions-s1.jsonl"
    log.write_bytes(log.read_bytes()[:-20])  # the daemon died inside the last line
    result = parity(tmp_path)
    assert not result.ok and result.difference_count == 1
    assert result.differences[0].startswith(f"decision {len(session.logged) - 1}: log line")
