"""Which daemon is gone, from its statuses (cancel-on-disconnect's rules)."""

from __future__ import annotations

import pytest

from adapters.mqtt.status import Status, encode_status, offline_payload
from adapters.tools.oms.disconnect import CancelOnDisconnect, NodeWatch

TOPIC = "tradeloop/n1/status"


def _online(node: str = "n1") -> bytes:
    return encode_status(Status(node=node, mode="live", state="ACTIVE", online=True, ts_ns=1,
                                positions={}, pnl=0.0, heartbeat_seq=1))  # fmt: skip


def test_node_watch_offline_status_names_the_node_once() -> None:
    watch = NodeWatch(CancelOnDisconnect(enabled=True))
    assert watch.is_status(TOPIC) and not watch.is_status("oms/a1/orders")
    assert watch.on_status(TOPIC, _online(), 0.0) is None
    assert watch.on_status(TOPIC, offline_payload("n1"), 1.0) == (
        "n1", "cancel-on-disconnect: status offline"
    )  # fmt: skip


def test_node_watch_heartbeat_lapse_reported_once_until_online_again() -> None:
    watch = NodeWatch(CancelOnDisconnect(enabled=True, heartbeat_lapse_s=2.0))
    watch.on_status(TOPIC, _online(), 10.0)
    assert watch.lapsed(11.9) == []
    ((node, reason),) = watch.lapsed(12.5)
    assert node == "n1" and "heartbeat lapsed" in reason
    assert watch.lapsed(20.0) == []
    watch.on_status(TOPIC, _online(), 21.0)
    assert [n for n, _ in watch.lapsed(23.5)] == ["n1"]


def test_cancel_on_disconnect_lapse_not_positive_refused() -> None:
    with pytest.raises(ValueError, match="heartbeat_lapse_s"):
        CancelOnDisconnect(enabled=True, heartbeat_lapse_s=0.0)
