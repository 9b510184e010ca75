"""A running daemon against a real mosquitto while the bus turns hostile (issue 19, items
2, 4, 6 and the payload half of 7): quotes stamped beyond int64, an hour old or ahead,
in the wrong unit, at a denormal price, retained, oversized (retained too) and deeply
nested; fills and commands with the same poison; a reconciliation answer booking
nonsense. The daemon keeps running and keeps both connections, refuses and counts every
one, sends no order because of them, and still books a later fill and obeys a later
signed command; the journal replays to the same decisions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.reconcile import (
    FillsResponse,
    FillsSinceRequest,
    OpenOrdersRequest,
    OpenOrdersResponse,
    PositionsRequest,
    PositionsResponse,
    ReconcileCodec,
    ReconcileResponse,
)
from adapters.mqtt.validation import PRICE_MAX, PRICE_MIN, SIZE_MAX, MessageLimits
from engine.events import Fill, OrderAccepted
from engine.journal import CommandRecord, MarketDataRecord, ReportRecord
from tests.integration.conftest import COMMAND_KEY, Broker
from tests.integration.test_daemon import (
    CODEC,
    N1,
    SYMBOL,
    _client,
    _decisions,
    _free_port,
    _records,
    _replayed_decisions,
    _scrape,
    _session_counters,
    publish_command,
    publish_quote,
    running,
    watching,
    write_config,
)

S = 1_000_000_000
QUOTE_TOPIC = f"md/SIM/{SYMBOL}/quote"
TRADE_TOPIC = f"md/SIM/{SYMBOL}/trade"
MAX_PAYLOAD = 65_536  # the frame parser keeps publishes up to about 131 kB


def _quote_json(ts_event: int, bid: str = "100.0") -> bytes:
    # by hand: our encoder would not write an int beyond int64
    return (
        b'{"type":"quote","ts_event":%d,"ts_recv":0,"instrument":"%s","bid":%s,'
        b'"ask":100.5,"bid_size":3.0,"ask_size":3.0}' % (ts_event, SYMBOL.encode(), bid.encode())
    )


def _fill_json(ts_event: int, qty: str = "1.0", fee: str = "0.01", fill_id: str = "x") -> bytes:
    return (
        b'{"type":"fill","ts_event":%d,"ts_recv":0,"client_order_id":"n1-x-1","fill_id":"%s",'
        b'"instrument":"%s","side":"buy","qty":%s,"price":100.5,"fee":%s,"liquidity":"taker"}'
        % (ts_event, fill_id.encode(), SYMBOL.encode(), qty.encode(), fee.encode())
    )


def _nested(kind: str, depth: int = 20_000) -> bytes:
    return b'{"type":"%s","x":' % kind.encode() + b"[" * depth + b"]" * depth + b"}"


def _signed(payload: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [(SIGNATURE_PROPERTY, sign_command(payload, COMMAND_KEY.encode(), N1))]
    return props


async def _until(what: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_hostile_bus_daemon_keeps_running_refuses_counts_and_trades_on_good_data(
    daemon_env: Broker, tmp_path: Path
) -> None:
    metrics_port = _free_port()
    config = write_config(
        tmp_path, "live", daemon_env.port, metrics_port=metrics_port, max_payload_bytes=MAX_PAYLOAD
    )
    hour = 3600 * S
    async with _client(daemon_env) as early:
        # retained before the daemon starts: sent to it at every subscription. The quote an
        # hour old produced an order at start-up; the oversized payload reset the feed at
        # every reconnect, for good.
        await early.publish(QUOTE_TOPIC, _quote_json(time.time_ns() - hour), qos=1, retain=True)
        await early.publish(TRADE_TOPIC, b"z" * 200_000, qos=1, retain=True)
    async with (
        watching(daemon_env) as (watcher, feed),
        _client(daemon_env, operator=True) as operator,
        running(config) as daemon,
    ):
        await watcher.status(lambda s: s.online and s.state == "ACTIVE")
        while daemon.session is None:
            await asyncio.sleep(0.01)
        counters = daemon.session.counters
        await _until(
            lambda: counters["bad_retained"] == 1 and counters["feed_frames_oversized"] == 1
        )

        now = time.time_ns()
        hostile: list[tuple[str, bytes]] = [
            *((QUOTE_TOPIC, _quote_json(2**63 + k * 997)) for k in range(30)),  # item 2
            (QUOTE_TOPIC, _quote_json(2**64 - 1)),
            (QUOTE_TOPIC, _quote_json(-1)),
            (QUOTE_TOPIC, _quote_json(now - hour)),  # item 4
            (QUOTE_TOPIC, _quote_json(now + hour)),
            (QUOTE_TOPIC, _quote_json(now // 10**9)),  # seconds
            (QUOTE_TOPIC, _quote_json(now // 10**6)),  # milliseconds
            (QUOTE_TOPIC, _quote_json(now // 10**3)),  # microseconds
            (QUOTE_TOPIC, _quote_json(now, bid="1e-320")),  # a denormal
            (QUOTE_TOPIC, _nested("quote")),  # item 6
            (QUOTE_TOPIC, b"y" * 200_000),  # beyond any publish kept: skipped by length
            (QUOTE_TOPIC, b"w" * 100_000),  # beyond max_payload_bytes: refused unread
            (TRADE_TOPIC, _nested("trade")),
        ]
        for topic, payload in hostile:
            await feed.publish(topic, payload, qos=0)
        for payload in (
            _fill_json(2**63),  # the same value in a report
            _fill_json(now, qty="-1.0", fill_id="neg"),
            _fill_json(now, fee="-1e6", fill_id="rebate"),
            _fill_json(now, fee="1e308", fill_id="fee"),
            _nested("fill"),
        ):
            await feed.publish("oms/a1/reports", payload, qos=1)
        command = b'{"type":"command","ts_event":%d,"ts_recv":0,"action":"kill"}' % 2**63
        await operator.publish("tradeloop/n1/command", command, qos=1, properties=_signed(command))

        refused = {
            "bad_ts_range": 34,  # 32 quotes, the fill and the command
            "bad_stale": 1,
            "bad_future": 1,
            "bad_ts_unit": 3,
            "bad_price_bounds": 1,
            "bad_undecodable": 3,
            "oversized": 3,  # the two skipped frames, the one refused unread
            "feed_frames_oversized": 2,
            "bad_non_positive": 1,
            "bad_fee_bounds": 2,
        }
        await _until(lambda: all(counters[k] >= v for k, v in refused.items()))
        assert {k: counters[k] for k in refused} == refused
        # nothing reached the engine, both connections held, nothing was sent
        await asyncio.sleep(0.3)
        assert counters["connection_lost"] == 0 and counters["feed_connection_lost"] == 0
        assert counters["bad_internal"] == 0
        assert watcher.orders == [] and daemon.engine.counters["orders_requested"] == 0
        assert daemon.engine.counters["fills"] == 0
        assert not daemon.engine.strategy.sent  # type: ignore[attr-defined]
        assert daemon.engine.risk.state == "ACTIVE"
        metrics = _session_counters(metrics_port)
        assert metrics['tradeloop_decode_errors_total{reason="ts_range"}'] == 34
        assert metrics['tradeloop_decode_errors_total{reason="retained"}'] == 1
        assert metrics['tradeloop_decode_errors_total{reason="stale"}'] == 1

        # good data after all that: a quote trades, a fill books, a command is obeyed
        await publish_quote(feed)
        await watcher.wait(lambda: len(watcher.orders) == 1)
        order = watcher.orders[0]
        ts = time.time_ns()
        accepted = OrderAccepted(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id,
                                 venue_order_id="v1")  # fmt: skip
        fill = Fill(ts_event=ts, ts_recv=ts, client_order_id=order.client_order_id, fill_id="f1",
                    instrument=SYMBOL, side="buy", qty=1.0, price=100.5, fee=0.01,
                    liquidity="taker")  # fmt: skip
        for report in (accepted, fill):
            await feed.publish("oms/a1/reports", CODEC.encode(report), qos=1)
        await watcher.status(lambda s: s.positions.get(SYMBOL) == 1.0)
        await publish_command(operator, "reduce_only")
        await watcher.status(lambda s: s.state == "REDUCE_ONLY")
        assert counters["connection_lost"] == 0 and counters["feed_connection_lost"] == 0
        assert len(watcher.orders) == 1
        assert "tradeloop_decode_errors_total" in _scrape(metrics_port)

    journal = tmp_path / "journal"
    records = _records(journal)
    ticks = [r.ticks.to_batch() for r in records if isinstance(r, MarketDataRecord)]
    assert sum(len(b) for b in ticks) == 1  # the good quote, and nothing else
    limits = MessageLimits()
    for batch in ticks:
        for k in range(len(batch)):
            age = int(batch.ts_recv[k]) - int(batch.ts_event[k])
            assert -limits.max_tick_future_ns <= age <= limits.max_tick_age_ns
            assert PRICE_MIN <= float(batch.bid[k]) < float(batch.ask[k]) <= PRICE_MAX
            assert 0 < float(batch.bid_size[k]) <= SIZE_MAX
    reports = [r.report for r in records if isinstance(r, ReportRecord)]
    assert reports == [accepted, fill]
    commands = [
        (r.command.action, r.command.issuer) for r in records if isinstance(r, CommandRecord)
    ]
    assert commands[0] == ("reduce_only", "ops") and commands[-1] == ("kill", "daemon")
    replayed = _replayed_decisions(config, journal, daemon.session_id, daemon.order_id_prefix)
    assert replayed == (journal / f"decisions-{daemon.session_id}.jsonl").read_text().splitlines()
    assert any(d["type"] == "order_request" for d in _decisions(journal, daemon.session_id))


class _Oms:
    """Answers the daemon's reconciliation requests; ``bad`` answers fills of the issue
    (qty -1, price 0, qty 1e308, fee -1e6), else nothing to reconcile."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.codec = ReconcileCodec("json")
        self.bad = True
        self.answered = 0

    async def serve(self) -> None:
        await self.client.subscribe("oms/a1/requests", qos=1)
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes) and message.properties is not None
            request = self.codec.decode_request(message.payload)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            asked = message.properties
            props.CorrelationData = asked.CorrelationData  # type: ignore[attr-defined]
            answer = self._answer(request)
            await self.client.publish(asked.ResponseTopic,  # type: ignore[attr-defined]
                                      self.codec.encode(answer), qos=1, properties=props)  # fmt: skip
            self.answered += 1

    def _answer(self, request: object) -> ReconcileResponse:
        now = time.time_ns()
        if isinstance(request, FillsSinceRequest):
            fills = [self._fill(f"bad-{k}", **kw) for k, kw in enumerate(
                [{"qty": -1.0}, {"price": 0.0}, {"qty": 1e308}, {"fee": -1e6}])] if self.bad else []  # fmt: skip
            return FillsResponse(as_of_ns=now, fills=fills)
        if isinstance(request, PositionsRequest):
            return PositionsResponse(as_of_ns=now, positions={SYMBOL: 0.0})
        assert isinstance(request, OpenOrdersRequest)
        return OpenOrdersResponse(as_of_ns=now, orders=[])

    @staticmethod
    def _fill(fill_id: str, **kw: float) -> Fill:
        now = time.time_ns()
        values = {"qty": 1.0, "price": 100.0, "fee": 0.01, **kw}
        return Fill(ts_event=now, ts_recv=now, client_order_id="n1-old-1", fill_id=fill_id,
                    instrument=SYMBOL, side="buy", liquidity="taker", **values)  # fmt: skip


