"""Reconciliation with the OMS over MQTT 5 request/response (issue 11.1).

Before trading, the daemon asks the OMS what it holds: open orders, fills since a time,
positions. A request goes to ``topics.requests`` carrying two MQTT 5 properties, a
``ResponseTopic`` and ``CorrelationData``; the OMS publishes its answer on that response
topic with the same correlation data, which is how an answer finds its question.

Payloads are a tagged union of frozen structs (``type`` on the wire), JSON or MessagePack
like every other payload. An OMS that cannot answer says so with ``RequestFailed``,
which ``request`` raises as an ``AdapterError``; no answer in time is one too.

An answer is a message like any other: it passes the checks of live reports
(``adapters.mqtt.validation``: the same ``fill_problem`` for its fills, timestamps, bounds
of order quantities and prices, finite positions). An answer that cannot be decoded or
holds one value the checks refuse is refused whole: each refused value is counted
(``bad_answer_<reason>``) and logged, nothing of the answer is booked, and ``request``
raises ``RefusedAnswer``, so the reconciliation does not agree. Its positions were
computed with its fills: booking the rest of it would make the two disagree quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from typing import Literal, overload

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.topics import Topics
from adapters.mqtt.validation import (
    MessageLimits,
    fill_problem,
    order_problem,
    position_problem,
    timestamp_problem,
)
from engine.clock import wall_clock_ns
from engine.codec import Format
from engine.errors import AdapterError, BadMessage
from engine.events import Fill, OrderRequest

log = logging.getLogger(__name__)

# refused values named in one answer's error and log (the rest are counted)
_NAMED_REFUSALS = 10

OrderStatus = Literal["pending", "accepted", "partially_filled"]


class ReconcileMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every request and response; ``type`` on the wire is the class tag."""


class OpenOrdersRequest(ReconcileMessage, frozen=True, tag="open_orders_request"):
    """Every order the OMS still works."""


class FillsSinceRequest(ReconcileMessage, frozen=True, tag="fills_since_request"):
    """Every fill with ``ts_event >= since_ns``."""

    since_ns: int


class PositionsRequest(ReconcileMessage, frozen=True, tag="positions_request"):
    """The net position of every instrument the OMS knows (0.0 when flat)."""


class OpenOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One working order: the request as the OMS received it, its status and the
    quantity filled so far. ``pending`` means received but not yet at the venue."""

    order: OrderRequest
    status: OrderStatus
    filled_qty: float
    venue_order_id: str = ""


class OpenOrdersResponse(ReconcileMessage, frozen=True, tag="open_orders"):
    """Answer to ``OpenOrdersRequest``, in the order the OMS received them; ``as_of_ns``
    is the OMS's time of the snapshot (reports after it arrive as usual)."""

    as_of_ns: int
    orders: list[OpenOrder]


class FillsResponse(ReconcileMessage, frozen=True, tag="fills"):
    """Answer to ``FillsSinceRequest``, in booking order."""

    as_of_ns: int
    fills: list[Fill]


class PositionsResponse(ReconcileMessage, frozen=True, tag="positions"):
    """Answer to ``PositionsRequest``: signed quantity by instrument symbol."""

    as_of_ns: int
    positions: dict[str, float]


class RequestFailed(ReconcileMessage, frozen=True, tag="request_failed"):
    """The OMS could not answer (an undecodable request, say)."""

    reason: str


ReconcileRequest = OpenOrdersRequest | FillsSinceRequest | PositionsRequest
ReconcileResponse = OpenOrdersResponse | FillsResponse | PositionsResponse | RequestFailed

_ANSWERS: dict[type[ReconcileMessage], type[ReconcileMessage]] = {
    OpenOrdersRequest: OpenOrdersResponse,
    FillsSinceRequest: FillsResponse,
    PositionsRequest: PositionsResponse,
}


