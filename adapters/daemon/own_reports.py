"""Several daemons on one OMS account: each books only its own orders' reports.

The OMS publishes every execution report of an account on one topic
(``oms/{account}/reports``), so every daemon trading the account hears all of them. Booked
by the wrong daemon, another node's fill moved its position and, as a fill on an order it
never sent, set a sticky REDUCE_ONLY. A daemon therefore books a report only if its client
order id is under this node's prefix (``{node}-``: the ids are ``{node}-{session}-{n}``,
every session of the node included) or names an order its engine knows (one adopted from
the OMS). Anything else belongs to another node, or to someone trading the account by
hand: counted (``reports_other_node``), never journaled. The decision is made before the
journal, so a replay needs nothing: what was never journaled never reached the engine.

Why the prefix and not per-node report topics: the OMS contract stays as it is (one
reports topic per account, served by any OMS that echoes client order ids), nothing new is
subscribed or granted in the broker's ACL, and the decision rests on what the report
carries and what the engine holds. It needs node names that are not prefixes of one
another's ids: ``[live] node`` is letters, digits and ``_`` only (``engine.config``).
"""

from __future__ import annotations

import logging

from engine.engine import Engine
from engine.ports import ExecutionReport

log = logging.getLogger("tradeloop.daemon")


class OwnReports:
    """Says whether a report is this daemon's to book.

    Args:
        node: ``[live] node``.
        engine: the daemon's engine (the orders it knows).
    """

    def __init__(self, node: str, engine: Engine) -> None:
        self.prefix = f"{node}-"
        self._engine = engine
        self._told = False

    def __call__(self, report: ExecutionReport) -> bool:
        cid = report.client_order_id
        if cid.startswith(self.prefix) or self._engine.orders.find(cid) is not None:
            return True
        if not self._told:  # the normal case on a shared account: said once, then counted
            self._told = True
            log.info("reports for orders of other nodes on this account (first: %r) are "
                     "not booked; counted in reports_other_node", cid[:64])  # fmt: skip
        return False


__all__ = ["OwnReports"]
