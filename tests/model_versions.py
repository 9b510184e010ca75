"""Shared set-up of the model governance tests: small real LightGBM versions trained here on
sample data, a registry holding them, the live config that runs them and the ticks to feed.

A (champion, paper) and B (challenger) differ in tree size, so they score differently; C is
a third version (smaller still) that no alias names at first: a target for a promote to
``challenger``, or a folder to tamper with after it was added.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import numpy as np
import polars as pl
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.model_registry_store import Registry
from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.topics import Topics
from engine.codec import EventCodec
from engine.config import config_from_dict
from engine.events import Command, Quote, Signal, Trade
from engine.instruments import InstrumentTable
from engine.strategy import NoParams, Strategy
from engine.ticks import TickBatch
from replay.files.sample_data import generate
from replay.research.training.run import train

CODEC = EventCodec("json")
KEY = "governance-key"
SYMBOLS = [
    {"symbol": "BTC-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-5},
    {"symbol": "ETH-USD", "venue": "SIM", "tick_size": 0.01, "lot_size": 1e-4},
]
# features with no time window: the model scores from the first ticks of a session
FEATURES = ["imb", "imb_ema", "spread"]


class Flip(Strategy):
    """Buys a step when the score crosses up through 0.5, sells one when it crosses down."""

    name = "flip"
    Params = NoParams

    def thresholds(self) -> Sequence[float]:
        return (0.5,)

    def on_signal(self, signal: Signal) -> None:
        step = 0.01 if signal.instrument == "BTC-USD" else 0.1
        self.ctx.submit_market(signal.instrument, "buy" if signal.zone == 1 else "sell", step)


def config_data(**extra: Any) -> dict[str, Any]:
    """The packaged ML config on the two test symbols, trained quickly."""
    data = tomllib.loads((resources.files("replay") / "ml_config.toml").read_text())
    data["instruments"] = SYMBOLS
    data["train"] |= {"folds": 3, "sample_interval": "200ms", "min_data_in_leaf": 50,
                      "features": FEATURES}  # fmt: skip
    data["risk"] |= {"max_position": 1000.0, "min_order_notional": 1.0}
    return data | extra


def make_sample(out: Path) -> Path:
    """15 minutes of two symbols' quotes and trades (50 ms between quotes)."""
    generate(out, symbols=2, hours=0.25, quote_interval_ms=50.0, seed=11)
    return out


@dataclass(frozen=True)
class Versions:
    """A registry with A champion (paper), B challenger and C unaliased."""

    registry: Path
    a: str
    b: str
    c: str
    folders: Path  # the trained folders a, b, c (copies of what was added)


def train_versions(sample: Path, root: Path) -> Versions:
    """Train A, B and C on ``sample`` and add them to a registry under ``root``."""
    sizes = {"a": {}, "b": {"min_data_in_leaf": 400, "num_leaves": 4},
             "c": {"min_data_in_leaf": 200, "num_leaves": 3}}  # fmt: skip
    for name, params in sizes.items():
        data = config_data()
        data["train"] |= params
        train(config_from_dict(data), sample, root / name, progress=False)
    reg = Registry(root / "models")
    a, _ = reg.add(root / "a", who="ana", note="A")
    b, _ = reg.add(root / "b", who="ana", note="B")
    c, _ = reg.add(root / "c", who="ana", note="C")
    assert len({a, b, c}) == 3
    reg.promote(a, alias="champion", who="ana", reason="first", stage="paper")
    reg.promote(b, alias="challenger", who="ana", reason="try B")
    return Versions(root / "models", a, b, c, root)


def write_config(tmp: Path, port: int, registry: Path, **live: Any) -> Path:
    """The shadow daemon's config over the registry's champion (``live`` adds to ``[live]``;
    ``metrics_port`` is 0, no metrics server, unless it names one: two daemons, or a
    user's, would collide on the default port)."""
    data = config_data()
    lines = ['mode = "shadow"\n']
    path = tmp / "live.toml"
    data.pop("mode", None)
    data.pop("train", None)
    data.pop("replay", None)
    data["model"] = {"registry": str(registry), "alias": "champion"}
    data["strategy"] = {"name": "tests.model_versions:Flip"}
    data["mqtt"] = {"host": "127.0.0.1", "port": port, "username_env": "TL_GOV_USER",
                    "password_env": "TL_GOV_PASSWORD", "reconnect_min": "50ms",
                    "reconnect_max": "200ms"}  # fmt: skip
    data["live"] = {"node": "n1", "account": "a1", "heartbeat": "100ms", "order_timeout": "30s",
                    "command_key_env": "TL_GOV_KEY", "shutdown_timeout": "3s",
                    "metrics_port": 0} | live  # fmt: skip
    data["journal"] = {"dir": (tmp / "journal").as_posix(), "fsync": "batch"}
    data["risk"]["max_quote_age"] = "60s"
    for key, value in data.items():
        lines.append(_toml(key, value))
    path.write_text("".join(lines))
    return path


