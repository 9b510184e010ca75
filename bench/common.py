"""What every benchmark prints besides its figures: the machine, the load, medians, ratios.

The machines are shared and differ ~3x in speed between sessions, so a figure alone says
little: each benchmark measures a reference in the same run and prints the ratio, and
the load average at its start and end says how busy the machine was meanwhile.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def machine() -> str:
    """One line: OS, architecture, CPU model, CPUs usable by this process, Python."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.system()} {platform.machine()}, {cpu_model()}, {usable} cpus, "
        f"Python {platform.python_version()}"
    )


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def begin(what: str) -> float:
    """Print the machine and the load at the start; returns the start time."""
    print(f"{what}")
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    return time.perf_counter()


def end(started: float) -> None:
    print(f"load average at end: {load_average()}; wall {time.perf_counter() - started:.0f}s")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def runs(values: Sequence[float], fmt: str = ",.0f") -> str:
    """``median M (runs a / b / c)``."""
    return f"median {median(values):{fmt}} (runs {' / '.join(f'{v:{fmt}}' for v in values)})"


def seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
