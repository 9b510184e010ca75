"""What an inbound message must look like before anything of it is committed.

The one validation path: every message from the bus (market data, execution reports,
operator commands, the OMS's reconciliation answers) is decoded into its typed Struct,
checked here, and only then committed to shared state (a batch's columns, the inbox, the
engine). A check returns the reason of a refusal, a short name the caller counts as
``bad_<reason>``, or None; a check never raises.

Policy (the tick files' plausibility rules where they overlap, ``replay.files.plausibility``;
a test keeps the numbers equal):

- Timestamps are integers. ``ts_event`` lies from 2000-01-01 (incl.) to 2100-01-01 (excl.)
  in ns (``ts_range``); the same range counted in seconds, milliseconds or microseconds is
  a wrong unit (``ts_unit``). A peer's ``ts_recv`` (we stamp our own receipt) is 0 or an
  int64 that is not negative.
- Market data is fresh by its event time: ``ts_event`` no older than ``max_tick_age`` at
  its receipt (``stale``), no further ahead of it than ``max_tick_future`` (``future``).
  Arrival order stays the truth live; this only refuses what is too old or too early.
- Prices are finite and in [1e-12, 1e12] (``price_bounds``: 1e-320, a denormal, is out);
  sizes and quantities finite and in [1e-12, 1e18] (``size_bounds``: a size of 1e-300
  is no lot of any instrument). Not finite: ``non_finite``; zero or negative:
  ``non_positive``.
- A quote's bid is below its ask (``crossed``).
- A depth update (``DepthUpdate``): stamps as market data; update ids int64, not negative,
  ``first <= last`` (``depth_ids``), ``prev_update_id`` -1 (none) or not negative and at
  most ``first`` (a snapshot carries its one id in all three; ``depth_ids``); at most ``MAX_DEPTH_LEVELS`` levels a side (``depth_levels``);
  each level's price as a quote's and its size finite, not negative (0 removes the level)
  and at most 1e18 (``non_finite``, ``negative_size``, ``size_bounds``); no price twice on
  one side (``depth_duplicate``); a reset carries no levels (``depth_reset_levels``).
  Crossed levels are not refused here: a diff may cross the book for an instant, and the
  book's continuity rules, not a per-message check, decide what the book holds.
- An execution report is not stamped ahead of its receipt by more than
  ``max_report_future`` (``future``; late is normal); a live fill names an instrument of
  the daemon (``unknown_symbol``: it could not be booked, and booking it halted trading).
- A fill's fee is finite and at most ``max_fee_bps`` of the fill's notional either way
  (``fee_bounds``): a rebate is negative, and both are small next to the notional.
- A position in a reconciliation answer is finite and at most 1e18 either way; an open
  order in one has a positive bounded quantity, a limit price in bounds if it has one, a
  filled quantity neither negative nor beyond 1e18, and int64 stamps.
"""

from __future__ import annotations

import math
from collections.abc import Container
from dataclasses import dataclass

from engine.config import LiveConfig
from engine.events import (
    CancelRejected,
    Command,
    DepthUpdate,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Quote,
    Trade,
)

__all__ = [
    "INT64_MAX",
    "MAX_DEPTH_LEVELS",
    "PRICE_MAX",
    "PRICE_MIN",
    "SIZE_MAX",
    "SIZE_MIN",
    "TS_MAX_NS",
    "TS_MIN_NS",
    "MessageLimits",
    "command_problem",
    "depth_problem",
    "fill_problem",
    "order_problem",
    "position_problem",
    "quote_problem",
    "report_problem",
    "stamp_problem",
    "tick_time_problem",
    "timestamp_problem",
    "trade_problem",
]

TS_MIN_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z
TS_MAX_NS = 4_102_444_800 * 10**9  # 2100-01-01T00:00:00Z (excluded)
PRICE_MIN = 1e-12
PRICE_MAX = 1e12
SIZE_MAX = 1e18
SIZE_MIN = 1e-12  # as PRICE_MIN: a size of 1e-300 is no lot of any instrument
INT64_MAX = 2**63 - 1
# levels per side in one depth message: Binance's REST snapshot goes up to 5,000
MAX_DEPTH_LEVELS = 5_000