class RefusedAnswer(AdapterError):
    """The OMS's answer could not be decoded, or holds values the checks refuse: nothing
    of it is booked, and the reconciliation does not agree.

    Attributes:
        reason: what was refused (the first few values, by fill id, symbol or order).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"refused answer from the OMS: {reason}")


class _AnyInstrument:
    """Reconciliation answers may name instruments this daemon does not trade (another
    desk's on a shared account): their fills are not refused for it here; a position in
    one is a difference (``adapters.reconciliation.position_differences``)."""

    def __contains__(self, symbol: object) -> bool:
        return True


def answer_refusals(
    answer: ReconcileResponse, received_ns: int, limits: MessageLimits
) -> list[tuple[str, str]]:
    """``(reason, what)`` for every value of ``answer``, received at ``received_ns``, the
    checks refuse (empty: none).

    The fills get the one fill check of live reports (``validation.fill_problem``); an
    open order its quantity, limit price, filled quantity and stamps; a position must be
    finite and bounded; ``as_of_ns`` a time in range.
    """
    out: list[tuple[str, str]] = []
    if isinstance(answer, RequestFailed):
        return out
    problem = timestamp_problem(answer.as_of_ns)
    if problem is not None:
        out.append((problem, f"as_of_ns {answer.as_of_ns}"))
    match answer:
        case FillsResponse():
            for fill in answer.fills:
                problem = fill_problem(fill, received_ns, limits, _AnyInstrument())
                if problem is not None:
                    out.append((problem, f"fill {fill.fill_id!r}: {_fill_text(fill)}"))
        case PositionsResponse():
            for symbol, qty in answer.positions.items():
                problem = position_problem(qty)
                if problem is not None:
                    out.append((problem, f"position {symbol!r}: {qty!r}"))
        case OpenOrdersResponse():
            for held in answer.orders:
                order = held.order
                problem = order_problem(order) or position_problem(held.filled_qty)
                if problem is None and held.filled_qty < 0.0:
                    problem = "non_positive"
                if problem is not None:
                    what = (
                        f"open order {order.client_order_id!r}: qty {order.qty!r}, limit "
                        f"{order.limit_price!r}, filled {held.filled_qty!r}, ts {order.ts_event}"
                    )
                    out.append((problem, what))
    return out


def _fill_text(fill: Fill) -> str:
    return (
        f"qty {fill.qty!r}, price {fill.price!r}, fee {fill.fee!r}, ts_event {fill.ts_event}, "
        f"ts_recv {fill.ts_recv}"
    )


def response_topic(topics: Topics) -> str:
    """Where this daemon asks the OMS to answer: under the account's ``oms/`` tree (which
    the OMS may write to) and per node, so daemons sharing an account never read each
    other's answers."""
    return f"{topics.prefix}oms/{topics.account}/responses/{topics.node}"


