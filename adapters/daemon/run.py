"""The live composition root (``tradeloop run``): a ``Daemon`` builds the session's parts
from the config, rebuilds the engine from the journal, connects, consumes the inbox turn by
turn (``adapters.daemon.core``) and stops gracefully.

The consumer is the one task that reaches the engine: item turns, heartbeats, and between
turns what the background work found (reconciliation, model switches); it sleeps until the
next heartbeat when the inbox is empty, and the background work wakes it
(``adapters.daemon.background``).

With ``[live] dashboard`` the daemon serves its page on the same event loop
(``adapters.dashboard``): the loop only flags a change after each turn and heartbeat; the
page's actions enter through the session's command ingest like commands from the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Final

from adapters.daemon.assembly import SwitchSender, build_live_engine, build_router, warm_up
from adapters.daemon.background import Background
from adapters.daemon.core import DecisionLog, FeedMonitor, JournalFailed, LiveCore, ReceiveClock
from adapters.daemon.disk_watch import DiskWatermark
from adapters.daemon.explaining import ExplanationHandOff
from adapters.daemon.own_reports import OwnReports
from adapters.daemon.rebuild import HISTORY_PER_SESSION, rebuild
from adapters.daemon.reconcile import ReconcileFetch, Reconciler
from adapters.daemon.session import (
    LiveSession,
    SessionFactory,
    SessionFiles,
    mqtt_session,
    mqtt_settings,
    new_session_id,
    write_session_files,
)
from adapters.daemon.snapshots import SnapshotTaker, snapshot_extras
from adapters.daemon.status import StatusBoard, write_model_summary
from adapters.daemon.switching import ModelGovernance, model_switcher, session_pins
from adapters.dashboard.live import LiveDashboard
from adapters.explanations import ExplanationWorker
from adapters.journal_file import FileJournalWriter
from adapters.live_sender import Outgoing, QueueSender, ShadowSender
from adapters.metrics import DaemonMetrics
from adapters.mqtt.command_guard import CommandGuard
from adapters.mqtt.ingest import Inbound
from adapters.mqtt.status import encode_status, offline_payload
from adapters.mqtt.topics import Topics
from adapters.reconciliation import (
    SHUTDOWN_REASON,
    ClaimHolder,
    FillLedger,
    History,
    OmsSnapshot,
    fetch_over_mqtt,
)
from engine.config import Config, load_config
from engine.errors import ConfigError, TradeloopError
from engine.events import CancelRequest, Command, OrderRequest
from engine.ports import SendOnly
from engine.units import parse_duration_ns

log = logging.getLogger("tradeloop.daemon")

LIVE_MODES: Final = ("shadow", "paper", "live")
# items taken per turn: bounds how long one turn holds the loop (the broker's reader and
# the order publisher wait meanwhile) while still amortising one commit over many items
MAX_TURN_ITEMS: Final = 1024
# latencies kept raw for percentiles (bench, logs): about 8 MB at most
_LATENCY_SAMPLES = 1_000_000


class Daemon:
    """One live session: composition, the loop, a graceful stop.

    Build with ``Daemon.create``; run with ``run``.
    """

    def __init__(
        self,
        config: Config,
        config_bytes: bytes,
        *,
        receive_clock: Callable[[], int],
        session_factory: SessionFactory,
        reconcile_fetch: ReconcileFetch | None = None,
        explain: bool | None = None,
    ) -> None:
        if config.mode not in LIVE_MODES:
            raise ConfigError(
                "mode", f"tradeloop run needs shadow, paper or live, got {config.mode!r}"
            )
        self.config = config
        self.config_bytes = config_bytes
        self.receive_clock = receive_clock
        self.session_factory = session_factory
        self.settings = mqtt_settings(config)  # secrets checked before anything starts
        self.start_ns = receive_clock()
        # never at or below an id already in the journal folder (a clock stepped back)
        self.session_id = new_session_id(self.start_ns, Path(config.journal.dir))
        self.accept_journal_loss = False  # ``--accept-journal-loss``: see FileJournalWriter
        self.order_id_prefix = f"{config.live.node}-{self.session_id}"
        self.topics = Topics(config.mqtt.topic_prefix, config.live.node, config.live.account)
        self.latencies_ns: deque[int] = deque(maxlen=_LATENCY_SAMPLES)
        # publish times for metrics (never the engine's), on the line of the receive times
        # that stamp the orders, so a wall-clock step does not skew the latencies
        self._wall = receive_clock
        self.sender = (
            QueueSender(config.mqtt.outbox_size, wall_clock=self._wall,
                        on_published=self._published)
            if config.mode == "live" else None
        )  # fmt: skip
        # nothing leaves while the journal's history is applied (paper: the venue is ours)
        self.switch = SwitchSender()
        router = build_router(config, None) if config.mode == "paper" else SendOnly(self.switch)
        # the registry versions this session runs, resolved once and recorded in the
        # session file, so its replay runs them whatever the aliases name by then
        self.pins = session_pins(config)
        self.switcher = model_switcher(config, self.pins)
        self.engine = build_live_engine(
            config, router, order_id_prefix=self.order_id_prefix, pins=self.pins
        )
        self.background = Background()
        self.governance = ModelGovernance(
            config, self.engine, self.pins, self.switcher, receive_clock, self.background
        )
        self.models = self.governance.models
        self.model_switches = self.governance.switches
        # ``[live] explain`` unless the caller decides (tests, benchmarks)
        self.explanations = ExplanationHandOff(
            config, self.engine, enabled=config.live.explain if explain is None else explain
        )
        self.ledger = FillLedger(self.engine.clock)  # receipt times: the engine runs on them
        self.claims = ClaimHolder(self.engine)
        # remembers every command the engine applies, the rebuild's too: a copy of one
        # applied before a restart is refused as a duplicate
        self.command_guard = CommandGuard(config.live.command_max_age_ns)
        self.engine.sinks += [self.ledger, self.command_guard]
        self.reconciler = Reconciler(
            config, self.engine, self.ledger, self.claims, receive_clock, self.background,
            fetch=reconcile_fetch,
        )  # fmt: skip
        self.reconciliation = self.reconciler.counts
        self.history = History()
        extras = snapshot_extras(self.ledger, self.command_guard, self.switcher)
        self.snapshot_taker = SnapshotTaker(
            config, hashlib.sha256(config_bytes).hexdigest(), self.pins, self.engine, extras,
            self.background,
        )  # fmt: skip
        self.snapshot_key = self.snapshot_taker.key
        self.snapshots = self.snapshot_taker.counts  # written, failed
        self.rebuild_ms = 0
        warm_up(config, self.engine.strategy.thresholds())
        self.metrics = DaemonMetrics(self.engine.instruments.symbols)
        self.status_board = StatusBoard(config, self.engine, self.metrics, self.pins, self.models)
        self.metrics_port: int | None = None
        # ``[live] dashboard``: built here so a bad token fails before anything starts
        self.dashboard = (
            LiveDashboard(config, self.engine, self.settings, self.topics, receive_clock,
                          self.metrics)
            if config.live.dashboard else None
        )  # fmt: skip
        self.dashboard_url: str | None = None
        self.files: SessionFiles | None = None
        self.core: LiveCore | None = None
        self.fatal: JournalFailed | None = None  # the journal failed: cancel, then exit
        self.session: LiveSession | None = None  # while connected

    @classmethod
    def create(
        cls,
        config_path: str | Path,
        *,
        receive_clock: Callable[[], int] | None = None,
        session_factory: SessionFactory | None = None,
        reconcile_fetch: ReconcileFetch | None = None,
        explain: bool | None = None,
    ) -> Daemon:
        """Load and validate the config, resolve plugins and secrets: no I/O beyond reading.

        Without a ``session_factory`` the daemon talks to the broker of the config and
        reconciles over it (``reconcile_fetch`` default); a test's own session
        reconciles only through the ``reconcile_fetch`` it passes.

        Raises:
            ConfigError, PluginLoadError, ModelError: the config cannot run.
        """
        config, _ = load_config(config_path)
        daemon = cls(
            config,
            Path(config_path).read_bytes(),
            receive_clock=receive_clock
            or ReceiveClock(jump_ns=config.live.clock_jump_ns, policy=config.live.on_clock_jump),
            session_factory=session_factory or mqtt_session,
            reconcile_fetch=reconcile_fetch,
            explain=explain,
        )
        # paper and shadow never reconcile: no OMS holds their orders
        if session_factory is None and reconcile_fetch is None and config.mode == "live":
            settings, topics = daemon.settings, daemon.topics

            async def fetch(since_ns: int, timeout_s: float) -> OmsSnapshot:
                # refused answers are counted with the session's refusals (metrics)
                counters = daemon.session.counters if daemon.session is not None else None
                return await fetch_over_mqtt(settings, topics, since_ns, timeout_s, counters)

            daemon.reconciler.fetch = fetch
        return daemon

    @property
    def explainer(self) -> ExplanationWorker | None:
        """The explanations worker of the running session (None: explanations off)."""
        return self.explanations.explainer

    @property
    def heartbeat_seq(self) -> int:
        """Heartbeats so far (the status carries it)."""
        return self.status_board.heartbeat_seq

    def _published(self, item: Outgoing, trigger: str, published_ns: int) -> None:
        if isinstance(item, OrderRequest):
            self.metrics.orders.labels("published").inc()
            if trigger == "market_data":
                latency = max(0, published_ns - item.ts_event)
                self.latencies_ns.append(latency)
                self.metrics.tick_to_order.observe(latency / 1e9)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; returns the exit code (0 after a clean stop).

        Raises:
            AdapterError: the journal or the broker failed beyond recovery.
        """
        cfg = self.config
        journal_dir = Path(cfg.journal.dir)
        journal = FileJournalWriter(
            journal_dir, session_id=self.session_id, fsync=cfg.journal.fsync,
            owner=f"node {cfg.live.node}", accept_loss=self.accept_journal_loss,
        )  # fmt: skip
        engine = self.engine
        governance = self.governance
        decisions: DecisionLog | None = None
        try:
            journal.open()  # a torn tail (kill -9 mid-write) is cut and counted here
            t0 = time.perf_counter()
            self.history = rebuild(
                engine, journal_dir, before_seq=journal.next_seq,
                config_sha256=self.snapshot_key, extras=self.snapshot_taker.extras,
                switcher=self.switcher, snapshot_mac_key=self.snapshot_taker.mac_key,
            )  # fmt: skip
            self.rebuild_ms = round((time.perf_counter() - t0) * 1000)
            self.snapshot_taker.begin(self.history, self.session_id, journal.next_seq)
            engine.desk.begin_session(self.order_id_prefix)
            # this session sends from here on: what the start's switch decides (cancels of
            # working orders beyond a lower stage's limit) must reach the OMS, or the desk
            # would believe them sent and never cancel those orders again
            self.switch.target = self.sender if self.sender is not None else ShadowSender()
            governance.align_to_session(self.session_id)
            if isinstance(self.receive_clock, ReceiveClock):  # never back from the journal
                self.receive_clock.continue_from(self.history.last_ts)
            self.start_ns = max(self.start_ns, self.history.last_ts)
            self.command_guard.expire(self.start_ns)  # what the rebuild primed and aged out
            files = self.files = write_session_files(
                cfg, self.config_bytes, journal_dir, self.session_id, self.start_ns,
                self.order_id_prefix, first_seq=journal.next_seq,
                extra={"rebuilt_records": self.history.records,
                       "torn_tails_cut": journal.torn_tails_cut,
                       "torn_bytes_cut": journal.torn_bytes_cut,
                       "snapshot_seq": self.history.snapshot_seq,
                       "snapshots_invalid": self.history.snapshots_invalid,
                       "rebuild_ms": self.rebuild_ms, **governance.manifest_fields(),
                       "history_versions": HISTORY_PER_SESSION,
                       "sessions_without_versions": governance.sessions_without_versions()},
            )  # fmt: skip
            log.info("session %s starting", self.session_id,
                     extra={"mode": cfg.mode, "order_id_prefix": self.order_id_prefix,
                            "journal": str(journal_dir), "rebuilt_records": self.history.records,
                            "torn_tails_cut": journal.torn_tails_cut})  # fmt: skip
            decisions = DecisionLog(files.decisions)
            limits = [lim.max_quote_age_ns for lim in engine.risk.limits]
            feed = FeedMonitor(engine.instruments.symbols, limits, self.start_ns)
            core = self.core = LiveCore(
                engine, journal, feed, self.metrics, self.sender, self.switcher
            )
            core.last_ts = self.history.last_ts
            core.owns = OwnReports(cfg.live.node, engine)  # a shared account: ours only
            if isinstance(self.receive_clock, ReceiveClock):  # jumps journaled at heartbeats
                core.clock_jumps = self.receive_clock.jumped
            core.disk = DiskWatermark.of(journal_dir, cfg.journal.min_free_bytes)
            engine.sinks += [decisions, self.metrics.on_event, core.on_event]
            signals_at_start = engine.counters["signals"]
            self.explanations.start(core, journal_dir, self.session_id)
            self.metrics.trading_state.set(0)
            if cfg.live.metrics_port:
                self.metrics_port = self.metrics.serve(
                    cfg.live.metrics_port, cfg.live.metrics_host
                )
            if self.dashboard is not None:
                explainer = self.explanations.explainer
                self.dashboard_url = await self.dashboard.open(
                    core, self.status_board, explainer.path if explainer else None,
                    self._session_counters,
                )  # fmt: skip
            core.heartbeat(self.start_ns)  # the first clock reading starts the strategy
            governance.realign(core, self.start_ns)
            governance.watch_aliases()
            will = encode_status(self.status_board.status(core, online=False, state="offline"))
            connected = asyncio.Event()
            main = asyncio.create_task(
                self._connect_and_run(will, core, stop, decisions, connected)
            )
            guard = asyncio.create_task(self._stop_while_connecting(stop, connected, main))
            try:
                await main
            except asyncio.CancelledError:
                if not (stop.is_set() and not connected.is_set()):
                    raise
                # nothing was sent: no order can be working, only the journal to close
                log.warning("session %s stopped before the broker answered", self.session_id)
            finally:
                guard.cancel()
            if self.fatal is not None:  # the CLI prints it as one line, exits non-zero
                raise self.fatal
            log.info("session %s stopped", self.session_id, extra=dict(core.counters))
            self.explanations.close()
            if self.pins is not None:
                write_model_summary(
                    files.manifest, engine, self.models, self.model_switches,
                    signals_at_start, self.explanations.explainer,
                )  # fmt: skip
            return 0
        finally:
            if self.dashboard is not None:
                await self.dashboard.close()
            self.explanations.close()
            self.metrics.close()
            if self.fatal is None:
                if decisions is not None:
                    decisions.close()
                journal.close()
            else:  # they fail again on a full disk: the error already said why
                with contextlib.suppress(TradeloopError, OSError):
                    if decisions is not None:
                        decisions.close()
                with contextlib.suppress(TradeloopError, OSError):
                    journal.close()

    async def _connect_and_run(
        self, will: bytes, core: LiveCore, stop: asyncio.Event, decisions: DecisionLog,
        connected: asyncio.Event,
    ) -> None:  # fmt: skip
        engine = self.engine
        async with self.session_factory(self.settings, self.topics, engine.instruments,
                                        self.receive_clock, will,
                                        self.command_guard) as session:  # fmt: skip
            connected.set()
            self.session = session
            if self.dashboard is not None:
                self.dashboard.attach(session)
            # another node's reports are refused by the core, not the session's ingest:
            # exported beside the session's refusals (reason ``other_node``)
            self.metrics.watch_session(
                lambda: session.counters
                + Counter(bad_other_node=core.counters["reports_other_node"])
            )
            try:
                await self._run_session(session, core, stop, decisions)
            finally:
                if self.dashboard is not None:
                    self.dashboard.attach(None)  # the page's actions need a session

    def _session_counters(self) -> Counter[str]:
        session = self.session
        return session.counters if session is not None else Counter()

    @staticmethod
    async def _stop_while_connecting(
        stop: asyncio.Event, connected: asyncio.Event, main: asyncio.Task[None]
    ) -> None:
        """A stop while the session still retries its first connection cancels it (once
        connected, the loop stops gracefully by itself)."""
        await stop.wait()
        if not connected.is_set():
            main.cancel()

    async def _run_session(
        self, session: LiveSession, core: LiveCore, stop: asyncio.Event, decisions: DecisionLog
    ) -> None:
        async with asyncio.TaskGroup() as tasks:
            self.background.tasks = tasks
            workers = [
                tasks.create_task(self.status_board.publish(session), name="status-publisher"),
                tasks.create_task(self._watch_stop(stop), name="stop-watcher"),
            ]
            # nothing is published and nothing consumed until the OMS has been asked
            await self.reconciler.at_start(core, first_session=self.history.records == 0)
            if self.sender is not None:
                workers.append(
                    tasks.create_task(
                        self.sender.drain(
                            session.publish_order, publish_now=session.publish_order_now
                        ),
                        name="order-publisher",
                    )
                )
            self.status_board.offer(core)
            try:
                await self._consume(session, core, stop, decisions)
                await self._stop(session, core)
            except JournalFailed as exc:
                self.fatal = exc
                for task in workers:  # nothing queued behind the journal goes out now
                    task.cancel()
                await self._cancel_unjournaled(session, core)
            for task in workers:
                task.cancel()
            self.reconciler.cancel()

    async def _cancel_unjournaled(self, session: LiveSession, core: LiveCore) -> None:
        """The journal failed: cancel every working order, best effort, and say goodbye.

        These cancels are not journaled (nothing can be): the engine never sees them, and
        the next start reconciles against the OMS what they did."""
        log.critical("%s: cancelling every working order without journaling it; the next "
                     "start reconciles them with the OMS", self.fatal)  # fmt: skip
        if self.sender is None:  # shadow sends nothing, paper's venue is in-process
            return
        engine = self.engine
        ts = self.receive_clock()
        deadline = asyncio.get_running_loop().time() + 2.0
        for i in range(len(engine.instruments)):
            for order in engine.orders.open_orders(i):
                cancel = CancelRequest(ts_event=ts, ts_recv=ts,
                                       client_order_id=order.client_order_id,
                                       instrument=order.request.instrument,
                                       reason="journal failed")  # fmt: skip
                log.critical("unjournaled cancel of %s", order.client_order_id)
                with contextlib.suppress(TradeloopError):
                    await session.publish_order(cancel)
        # offline: an OMS with cancel-on-disconnect cancels what these cancels miss
        with contextlib.suppress(TradeloopError):
            await session.publish_status(offline_payload(self.config.live.node))
        if not await session.flush(max(0.0, deadline - asyncio.get_running_loop().time())):
            log.critical("journal failed: the cancels were not all acknowledged by the broker")

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.background.wake()

    async def _consume(
        self, session: LiveSession, core: LiveCore, stop: asyncio.Event, decisions: DecisionLog
    ) -> None:
        inbox = session.inbox
        loop = asyncio.get_running_loop()
        period = self.config.live.heartbeat_ns / 1e9
        next_beat = loop.time() + period
        items: list[Inbound] = []
        while not stop.is_set():
            self.reconciler.finish(core)
            self.governance.finish_switches(core, self._offer_status)
            if core.reconnected:  # reports sent while we were away are lost: ask the OMS
                core.reconnected = False
                self.reconciler.after_reconnect()
            while len(items) < MAX_TURN_ITEMS:
                try:
                    items.append(inbox.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if items:
                core.handle(items)
                items.clear()
                self._after_turn(core)
                await asyncio.sleep(0)  # the publisher and the broker's reader run now
            now = loop.time()
            if now >= next_beat:
                self._heartbeat(core, decisions)
                next_beat = max(next_beat + period, now)
                self.reconciler.retry_if_due(now)
                continue
            if inbox.empty() and not stop.is_set():
                try:
                    async with asyncio.timeout_at(next_beat) as waiting:
                        self.background.waiting = waiting
                        items.append(await inbox.get())
                except TimeoutError:
                    pass
                finally:
                    self.background.waiting = None

    def _offer_status(self) -> None:
        self.status_board.offer(self.core)

    def _after_turn(self, core: LiveCore) -> None:
        # the turn's orders are in the outbox now: only then are its signals explained
        self.explanations.hand()
        self.governance.queue_commands(core)
        if core.dirty:
            self._offer_status()
        if self.dashboard is not None:
            self.dashboard.changed()

    def _heartbeat(self, core: LiveCore, decisions: DecisionLog) -> None:
        core.heartbeat(self.receive_clock())
        self.snapshot_taker.maybe_take(core)
        self.status_board.heartbeat_seq += 1
        positions, pnl = core.book()
        self.metrics.set_book(positions, pnl)
        self.status_board.publish_monitors()
        self.governance.poll_aliases()
        decisions.flush()
        self._offer_status()
        if self.dashboard is not None:
            self.dashboard.changed()

    async def _stop(self, session: LiveSession, core: LiveCore) -> None:
        """Stop new orders, cancel open ones, flush, say goodbye."""
        cfg = self.config.live
        deadline = asyncio.get_running_loop().time() + parse_duration_ns(cfg.shutdown_timeout) / 1e9
        ts = self.receive_clock()
        if cfg.cancel_on_stop:
            core.inject(ts, Command(ts_event=ts, ts_recv=ts, action="kill", issuer="daemon",
                                    reason=SHUTDOWN_REASON), "command")  # fmt: skip
        loop = asyncio.get_running_loop()
        if self.sender is not None and not await self.sender.wait_empty(
            max(0.0, deadline - loop.time())
        ):
            log.error("shutdown: %d orders/cancels not published", len(self.sender))
        # reports that arrived meanwhile (cancel acks) are journaled and applied too
        items: list[Inbound] = []
        while True:
            try:
                items.append(session.inbox.get_nowait())
            except asyncio.QueueEmpty:
                break
        if items:
            core.handle(items)
            self.explanations.hand()
        # the goodbye goes straight out, after every status still waiting
        self.status_board.discard_waiting()
        goodbye = self.status_board.status(self.core, online=False, state="offline")
        await session.publish_status(encode_status(goodbye))
        if not await session.flush(max(0.0, deadline - loop.time())):
            log.error("shutdown: the outbox did not drain in %s", cfg.shutdown_timeout)
        core.journal.sync()
        self.snapshot_taker.maybe_take(core, final=True)


async def run_daemon(
    config_path: str | Path,
    *,
    stop: asyncio.Event | None = None,
    receive_clock: Callable[[], int] | None = None,
    session_factory: SessionFactory | None = None,
    on_ready: Callable[[Daemon], None] | None = None,
    reconcile_fetch: ReconcileFetch | None = None,
    explain: bool | None = None,
    accept_journal_loss: bool = False,
) -> int:
    """Run the daemon of ``config_path`` on the running loop until ``stop`` is set (or,
    without ``stop``, until SIGTERM or SIGINT). Returns the exit code.

    Args:
        config_path: the TOML config (mode shadow, paper or live).
        stop: set it to stop the daemon gracefully (in-process use, tests).
        receive_clock: the receive clock (default: ``ReceiveClock``, the monotonic clock
            on the wall clock's scale, with ``[live] clock_jump``/``on_clock_jump``).
        session_factory: builds the session (default: ``MqttSession``; tests pass a fake).
        on_ready: called with the daemon once it is built, before it connects.
        reconcile_fetch: asks the OMS for its snapshot (default: over the config's broker
            when ``session_factory`` is the default, else no reconciliation).
        explain: write an explanation per champion signal (TreeSHAP, off the loop); None:
            as ``[live] explain`` says (the top ``[live] explain_top`` contributions).
        accept_journal_loss: start on a journal shorter than its recorded end (or on
            snapshots and session files without their journal), journaling the loss;
            without it such a journal is refused (``AdapterError``).

    Raises:
        ConfigError, PluginLoadError, ModelError: the config cannot run.
        AdapterError: the journal or broker failed.
    """
    daemon = Daemon.create(
        config_path,
        receive_clock=receive_clock,
        session_factory=session_factory,
        reconcile_fetch=reconcile_fetch,
        explain=explain,
    )
    daemon.accept_journal_loss = accept_journal_loss
    if on_ready is not None:
        on_ready(daemon)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                continue
            installed.append(sig)
    try:
        return await daemon.run(stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


__all__ = ["LIVE_MODES", "MAX_TURN_ITEMS", "Daemon", "run_daemon"]
