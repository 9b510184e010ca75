"""The risk engine: every order request passes here before it can reach the router.

A refusal is a ``RiskRejected`` event naming the check, its limit and the value that
broke it; nothing is raised into the loop and nothing is dropped. Trading-state changes
are ``TradingState`` events with a reason. Checks run in a fixed order, cheapest and most
fundamental first; the first failure is reported.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from engine.events import OrderRequest, RiskRejected, TradingStateName
from engine.instruments import InstrumentTable
from engine.market import MID, MarketState
from engine.orders import OrderBook
from engine.portfolio import Portfolio
from engine.risk.limits import RiskConfig, RiskLimits
from engine.risk.rate import TokenBucket
from engine.trading_state import TradingStateMachine

# orders and positions are lot multiples; comparisons allow for float dust only
_EPS = 1e-9

CHECKS = (
    "positive_qty",
    "trading_state",
    "reduce_only_order",
    "lot_size",
    "tick_size",
    "max_order_qty",
    "max_order_notional",
    "min_order_notional",
    "stale_data",
    "no_quote",
    "price_collar",
    "max_position",
    "max_gross_exposure",
    "max_open_orders",
    "account_max_open_orders",
    "warmup",
    "orders_per_second",
    "account_orders_per_second",
)


class RiskEngine:
    """Runs the pre-trade checks; reads the trading state (``engine.trading_state`` owns it).

    Args:
        config: the ``[risk]`` table.
        symbols: instrument symbols in dense-index order.
    """

    def __init__(self, config: RiskConfig, symbols: tuple[str, ...]) -> None:
        self.config = config
        self.limits: list[RiskLimits] = [config.limits_for(s) for s in symbols]
        self._quote_age = [lim.max_quote_age_ns for lim in self.limits]
        self._buckets = [
            TokenBucket(lim.orders_per_second) if lim.orders_per_second else None
            for lim in self.limits
        ]
        self._account_bucket = (
            TokenBucket(config.account_orders_per_second)
            if config.account_orders_per_second
            else None
        )
        self.trading = TradingStateMachine()
        self.rejections: Counter[str] = Counter()
        self.passed = 0
        self._instruments: InstrumentTable | None = None
        self._market: MarketState | None = None
        self._portfolio: Portfolio | None = None
        self._orders: OrderBook | None = None
        self._is_warm: Callable[[int], bool] = lambda _i: True

    def bind(
        self,
        instruments: InstrumentTable,
        market: MarketState,
        portfolio: Portfolio,
        orders: OrderBook,
        is_warm: Callable[[int], bool],
    ) -> None:
        """Give the checks read access to the engine's state (done once by the engine)."""
        self._instruments = instruments
        self._market = market
        self._portfolio = portfolio
        self._orders = orders
        if self.config.warmup:
            self._is_warm = is_warm

    @property
    def state(self) -> TradingStateName:
        return self.trading.state

    def _reject(
        self, req: OrderRequest, check: str, limit: float, value: float, reason: str, ts_ns: int
    ) -> RiskRejected:
        self.rejections[check] += 1
        return RiskRejected(
            ts_event=ts_ns,
            ts_recv=ts_ns,
            client_order_id=req.client_order_id,
            instrument=req.instrument,
            check=check,
            limit=float(limit),
            value=float(value),
            reason=reason,
        )

    def check(
        self, req: OrderRequest, i: int, now: int, *, flatten: bool = False
    ) -> RiskRejected | None:
        """Run every check for order ``req`` on instrument index ``i`` at time ``now``.

        ``flatten`` marks an order the engine sends for an operator's ``flatten``: it may
        pass while HALTED and skips the warm-up gate, but must reduce like any
        reduce-only order.
        """
        assert self._instruments is not None and self._market is not None
        assert self._portfolio is not None and self._orders is not None
        qty = req.qty
        buy = req.side == "buy"
        if not (qty > 0 and math.isfinite(qty)):
            return self._reject(
                req, "positive_qty", 0.0, qty, "order quantity must be a finite number > 0", now
            )
        state = self.trading.state
        if state == "HALTED" and not flatten:
            return self._reject(req, "trading_state", 0.0, qty, "trading is HALTED", now)
        orders = self._orders
        position = float(self._portfolio.positions[i])
        same_side_open = orders.open_buy_qty[i] if buy else orders.open_sell_qty[i]
        # worst case: this order and every open order on its side fill (the other side's
        # orders may never fill, so they do not count as reducing)
        worst = position + (same_side_open + qty if buy else -(same_side_open + qty))
        reduces = abs(worst) <= abs(position) + _EPS and position * worst >= -_EPS
        if (state != "ACTIVE" or req.reduce_only or flatten) and not reduces:
            check = "trading_state" if state != "ACTIVE" else "reduce_only_order"
            return self._reject(
                req,
                check,
                abs(position),
                worst,
                "order would open, grow or flip a position while reducing only",
                now,
            )
        inst = self._instruments.instruments[i]
        limit_price = req.limit_price
        if not self.config.round_to_grid:
            if not inst.is_on_lot(qty):
                return self._reject(
                    req,
                    "lot_size",
                    inst.lot_size,
                    qty,
                    "quantity is not a multiple of the lot size",
                    now,
                )
            if limit_price is not None and not inst.is_on_tick(limit_price):
                return self._reject(
                    req,
                    "tick_size",
                    inst.tick_size,
                    limit_price,
                    "limit price is not on the tick grid",
                    now,
                )
        lim = self.limits[i]
        if lim.max_order_qty is not None and qty > lim.max_order_qty + _EPS:
            return self._reject(
                req, "max_order_qty", lim.max_order_qty, qty, "order quantity above limit", now
            )
        bid, ask, _, _, mid, _ = self._market.book[i].tolist()
        quote_ts = int(self._market.quote_ts[i])
        age_limit = self._quote_age[i]
        if age_limit is not None and quote_ts and now - quote_ts > age_limit:
            return self._reject(
                req, "stale_data", age_limit, now - quote_ts, "last quote is too old (ns)", now
            )
        if req.order_type == "market" and (quote_ts == 0 or math.isnan(mid)):
            return self._reject(
                req, "no_quote", 0.0, 0.0, "market order without a quote to price it", now
            )
        ref_price = limit_price if limit_price is not None else (ask if buy else bid)
        if lim.max_order_notional is not None and not math.isnan(ref_price):
            notional = qty * ref_price
            if notional > lim.max_order_notional + _EPS:
                return self._reject(
                    req,
                    "max_order_notional",
                    lim.max_order_notional,
                    notional,
                    "order notional above limit",
                    now,
                )
        if lim.min_order_notional is not None and not flatten and not math.isnan(ref_price):
            notional = qty * ref_price
            if notional < lim.min_order_notional - _EPS:
                return self._reject(
                    req,
                    "min_order_notional",
                    lim.min_order_notional,
                    notional,
                    "order notional below the minimum (dust)",
                    now,
                )
        if lim.price_collar_bps is not None and limit_price is not None:
            if math.isnan(mid):
                return self._reject(
                    req,
                    "price_collar",
                    lim.price_collar_bps,
                    float("nan"),
                    "no mid to check the limit price against",
                    now,
                )
            through_bps = (
                (limit_price - mid) / mid * 1e4 if buy else (mid - limit_price) / mid * 1e4
            )
            if through_bps > lim.price_collar_bps + 1e-9:
                return self._reject(
                    req,
                    "price_collar",
                    lim.price_collar_bps,
                    through_bps,
                    "limit price too far through the mid (bps)",
                    now,
                )
        increases = not reduces
        if lim.max_position is not None and increases and abs(worst) > lim.max_position + _EPS:
            return self._reject(
                req,
                "max_position",
                lim.max_position,
                abs(worst),
                "position after the order and open orders above limit",
                now,
            )
        if self.config.max_gross_exposure is not None and increases:
            # a plain loop: for a handful of instruments it is several times cheaper than
            # building numpy masks per order
            mids = self._market.book[:, MID].tolist()
            gross = 0.0
            for k, p in enumerate(self._portfolio.positions.tolist()):
                if p != 0.0:
                    gross += abs(p * mids[k])
            price = mid if not math.isnan(mid) else ref_price
            gross_after = (
                gross - abs(position) * (0.0 if math.isnan(mid) else mid) + abs(worst) * price
            )
            if gross_after > self.config.max_gross_exposure + _EPS:
                return self._reject(
                    req,
                    "max_gross_exposure",
                    self.config.max_gross_exposure,
                    gross_after,
                    "gross exposure after the order above limit",
                    now,
                )
        if lim.max_open_orders is not None and orders.open_count[i] + 1 > lim.max_open_orders:
            return self._reject(
                req,
                "max_open_orders",
                lim.max_open_orders,
                orders.open_count[i] + 1,
                "too many open orders on the instrument",
                now,
            )
        acct_open = self.config.account_max_open_orders
        if acct_open is not None and orders.open_total + 1 > acct_open:
            return self._reject(
                req,
                "account_max_open_orders",
                acct_open,
                orders.open_total + 1,
                "too many open orders on the account",
                now,
            )
        if not flatten and not self._is_warm(i):
            return self._reject(
                req,
                "warmup",
                0.0,
                0.0,
                "a feature the strategy needs is still warming up (NaN)",
                now,
            )
        # rate buckets last: a refused order must not spend a token
        bucket = self._buckets[i]
        if bucket is not None and bucket.level(now) < 1.0:
            return self._reject(
                req,
                "orders_per_second",
                bucket.rate,
                bucket.rate + 1,
                "instrument order rate above limit",
                now,
            )
        account = self._account_bucket
        if account is not None and account.level(now) < 1.0:
            return self._reject(
                req,
                "account_orders_per_second",
                account.rate,
                account.rate + 1,
                "account order rate above limit",
                now,
            )
        if bucket is not None:
            bucket.spend()
        if account is not None:
            account.spend()
        self.passed += 1
        return None