class ReconcileCodec:
    """Encodes and decodes reconciliation payloads in one format; built once per stream.

    Args:
        fmt: ``"json"`` or ``"msgpack"``.
        source: named in ``BadMessage`` to say where bad bytes came from.
        limits: the bounds of the checks answers pass (None: the defaults of ``[live]``).
        counters: where refused answers are counted (``bad_messages``,
            ``bad_answer_<reason>`` per refused value; None: a counter of its own).
    """

    def __init__(
        self,
        fmt: Format = "json",
        source: str = "reconcile",
        *,
        limits: MessageLimits | None = None,
        counters: Counter[str] | None = None,
    ) -> None:
        self.format: Format = fmt
        self.source = source
        self.limits = MessageLimits() if limits is None else limits
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder
        self._requests: (
            msgspec.json.Decoder[ReconcileRequest] | msgspec.msgpack.Decoder[ReconcileRequest]
        )
        self._responses: (
            msgspec.json.Decoder[ReconcileResponse] | msgspec.msgpack.Decoder[ReconcileResponse]
        )
        if fmt == "json":
            self._encoder = msgspec.json.Encoder()
            self._requests = msgspec.json.Decoder(ReconcileRequest)
            self._responses = msgspec.json.Decoder(ReconcileResponse)
        elif fmt == "msgpack":
            self._encoder = msgspec.msgpack.Encoder()
            self._requests = msgspec.msgpack.Decoder(ReconcileRequest)
            self._responses = msgspec.msgpack.Decoder(ReconcileResponse)
        else:
            raise ValueError(f"unknown codec format {fmt!r}")

    def encode(self, message: ReconcileMessage) -> bytes:
        return self._encoder.encode(message)

    def decode_request(self, raw: bytes) -> ReconcileRequest:
        """Raises:
        BadMessage: not a reconciliation request in this format.
        """
        try:
            return self._requests.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadMessage(bytes(raw), self.source, str(exc)) from exc
        except RecursionError as exc:  # msgspec's answer to deeply nested input
            raise BadMessage(bytes(raw), self.source, "nested too deeply") from exc

    def decode_response(self, raw: bytes) -> ReconcileResponse:
        """An answer, decoded and checked (``answer_refusals``); never an exception other
        than ``BadMessage``, whatever the bytes.

        Raises:
            BadMessage: not a reconciliation response in this format, or one holding a
                value the checks refuse (each counted ``bad_answer_<reason>``, logged).
        """
        try:
            answer = self._responses.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            self.counters["bad_messages"] += 1
            self.counters["bad_answer_undecodable"] += 1
            why = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
            log.error("reconcile: undecodable answer from the OMS (%s): %r", why, bytes(raw[:200]))
            raise BadMessage(bytes(raw), self.source, why) from exc
        refusals = answer_refusals(answer, wall_clock_ns(), self.limits)
        if not refusals:
            return answer
        self.counters["bad_messages"] += 1
        for reason, _ in refusals:
            self.counters[f"bad_answer_{reason}"] += 1
        named = [f"{what} ({reason})" for reason, what in refusals[:_NAMED_REFUSALS]]
        if len(refusals) > _NAMED_REFUSALS:
            named.append(f"and {len(refusals) - _NAMED_REFUSALS} more")
        reason = f"{type(answer).__name__} with {len(refusals)} refused values: " + "; ".join(named)
        log.error("reconcile: %s", reason)
        raise BadMessage(bytes(raw), self.source, reason)


