"""Live tick->order latency with per-signal explanations on and off, a LightGBM model.

Usage: python bench/explain_latency.py [--rate 1000] [--seconds 5] [--pairs 3]
[--orders-per-second 100] [--model lightgbm|linear] [--explain on|off|both]

``bench/live_latency.py`` scores a linear model, which the explanations skip (TreeSHAP
explains trees), so its figures cannot show what explaining costs the decision path. This
bench runs the same daemon, broker and feed (``live_latency._run_one``: a fresh mosquitto
and a ``live`` daemon in this process, a paced JSON quote feed whose bid steps between two
levels every ``rate / orders-per-second`` quotes) with a small LightGBM model instead, and
``[live] explain`` on, then off, back to back (``--pairs`` interleaved pairs, so drift in
the machine's load hits both alike).

The model: at start (untimed) the bench writes the feed's own pattern as training data
(one quote per ms, the same two levels and step) into a temp dir and trains a LightGBM
regression of the forward mid return over one step (``tradeloop train``'s pipeline,
feature ``mid``): it learns "low level: up, high level: down", so its score crosses 0 at
each step, like the linear model's, and the EMA-cross strategy reverses a 0.001 position
on each crossing. With explanations on, each champion signal is also explained (exact
TreeSHAP, top ``[live] explain_top``) on the daemon's worker thread.

``live_latency.py`` belongs to another line of work and is not edited here: its runner
builds its config with the module's ``_config(tmp, port)`` and keeps its daemon to itself;
this bench imports the module and points ``_config`` at its own config writer and
``run_daemon`` at a wrapper that also keeps the daemon (to count its explanations): the
two seams the runner has. Everything else (broker, feeder, figures) is the runner's own.

Figures per run: tick->order p50 / p99 / p99.9 inside the daemon (the quote batch's
receipt to the order's publish, ``Daemon.latencies_ns``); per setting, the median over the
pairs of each percentile, and the on/off ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import live_latency  # noqa: E402
from common import begin, end  # noqa: E402

from adapters.daemon.run import Daemon  # noqa: E402
from engine.config import load_config  # noqa: E402
from replay.research.training.run import train  # noqa: E402

SYMBOL = live_latency.SYMBOL
LOW_BID = 100.0  # the feeder's two levels (``live_latency.PACER``) and its spread
HIGH_BID = 100.1
SPREAD = 0.5
QUANTILES = (50, 99, 99.9)


def _training_data(folder: Path, half: int, seconds: float = 120.0) -> None:
    """The feed's pattern, one quote per ms: bid LOW_BID or HIGH_BID, switching every
    ``half`` quotes, sizes 1 (the quotes ``live_latency.PACER`` writes)."""
    n = int(seconds * 1000)
    j = np.arange(n)
    ts = 1_700_000_000_000_000_000 + j * 1_000_000
    bid = np.where((j // half) % 2 == 1, HIGH_BID, LOW_BID)
    pl.DataFrame(
        {
            "ts_event": ts,
            "ts_recv": ts,
            "symbol": [SYMBOL] * n,
            "bid": bid,
            "ask": bid + SPREAD,
            "bid_size": np.ones(n),
            "ask_size": np.ones(n),
        }
    ).write_parquet(folder / "quotes.parquet")


_HEAD = f"""
[[instruments]]
symbol = "{SYMBOL}"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001

[[features]]
name = "mid"
kind = "mid"
"""


def train_model(tmp: Path, half: int) -> Path:
    """A LightGBM folder trained on the feed's pattern (the return over one step)."""
    data = tmp / "data"
    data.mkdir()
    _training_data(data, half)
    config = tmp / "train.toml"
    config.write_text(f"""mode = "replay"
{_HEAD}
[train]
model = "lightgbm"
features = ["mid"]
label = "regression"
horizon = "{half}ms"
sample_interval = "3ms"
folds = 2
num_leaves = 4
max_rounds = 30
min_data_in_leaf = 50
""")
    cfg, _ = load_config(config)
    out = tmp / "model"
    train(cfg, data, out, progress=False)
    return out


