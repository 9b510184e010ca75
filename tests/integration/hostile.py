"""Hostile MQTT messages for the live fuzz suite (``tests/integration/test_live_fuzz.py``).

Hypothesis draws *specs*: small frozen descriptions of a message (``BadMarketData(fault=
...)``, ``BadCommand(kind="stale")``), printed as they are in a falsifying example. A spec
becomes bytes only when it is sent (``render``), against the session as it is then
(``Bus``): the time now, the orders the OMS holds, the commands already accepted. Each
rendered message (``Wire``) says what the daemon must do with it:

- ``accept``: good data (a fresh quote or trade, a validly signed fresh command), which
  the daemon takes as it is (ticks go to the journal unchanged);
- ``refuse``: refused and counted, with one of ``outcomes``: ``refused:<reason>`` (a label
  of ``tradeloop_decode_errors_total``), ``refused:*`` (any reason), ``engine:<counter>``
  (an execution report the engine counts without acting on it: a repeated fill id, a
  status report for an order nobody sent);
- ``unseen``: a topic the daemon does not subscribe to (no effect, no count), and the copy
  of every good quote for the OMS simulator, which reads only its own venue's topics so
  that nothing hostile reaches it.

Markers: a report that must be refused carries ``fz-x`` (in its fill id, venue order id
or reason), one the engine may count instead ``fz-h``, so the journal can be searched;
good commands carry the reason ``fz-ok-<n>``, bad ones ``fz-x-<n>``.

Not generated, on purpose: a well-formed fill for an order id under our own prefix that
we never sent (the fills are the truth: it is booked, alarmed and reduces only, by
design), an order on the OMS's topics (the simulator's business), and NUL or control
characters in topics or properties (mosquitto drops the publisher, nothing arrives).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import hypothesis.strategies as st
import msgspec

from adapters.mqtt.auth import SIGNATURE_PROPERTY, sign_command
from adapters.mqtt.topics import Topics
from engine.events import Fill

Verdict = Literal["accept", "refuse", "unseen"]
Outcomes = frozenset[str]
ANY_REFUSAL = "refused:*"
ANY: Outcomes = frozenset({ANY_REFUSAL})
UNDECODABLE: Outcomes = frozenset({"refused:undecodable"})
UNAUTHENTICATED: Outcomes = frozenset({"refused:unauthenticated"})
INT64_MAX = 2**63 - 1
NS = 1_000_000_000
YEAR_NS = 365 * 86_400 * NS
BEFORE_2000_NS = 946_684_800 * NS
OTHER_KEY = b"not-the-command-key"
FOREIGN_NODE = "n2"
MAX_PAYLOAD_BYTES = 65_536  # the daemon's [mqtt] max_payload_bytes (its default)

# values no price, size or quantity may take (finite, so JSON carries them)
ABSURD_NUMBERS = (
    0.0,
    -0.0,
    -1.0,
    -100.5,
    5e-324,
    1e-320,
    1e-310,
    1e-300,
    1e300,
    1.7976931348623157e308,
)
ABSURD_FEES = (-1e6, 1e6, 1e308, -1e308, 1e300)
# JSON texts that are not numbers msgspec reads as finite floats
BAD_TOKENS = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "0x10", "1.", ".5", "+1")
# wrong JSON types for a number field, and for an integer timestamp
WRONG_TYPES: tuple[Any, ...] = ("100.5", True, None, [], {}, [100.5], {"v": 1})
# wrong for a text field ("100.5" is text: a fill id of "100.5" is a valid fill id)
WRONG_TEXT_TYPES: tuple[Any, ...] = tuple(v for v in WRONG_TYPES if not isinstance(v, str))
WRONG_TS_TYPES: tuple[Any, ...] = (1.7e18, "1700000000000000000", None, True, [], 1.5)
# what an MQTT string may hold: mosquitto drops a client that sends NUL, a control
# character, a surrogate or a non-character in a topic or a property
MQTT_TEXT = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cn"))
UNKNOWN_SYMBOLS = (
    "DOGE",
    "",
    "btc",
    "BTC ",
    " BTC",
    "BTC/USD",
    "B" * 300,
    "БТЦ",
    "BTC\u0000",
    "md/SIM/BTC",
)
COMMAND_ACTIONS = (
    "kill",
    "flatten",
    "reduce_only",
    "resume",
    "reload_model",
    "promote",
    "rollback",
)


@dataclass(frozen=True)
class Wire:
    """One MQTT message to publish, and what the daemon must do with it."""

    label: str  # the class of the message, for the counts
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    user_properties: tuple[tuple[str, str], ...] | None = None
    verdict: Verdict = "refuse"
    outcomes: Outcomes = ANY
    # accepted market data: (instrument index, kind, ts_event, four floats, side)
    tick: tuple[int, int, int, float, float, float, float, int] | None = None

    def brief(self) -> str:
        """One line for a failure report: class, topic, flags and the payload's head."""
        flags = f"qos={self.qos}{' retain' if self.retain else ''}"
        if self.user_properties is not None:
            flags += f" props={list(self.user_properties)!r}"[:160]
        more = f"... ({len(self.payload)} bytes)" if len(self.payload) > 160 else ""
        return (
            f"{self.label} -> {self.verdict} {sorted(self.outcomes)} on {self.topic} "
            f"[{flags}]: {self.payload[:160]!r}{more}"
        )


