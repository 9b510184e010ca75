"""Start-up cost of the ``tradeloop`` command as whole processes (issue 13, part 5).

Measures in one run, each the median of ``--runs`` fresh processes:

- the import floor: ``python -c "import numba, polars, numpy"``;
- ``python -c "import replay.cli"``;
- ``tradeloop --help``;
- ``tradeloop replay`` of about 1,000 ticks with its report (run folder written),

and prints each with its ratio to the import floor (the goal: the tiny replay within
1.5x). The tiny data is written once with ``tradeloop sample-data``; the replay runs
once untimed first so numba's cache is warm (a cold cache is a one-time compile,
announced by the command). Machines differ ~3x: compare ratios, not seconds.

    python bench/startup.py [--runs 7]

The processes run without ``PYTHONDONTWRITEBYTECODE`` (bytecode written and reused, as
on a user's machine); the warm-up runs write it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import begin, end, median

PY = sys.executable
# the console script installed beside this interpreter, else the module
_SCRIPT = Path(PY).with_name("tradeloop")
TRADELOOP = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "replay.cli"]


# as a user's shell runs it: Python writes and reuses bytecode. These machines set
# PYTHONDONTWRITEBYTECODE, which leaves tradeloop's own modules (an editable install)
# compiled from source in every process while the floor's packages use pip's .pyc files.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str]) -> float:
    """Seconds from spawn to exit of ``cmd`` (which must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_ENV)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="processes per figure (>= 5)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    started = begin(f"start-up: whole processes, median of {args.runs} each")
    with tempfile.TemporaryDirectory(prefix="tradeloop-startup-") as tmp:
        data, run = Path(tmp) / "data", Path(tmp) / "run"
        # 1 symbol, 45 s at a quote per 50 ms: 900 quotes and ~95 trades
        subprocess.run([*TRADELOOP, "sample-data", str(data), "--symbols", "1",
                        "--hours", "0.0125"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        replay = [*TRADELOOP, "replay", str(data), "--out", str(run), "--force"]
        wall(replay)  # warm numba's cache (and the OS file cache)
        # any process that calls one cached jitted function pays numba's one-time set-up
        # (its registries, a scipy.linalg probe): the floor of a numba program, for scale
        kernel = Path(tmp) / "one_kernel.py"
        kernel.write_text("from numba import njit\n\n\n@njit(cache=True)\n"
                          "def f(x):\n    return x + 1\n")  # fmt: skip
        one_call = [PY, "-c", f"import sys; sys.path.insert(0, {tmp!r}); "
                    "import numba, polars, numpy, one_kernel; one_kernel.f(1)"]  # fmt: skip
        wall(one_call)  # its cache written
        commands = {
            'import floor: python -c "import numba, polars, numpy"': [
                PY, "-c", "import numba, polars, numpy"],
            "the floor + one cached numba function called": one_call,
            'python -c "import replay.cli"': [PY, "-c", "import replay.cli"],
            "tradeloop --help": [*TRADELOOP, "--help"],
            "tradeloop replay (~1,000 ticks, report included)": replay,
        }  # fmt: skip
        figures: dict[str, list[float]] = {name: [] for name in commands}
        # interleaved, so a burst of load on the shared machine hits every figure alike
        for _ in range(args.runs):
            for name, cmd in commands.items():
                figures[name].append(wall(cmd))
        shutil.rmtree(run, ignore_errors=True)
    floor = median(figures[next(iter(figures))])
    for name, values in figures.items():
        m = median(values)
        spread = " / ".join(f"{v:.2f}" for v in values)
        print(f"{name:52s} {m:6.2f} s  {m / floor:4.2f}x floor  (runs {spread})")
    tiny = median(figures["tradeloop replay (~1,000 ticks, report included)"]) / floor
    numba_floor = median(figures["the floor + one cached numba function called"])
    print(f"goal: tiny replay within 1.5x of the import floor: {tiny:.2f}x "
          f"({'met' if tiny <= 1.5 else 'not met'}); over the floor + one cached numba "
          f"call: {tiny * floor / numba_floor:.2f}x")  # fmt: skip
    end(started)


if __name__ == "__main__":
    main()
