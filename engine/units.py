"""Units of config values.

Durations: ``"250us"``, ``"5s"``, ``"1.5ms"``, ``"2m"``, ``"1h"``, ``"1d"`` or an int of ns.
Amounts (cash, quantities, notionals, losses): finite floats up to ``MAX_AMOUNT``.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s|m|h|d)\s*$")

# A float64 resolves a cent up to about 2**53 cents (9e13); a ceiling of 1e12 keeps sums
# of many amounts at cent resolution. A limit above it is no limit in practice, and
# leaving the key out says that plainly.
MAX_AMOUNT = 1e12

# No duration in a trading config (latency, quote age, label horizon, feature window)
# needs to be longer than a year; the ceiling also keeps ``ts_ns + duration`` far inside
# int64 (which ends 292 years after 1970), so no timestamp sum can overflow.
MAX_DURATION_NS = 366 * _UNITS_NS["d"]


# The type of a duration field in a config struct. msgspec checks only that it is a str
# or an int; the config loader parses and bounds it, and the mark lets its error message
# say what a duration looks like.
Duration = Annotated[str | int, msgspec.Meta(extra={"unit": "duration"})]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def parse_duration_ns(value: str | int) -> int:
    """Parse a duration to integer nanoseconds, between 0 and ``MAX_DURATION_NS``.

    Raises:
        ValueError: not a duration, negative, or longer than a year (the message says
            what was expected).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a duration like '5s' or an int of ns, got {_shown(value)}")
    if isinstance(value, int):
        ns: int | float = value
    else:
        match = _PATTERN.match(value)
        if not match:
            raise ValueError(f"expected a duration like '250us', '5s', '2m', got {_shown(value)}")
        # float() of a long digit string is inf, never an error: compare before round()
        ns = float(match.group(1)) * _UNITS_NS[match.group(2)]
    if ns < 0:
        raise ValueError(f"duration must be >= 0, got {_shown(value)}")
    if ns > MAX_DURATION_NS:
        raise ValueError(
            f"duration must be at most 366d ({MAX_DURATION_NS} ns), got {_shown(value)}"
        )
    return round(ns)