@dataclass
class Bus:
    """What a spec needs to become bytes: the topic contract and the session as it is."""

    node: str
    account: str
    venue: str  # the daemon's market-data venue
    oms_venue: str  # the venue whose topics only the OMS simulator reads
    symbols: tuple[str, ...]
    key: bytes
    order_prefix: Callable[[], str]  # the daemon's client order id prefix (node-session)
    filled_orders: Callable[[], list[tuple[str, str]]]  # (client order id, venue order id)
    fills: Callable[[], list[Fill]]  # the OMS's fills
    now: Callable[[], int]
    accepted_commands: list[tuple[bytes, str]] = field(default_factory=list)
    serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def command_topic(self) -> str:
        return f"tradeloop/{self.node}/command"

    @property
    def reports_topic(self) -> str:
        return f"oms/{self.account}/reports"

    def md_topic(self, symbol: str, kind: str, venue: str | None = None) -> str:
        return f"md/{venue or self.venue}/{symbol}/{kind}"

    def sign(
        self,
        payload: bytes,
        *,
        node: str | None = None,
        account: str | None = None,
        prefix: str = "",
        key: bytes | None = None,
    ) -> str:
        """The ``signature`` property of ``payload`` as a command for a target (this
        daemon by default), in the product's signed form (``adapters.mqtt.auth``)."""
        target = Topics(prefix, node or self.node, account or self.account)
        return sign_command(payload, self.key if key is None else key, target)