# a time in the 2000..2100 range counted in s, ms or us (the four ranges do not overlap)
_UNITS = (10**9, 10**6, 10**3)
_BPS = 1e-4


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """The configured part of the checks (``[live]``); the rest is fixed policy.

    Attributes:
        max_tick_age_ns: market data older than this at its receipt is refused.
        max_tick_future_ns: market data ahead of its receipt by more than this is refused.
        max_fee_bps: a fill's fee beyond this many bps of its notional is refused.
        max_report_future_ns: an execution report stamped ahead of its receipt by more
            than this is refused (a late report is normal, a report from the future is
            not: a fill stamped a day ahead would be booked on a peer's bad clock).
    """

    max_tick_age_ns: int = 5_000_000_000
    max_tick_future_ns: int = 1_000_000_000
    max_fee_bps: float = 100.0
    max_report_future_ns: int = 60_000_000_000

    @classmethod
    def from_config(cls, live: LiveConfig) -> MessageLimits:
        """The limits ``[live]`` sets (``max_tick_age``, ``max_tick_future``,
        ``max_fee_bps``, ``max_report_future``)."""
        return cls(
            max_tick_age_ns=live.max_tick_age_ns,
            max_tick_future_ns=live.max_tick_future_ns,
            max_fee_bps=live.max_fee_bps,
            max_report_future_ns=live.max_report_future_ns,
        )


def timestamp_problem(ts: int) -> str | None:
    """``ts_range``, ``ts_unit`` (a plausible time in s, ms or us) or None."""
    if TS_MIN_NS <= ts < TS_MAX_NS:
        return None
    if ts > 0:
        for unit in _UNITS:
            if TS_MIN_NS <= ts * unit < TS_MAX_NS:
                return "ts_unit"
    return "ts_range"


def stamp_problem(ts: int) -> str | None:
    """A peer's ``ts_recv``: 0 (not set) or an int64 that is not negative."""
    return None if 0 <= ts <= INT64_MAX else "ts_range"


def tick_time_problem(ts_event: int, ts_recv: int, limits: MessageLimits) -> str | None:
    """A market-data ``ts_event`` against its receipt: range and unit, then age and skew."""
    problem = timestamp_problem(ts_event)
    if problem is not None:
        return problem
    if ts_recv - ts_event > limits.max_tick_age_ns:
        return "stale"
    if ts_event - ts_recv > limits.max_tick_future_ns:
        return "future"
    return None


def _prices_problem(*prices: float) -> str | None:
    for p in prices:
        if not math.isfinite(p):
            return "non_finite"
    for p in prices:
        if p <= 0.0:
            return "non_positive"
    for p in prices:
        if not PRICE_MIN <= p <= PRICE_MAX:
            return "price_bounds"
    return None


def _sizes_problem(*sizes: float) -> str | None:
    for s in sizes:
        if not math.isfinite(s):
            return "non_finite"
    for s in sizes:
        if s <= 0.0:
            return "non_positive"
    for s in sizes:
        if not SIZE_MIN <= s <= SIZE_MAX:
            return "size_bounds"
    return None


def quote_problem(quote: Quote, ts_recv: int, limits: MessageLimits) -> str | None:
    """Why ``quote``, received at ``ts_recv``, is refused (its instrument aside), or None.

    Its own ``ts_recv`` field is not read: market data is stamped with our receipt."""
    q = quote
    problem = tick_time_problem(q.ts_event, ts_recv, limits)
    if problem is None and not all(
        math.isfinite(v) for v in (q.bid, q.ask, q.bid_size, q.ask_size)
    ):
        return "non_finite"
    problem = problem or _prices_problem(q.bid, q.ask) or _sizes_problem(q.bid_size, q.ask_size)
    if problem is None and not q.bid < q.ask:
        return "crossed"
    return problem


def trade_problem(trade: Trade, ts_recv: int, limits: MessageLimits) -> str | None:
    """Why ``trade``, received at ``ts_recv``, is refused (its instrument aside), or None."""
    t = trade
    problem = tick_time_problem(t.ts_event, ts_recv, limits)
    if problem is None and not (math.isfinite(t.price) and math.isfinite(t.size)):
        return "non_finite"
    return problem or _prices_problem(t.price) or _sizes_problem(t.size)


