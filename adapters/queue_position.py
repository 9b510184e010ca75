"""Queue-position fills on L2 depth: the pure model the simulated venue runs when depth exists.

Two kernels, both numba, both free of I/O and of the venue's bookkeeping so they can be tested
alone (``tests/property/test_queue_position.py``):

``walk_levels``: a market or marketable order takes the opposite side's levels best-first, at
each level's price, up to the size still shown there (what our earlier orders took from a
level since its last update is not shown twice), and stops at its limit.

``advance_queue``: resting limit orders against a time-ordered stream of level changes and
trades. Each order holds ``ahead``, the market size in front of it at its price:

- At entry ``ahead`` is the size of the order's own level (side and price) in the book: it
  joins the back of the queue. A price with no level (inside the spread, or a level the book
  does not know) starts with nothing ahead.
- A trade at the order's price whose aggressor is on the other side (a sell hitting bids for a
  resting buy) first eats ``ahead``; only what exceeds it reaches our order. The trade's size is
  shared by our orders at that price in arrival order, so together they never take more than it.
- A trade *through* the order's price (a sell-aggressor print below a resting buy) means the
  whole level traded away: ``ahead`` is zero and the order fills from that trade's size.
- A trade with an unknown aggressor, or with the aggressor on the order's own side, neither
  advances nor fills it (it did not hit that queue).
- A change of the order's own level (``prev`` -> ``new``): the part of a decrease explained by
  trades at that price since the level's last change is not counted again (as hftbacktest's
  probabilistic models do). An increase joins behind us; ``ahead`` never exceeds the level.
  An unexplained decrease (cancels) advances us under the queue model:
  ``trades_only``: not at all (beyond ``ahead <= new``); ``power``: the share
  ``f(ahead) / (f(ahead) + f(behind))`` of it, ``f(x) = x ** queue_power``, was in front of us,
  where ``behind = prev - ahead``; a share of the decrease larger than ``behind`` spills ahead.
- A level deleted (new size 0) leaves ``ahead`` at 0: everyone in front left. The order keeps
  resting at the front of an empty price and fills on the next trade at or through it.
- The touch moving through the order's price with no trade (the opposite side's levels at or
  through our price in a depth update) does not fill by itself: on a venue with price-time
  priority that only happens by trades, which the trade stream carries, and a depth stream
  sampled every 100 ms can show a crossed book for an instant that never traded with us.
- Changes of other levels, and of the opposite side, leave the order alone.

Fills from the queue are at the order's limit, maker. Cancels of the level never fill: only
trades do, so a fill always has a trade behind it (``filled <= traded volume at or through the
price`` is one of the properties).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

# resting-order table columns
R_INST = 0
R_SIDE = 1  # +1 buy, -1 sell
R_PRICE = 2
R_REMAINING = 3
R_AHEAD = 4  # market size in front of the order at its price
R_LEVEL = 5  # the level's size when last seen (the order is not part of it)
R_TRADED = 6  # volume traded at the price since the level last changed
R_ACTIVE = 7
N_RCOLS = 8

# event kinds of the stream ``advance_queue`` reads; a ``TickBatch``'s own columns are such a
# stream (``engine.ticks.TRADE`` is ``EV_TRADE``; its quotes, kind 0, are skipped)
EV_TRADE = 1  # side: aggressor +1 buy / -1 sell / 0 unknown; price; size
EV_LEVEL = 2  # side: +1 bid / -1 ask; price; size: the level's new absolute size

# queue models ([book] queue_model)
TRADES_ONLY = 0
POWER = 1
QUEUE_MODELS = {"trades_only": TRADES_ONLY, "power": POWER}

# fills buffer columns (one row per fill)
QF_SLOT = 0
QF_QTY = 1
QF_PRICE = 2
QF_EVENT = 3
N_QFCOLS = 4

# sizes below this are rounding left-overs of float arithmetic, not quantity
EPS = 1e-12


@njit(cache=True, nogil=True)
def same_price(a: float, b: float) -> bool:
    # prices come from decimal strings and from a strategy's arithmetic: compare them at a
    # relative 1e-12, far below any tick
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1.0)


@njit(cache=True, nogil=True)
def cancel_share_ahead(ahead: float, behind: float, power: float) -> float:
    """The probability that a cancel at the level was in front of us: f(ahead) / (f(ahead) +
    f(behind)), f(x) = x ** power (1 with nobody behind, 0 with nobody ahead)."""
    if behind <= 0.0:
        return 1.0
    if ahead <= 0.0:
        return 0.0
    fa: float = ahead**power
    fb: float = behind**power
    if math.isinf(fa) or math.isinf(fb):
        # x ** power overflowed: compare in logs, which is the same ratio
        return 1.0 / (1.0 + math.exp(power * (math.log(behind) - math.log(ahead))))
    return fa / (fa + fb)


@njit(cache=True, nogil=True)
def queue_after_level_change(
    ahead: float, prev: float, new: float, traded: float, model: int, power: float
) -> float:
    """``ahead`` after the order's level went from ``prev`` to ``new`` with ``traded`` volume
    at the price since ``prev`` was seen (already taken off ``ahead`` by those trades)."""
    unexplained = prev - new - traded
    if unexplained > EPS and model == POWER:
        behind = max(prev - ahead, 0.0)
        share = cancel_share_ahead(ahead, behind, power)
        ahead = ahead - share * unexplained + min(behind - (1.0 - share) * unexplained, 0.0)
    ahead = min(ahead, new)
    return ahead if ahead > EPS else 0.0


@njit(cache=True, nogil=True)
def enter_order(  # type: ignore[no-untyped-def]
    orders, slot, inst, side, price, qty, level_size,
):  # fmt: skip
    """Rest an order in ``slot`` at the back of its level (``level_size``: the market size at
    its side and price now, 0 if there is no such level)."""
    orders[slot, R_INST] = inst
    orders[slot, R_SIDE] = side
    orders[slot, R_PRICE] = price
    orders[slot, R_REMAINING] = qty
    size = level_size if level_size > 0.0 else 0.0
    orders[slot, R_AHEAD] = size
    orders[slot, R_LEVEL] = size
    orders[slot, R_TRADED] = 0.0
    orders[slot, R_ACTIVE] = 1.0


@njit(cache=True, nogil=True)
def advance_queue(  # type: ignore[no-untyped-def]
    orders, n_slots, inst, kind, side, price, size, start, stop, model, power, fills,
):  # fmt: skip
    """Apply events [start, stop) to the resting orders until one event fills; return (index
    after that event, fill count). ``orders`` changes in place (queue positions, remaining,
    active); fills are written to ``fills`` (``QF_*`` columns) in slot order, so ``fills``
    needs ``n_slots`` rows. Stopping after a filling event is what lets the caller book fills
    before later events; feeding the rest in any split gives the same result."""
    for t in range(start, stop):
        i = inst[t]
        n_fills = 0
        if kind[t] == EV_LEVEL:
            for o in range(n_slots):
                if (
                    orders[o, R_ACTIVE] == 0.0
                    or orders[o, R_INST] != i
                    or orders[o, R_SIDE] != side[t]
                    or not same_price(orders[o, R_PRICE], price[t])
                ):
                    continue
                new = size[t] if size[t] > 0.0 else 0.0
                orders[o, R_AHEAD] = queue_after_level_change(
                    orders[o, R_AHEAD], orders[o, R_LEVEL], new, orders[o, R_TRADED], model, power
                )
                orders[o, R_LEVEL] = new
                orders[o, R_TRADED] = 0.0
        elif kind[t] == EV_TRADE and side[t] != 0 and size[t] > 0.0:
            avail = size[t]
            p = price[t]
            for o in range(n_slots):
                if orders[o, R_ACTIVE] == 0.0 or orders[o, R_INST] != i:
                    continue
                s = orders[o, R_SIDE]
                if s == side[t]:
                    continue  # a buy aggressor hits asks, never our resting buys
                limit = orders[o, R_PRICE]
                at = same_price(p, limit)
                through = (not at) and (p < limit if s > 0 else p > limit)
                if not (at or through):
                    continue
                reach = avail
                if at:
                    orders[o, R_TRADED] += size[t]
                    ahead = orders[o, R_AHEAD]
                    eaten = min(ahead, size[t])
                    orders[o, R_AHEAD] = ahead - eaten if ahead - eaten > EPS else 0.0
                    reach = min(avail, size[t] - eaten)
                else:
                    orders[o, R_AHEAD] = 0.0
                rem = orders[o, R_REMAINING]
                q = min(rem, reach)
                if q <= EPS:
                    continue
                avail -= q
                left = rem - q
                if left <= EPS:
                    left = 0.0
                    orders[o, R_ACTIVE] = 0.0
                orders[o, R_REMAINING] = left
                fills[n_fills, QF_SLOT] = o
                fills[n_fills, QF_QTY] = q
                fills[n_fills, QF_PRICE] = limit
                fills[n_fills, QF_EVENT] = t
                n_fills += 1
        if n_fills > 0:
            return t + 1, n_fills
    return stop, 0


@njit(cache=True, nogil=True)
def walk_levels(  # type: ignore[no-untyped-def]
    prices, sizes, taken, n_levels, side, qty, limit, out_level, out_qty,
):  # fmt: skip
    """Take ``qty`` from the opposite side's levels (``prices``/``sizes`` best-first, ``taken``:
    what our orders took from each since it last changed), stopping at ``limit`` (NaN: none).
    Writes the level index and quantity of each take; returns how many. ``taken`` is not
    changed: the caller adds what it books."""
    n = 0
    left = qty
    for k in range(n_levels):
        if left <= EPS:
            break
        p = prices[k]
        if not (sizes[k] > 0.0) or math.isnan(p):
            continue
        if not math.isnan(limit) and (p > limit if side > 0 else p < limit):
            break  # levels are best-first: every further one is beyond the limit too
        shown = sizes[k] - taken[k]
        if shown <= EPS:
            continue
        q = min(left, shown)
        out_level[n] = k
        out_qty[n] = q
        n += 1
        left -= q
    return n


def new_order_table(rows: int) -> npt.NDArray[np.float64]:
    """An empty resting-order table (``R_*`` columns)."""
    return np.zeros((rows, N_RCOLS))