def encode(doc: object) -> bytes:
    """JSON as a peer may write it: Python's encoder (big integers, ``NaN`` tokens)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()


def with_token(doc: dict[str, Any], name: str, token: str) -> bytes:
    """``doc`` as JSON with the raw ``token`` as the value of ``name``."""
    marker = "\u2603marker\u2603"
    text = encode({**doc, name: marker}).decode()
    return text.replace(json.dumps(marker), token).encode()


def event_doc(kind: str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "ts_event": ts, "ts_recv": ts, **fields}


def quote_doc(
    symbol: str,
    ts: int,
    bid: float = 100.0,
    ask: float = 100.5,
    bid_size: float = 2.0,
    ask_size: float = 3.0,
) -> dict[str, Any]:
    return event_doc(
        "quote", ts, instrument=symbol, bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size
    )


def trade_doc(
    symbol: str, ts: int, price: float = 100.25, size: float = 0.5, side: str = "buy"
) -> dict[str, Any]:
    return event_doc("trade", ts, instrument=symbol, price=price, size=size, side=side)


def command_doc(ts: int, action: str, reason: str) -> dict[str, Any]:
    return event_doc(
        "command", ts, action=action, reason=reason, issuer="fuzz", target="", stage=""
    )


def fill_doc(cid: str, fill_id: str, symbol: str, ts: int) -> dict[str, Any]:
    return event_doc(
        "fill",
        ts,
        client_order_id=cid,
        fill_id=fill_id,
        instrument=symbol,
        side="buy",
        qty=1.0,
        price=100.0,
        fee=0.001,
        liquidity="taker",
    )


def bad_ts(how: str, amount: int, now: int) -> int:
    """A ``ts_event`` no message may carry: out of int64, negative, in another unit, too
    old (market data: beyond ``max_tick_age``), too far ahead, before 2000."""
    match how:
        case "int64_overflow":  # [2^63, 2^64): msgspec reads it, int64 cannot hold it
            return 2**63 + amount % 2**63
        case "uint64_overflow":  # beyond what msgspec reads as an integer
            return 2**64 + amount
        case "negative":
            return -1 - amount % INT64_MAX
        case "zero":
            return 0
        case "seconds" | "millis" | "micros":
            unit = {"seconds": NS, "millis": 1_000_000, "micros": 1000}[how]
            return now // unit - amount % 1000
        case "past":  # older than max_tick_age (5 s) by a margin
            return now - 10 * NS - amount % (30 * YEAR_NS)
        case "future":  # ahead of max_tick_future (1 s) by a margin
            return now + 5 * NS + amount % (70 * YEAR_NS)
        case "before_2000":
            return amount % BEFORE_2000_NS
        case _:
            raise ValueError(how)


TS_FAULTS = (
    "int64_overflow",
    "uint64_overflow",
    "negative",
    "zero",
    "seconds",
    "millis",
    "micros",
    "past",
    "future",
    "before_2000",
)
# reports and commands have no age limit (a late report is normal): only stamps no clock
# writes (and a report a day ahead, ``future_day``)
STAMP_FAULTS = (
    "int64_overflow",
    "uint64_overflow",
    "negative",
    "zero",
    "seconds",
    "millis",
    "micros",
    "before_2000",
)


def faulted(
    doc: dict[str, Any], fault: tuple[Any, ...], now: int, bus: Bus, symbol: int = 0
) -> tuple[bytes, Outcomes]:
    """``doc`` with ``fault`` (``(what, *details)``) applied: the payload and the outcomes
    the daemon may give it."""
    outcomes = ANY
    match fault:
        case ("number" | "wrong_type" | "side", name, value):
            doc[name] = value
            if fault[0] != "number":
                outcomes = UNDECODABLE
            elif name in ("bid", "ask") and value >= 1e300:
                outcomes = frozenset({"refused:price_bounds", "refused:crossed"})
        case ("fee_bps", bps):  # a fee beyond max_fee_bps (100) of the notional
            doc["fee"] = doc["qty"] * doc["price"] * bps * 1e-4
            outcomes = frozenset({"refused:fee_bounds"})
        case ("token", name, token):
            return with_token(doc, name, token), UNDECODABLE
        case ("missing", name):
            doc.pop(name, None)
            outcomes = UNDECODABLE
        case ("ts", how, amount):
            doc["ts_event"] = bad_ts(how, amount, now)
        case ("future_day",):  # a peer's clock a day ahead
            doc["ts_event"] = now + 86_400 * NS
        case ("ts_recv", value):
            doc["ts_recv"] = value
        case ("crossed", gap):
            doc["ask"] = round(doc["bid"] - gap, 2)
            outcomes = frozenset({"refused:crossed"})
        case ("instrument", name):
            doc["instrument"] = name
            if doc["type"] in ("quote", "trade"):
                outcomes = frozenset({"refused:unknown_symbol"})
        case ("mismatch",):  # another configured instrument's data on this topic
            doc["instrument"] = bus.symbols[1 - symbol]
            outcomes = frozenset({"refused:instrument_mismatch"})
        case ("tag", tag):  # another event, or no tag, or a tag nobody knows
            doc = _other_event(tag, bus.symbols[symbol], now, bus)
            outcomes = frozenset({"refused:wrong_type", "refused:undecodable"})
        case ("foreign" | "unknown", *_):  # well formed; the order id is the fault
            pass
        case _:
            raise ValueError(fault)
    return encode(doc), outcomes


def _other_event(tag: str, symbol: str, now: int, bus: Bus) -> dict[str, Any]:
    match tag:
        case "quote":
            return quote_doc(symbol, now)
        case "trade":
            return trade_doc(symbol, now)
        case "command":
            return command_doc(now, "kill", f"fz-x-{next(bus.serial)}")
        case "fill":
            return fill_doc(f"{FOREIGN_NODE}-0-1", f"fz-x-{next(bus.serial)}", symbol, now)
        case "order_request":
            return event_doc(
                "order_request",
                now,
                client_order_id="fz-x-order",
                instrument=symbol,
                side="buy",
                qty=1.0,
            )
        case "none":
            return {k: v for k, v in quote_doc(symbol, now).items() if k != "type"}
        case _:
            return {**quote_doc(symbol, now), "type": tag}


# market data


@dataclass(frozen=True)
class GoodQuote:
    """A fresh, sane quote: the daemon takes it, the strategy trades on it. The OMS gets
    a copy on its own venue's topic first, with depth for any of our orders."""

    symbol: int
    bid: float
    spread: float
    bid_size: float
    ask_size: float
    age_ms: int = 0  # ts_event this much before now (negative: ahead)
    extra: tuple[tuple[str, Any], ...] = ()  # unknown fields are ignored, not refused
    retain: bool = False

    def render(self, bus: Bus) -> list[Wire]:
        symbol = bus.symbols[self.symbol]
        ts = bus.now() - self.age_ms * 1_000_000
        ask = round(self.bid + self.spread, 2)
        doc = quote_doc(symbol, ts, self.bid, ask, self.bid_size, self.ask_size)
        deep = encode({**doc, "bid_size": 1e6, "ask_size": 1e6})
        tick = (self.symbol, 0, ts, self.bid, ask, self.bid_size, self.ask_size, 0)
        return [
            Wire(
                "oms_copy",
                bus.md_topic(symbol, "quote", bus.oms_venue),
                deep,
                verdict="unseen",
                outcomes=frozenset(),
            ),
            Wire(
                "good_quote_extra_fields" if self.extra else "good_quote",
                bus.md_topic(symbol, "quote"),
                encode({**doc, **dict(self.extra)}),
                retain=self.retain,
                verdict="accept",
                outcomes=frozenset(),
                tick=tick,
            ),
        ]


