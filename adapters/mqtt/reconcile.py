"""Reconciliation with the OMS over MQTT 5 request/response (issue 11.1).

Before trading, the daemon asks the OMS what it holds: open orders, fills since a time,
positions. A request goes to ``topics.requests`` carrying two MQTT 5 properties, a
``ResponseTopic`` and ``CorrelationData``; the OMS publishes its answer on that response
topic with the same correlation data, which is how an answer finds its question.

Payloads are a tagged union of frozen structs (``type`` on the wire), JSON or MessagePack
like every other payload. An OMS that cannot answer says so with ``RequestFailed``,
which ``request`` raises as an ``AdapterError``; no answer in time is one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Literal, overload

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.topics import Topics
from engine.codec import Format
from engine.errors import AdapterError, BadMessage
from engine.events import Fill, OrderRequest

log = logging.getLogger(__name__)

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
    """

    def __init__(self, fmt: Format = "json", source: str = "reconcile") -> None:
        self.format: Format = fmt
        self.source = source
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

    def decode_response(self, raw: bytes) -> ReconcileResponse:
        """Raises:
        BadMessage: not a reconciliation response in this format.
        """
        try:
            return self._responses.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadMessage(bytes(raw), self.source, str(exc)) from exc


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
            future.set_exception(AdapterError(f"undecodable answer from the OMS: {exc.reason}"))
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
        AdapterError: no answer within ``timeout_s``, the OMS answered ``RequestFailed``
            or with the wrong type, an undecodable answer, or a broker error.
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