@contextlib.asynccontextmanager
async def _oms(broker: Broker) -> AsyncIterator[_Oms]:
    async with _client(broker) as client:
        oms = _Oms(client)
        task = asyncio.create_task(oms.serve())
        try:
            yield oms
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.asyncio
async def test_hostile_reconciliation_answer_refused_counted_halts_until_clean(
    daemon_env: Broker, tmp_path: Path
) -> None:
    # item 7: fills of qty -1, price 0, qty 1e308 or fee -1e6 in an answer were booked
    metrics_port = _free_port()
    config = write_config(tmp_path, "live", daemon_env.port, metrics_port=metrics_port)
    async with (
        _oms(daemon_env) as oms,
        watching(daemon_env) as (watcher, _),
        running(config) as daemon,
    ):
        await watcher.status(lambda s: s.online and s.state == "HALTED", timeout=20)
        while daemon.session is None:
            await asyncio.sleep(0.01)
        counters = daemon.session.counters
        assert counters["bad_answer_non_positive"] >= 2 and counters["bad_answer_fee_bounds"] >= 1
        assert counters["bad_answer_size_bounds"] >= 1
        assert daemon.engine.counters["fills"] == 0
        assert daemon.engine.risk.trading.claim("reconciliation") == "HALTED"
        metrics = _session_counters(metrics_port)
        assert metrics['tradeloop_decode_errors_total{reason="answer_non_positive"}'] >= 2
        oms.bad = False  # the next retry's answer is clean and agrees: reconciliation lifts
        await watcher.status(lambda s: s.state == "ACTIVE", timeout=20)
        assert daemon.engine.counters["fills"] == 0
        assert counters["connection_lost"] == 0
    kills = [
        r.command
        for r in _records(tmp_path / "journal")
        if isinstance(r, CommandRecord) and r.command.issuer == "reconciliation"
    ]
    assert kills[0].action == "kill" and "refused answer from the OMS" in kills[0].reason
    assert "'bad-0'" in kills[0].reason and kills[-1].action == "resume"
    journal = tmp_path / "journal"
    replayed = _replayed_decisions(config, journal, daemon.session_id, daemon.order_id_prefix)
    assert replayed == (journal / f"decisions-{daemon.session_id}.jsonl").read_text().splitlines()