@dataclass(frozen=True)
class GoodTrade:
    symbol: int
    price: float
    size: float
    side: str
    retain: bool = False

    def render(self, bus: Bus) -> list[Wire]:
        symbol = bus.symbols[self.symbol]
        ts = bus.now()
        doc = trade_doc(symbol, ts, self.price, self.size, self.side)
        side = 1 if self.side == "buy" else -1
        tick = (self.symbol, 1, ts, self.price, self.size, 0.0, 0.0, side)
        return [
            Wire(
                "good_trade",
                bus.md_topic(symbol, "trade"),
                encode(doc),
                retain=self.retain,
                verdict="accept",
                outcomes=frozenset(),
                tick=tick,
            )
        ]


@dataclass(frozen=True)
class BadMarketData:
    """A quote or a trade that must be refused."""

    kind: str  # quote, trade
    symbol: int
    fault: tuple[Any, ...]
    retain: bool = False

    def render(self, bus: Bus) -> list[Wire]:
        symbol = bus.symbols[self.symbol]
        now = bus.now()
        doc = quote_doc(symbol, now) if self.kind == "quote" else trade_doc(symbol, now)
        payload, outcomes = faulted(doc, self.fault, now, bus, self.symbol)
        return [
            Wire(
                f"{self.kind}_{self.fault[0]}",
                bus.md_topic(symbol, self.kind),
                payload,
                retain=self.retain,
                outcomes=outcomes,
            )
        ]


# raw payloads on any topic


@dataclass(frozen=True)
class RawJunk:
    """Bytes that are not a message: on a market-data, report or command topic, or on a
    market-data topic of an unknown kind (``md/SIM/BTC/l3``: delivered, refused)."""

    target: str  # quote, trade, report, command, md_unknown
    kind: str
    size: int = 0
    data: bytes = b""
    signed: bool = False
    retain: bool = False

    def render(self, bus: Bus) -> list[Wire]:
        symbol = bus.symbols[0]
        payload = self._payload(symbol, bus.now())
        props = None
        # the size is checked before anything but the route
        oversized = len(payload) > MAX_PAYLOAD_BYTES
        outcomes = frozenset({"refused:oversized"}) if oversized else ANY
        match self.target:
            case "quote" | "trade":
                topic = bus.md_topic(symbol, self.target)
            case "md_unknown":  # the route is looked up first (but a frame past what
                # the feed's reader holds is skipped by its length before)
                topic = bus.md_topic(symbol, self.data.decode())
                outcomes = frozenset({"refused:unknown_topic"}) | (outcomes - ANY)
            case "report":
                topic = bus.reports_topic
            case _:
                topic = bus.command_topic
                if self.signed:
                    props = ((SIGNATURE_PROPERTY, bus.sign(payload)),)
                elif not oversized:
                    outcomes = UNAUTHENTICATED
        qos = 1 if self.target in ("report", "command") else 0
        return [
            Wire(
                f"raw_{self.kind}@{self.target}",
                topic,
                payload,
                qos=qos,
                retain=self.retain,
                user_properties=props,
                outcomes=outcomes,
            )
        ]

    def _payload(self, symbol: str, now: int) -> bytes:
        good = encode(quote_doc(symbol, now))
        depth = self.size
        match self.kind:
            case "empty":
                return b""
            case "bytes" | "scalar":
                return self.data or b"\x00"
            case "non_utf8":  # a good quote with bytes that are not UTF-8 in a string
                return good.replace(symbol.encode(), b"\xff\xfe" + self.data[:8], 1)
            case "nested":  # deeper than msgspec recurses (about 1000 levels)
                return b'{"type":"quote","x":' + b"[" * depth + b"]" * depth + b"}"
            case "nested_open":
                return b"[" * depth
            case "nested_objects":
                return b'{"a":' * depth + b"1" + b"}" * depth
            case "oversized":  # a good quote padded past max_payload_bytes (64 KiB)
                return good[:-1] + b',"pad":"' + b"x" * max(self.size - len(good), 0) + b'"}'
            case "truncated":
                return good[: self.size % len(good)]
            case "msgpack":  # the right event in the wrong format
                return msgspec.msgpack.encode(json.loads(good))
            case "bom":
                return b"\xef\xbb\xbf" + good
            case _:
                raise ValueError(self.kind)


# execution reports