def _toml(key: str, value: Any) -> str:
    """Just enough TOML for the config above (tables, arrays of tables, inline values)."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "".join(f"\n[[{key}]]\n" + "".join(f"{k} = {_v(v)}\n" for k, v in item.items())
                       for item in value)  # fmt: skip
    if isinstance(value, dict):
        return f"\n[{key}]\n" + "".join(f"{k} = {_v(v)}\n" for k, v in value.items())
    return f"{key} = {_v(value)}\n"


def _v(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_v(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def ticks(sample: Path, start: int, count: int) -> list[Quote | Trade]:
    """Quotes and trades of the sample in time order, ``count`` from ``start``."""
    quotes = pl.read_parquet(sample / "quotes.parquet").with_columns(kind=pl.lit("q"))
    trades = pl.read_parquet(sample / "trades.parquet").with_columns(kind=pl.lit("t"))
    rows = pl.concat([quotes, trades], how="diagonal").sort("ts_event").slice(start, count)
    out: list[Quote | Trade] = []
    for r in rows.iter_rows(named=True):
        if r["kind"] == "q":
            out.append(Quote(ts_event=r["ts_event"], ts_recv=r["ts_recv"], instrument=r["symbol"],
                             bid=r["bid"], ask=r["ask"], bid_size=r["bid_size"],
                             ask_size=r["ask_size"]))  # fmt: skip
        else:
            out.append(Trade(ts_event=r["ts_event"], ts_recv=r["ts_recv"], instrument=r["symbol"],
                             price=r["price"], size=r["size"], side=r["side"]))  # fmt: skip
    return out


def quote_batch(sample: Path, instruments: InstrumentTable, start: int, count: int) -> TickBatch:
    """The sample's quotes (time order), ``count`` from ``start``, as one batch (engine tests)."""
    q = pl.read_parquet(sample / "quotes.parquet").sort("ts_event").slice(start, count)
    index = {s: i for i, s in enumerate(instruments.symbols)}
    return TickBatch.quotes(
        q["ts_event"].to_numpy(),
        q["ts_recv"].to_numpy(),
        np.array([index[s] for s in q["symbol"].to_list()], np.int32),
        q["bid"].to_numpy(),
        q["ask"].to_numpy(),
        q["bid_size"].to_numpy(),
        q["ask_size"].to_numpy(),
    )


async def feed(
    client: aiomqtt.Client, ticks_in: Callable[[], int], items: list[Any], pause: float = 0.005
) -> None:
    """Publish ticks as market data, in several batches (``pause`` s after every 50), until
    the engine counted them (``ticks_in``: the engine's tick counter).

    Live, the engine's time is the receive time: a monitor scores a prediction only once
    its horizon (2 s in the packaged config) has passed in receive time, so a leg whose
    predictions must be scored has to last longer than that (``pause``), whatever the
    number of ticks."""
    before = ticks_in()
    for i, tick in enumerate(items):
        kind = "quote" if isinstance(tick, Quote) else "trade"
        # stamped when sent, as ``tradeloop publish`` does: the daemon refuses market data
        # older than ``[live] max_tick_age`` (the sample's own stamps are from 2024), and
        # live the engine's time is the receive time anyway
        now = time.time_ns()
        tick = msgspec.structs.replace(tick, ts_event=now, ts_recv=now)
        await client.publish(f"md/SIM/{tick.instrument}/{kind}", CODEC.encode(tick), qos=1)
        if i % 50 == 49:
            await asyncio.sleep(pause)  # several batches, not one
    await until(lambda: ticks_in() >= before + len(items))


async def command(client: aiomqtt.Client, action: str, *, signed: bool = True,
                  target: str = "", stage: str = "") -> None:  # fmt: skip
    """An operator command on the command topic, signed with ``KEY`` unless told not to."""
    ts = time.time_ns()
    payload = CODEC.encode(Command(ts_event=ts, ts_recv=ts, action=action,  # type: ignore[arg-type]
                                   issuer="ops-desk", reason=f"{action} in the test",
                                   target=target, stage=stage))  # fmt: skip
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if signed:
        signature = sign_command(payload, KEY.encode(), Topics(node="n1", account="a1"))
        props.UserProperty = [(SIGNATURE_PROPERTY, signature)]
    await client.publish("tradeloop/n1/command", payload, qos=1, properties=props)


async def until(what: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.02)


def read_decisions(journal: Path, session: str) -> list[dict[str, Any]]:
    text = (journal / f"decisions-{session}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]
