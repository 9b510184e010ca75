"""Reconciliation with the OMS at the start and after reconnects
(``adapters.reconciliation``): fetched in the background, applied by the consumer between
turns, every input journaled.

At the start of a live session nothing is published and nothing consumed until the OMS
has been asked (a first session only starts a background fetch: nothing of ours to
check, the OMS may still hold positions). After a reconnect the reports sent while the
daemon was away are lost, so the OMS is asked again; an OMS that does not answer halts
trading as at a restart, and is asked again until it does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from adapters.daemon.background import Background
from adapters.daemon.core import LiveCore
from adapters.mqtt.reconcile import RefusedAnswer
from adapters.reconciliation import (
    ClaimHolder,
    ExternalOrders,
    FillLedger,
    OmsSnapshot,
    adoptions,
    missed_fills,
    order_reports,
    position_differences,
    unanswered,
    verdict,
)
from engine.config import Config
from engine.engine import Engine
from engine.errors import AdapterError

log = logging.getLogger("tradeloop.daemon")

ReconcileFetch = Callable[[int, float], Awaitable[OmsSnapshot]]
"""Asks the OMS for its snapshot: fills since a time (ns), with a timeout per request (s).
Raises ``AdapterError``."""


class Reconciler:
    """Asks the OMS what it holds and turns the differences into journaled inputs.

    Args:
        config: the session's config (``mode``, ``[live]`` reconciliation settings).
        engine: the engine (its open orders and positions are compared).
        ledger: the fills the engine booked.
        claims: the trading-state claims the daemon holds.
        receive_clock: stamps the inputs reconciliation makes.
        background: where the fetch runs and how the consumer is woken.
        fetch: asks the OMS (None: no reconciliation).
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        ledger: FillLedger,
        claims: ClaimHolder,
        receive_clock: Callable[[], int],
        background: Background,
        fetch: ReconcileFetch | None = None,
    ) -> None:
        self.live = config.mode == "live"
        self.engine = engine
        self.ledger = ledger
        self.claims = claims
        self.receive_clock = receive_clock
        self.background = background
        self.fetch = fetch
        # orders the OMS has and we never sent: flagged (an Alarm) or adopted as ours
        self.external_orders: ExternalOrders = config.live.external_orders
        self.timeout_s = config.live.reconcile_timeout_s
        self.retry_s = config.live.reconcile_retry_s
        self.lookback_ns = config.live.reconcile_lookback_ns
        self.counts: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._result: tuple[OmsSnapshot | AdapterError, set[str] | None, int] | None = None
        self._due: float | None = None
        self._after_reconnect = False  # a reconciliation after a reconnect has not succeeded
        self._retries = 0

    async def at_start(self, core: LiveCore, *, first_session: bool) -> None:
        """Before anything is published or consumed (live mode with a fetch only)."""
        if not self.live or self.fetch is None:
            return
        if first_session:
            # a first session: nothing of ours to check, the OMS may still hold positions
            self.start(asked_open=False)
            return
        t0 = time.perf_counter()
        mark = len(self.ledger.entries)
        try:
            snapshot = await self.fetch(self._since(), self.timeout_s)
        except AdapterError as exc:
            self._failed(core, exc, halt=True)
            return
        self._apply(core, snapshot, None, mark)
        self.counts["start_ms"] = round((time.perf_counter() - t0) * 1000)

    def start(self, *, asked_open: bool) -> None:
        """Ask the OMS in the background (once the session is up, one fetch at a time;
        live mode only: paper and shadow have no OMS to agree with, and a question nobody
        answers after a reconnect ended in a kill nothing lifts)."""
        fetch = self.fetch
        tasks = self.background.tasks
        if not self.live or fetch is None or tasks is None or self._task is not None:
            return
        self._due = None
        asked = (
            {o.client_order_id for o in self.engine.orders.open_orders()} if asked_open else None
        )
        mark = len(self.ledger.entries)
        since = self._since()

        async def run() -> None:
            result: OmsSnapshot | AdapterError
            try:
                result = await fetch(since, self.timeout_s)
            except AdapterError as exc:
                result = exc
            self._result = (result, asked, mark)
            self._task = None
            self.background.wake()

        self._task = tasks.create_task(run(), name="reconciliation")

    def after_reconnect(self) -> None:
        """The session came back: reports sent while we were away are lost, ask the OMS."""
        if self._task is not None:  # asked over the lost connection
            self._task.cancel()
            self._task = None
        self._after_reconnect = True
        self.start(asked_open=True)

    def retry_if_due(self, now: float) -> None:
        """At a heartbeat (``now``: loop time): ask again once a retry is due."""
        if self._due is not None and now >= self._due:
            self.start(asked_open=True)

    def finish(self, core: LiveCore) -> None:
        """Between turns: apply what the background fetch found, if it is back."""
        if self._result is None:
            return
        result, asked, mark = self._result
        self._result = None
        if isinstance(result, AdapterError):
            # after a reconnect nobody knows what became of the orders in flight: an OMS
            # that does not answer halts trading as at a restart, and is asked again until
            # it does (a fresh feed alone must not bring back ACTIVE on a wrong position)
            # a refused answer (bad values, undecodable) does not agree, whenever it comes
            refused = isinstance(result, RefusedAnswer)
            self._failed(core, result, halt=self._after_reconnect or refused)
        else:
            self._apply(core, result, asked, mark)

    def _since(self) -> int:
        # keyed on our receipt times, never on the OMS's stamps (``FillLedger``)
        return self.ledger.window_start_ns(self.receive_clock(), self.lookback_ns)

    def cancel(self) -> None:
        """The session ends: a fetch still under way is dropped."""
        if self._task is not None:
            self._task.cancel()

    def _failed(self, core: LiveCore, error: AdapterError, *, halt: bool) -> None:
        self.counts["failed"] += 1
        log.error("reconciliation: %s", error)
        if halt and not self.claims.held_by_reconciliation():
            ts = max(self.receive_clock(), core.last_ts)
            core.inject(ts, unanswered(error, ts), "command")
        if self.claims.held_by_reconciliation() or self._retries < 3:
            self._retries += 1
            self._due = asyncio.get_running_loop().time() + self.retry_s

    def _apply(
        self, core: LiveCore, snapshot: OmsSnapshot, asked: set[str] | None, mark: int
    ) -> None:
        engine = self.engine
        ts = max(self.receive_clock(), core.last_ts)
        fills = missed_fills(self.ledger, snapshot)
        adopted = adoptions(engine, snapshot, fills) if self.external_orders == "adopt" else []
        if adopted:  # before the fills: an adopted order's fills then find their order
            core.inject_all([(ts, external, "adopt") for external in adopted])
        # a fill the OMS reports on an instrument this daemon does not trade cannot be
        # booked (booking it halted the daemon): counted, as a live one is refused. A fill
        # on an order we do not know is booked as before ([live] external_orders = "flag":
        # a position the engine did not decide, so it reduces only)
        traded = [f for f in fills if f.instrument in engine.instruments.index]
        self.counts["fills_unknown_instrument"] += len(fills) - len(traded)
        fills = traded
        if fills:
            core.inject_all([(ts, fill, "report") for fill in fills])
        reports = order_reports(engine, snapshot, ts, asked=asked, external=self.external_orders)
        if reports:
            core.inject_all([(ts, report, "report") for report in reports])
        known = {fill.fill_id for fill in snapshot.fills}
        differences = position_differences(engine, snapshot, self.ledger.booked_after(mark, known))
        command = verdict(differences, self.claims, ts)
        if command is not None:
            core.inject(ts, command, "command")
        self._retries = 0
        self._after_reconnect = False
        counts = self.counts
        counts["runs"] += 1
        counts["missed_fills"] += len(fills)
        counts["adopted"] += len(adopted)
        counts["order_reports"] += len(reports)
        counts["position_differences"] += len(differences)
        log.info("reconciliation: %d missed fills applied, %d order reports, %d position "
                 "differences", len(fills), len(reports), len(differences),
                 extra={"reads": snapshot.reads, "verdict": command.action if command else ""})  # fmt: skip
        if self.claims.held_by_reconciliation():
            self._due = asyncio.get_running_loop().time() + self.retry_s


__all__ = ["ReconcileFetch", "Reconciler"]