@dataclass(frozen=True)
class BadReport:
    """An execution report that must be refused, or that the engine counts and ignores.

    ``order``: ``real`` (an order the OMS filled), ``foreign`` (another node's client order
    id on our account's topic), ``ours_unknown`` (our prefix, a number we never sent).
    """

    report: str  # fill, accepted, rejected, cancelled, cancel_rejected
    order: str
    fault: tuple[Any, ...]

    def render(self, bus: Bus) -> list[Wire]:
        now = bus.now()
        what = self.fault[0]
        # a well-formed status report for an order that is not ours changes nothing:
        # refused, or counted by the engine
        handled = what == "unknown" or (what == "foreign" and self.report != "fill")
        mark = f"{'fz-h' if handled else 'fz-x'}-{next(bus.serial)}"
        filled = bus.filled_orders()
        match self.order:
            case "real":
                cid = filled[-1][0] if filled else f"{bus.order_prefix()}-1"
            case "foreign":
                cid = f"{self.fault[1]}-17-3"
            case _:
                cid = f"{bus.order_prefix()}-{900_000 + next(bus.serial)}"
        if self.report == "fill":
            doc = fill_doc(cid, mark, bus.symbols[0], now)
        else:
            text = "venue_order_id" if self.report == "accepted" else "reason"
            kind = self.report if self.report == "cancel_rejected" else f"order_{self.report}"
            doc = event_doc(kind, now, client_order_id=cid, **{text: mark})
        payload, outcomes = faulted(doc, self.fault, now, bus)
        engine = "cancels_rejected" if self.report == "cancel_rejected" else "reports_unknown_order"
        if what == "unknown":
            outcomes = frozenset({f"engine:{engine}"})
            what = "unknown_order"
        elif handled:
            outcomes = frozenset({ANY_REFUSAL, f"engine:{engine}"})
        return [
            Wire(
                f"report_{self.report}_{what}", bus.reports_topic, payload, qos=1, outcomes=outcomes
            )
        ]


