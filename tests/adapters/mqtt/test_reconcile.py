"""Reconciliation answers pass the checks of live reports (no broker): an answer with a
value the checks refuse is refused whole, counted by reason and never booked; the
request raises ``RefusedAnswer`` (issue 19, item 7, the payload half)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest

from adapters.mqtt.reconcile import (
    FillsResponse,
    OpenOrder,
    OpenOrdersResponse,
    PendingRequests,
    PositionsResponse,
    ReconcileCodec,
    RefusedAnswer,
    RequestFailed,
    answer_refusals,
)
from adapters.mqtt.validation import MessageLimits
from engine.codec import Format
from engine.errors import AdapterError, BadMessage
from engine.events import Fill, OrderRequest

S = 1_000_000_000
T = 1_700_000_000 * S
FORMATS: list[Format] = ["json", "msgpack"]


def _fill(fill_id: str = "f1", **kw: Any) -> Fill:
    values: dict[str, Any] = {
        "ts_event": T,
        "ts_recv": T,
        "client_order_id": "n1-s-1",
        "fill_id": fill_id,
        "instrument": "BTC",
        "side": "buy",
        "qty": 1.0,
        "price": 100.0,
        "fee": 0.01,
        "liquidity": "taker",
    }
    values.update(kw)
    return Fill(**values)


def _open(**kw: Any) -> OpenOrder:
    order: dict[str, Any] = {
        "ts_event": T,
        "ts_recv": T,
        "client_order_id": "ext-1",
        "instrument": "BTC",
        "side": "buy",
        "qty": 2.0,
        "order_type": "limit",
        "limit_price": 99.0,
    }
    filled = kw.pop("filled_qty", 0.0)
    order.update(kw)
    return OpenOrder(order=OrderRequest(**order), status="accepted", filled_qty=filled)


# the fills of the issue, each booked before: a position of 1e308, PnL -1.8e308
BAD_FILLS = [
    ({"qty": -1.0}, "non_positive"),
    ({"qty": 0.0}, "non_positive"),
    ({"price": 0.0}, "non_positive"),
    ({"qty": 1e308}, "size_bounds"),
    ({"fee": -1e6}, "fee_bounds"),
    ({"fee": 1e308}, "fee_bounds"),
    ({"price": 1e-320}, "price_bounds"),
    ({"ts_event": T // 1000}, "ts_unit"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("values", "reason"), BAD_FILLS, ids=[r for _, r in BAD_FILLS])
def test_reconcile_answer_with_bad_fill_refused_whole_counted(
    fmt: Format, values: dict[str, Any], reason: str
) -> None:
    counters: Counter[str] = Counter()
    codec = ReconcileCodec(fmt, counters=counters)
    answer = FillsResponse(as_of_ns=T, fills=[_fill("good"), _fill("bad", **values)])
    with pytest.raises(BadMessage, match="'bad'"):
        codec.decode_response(codec.encode(answer))
    assert counters == {"bad_messages": 1, f"bad_answer_{reason}": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_reconcile_clean_answers_pass_unchanged(fmt: Format) -> None:
    codec = ReconcileCodec(fmt)
    answers = [
        FillsResponse(as_of_ns=T, fills=[_fill(), _fill("rebate", fee=-0.01)]),
        PositionsResponse(as_of_ns=T, positions={"BTC": -2.5, "ETH": 0.0}),
        OpenOrdersResponse(as_of_ns=T, orders=[_open(), _open(limit_price=None, filled_qty=1.0)]),
        RequestFailed(reason="busy"),
    ]
    for answer in answers:
        assert codec.decode_response(codec.encode(answer)) == answer
    assert codec.counters == {}


@pytest.mark.parametrize(
    ("positions", "reason"),
    [
        ({"BTC": math.nan}, "non_finite"),
        ({"BTC": math.inf}, "non_finite"),
        ({"BTC": -1e308}, "size_bounds"),
    ],
)
def test_reconcile_answer_non_finite_or_huge_position_refused(
    positions: dict[str, float], reason: str
) -> None:
    # a NaN position compared equal to anything and lifted the reconciliation kill
    codec = ReconcileCodec("msgpack")
    raw = codec.encode(PositionsResponse(as_of_ns=T, positions={"ETH": 1.0, **positions}))
    with pytest.raises(BadMessage, match="position 'BTC'"):
        codec.decode_response(raw)
    assert codec.counters[f"bad_answer_{reason}"] == 1


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"qty": -2.0}, "non_positive"),
        ({"qty": math.nan}, "non_finite"),
        ({"limit_price": 0.0}, "non_positive"),
        ({"limit_price": 1e13}, "price_bounds"),
        ({"filled_qty": -1.0}, "non_positive"),
        ({"filled_qty": math.inf}, "non_finite"),
        ({"ts_event": 2**63}, "ts_range"),
    ],
)
def test_reconcile_answer_nonsense_open_order_refused(values: dict[str, Any], reason: str) -> None:
    answer = OpenOrdersResponse(as_of_ns=T, orders=[_open(), _open(**values)])
    assert [r for r, _ in answer_refusals(answer, T, MessageLimits())] == [reason]


@pytest.mark.parametrize("as_of_ns", [0, -1, 2**63, T // S])
def test_reconcile_answer_as_of_out_of_range_refused(as_of_ns: int) -> None:
    answer = PositionsResponse(as_of_ns=as_of_ns, positions={})
    assert len(answer_refusals(answer, T, MessageLimits())) == 1


def test_reconcile_answer_fee_bound_follows_limits() -> None:
    fill = _fill(fee=0.5)  # 50 bps of a notional of 100
    answer = FillsResponse(as_of_ns=T, fills=[fill])
    assert answer_refusals(answer, T, MessageLimits(max_fee_bps=50.0)) == []
    assert [r for r, _ in answer_refusals(answer, T, MessageLimits(max_fee_bps=49.0))] == [
        "fee_bounds"
    ]


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_reconcile_deeply_nested_answer_refused_as_undecodable(depth: int) -> None:
    codec = ReconcileCodec("json")
    raw = b'{"type":"fills","as_of_ns":1,"x":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(BadMessage, match="nested"):
        codec.decode_response(raw)
    assert codec.counters["bad_answer_undecodable"] == 1


def test_reconcile_many_refused_values_named_up_to_ten_all_counted() -> None:
    codec = ReconcileCodec("json")
    answer = FillsResponse(as_of_ns=T, fills=[_fill(f"f{i}", qty=-1.0) for i in range(25)])
    with pytest.raises(BadMessage) as caught:
        codec.decode_response(codec.encode(answer))
    assert "25 refused values" in caught.value.reason and "and 15 more" in caught.value.reason
    assert codec.counters["bad_answer_non_positive"] == 25


class _Properties:
    def __init__(self, correlation: bytes) -> None:
        self.CorrelationData = correlation


class _Message:
    def __init__(self, payload: bytes, correlation: bytes) -> None:
        self.payload = payload
        self.properties = _Properties(correlation)
        self.topic = "oms/a1/responses/n1"


@pytest.mark.asyncio
async def test_pending_request_refused_answer_raises_refused_answer() -> None:
    codec = ReconcileCodec("json")
    pending = PendingRequests(codec)
    correlation, future = pending.open()
    bad = codec.encode(FillsResponse(as_of_ns=T, fills=[_fill(qty=-1.0)]))
    assert pending.resolve(_Message(bad, correlation))  # type: ignore[arg-type]
    with pytest.raises(RefusedAnswer, match="refused answer from the OMS") as caught:
        await asyncio.wait_for(future, 1)
    assert isinstance(caught.value, AdapterError) and "non_positive" in caught.value.reason
    assert pending.bad == 1
