"""The OMS contract's topics (DESIGN.md), with a configurable prefix.

=====================================  ====  ======================================
topic                                  dir   payload
=====================================  ====  ======================================
``{p}md/{venue}/{symbol}/quote``       in    ``Quote`` (QoS 0 by default)
``{p}md/{venue}/{symbol}/trade``       in    ``Trade``
``{p}md/{venue}/{symbol}/depth``       in    ``DepthUpdate`` (L2 diff with update ids)
``{p}oms/{account}/orders``            out   ``OrderRequest`` / ``CancelRequest`` (QoS 1)
``{p}oms/{account}/reports``           in    execution reports (QoS 1)
``{p}oms/{account}/requests``          out   reconciliation requests (MQTT 5 request/response)
``{p}tradeloop/{node}/command``        in    ``Command`` (QoS 1, signed)
``{p}tradeloop/{node}/status``         out   status, retained; last will ``offline``
=====================================  ====  ======================================

``{p}`` is ``topic_prefix`` (empty by default; give it with its trailing ``/``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic one daemon uses, built once from the config."""

    prefix: str = ""
    node: str = "node1"
    account: str = "acct1"

    def quote(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}md/{venue}/{symbol}/quote"

    def trade(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}md/{venue}/{symbol}/trade"

    def depth(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}md/{venue}/{symbol}/depth"

    def market_data(self, venue: str, symbol: str) -> str:
        """Subscription filter for every kind of one instrument (quote, trade, depth)."""
        return f"{self.prefix}md/{venue}/{symbol}/+"

    @property
    def orders(self) -> str:
        return f"{self.prefix}oms/{self.account}/orders"

    @property
    def reports(self) -> str:
        return f"{self.prefix}oms/{self.account}/reports"

    @property
    def requests(self) -> str:
        return f"{self.prefix}oms/{self.account}/requests"

    @property
    def command(self) -> str:
        return f"{self.prefix}tradeloop/{self.node}/command"

    @property
    def status(self) -> str:
        return f"{self.prefix}tradeloop/{self.node}/status"

    def parse_market_data(self, topic: str) -> tuple[str, str, str] | None:
        """``(venue, symbol, kind)`` of a market-data topic, or None if it is not one."""
        head = f"{self.prefix}md/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or parts[2] not in ("quote", "trade", "depth"):
            return None
        return parts[0], parts[1], parts[2]