@dataclass(frozen=True)
class DuplicateReport:
    """A report the OMS already sent, again (a QoS 1 redelivery, a replay): booked once."""

    which: str  # fill_exact, fill_same_id, accepted
    qty: float = 0.5

    def render(self, bus: Bus) -> list[Wire]:
        label = f"report_{self.which}_repeated"
        if self.which == "accepted":
            filled = bus.filled_orders()
            if not filled:
                return []
            cid, venue_id = filled[len(filled) // 2]
            doc = event_doc(
                "order_accepted", bus.now(), client_order_id=cid, venue_order_id=venue_id
            )
            return [
                Wire(
                    label,
                    bus.reports_topic,
                    encode(doc),
                    qos=1,
                    outcomes=frozenset({"engine:reports_redundant"}),
                )
            ]
        fills = bus.fills()
        if not fills:
            return []
        fill = fills[len(fills) // 2]
        if self.which == "fill_same_id":  # same id, other numbers: the id decides
            fill = msgspec.structs.replace(fill, qty=self.qty, price=fill.price + 1.0)
        return [
            Wire(
                label,
                bus.reports_topic,
                msgspec.json.encode(fill),
                qos=1,
                outcomes=frozenset({"engine:fills_duplicate"}),
            )
        ]


# operator commands


@dataclass(frozen=True)
class GoodCommand:
    """A validly signed, fresh ``resume`` (no effect while ACTIVE); remembered so that a
    later ``BadCommand(kind="replay")`` can send it again."""

    def render(self, bus: Bus) -> list[Wire]:
        payload = encode(command_doc(bus.now(), "resume", f"fz-ok-{next(bus.serial)}"))
        signature = bus.sign(payload)
        bus.accepted_commands.append((payload, signature))
        return [
            Wire(
                "good_command",
                bus.command_topic,
                payload,
                qos=1,
                user_properties=((SIGNATURE_PROPERTY, signature),),
                verdict="accept",
                outcomes=frozenset(),
            )
        ]


@dataclass(frozen=True)
class BadCommand:
    kind: str
    action: str = "kill"
    text: str = ""
    amount: int = 0

    def render(self, bus: Bus) -> list[Wire]:
        now = bus.now()
        doc = command_doc(now, self.action, f"fz-x-{next(bus.serial)}")
        payload = encode(doc)
        outcomes = UNAUTHENTICATED
        signature: str | None = None
        match self.kind:
            case "unsigned":
                pass
            case "bad_signature":  # any text but the MAC (hex, junk, non-ASCII, empty)
                signature = self.text
            case "wrong_key":
                signature = bus.sign(payload, key=OTHER_KEY)
            case "signature_of_another":
                signature = bus.sign(encode(command_doc(now, "resume", "fz-x-other")))
            case "other_node":  # our key, another target
                signature = bus.sign(payload, node=FOREIGN_NODE)
            case "other_account":
                signature = bus.sign(payload, account="a2")
            case "other_prefix":  # captured on another deployment's command topic
                signature = bus.sign(payload, prefix="staging/")
            case "payload_only":  # the HMAC of the payload alone (the old form)
                signature = hmac.new(bus.key, payload, hashlib.sha256).hexdigest()
            case "replay":  # a command accepted before, sent again as it was
                if not bus.accepted_commands:
                    return []
                commands = bus.accepted_commands
                payload, signature = commands[self.amount % len(commands)]
                # within command_max_age (30 s) of the original a duplicate, later stale
                outcomes = frozenset({"refused:command_duplicate", "refused:command_stale"})
            case _:  # signed with the right key for this daemon, wrong inside
                payload, outcomes = self._signed_fault(doc, now, bus)
                signature = bus.sign(payload)
        props = None if signature is None else ((SIGNATURE_PROPERTY, signature),)
        return [
            Wire(
                f"command_{self.kind}",
                bus.command_topic,
                payload,
                qos=1,
                user_properties=props,
                outcomes=outcomes,
            )
        ]

    def _signed_fault(self, doc: dict[str, Any], now: int, bus: Bus) -> tuple[bytes, Outcomes]:
        match self.kind:
            case "stale":  # beyond command_max_age (30 s)
                doc["ts_event"] = now - 31 * NS - self.amount % (10 * YEAR_NS)
                return encode(doc), frozenset({"refused:command_stale"})
            case "future":  # with a margin for the bus's delay
                doc["ts_event"] = now + 40 * NS + self.amount % (10 * YEAR_NS)
                return encode(doc), frozenset({"refused:command_future"})
            case "ts":  # a stamp no clock writes
                return faulted(doc, ("ts", self.text, self.amount), now, bus)
            case "ts_recv":
                return faulted(doc, ("ts_recv", 2**63 + self.amount % 2**63), now, bus)
            case "bad_action":
                return faulted(doc, ("wrong_type", "action", self.text), now, bus)
            case "wrong_type":  # a quote on the command topic
                return encode(quote_doc(bus.symbols[0], now)), frozenset({"refused:wrong_type"})
            case _:
                raise ValueError(self.kind)


# topics


@dataclass(frozen=True)
class JunkTopic:
    """A message on a topic of nobody's contract. A kind under ``md/SIM/BTC/`` reaches the
    daemon's market-data subscription (refused as an unknown topic); the others are
    outside its subscriptions (no effect, nothing to count)."""

    topic: str
    payload: bytes
    retain: bool = False

    def render(self, bus: Bus) -> list[Wire]:
        parts = self.topic.split("/")
        delivered = len(parts) == 4 and parts[:2] == ["md", bus.venue] and parts[2] in bus.symbols
        if not delivered:
            return [
                Wire(
                    "junk_topic_unseen",
                    self.topic,
                    self.payload,
                    retain=self.retain,
                    verdict="unseen",
                    outcomes=frozenset(),
                )
            ]
        return [
            Wire(
                "junk_topic",
                self.topic,
                self.payload,
                retain=self.retain,
                outcomes=frozenset({"refused:unknown_topic"}),
            )
        ]


Spec = (
    GoodQuote
    | GoodTrade
    | GoodCommand
    | BadMarketData
    | RawJunk
    | BadReport
    | DuplicateReport
    | BadCommand
    | JunkTopic
)


# strategies


def ts_amounts() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 2**63), st.sampled_from((0, 1, 2**62, 2**63 - 1)))


def cents(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda c: c / 100)


def good_quotes() -> st.SearchStrategy[GoodQuote]:
    values = st.one_of(
        st.integers(-(2**70), 2**70),
        st.text(max_size=20),
        st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3),
    )
    names = st.sampled_from(("venue", "seq", "exchange_ts", "meta", "bid_levels"))
    extra = st.lists(st.tuples(names, values), max_size=2, unique_by=lambda kv: kv[0])
    return st.builds(
        GoodQuote,
        symbol=st.integers(0, 1),
        bid=cents(5_000, 15_000),
        spread=cents(1, 200),
        bid_size=cents(1, 5_000),
        ask_size=cents(1, 5_000),
        # within max_tick_age (5 s) and max_tick_future (1 s), with a margin for the bus
        age_ms=st.one_of(st.just(0), st.integers(-300, 1_500)),
        extra=st.one_of(st.just(()), extra.map(tuple)),
        retain=st.booleans(),
    )


def good_trades() -> st.SearchStrategy[GoodTrade]:
    return st.builds(
        GoodTrade,
        symbol=st.integers(0, 1),
        price=cents(5_000, 15_000),
        size=cents(1, 5_000),
        side=st.sampled_from(("buy", "sell")),
        retain=st.booleans(),
    )


OTHER_TAGS = ("quote", "trade", "command", "fill", "order_request", "none", "bogus", "QUOTE")


