"""Which reports a daemon books on a shared account (no broker): its node's orders, of
every session, and the orders its engine knows (adopted); nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.daemon.core import apply_input
from adapters.daemon.own_reports import OwnReports
from engine.config import load_config
from engine.errors import ConfigError
from engine.events import OrderAccepted, OrderRequest
from engine.journal import ExternalOrder
from tests.adapters.test_reconciliation import T, _config, _engine


def _ack(cid: str) -> OrderAccepted:
    return OrderAccepted(ts_event=T, ts_recv=T, client_order_id=cid, venue_order_id="v")


def test_own_reports_node_prefix_or_known_order_only(tmp_path: Path) -> None:
    engine, _, _, _ = _engine(tmp_path)
    owns = OwnReports("n", engine)
    external = OrderRequest(ts_event=T, ts_recv=T, client_order_id="ext-1", instrument="BTC",
                            side="buy", qty=1.0, order_type="limit", limit_price=99.0)  # fmt: skip
    assert not owns(_ack("ext-1"))
    apply_input(engine, T, ExternalOrder(order=external, status="accepted", filled_qty=0.0))
    assert engine.orders.find("ext-1") is not None  # adopted: booked from now on
    assert owns(_ack("ext-1"))
    assert owns(_ack("n-s-00000001"))  # this session's (the engine's prefix is "n-s")
    assert owns(_ack("n-older-00000009"))  # an earlier session of this node
    for other in ("n2-s-00000001", "m-s-1", "n", "ns-1", "", "x-n-s-1"):
        assert not owns(_ack(other)), other


@pytest.mark.parametrize("node", ["n-1", "a/b", "+", "#", "", "n 1", "n:1"])
def test_config_node_that_could_prefix_another_or_break_a_topic_is_config_error(
    tmp_path: Path, node: str
) -> None:
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("[live]\n", f'[live]\nnode = "{node}"\n'))
    with pytest.raises(ConfigError, match=r"live\.node"):
        load_config(path)
