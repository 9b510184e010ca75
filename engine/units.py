"""Durations in config: ``"250us"``, ``"5s"``, ``"1.5ms"``, ``"2m"``, ``"1h"`` or an int of ns."""

from __future__ import annotations

import re

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}  # fmt: skip
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s|m|h|d)\s*$")


def parse_duration_ns(value: str | int) -> int:
    """Parse a duration to integer nanoseconds.

    Raises:
        ValueError: not a duration (the message says what was expected).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '5s' or int ns, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must be >= 0, got {value}")
        return value
    match = _PATTERN.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like '250us', '5s', '2m', got {value!r}")
    return round(float(match.group(1)) * _UNITS_NS[match.group(2)])