def number_faults(
    *names: str, values: tuple[float, ...] = ABSURD_NUMBERS
) -> st.SearchStrategy[tuple[Any, ...]]:
    fields = st.sampled_from(names)
    return st.one_of(
        st.tuples(st.just("number"), fields, st.sampled_from(values)),
        st.tuples(st.just("token"), fields, st.sampled_from(BAD_TOKENS)),
        st.tuples(st.just("wrong_type"), fields, st.sampled_from(WRONG_TYPES)),
    )


def bad_market_data() -> st.SearchStrategy[BadMarketData]:
    quote = ("bid", "ask", "bid_size", "ask_size")
    trade = ("price", "size")

    @st.composite
    def build(draw: st.DrawFn) -> BadMarketData:
        kind = draw(st.sampled_from(("quote", "trade")))
        numbers = quote if kind == "quote" else trade
        sides = st.sampled_from(("BUY", "", "hold", 1, None, "buy "))
        own = (
            st.tuples(st.just("crossed"), cents(0, 100))
            if kind == "quote"
            else st.tuples(st.just("side"), st.just("side"), sides)
        )
        fault = draw(
            st.one_of(
                number_faults(*numbers),
                st.tuples(
                    st.just("wrong_type"), st.just("ts_event"), st.sampled_from(WRONG_TS_TYPES)
                ),
                st.tuples(
                    st.just("missing"),
                    st.sampled_from(("type", "ts_event", "ts_recv", "instrument", *numbers)),
                ),
                st.tuples(st.just("ts"), st.sampled_from(TS_FAULTS), ts_amounts()),
                st.tuples(st.just("instrument"), st.sampled_from(UNKNOWN_SYMBOLS)),
                st.just(("mismatch",)),
                st.tuples(st.just("tag"), st.sampled_from([t for t in OTHER_TAGS if t != kind])),
                own,
            )
        )
        return BadMarketData(kind, draw(st.integers(0, 1)), fault, draw(st.booleans()))

    return build()


def raw_junk() -> st.SearchStrategy[RawJunk]:
    scalars = st.sampled_from(b'null 42 "quote" [] true {} { } {"type":null} [{}] \x00'.split())
    kinds = st.one_of(
        st.tuples(st.sampled_from(("empty", "msgpack", "bom")), st.just(0), st.just(b"")),
        st.tuples(st.just("bytes"), st.just(0), st.binary(min_size=1, max_size=300)),
        st.tuples(st.just("non_utf8"), st.just(0), st.binary(max_size=8)),
        st.tuples(
            st.sampled_from(("nested", "nested_open", "nested_objects")),
            st.integers(100, 30_000),
            st.just(b""),
        ),
        # past max_payload_bytes (64 KiB) and past the frame a broker read holds (128 KiB)
        st.tuples(st.just("oversized"), st.integers(100_000, 300_000), st.just(b"")),
        st.tuples(st.just("scalar"), st.just(0), scalars),
        st.tuples(st.just("truncated"), st.integers(0, 200), st.just(b"")),
    )
    unknown_kinds = st.sampled_from((b"l3", b"QUOTE", b"quotes", b"", b"book", b"trade2"))

    @st.composite
    def build(draw: st.DrawFn) -> RawJunk:
        target = draw(st.sampled_from(("quote", "trade", "report", "command", "md_unknown")))
        kind, size, data = draw(kinds)
        if target == "md_unknown":
            data = draw(unknown_kinds)
            kind = "empty" if kind in ("bytes", "non_utf8", "scalar") else kind
        return RawJunk(target, kind, size, data, draw(st.booleans()), draw(st.booleans()))

    return build()


