"""``tradeloop demo``: sample data -> EMA-cross baseline replay -> train on the first two
thirds -> replay the held-out third with the model and with the baseline -> the model's
monitor page -> the two held-out runs compared (same data window).

Each step is a command as the user would type it (``run``, the dispatcher's, passed in:
this module does not import the CLI), announced with its number and what it does, and
timed; the last line says where the time went.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from replay.files.sample_data import generate, split_by_time

# the sample's arrivals are random: its last tick lands within about a minute of the
# nominal span, either side (a "24 h" sample spanned 11 s less, below the 24 h that
# annualising asks); a 1 % longer sample covers the span it is called
DEMO_SPAN_MARGIN = 1.01


class DemoSteps:
    """Numbered, timed steps: a line before each (a long one shows what it is doing) and
    a summary of where the time went."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.times: list[tuple[str, float]] = []
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        number, t0 = len(self.times) + 1, time.perf_counter()
        print(f"demo [{number}/{self.total}] {name}: {what} ...", flush=True)
        yield
        self.times.append((name, time.perf_counter() - t0))
        print(f"demo [{number}/{self.total}] done in {self.times[-1][1]:.0f} s", flush=True)

    def summary(self) -> str:
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.times)
        return f"demo done in {time.perf_counter() - self.started:.0f} s ({parts})"


def run_demo(
    out: Path, hours: float, run: Callable[[list[str]], int], ml_config: str, *, force: bool
) -> int:
    """Run the demo into ``out``; ``run`` runs one command line, ``ml_config`` is the
    bundled ML config's text. Returns the last command's exit status.

    Raises:
        TradeloopError: as the commands.
    """
    again = ["--force"] if force else []
    data = out / "data"
    steps = DemoSteps(8)
    with steps.step("sample data", f"{hours:g} h of 3 symbols"):
        t0 = time.perf_counter()
        q, t = generate(data, symbols=3, hours=hours * DEMO_SPAN_MARGIN, quote_interval_ms=50.0,
                        seed=7)  # fmt: skip
        print(f"wrote {q} and {t} in {time.perf_counter() - t0:.1f}s")
    with steps.step("replay", "the EMA-cross baseline over the whole sample"):
        run(["replay", str(data), "--out", str(out / "replay"), *again])
    with steps.step("split", "the first two thirds to train on, the last third held out"):
        cut = split_by_time(data, out / "train", out / "holdout", 2 / 3)
        print(f"split at ts {cut}: {out / 'train'} for training, {out / 'holdout'} held out")
    with steps.step("train", "LightGBM on walk-forward folds, with baselines and "
                    "significance (the longest step)"):  # fmt: skip
        run(["train", str(out / "train"), "--out", str(out / "model"), *again])
    # the model path is read relative to the config file: the two move together
    ml_cfg = out / "ml_replay.toml"
    ml_cfg.write_text(ml_config.replace("[model]\n", '[model]\npath = "model"\n', 1))
    with steps.step("model replay", "the held-out third with the model and its monitor"):
        run(["replay", str(out / "holdout"), "--config", str(ml_cfg),
             "--out", str(out / "ml_replay"), *again])  # fmt: skip
    # the baseline on the same held-out window: a comparison over different data (the
    # baseline over the whole sample beside the model over its last third) says nothing
    with steps.step("baseline replay", "the held-out third with the baseline"):
        run(["replay", str(out / "holdout"), "--out", str(out / "baseline_holdout"), *again])
    # the model's monitor page (IC, calibration, drift, alarms) and the two runs side by side
    with steps.step("monitor page", "the model monitor's page"):
        run(["monitor-report", str(out / "ml_replay"), "--out",
             str(out / "ml_replay" / "monitor")])  # fmt: skip
    with steps.step("compare", "the two held-out runs side by side"):
        code = run(["compare", str(out / "baseline_holdout"), str(out / "ml_replay"),
                    "--out", str(out / "compare.html"), *again])  # fmt: skip
    print(steps.summary())
    print(f"open {out / 'replay' / 'report.html'}, {out / 'model' / 'training_report.html'}, "
          f"{out / 'ml_replay' / 'monitor' / 'monitor.html'}, {out / 'compare.html'}")  # fmt: skip
    return code