def config_writer(model: str, folder: Path | None, explain: bool) -> Callable[[Path, int], Path]:
    """``live_latency._config`` for ``model`` (``lightgbm``: the trained folder), with
    ``[live] explain`` set; the rest as the runner's own config."""

    def write(tmp: Path, port: int) -> Path:
        if model == "lightgbm":
            assert folder is not None
            section = f'kind = "lightgbm"\nname = "mid_lgbm"\npath = "{folder.as_posix()}"'
        else:
            section = ('kind = "linear"\nname = "mid_level"\n'
                       "params = { features = [\"mid\"], weights = [1.0], bias = -100.3 }")  # fmt: skip
        path = tmp / "live.toml"
        path.write_text(f"""mode = "live"
{_HEAD}
[model]
{section}

[strategy]
name = "ema_cross"
params = {{ qty = 0.001 }}

[mqtt]
host = "127.0.0.1"
port = {port}
inbox_size = 100000

[live]
node = "bench"
account = "bench"
heartbeat = "1s"
order_timeout = "1h"
metrics_port = 0
explain = {"true" if explain else "false"}

[journal]
dir = "{(tmp / "journal").as_posix()}"
fsync = "batch"
""")
        return path

    return write


_RUN_DAEMON = live_latency.run_daemon


def run(
    rate: int, seconds: float, orders_per_second: int, model: str, folder: Path | None,
    explain: bool,
) -> np.ndarray:  # fmt: skip
    """One run of the live bench's runner; the tick->order latencies (ns)."""
    live_latency._config = config_writer(model, folder, explain)  # type: ignore[assignment]
    daemons: list[Daemon] = []

    async def keep_daemon(config: Path, **kwargs: Any) -> int:
        # the runner's daemon, kept to read its explanation worker's counts afterwards
        ready = kwargs["on_ready"]
        kwargs["on_ready"] = lambda daemon: (daemons.append(daemon), ready(daemon))
        return await _RUN_DAEMON(config, **kwargs)

    live_latency.run_daemon = keep_daemon  # type: ignore[assignment]
    import uvloop

    result = uvloop.run(live_latency._run_one(rate, seconds, orders_per_second, False))
    latencies = result["tick_to_order"]
    assert isinstance(latencies, np.ndarray)
    worker = daemons[0].explainer if daemons else None
    explained = "no explanation worker"
    if worker is not None:
        mean = worker.seconds / worker.written * 1e6 if worker.written else float("nan")
        explained = (f"{worker.written} explained (dropped {worker.dropped}, failed "
                     f"{worker.failed}), {mean:,.0f} us wall each on the worker")  # fmt: skip
    print(f"  explain {'on ' if explain else 'off'}: {latencies.size} orders, tick->order "
          f"{live_latency._fmt_us(latencies)}, journaled {result['journaled']:,} of "
          f"{result['sent']:,}; {explained}")  # fmt: skip
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--orders-per-second", type=int, default=100)
    ap.add_argument("--model", choices=("lightgbm", "linear"), default="lightgbm")
    ap.add_argument("--explain", choices=("on", "off", "both"), default="both")
    args = ap.parse_args()
    started = begin("live tick->order with explanations on vs off")
    half = max(1, args.rate // args.orders_per_second)
    settings = {"on": [True], "off": [False], "both": [True, False]}[args.explain]
    with tempfile.TemporaryDirectory(prefix="tl-explain-bench-") as tmp:
        folder = train_model(Path(tmp), half) if args.model == "lightgbm" else None
        print(f"{args.model} model, {args.rate:,} msgs/s for {args.seconds:g} s per run, "
              f"~{args.orders_per_second} orders/s, {args.pairs} pairs (on, off, ...), "
              f"uvloop, journal fsync 'batch'; tick->order p50 / p99 / p99.9")  # fmt: skip
        figures: dict[bool, list[list[float]]] = {True: [], False: []}
        for pair in range(args.pairs):
            print(f"pair {pair + 1}:")
            for explain in settings:
                lat = run(args.rate, args.seconds, args.orders_per_second, args.model, folder,
                          explain)  # fmt: skip
                if lat.size:
                    figures[explain].append([float(np.percentile(lat, q)) for q in QUANTILES])
    medians = {
        on: [statistics.median(run[i] for run in runs) for i in range(len(QUANTILES))]
        for on, runs in figures.items()
        if runs
    }
    for on, values in medians.items():
        shown = " / ".join(f"{v / 1e3:,.0f}" for v in values)
        print(f"explain {'on ' if on else 'off'} (median of {len(figures[on])}): {shown} us")
    if len(medians) == 2:
        ratios = " / ".join(f"{a / b:.2f}" for a, b in zip(medians[True], medians[False]))
        print(f"ratio on / off, p50 / p99 / p99.9: {ratios}")
    end(started)


if __name__ == "__main__":
    main()