def bad_reports() -> st.SearchStrategy[BadReport]:
    fill_faults = st.one_of(
        number_faults("qty", "price"),
        number_faults("fee", values=ABSURD_FEES),
        st.tuples(st.just("fee_bps"), st.sampled_from((101.0, 200.0, -150.0, 5_000.0, 1e6))),
        st.tuples(st.just("wrong_type"), st.just("fill_id"), st.sampled_from(WRONG_TEXT_TYPES)),
        st.tuples(
            st.just("missing"),
            st.sampled_from(("fill_id", "qty", "price", "fee", "side", "liquidity", "ts_event")),
        ),
        st.tuples(st.just("instrument"), st.sampled_from(("DOGE", "", "btc"))),
    )
    stamp_faults = st.one_of(
        st.tuples(st.just("ts"), st.sampled_from(STAMP_FAULTS), ts_amounts()),
        st.just(("future_day",)),
        st.tuples(st.just("ts_recv"), st.sampled_from((2**63, 2**64 - 1, -1, -(2**63)))),
        st.tuples(
            st.just("wrong_type"), st.just("client_order_id"), st.sampled_from((None, 5, ["x"]))
        ),
        st.tuples(st.just("missing"), st.just("client_order_id")),
    )

    @st.composite
    def build(draw: st.DrawFn) -> BadReport:
        report = draw(
            st.sampled_from(("fill", "accepted", "rejected", "cancelled", "cancel_rejected"))
        )
        which = draw(st.sampled_from(("values", "foreign", "unknown", "stamps")))
        if which == "foreign":  # n10 and n1x start like n1 without being n1's
            node = draw(st.sampled_from((FOREIGN_NODE, "n10", "n1x", "N1", "", "ext")))
            return BadReport(report, "foreign", ("foreign", node))
        if which == "unknown" and report != "fill":
            return BadReport(report, "ours_unknown", ("unknown",))
        if which == "values" and report == "fill":
            return BadReport(report, "real", draw(fill_faults))
        # a bad stamp refuses a report whoever's order it names
        order = draw(st.sampled_from(("real", "ours_unknown")))
        return BadReport(report, order, draw(stamp_faults))

    return build()


def duplicate_reports() -> st.SearchStrategy[DuplicateReport]:
    return st.builds(
        DuplicateReport,
        st.sampled_from(("fill_exact", "fill_same_id", "accepted")),
        st.sampled_from((0.5, 1.0, 3.0)),
    )


def bad_commands() -> st.SearchStrategy[BadCommand]:
    actions = st.sampled_from(COMMAND_ACTIONS)
    signatures = st.one_of(
        st.text(alphabet="0123456789abcdef", max_size=80),
        st.text(alphabet=MQTT_TEXT, min_size=1, max_size=80),  # non-ASCII
        st.sampled_from(
            ["é" * 64, "签名" * 16, "０" * 64, " ", "x" * 5000]
            + [f"{v}:n1:a1:{d * 64}" for v, d in (("v1", "é"), ("v1", "g"), ("v2", "0"))]
            + ["v1:n1:a1:" + "0" * 64, "v1:n1:a1:" + "0" * 63]
        ),
    )
    plain = [
        "unsigned",
        "wrong_key",
        "signature_of_another",
        "other_node",
        "other_account",
        "other_prefix",
        "payload_only",
        "wrong_type",
    ]
    return st.one_of(
        st.builds(BadCommand, st.sampled_from(plain), actions),
        st.builds(BadCommand, st.just("bad_signature"), actions, signatures),
        st.builds(
            BadCommand,
            st.sampled_from(("stale", "future", "ts_recv", "replay")),
            actions,
            amount=ts_amounts(),
        ),
        st.builds(BadCommand, st.just("ts"), actions, st.sampled_from(STAMP_FAULTS), ts_amounts()),
        st.builds(
            BadCommand,
            st.just("bad_action"),
            text=st.sampled_from(("explode", "KILL", "", "kill ", "resume\u0000")),
        ),
    )


def junk_topics() -> st.SearchStrategy[JunkTopic]:
    # the first four reach the daemon's market-data subscriptions, the rest nobody's
    topics = st.sampled_from(
        [
            "md/SIM/BTC/l3",
            "md/SIM/ETH/book",
            "md/SIM/BTC/",
            "md/SIM/ETH/QUOTE",
            "junk",
            "junk/x/y",
            "md/SIM/DOGE/quote",
            "md/SIM/BTC/quote/x",
            "md/SIM",
            "md/OTHER/BTC/quote",
            "oms/a2/reports",
            "oms/a1/reports/x",
            "tradeloop/n2/command",
            "tradeloop/n1/command/x",
            "tradeloop/n1",
        ]
    )
    payloads = st.one_of(
        st.binary(max_size=200), st.just(b'{"type":"quote","ts_event":1,"ts_recv":1}')
    )
    return st.builds(JunkTopic, topics, payloads, st.booleans())


def hostile() -> st.SearchStrategy[Spec]:
    return st.one_of(
        bad_market_data(),
        bad_market_data(),
        raw_junk(),
        bad_reports(),
        duplicate_reports(),
        bad_commands(),
        junk_topics(),
    )


def good() -> st.SearchStrategy[Spec]:
    return st.one_of(
        good_quotes(), good_quotes(), good_quotes(), good_trades(), st.just(GoodCommand())
    )


@st.composite
def batches(draw: st.DrawFn, max_size: int = 16) -> tuple[bool, list[Spec]]:
    """``(hostile_only, specs)``: a third of the batches carry no good data (no order may
    follow them); the rest interleave good data with the hostile messages."""
    hostile_only = draw(st.integers(0, 2)) == 0
    item = hostile() if hostile_only else st.one_of(hostile(), good())
    return hostile_only, draw(st.lists(item, min_size=1, max_size=max_size))