class PendingRequests:
    """Requests in flight by correlation data. A session that reads its client's messages
    itself hands every message on ``response_topic`` to ``resolve``; ``request`` waits on
    the future ``open`` returned.

    Args:
        codec: decoder of the answers (the format the requests are sent in).
    """

    def __init__(self, codec: ReconcileCodec) -> None:
        self.codec = codec
        self._waiting: dict[bytes, asyncio.Future[ReconcileResponse]] = {}
        self.unmatched = 0  # answers to no request in flight (late, or someone else's)
        self.bad = 0  # undecodable answers
        self.ignored = 0  # other messages ``request`` read while it owned the stream

    def open(self) -> tuple[bytes, asyncio.Future[ReconcileResponse]]:
        """A fresh correlation id (16 random bytes) and the future its answer resolves."""
        correlation = os.urandom(16)
        future: asyncio.Future[ReconcileResponse] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = future
        return correlation, future

    def close(self, correlation: bytes) -> None:
        self._waiting.pop(correlation, None)

    def fail_all(self, error: AdapterError) -> None:
        """Fail every request in flight (the connection is gone)."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

    def resolve(self, message: aiomqtt.Message) -> bool:
        """Hand an answer to the request waiting for it; False if none waits (counted)."""
        correlation = getattr(message.properties, "CorrelationData", None)
        future = self._waiting.pop(bytes(correlation), None) if correlation else None
        if future is None or future.done():
            self.unmatched += 1
            log.warning("reconcile: an answer on %s matches no request in flight", message.topic)
            return False
        try:
            future.set_result(self.codec.decode_response(_payload(message)))
        except BadMessage as exc:
            self.bad += 1
            future.set_exception(RefusedAnswer(exc.reason))
        return True


@overload
async def request(
    client: aiomqtt.Client,
    topics: Topics,
    req: OpenOrdersRequest,
    timeout_s: float,
    *,
    codec: ReconcileCodec | None = None,
    pending: PendingRequests | None = None,
) -> OpenOrdersResponse: ...
@overload
async def request(
    client: aiomqtt.Client,
    topics: Topics,
    req: FillsSinceRequest,
    timeout_s: float,
    *,
    codec: ReconcileCodec | None = None,
    pending: PendingRequests | None = None,
) -> FillsResponse: ...
@overload
async def request(
    client: aiomqtt.Client,
    topics: Topics,
    req: PositionsRequest,
    timeout_s: float,
    *,
    codec: ReconcileCodec | None = None,
    pending: PendingRequests | None = None,
) -> PositionsResponse: ...
async def request(
    client: aiomqtt.Client,
    topics: Topics,
    req: ReconcileRequest,
    timeout_s: float,
    *,
    codec: ReconcileCodec | None = None,
    pending: PendingRequests | None = None,
) -> ReconcileResponse:
    """Ask the OMS one reconciliation question and wait for its answer.

    Args:
        client: a connected MQTT 5 client.
        topics: the topic contract (prefix, account, node).
        req: the question.
        timeout_s: how long to wait for the answer.
        codec: the payload format (default JSON); ignored when ``pending`` is given.
        pending: the requests in flight of a session that reads the client's messages
            itself and routes answers to it. Without it, this call reads
            ``client.messages`` until the answer comes, so nothing else may read them
            meanwhile (a tool, a test); other messages read meanwhile are logged.

    Returns:
        The answer of the type that matches ``req``.

    Raises:
        RefusedAnswer: an undecodable answer, or one holding values the checks refuse
            (an ``AdapterError``).
        AdapterError: no answer within ``timeout_s``, the OMS answered ``RequestFailed``
            or with the wrong type, or a broker error.
    """
    own_reader = pending is None
    if pending is None:
        pending = PendingRequests(codec or ReconcileCodec())
    answer_topic = response_topic(topics)
    correlation, future = pending.open()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = answer_topic
    props.CorrelationData = correlation
    name = type(req).__name__
    reader: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(timeout_s):
            await client.subscribe(answer_topic, qos=1)
            if own_reader:
                reader = asyncio.create_task(
                    _read_answers(client, answer_topic, pending), name="reconcile-answers"
                )
            payload = pending.codec.encode(req)
            await client.publish(topics.requests, payload, qos=1, properties=props)
            answer = await future
    except TimeoutError as exc:
        raise AdapterError(f"no answer from the OMS to {name} within {timeout_s:g} s") from exc
    except aiomqtt.MqttError as exc:
        raise AdapterError(f"reconciliation request {name} failed: {exc}") from exc
    finally:
        pending.close(correlation)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    if isinstance(answer, RequestFailed):
        raise AdapterError(f"the OMS could not answer {name}: {answer.reason}")
    if type(answer) is not _ANSWERS[type(req)]:
        raise AdapterError(f"the OMS answered {name} with {type(answer).__name__}")
    return answer


async def _read_answers(
    client: aiomqtt.Client, answer_topic: str, pending: PendingRequests
) -> None:
    try:
        async for message in client.messages:
            if message.topic.matches(answer_topic):
                pending.resolve(message)
            else:
                pending.ignored += 1
                log.warning(
                    "reconcile: ignored a message on %s while waiting for an answer", message.topic
                )
    except aiomqtt.MqttError as exc:
        pending.fail_all(AdapterError(f"lost the broker while waiting for the OMS: {exc}"))


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else str(payload).encode()
