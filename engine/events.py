"""Every event that crosses a stage boundary, as one tagged ``msgspec.Struct`` union.

The same codec serves the journal and the wire, so what was recorded is exactly what
was received. Times are integer nanoseconds since the epoch (UTC): ``ts_event`` is when
it happened at the venue (or in the engine, for events the engine makes), ``ts_recv``
when tradeloop received or made it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
TimeInForce = Literal["gtc", "ioc"]
Liquidity = Literal["maker", "taker"]
TradingStateName = Literal["ACTIVE", "REDUCE_ONLY", "HALTED"]
CommandAction = Literal[
    "kill", "reduce_only", "resume", "flatten", "reload_model", "promote", "rollback"
]
Severity = Literal["info", "warning", "critical"]


def side_sign(side: Side) -> int:
    """+1 for a buy, -1 for a sell."""
    return 1 if side == "buy" else -1


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event; ``type`` on the wire is the class tag."""

    ts_event: int
    ts_recv: int


class Quote(Event, frozen=True, tag="quote", gc=False):
    instrument: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float


class Trade(Event, frozen=True, tag="trade", gc=False):
    instrument: str
    price: float
    size: float
    side: Side  # aggressor side


class DepthUpdate(Event, frozen=True, tag="depth", gc=False):
    """One L2 diff update (or snapshot) of one instrument: ``bids``/``asks`` are
    ``(price, absolute size)`` pairs, size 0 removing the level. The ids and the continuity
    rules are Binance's (``U``/``u``/``pu``); ``engine/book/schema.py`` states them and the
    parquet form. ``prev_update_id`` is -1 where the source has none."""

    instrument: str
    first_update_id: int
    last_update_id: int
    prev_update_id: int = -1
    snapshot: bool = False
    reset: bool = False
    bids: tuple[tuple[float, float], ...] = ()
    asks: tuple[tuple[float, float], ...] = ()


class Bar(Event, frozen=True, tag="bar", gc=False):
    instrument: str
    interval_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Signal(Event, frozen=True, tag="signal"):
    """A model score moved into another zone of the strategy's thresholds.

    ``zone`` counts the thresholds at or below the score (0 .. len(thresholds));
    -1 means the score is not defined yet (a feature still warming up).
    """

    instrument: str
    model: str
    score: float
    zone: int
    previous_zone: int


class OrderRequest(Event, frozen=True, tag="order_request"):
    client_order_id: str
    instrument: str
    side: Side
    qty: float
    order_type: OrderType = "market"
    limit_price: float | None = None
    time_in_force: TimeInForce = "gtc"
    reduce_only: bool = False
    strategy: str = ""


class CancelRequest(Event, frozen=True, tag="cancel_request"):
    client_order_id: str
    instrument: str
    reason: str = ""


class OrderAccepted(Event, frozen=True, tag="order_accepted"):
    client_order_id: str
    venue_order_id: str


class OrderRejected(Event, frozen=True, tag="order_rejected"):
    client_order_id: str
    reason: str


class Fill(Event, frozen=True, tag="fill"):
    client_order_id: str
    fill_id: str
    instrument: str
    side: Side
    qty: float
    price: float
    fee: float
    liquidity: Liquidity


class OrderCancelled(Event, frozen=True, tag="order_cancelled"):
    client_order_id: str
    reason: str = ""


class CancelRejected(Event, frozen=True, tag="cancel_rejected"):
    """A cancel could not be applied (order unknown to the venue, or already closed)."""

    client_order_id: str
    reason: str


class RiskRejected(Event, frozen=True, tag="risk_rejected"):
    """A pre-trade check refused an order: which check, its limit and the value that broke it."""

    client_order_id: str
    instrument: str
    check: str
    limit: float
    value: float
    reason: str


class TradingState(Event, frozen=True, tag="trading_state"):
    """The effective trading state changed; ``source`` is the claim that now decides it
    (operator, shutdown, reconciliation, daemon, loss_limit, data_loss, automatic; see
    ``engine.trading_state``)."""

    state: TradingStateName
    previous: TradingStateName
    reason: str
    source: str = ""


class Command(Event, frozen=True, tag="command"):
    """An operator's command. ``promote`` points the registry's ``champion`` at
    ``target`` (a version, a unique prefix, or ``challenger``), at ``stage`` if given;
    ``rollback`` points it back at the version it named before. Both are carried out by
    the daemon (the registry's audit log names ``issuer`` and ``reason``), which journals
    a ``ModelSwitched`` at the point the engine changes model."""

    action: CommandAction
    reason: str = ""
    issuer: str = ""
    target: str = ""
    stage: str = ""


class Alarm(Event, frozen=True, tag="alarm"):
    source: str
    severity: Severity
    message: str


class ChallengerSignal(Event, frozen=True, tag="challenger_signal"):
    """The challenger model, scored in shadow on the champion's feature rows, moved into
    another zone of the strategy's thresholds. Logged beside the champion's ``Signal``;
    a type of its own, so no strategy hook can ever receive it."""

    instrument: str
    model: str
    version: str
    score: float
    zone: int
    previous_zone: int


class ModelSwitched(Event, frozen=True, tag="model_switched"):
    """The model behind a registry alias changed at this point of the input stream
    (journaled, so a replay switches at the same point).

    ``alias`` is ``champion`` (the engine's model; ``max_position`` follows ``stage``) or
    ``challenger`` (the shadow model). ``audit_entry_sha256`` is the registry audit entry
    that made the change (empty when the daemon switched back to the registry's alias at
    a session start); ``issuer`` and ``reason`` are that entry's who and why.
    """

    model: str
    alias: str
    version: str
    stage: str
    from_version: str
    audit_entry_sha256: str
    issuer: str
    reason: str


AnyEvent = (
    Quote
    | Trade
    | DepthUpdate
    | Bar
    | Signal
    | OrderRequest
    | CancelRequest
    | OrderAccepted
    | OrderRejected
    | Fill
    | OrderCancelled
    | CancelRejected
    | RiskRejected
    | TradingState
    | Command
    | Alarm
    | ChallengerSignal
    | ModelSwitched
)

EVENT_TYPES: tuple[type[Event], ...] = (
    Quote,
    Trade,
    DepthUpdate,
    Bar,
    Signal,
    OrderRequest,
    CancelRequest,
    OrderAccepted,
    OrderRejected,
    Fill,
    OrderCancelled,
    CancelRejected,
    RiskRejected,
    TradingState,
    Command,
    Alarm,
    ChallengerSignal,
    ModelSwitched,
)
