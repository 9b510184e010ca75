"""Depth end to end over a real mosquitto: quotes, trades and depth updates played by the
publisher (``MqttTickPublisher``, ``merge_by_time``) into a paper daemon whose strategy
trades on an L2 feature (``l2_imbalance``) and whose simulated venue fills on the book
(``[book] queue_model``). The daemon journals the depth, and ``tradeloop parity`` (the
journal replayed into a fresh engine) reproduces every decision exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

try:
    from adapters.daemon.run import Daemon
    from adapters.mqtt.topics import Topics
    from adapters.tools.publish import MqttTickPublisher, merge_by_time
except ImportError as exc:  # the daemon is not in this tree yet
    pytest.skip(f"the live daemon is not importable: {exc}", allow_module_level=True)

from adapters.sim_venue import SimulatedVenue
from engine.book.batch import DepthBatch
from engine.codec import EventCodec
from engine.events import DepthUpdate, OrderRequest, Quote
from engine.instruments import Instrument, InstrumentTable
from engine.strategy import NoParams, Strategy
from engine.ticks import TickBatch
from replay.sessions.parity import cmd_parity, parity
from tests.integration.conftest import Broker
from tests.integration.test_parity import running, until

SYMBOL = "BTC"
MS = 1_000_000
INSTRUMENTS = InstrumentTable([Instrument(symbol=SYMBOL, venue="SIM", tick_size=1.0)])


class L2Quoter(Strategy):
    """Reads the L2 imbalance at every quote: flat and the bids heavier, a limit buy at the
    best bid; long and the asks heavier, a limit sell at the best ask; an order open for
    more than 300 ms is cancelled."""

    name = "l2_quoter"

    def __init__(self, params: NoParams) -> None:
        super().__init__(params)
        self.working: str | None = None
        self.sent_ns = 0

    def required_features(self) -> tuple[str, ...]:
        return ("l2_imb",)

    def wants_quotes(self) -> bool:
        return True

    def on_quote(self, quote: Quote) -> None:
        now = self.ctx.now_ns()
        if self.ctx.open_qty(SYMBOL) != 0.0:
            if self.working is not None and now - self.sent_ns > 300 * MS:
                self.ctx.cancel(self.working)
                self.working = None
            return
        imb = self.ctx.features(SYMBOL)["l2_imb"]
        if imb != imb or self.ctx.trading_state != "ACTIVE":
            return
        position = self.ctx.position(SYMBOL)
        if imb > 0.1 and position <= 0.0:
            self.working = self.ctx.submit_limit(SYMBOL, "buy", 1.0, quote.bid)
        elif imb < -0.1 and position > 0.0:
            self.working = self.ctx.submit_limit(SYMBOL, "sell", position, quote.ask)
        else:
            return
        self.sent_ns = now


def _config(tmp: Path, port: int) -> Path:
    path = tmp / "paper.toml"
    path.write_text(f"""
mode = "paper"

[[instruments]]
symbol = "{SYMBOL}"
venue = "SIM"
tick_size = 1.0
lot_size = 0.001

[book]
levels = 20
queue_model = "power"
queue_power = 2.0

[[features]]
name = "mid"
kind = "mid"

[[features]]
name = "l2_imb"
kind = "l2_imbalance"
levels = 3

[strategy]
name = "tests.integration.test_depth_parity:L2Quoter"

[risk]
max_order_qty = 50.0
max_position = 50.0
max_quote_age = "60s"

[mqtt]
host = "127.0.0.1"
port = {port}
username_env = "TL_TEST_MQTT_USER"
password_env = "TL_TEST_MQTT_PASSWORD"
reconnect_min = "50ms"
reconnect_max = "200ms"

[live]
node = "n1"
account = "a1"
heartbeat = "50ms"
command_key_env = "TL_TEST_COMMAND_KEY"
metrics_port = 0
shutdown_timeout = "3s"