def _levels_problem(levels: tuple[tuple[float, float], ...]) -> str | None:
    if len(levels) > MAX_DEPTH_LEVELS:
        return "depth_levels"
    seen: set[float] = set()
    for price, size in levels:
        problem = _prices_problem(price)
        if problem is not None:
            return problem
        if not math.isfinite(size):
            return "non_finite"
        if size < 0.0:
            return "negative_size"
        if size > SIZE_MAX or 0.0 < size < SIZE_MIN:
            return "size_bounds"
        if price in seen:
            return "depth_duplicate"
        seen.add(price)
    return None


def depth_problem(update: DepthUpdate, ts_recv: int, limits: MessageLimits) -> str | None:
    """Why ``update``, received at ``ts_recv``, is refused (its instrument aside), or None."""
    u = update
    problem = tick_time_problem(u.ts_event, ts_recv, limits)
    if problem is not None:
        return problem
    if not (0 <= u.first_update_id <= u.last_update_id <= INT64_MAX):
        return "depth_ids"
    if not (u.prev_update_id == -1 or 0 <= u.prev_update_id <= u.first_update_id):
        return "depth_ids"
    if u.reset and (u.bids or u.asks):
        return "depth_reset_levels"
    return _levels_problem(u.bids) or _levels_problem(u.asks)


def _report_time_problem(
    ts_event: int, ts_recv: int, received_ns: int, limits: MessageLimits
) -> str | None:
    problem = timestamp_problem(ts_event) or stamp_problem(ts_recv)
    if problem is None and ts_event - received_ns > limits.max_report_future_ns:
        return "future"
    return problem


def fill_problem(
    fill: Fill, received_ns: int, limits: MessageLimits, instruments: Container[str]
) -> str | None:
    """Why ``fill``, received at ``received_ns``, is refused, or None: the one check of a
    fill, live or reconciled (an instrument not in ``instruments`` cannot be booked)."""
    f = fill
    problem = _report_time_problem(f.ts_event, f.ts_recv, received_ns, limits)
    if problem is not None:
        return problem
    if f.instrument not in instruments:
        return "unknown_symbol"
    if not (math.isfinite(f.qty) and math.isfinite(f.price) and math.isfinite(f.fee)):
        return "non_finite"
    problem = _sizes_problem(f.qty) or _prices_problem(f.price)
    if problem is None and abs(f.fee) > limits.max_fee_bps * _BPS * f.qty * f.price:
        return "fee_bounds"
    return problem


_Report = OrderAccepted | OrderRejected | Fill | OrderCancelled | CancelRejected


def report_problem(
    report: _Report, received_ns: int, limits: MessageLimits, instruments: Container[str]
) -> str | None:
    """Why an execution report received at ``received_ns`` is refused, or None (a late
    report is normal: no age; one from the future beyond ``max_report_future`` is not)."""
    if isinstance(report, Fill):
        return fill_problem(report, received_ns, limits, instruments)
    return _report_time_problem(report.ts_event, report.ts_recv, received_ns, limits)


def command_problem(command: Command) -> str | None:
    """Why an operator command's stamps are refused, or None (its freshness against the
    receipt is the command guard's: ``adapters.mqtt.command_guard``)."""
    return timestamp_problem(command.ts_event) or stamp_problem(command.ts_recv)


def order_problem(order: OrderRequest) -> str | None:
    """Why an order the OMS says it works is refused, or None. Its stamps are its sender's
    (another desk's, for an order we never sent): int64 and not negative is all we ask."""
    problem = stamp_problem(order.ts_event) or stamp_problem(order.ts_recv)
    if problem is None:
        problem = _sizes_problem(order.qty)
    if problem is None and order.limit_price is not None:
        problem = _prices_problem(order.limit_price)
    return problem


def position_problem(qty: float) -> str | None:
    """Why a position the OMS reports is refused, or None (0.0 is flat)."""
    if not math.isfinite(qty):
        return "non_finite"
    return "size_bounds" if abs(qty) > SIZE_MAX else None