[journal]
dir = "{(tmp / "journal").as_posix()}"
fsync = "batch"
""")
    return path


def _market(
    seed: int, steps: int, t0: int, quote_every: int = 1
) -> tuple[list[TickBatch], list[DepthBatch]]:
    """A diff stream on a 1.0 tick: a snapshot of 8 levels a side, then every 100 ms an
    update of the levels that changed (the touch moving a tick now and then: the level it
    leaves deleted, a new one behind; two levels resized), so the book depends on its whole
    history; after every ``quote_every``-th update the quote it implies, between updates
    trades at the touch with random aggressors."""
    rng = np.random.default_rng(seed)
    ticks: list[TickBatch] = []
    depth: list[DepthBatch] = []
    bid = 100.0
    books = {1: {bid - j: float(rng.integers(1, 6)) for j in range(8)},
             -1: {bid + 1 + j: float(rng.integers(1, 6)) for j in range(8)}}  # fmt: skip
    one = np.zeros(1, np.int32)
    for k in range(steps):
        ts = t0 + k * 100 * MS
        changed: dict[int, dict[float, float]] = {1: {}, -1: {}}
        if k == 0:
            changed = {1: dict(books[1]), -1: dict(books[-1])}
        else:
            step = float(rng.choice((-1.0, 1.0))) if rng.random() < 0.15 else 0.0
            if step:
                ask = bid + 1.0
                gone, grow = (-1, 1) if step > 0 else (1, -1)
                left = ask if step > 0 else bid  # the touch level taken out
                changed[gone][left] = 0.0
                bid += step
                touch = bid if step > 0 else bid + 1.0
                changed[grow][touch] = float(rng.integers(1, 6))
                far = (bid + 8.0) if step > 0 else (bid - 7.0)  # keep 8 levels a side
                changed[gone][far] = float(rng.integers(1, 6))
            for _ in range(2):
                side = int(rng.choice((1, -1)))
                price = (bid - float(rng.integers(0, 8)) if side > 0
                         else bid + 1.0 + float(rng.integers(0, 8)))  # fmt: skip
                changed[side][price] = float(rng.integers(1, 6))
            for side, levels in changed.items():
                for price, size in levels.items():
                    if size:
                        books[side][price] = size
                    else:
                        books[side].pop(price, None)
        update = DepthUpdate(ts_event=ts, ts_recv=ts, instrument=SYMBOL, first_update_id=k + 1,
                             last_update_id=k + 1, prev_update_id=k + 1 if k == 0 else k,
                             snapshot=k == 0, bids=tuple(changed[1].items()),
                             asks=tuple(changed[-1].items()))  # fmt: skip
        depth.append(DepthBatch.from_updates([update], INSTRUMENTS.index))
        ask = bid + 1.0
        stamp = np.array([ts + 1], np.int64)
        if k % quote_every == 0:
            ticks.append(TickBatch.quotes(stamp, stamp, one, np.array([bid]), np.array([ask]),
                                          np.array([books[1][bid]]),
                                          np.array([books[-1][ask]])))  # fmt: skip
        for j in range(int(rng.integers(1, 4))):
            side = int(rng.choice((1, -1)))
            t = np.array([ts + (20 + 20 * j) * MS], np.int64)
            ticks.append(TickBatch.trades(t, t, one, np.array([ask if side > 0 else bid]),
                                          np.array([float(rng.integers(1, 5))]),
                                          np.array([side], np.int8)))  # fmt: skip
    return ticks, depth


def _publish(broker: Broker, stream: list[TickBatch | DepthBatch], done: list[int]) -> None:
    publisher = MqttTickPublisher(
        broker.host, broker.port, instruments=INSTRUMENTS, topics=Topics(),
        codec=EventCodec("json"), username=broker.username, password=broker.password,
        client_id="depth-parity-feed",
    )  # fmt: skip
    with publisher:
        done.append(publisher.publish(stream, speed=10.0).messages)


@pytest.mark.asyncio
async def test_paper_daemon_with_depth_and_l2_features_has_exact_parity(
    daemon_env: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, daemon_env.port)
    ticks, depth = _market(seed=3, steps=150, t0=1_700_000_000_000 * MS)
    stream = list(merge_by_time(ticks, iter(depth)))
    done: list[int] = []
    async with running(config) as daemon:
        engine = daemon.engine
        # the first update (a snapshot) again until the daemon has subscribed (QoS 0)
        async with asyncio.timeout(10):
            while engine.counters["depth_rows"] == 0:
                await asyncio.to_thread(_publish, daemon_env, [depth[0]], [])
                await asyncio.sleep(0.1)
        feeder = threading.Thread(target=_publish, args=(daemon_env, stream, done))
        feeder.start()
        await until(lambda: bool(done), timeout=30.0)
        feeder.join()
        await until(lambda: engine.counters["ticks"] >= sum(len(t) for t in ticks), 10.0)
        venue = engine.router
        assert isinstance(venue, SimulatedVenue)
        live_fills = engine.counters["fills"]
        live_orders = engine.counters["orders_sent"]
        heartbeats = daemon.heartbeat_seq
        await until(lambda: daemon.heartbeat_seq >= heartbeats + 2)
    assert isinstance(daemon, Daemon)
    journal = tmp_path / "journal"
    result = parity(journal)
    assert result.ok, "\n".join(result.differences)
    replay = result.replay
    assert result.decisions_equal == result.decisions_logged == result.decisions_replayed
    assert replay.records["depth"] >= 150
    assert replay.engine.counters["depth_rows"] == engine.counters["depth_rows"]
    orders = [d for d in replay.decisions if isinstance(d, OrderRequest)]
    assert len(orders) == live_orders >= 4, "the L2 feature must drive orders"
    assert replay.engine.counters["fills"] == live_fills > 0, "the queue must fill orders"
    # the fills came from the book: the venue is in depth mode and the L2 values are real
    assert venue.depth_counters["rejected_no_book"] == 0
    assert replay.engine.features_now(0)["l2_imb"] == engine.features_now(0)["l2_imb"]
    assert cmd_parity(argparse.Namespace(journal_dir=str(journal), session=None)) == 0
    assert capsys.readouterr().out.startswith(f"parity: {result.decisions_equal} decisions equal")
