"""Trading-state claims persist with their holders: an operator's kill survives a graceful
stop (the daemon's own shutdown kill), a snapshot and a rebuild, and a reconciliation that
agrees with the OMS lifts only what it holds (its own kill and the previous session's
shutdown kill), never the operator's.

The daemon's pieces are driven without a broker, as ``Daemon.run`` drives them: the
engine of ``build_live_engine``, ``rebuild`` (from the journal, or from the newest
snapshot), a ``LiveCore`` that journals and applies each input, the ``Reconciler``
asking a scripted OMS (agrees, differs, does not answer), the shutdown kill of
``Daemon._stop`` and the ``SnapshotTaker``. The stateful property checks every step
against an independent model of who claims what.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.daemon.assembly import build_live_engine
from adapters.daemon.background import Background
from adapters.daemon.core import FeedMonitor, LiveCore
from adapters.daemon.rebuild import rebuild
from adapters.daemon.reconcile import Reconciler
from adapters.daemon.snapshots import SnapshotTaker, snapshot_extras
from adapters.journal_file import FileJournalWriter
from adapters.live_sender import ShadowSender
from adapters.metrics import DaemonMetrics
from adapters.mqtt.command_guard import CommandGuard
from adapters.reconciliation import SHUTDOWN_REASON, ClaimHolder, FillLedger, OmsSnapshot
from engine.config import Config, load_config
from engine.errors import AdapterError
from engine.events import Command, CommandAction, TradingStateName
from engine.ports import SendOnly

T0 = 1_723_161_254_000_000_000
SEVERITY: dict[TradingStateName, int] = {"ACTIVE": 0, "REDUCE_ONLY": 1, "HALTED": 2}
_CONFIG = """
mode = "live"

[[instruments]]
symbol = "BTC"
venue = "SIM"
tick_size = 0.01
lot_size = 0.001

[[features]]
name = "mid"
kind = "mid"

[strategy]
name = "tests.integration.test_reliability:Churn"

[risk]
max_order_qty = 5.0
warmup = false

[live]
node = "n1"
account = "a1"
metrics_port = 0
reconcile_timeout = "50ms"
"""

Outcome = Literal["agree", "differ", "no_answer"]


class Desk:
    """One journal folder lived through by successive daemon sessions."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        path = folder / "live.toml"
        path.write_text(_CONFIG + f'\n[journal]\ndir = "{(folder / "journal").as_posix()}"\n')
        self.config: Config = load_config(path)[0]
        self.config_bytes = path.read_bytes()
        self.journal_dir = folder / "journal"
        self.now = T0
        self.sessions = 0
        self.core: LiveCore | None = None

    def clock(self) -> int:
        self.now += 1_000_000
        return self.now

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        assert self.core is not None
        return self.core.engine

    def start(self, *, from_snapshot: bool) -> None:
        """A daemon starts: a fresh engine rebuilt from the journal (from its newest
        snapshot, or every record), then the session's core."""
        self.sessions += 1
        session_id = f"s{self.sessions}"
        engine = build_live_engine(
            self.config, SendOnly(ShadowSender()), order_id_prefix=f"n1-{session_id}"
        )
        ledger, guard = FillLedger(engine.clock), CommandGuard()
        engine.sinks += [ledger, guard]
        self.claims = ClaimHolder(engine)
        extras = snapshot_extras(ledger, guard, None)
        self.taker = SnapshotTaker(self.config, "claims-test", None, engine, extras, Background())
        # one key per folder: the key hashes the sources, which may change while it runs
        self.taker.key = self.key = getattr(self, "key", self.taker.key)
        journal = FileJournalWriter(self.journal_dir, session_id=session_id, fsync="never")
        journal.open()
        history = rebuild(
            engine, self.journal_dir, before_seq=journal.next_seq,
            config_sha256=self.taker.key if from_snapshot else None, extras=extras,
            snapshot_mac_key=self.taker.mac_key,
        )  # fmt: skip
        assert not from_snapshot or history.snapshots_invalid == 0
        self.taker.begin(history, session_id, journal.next_seq)
        engine.desk.begin_session(f"n1-{session_id}")
        self.now = max(self.now, history.last_ts)
        feed = FeedMonitor(engine.instruments.symbols, [None], self.now)
        self.core = LiveCore(engine, journal, feed, DaemonMetrics(engine.instruments.symbols))
        self.core.last_ts = history.last_ts
        self.ledger = ledger
        self.core.heartbeat(self.clock())

    def command(self, action: CommandAction, issuer: str = "ops", reason: str = "") -> None:
        assert self.core is not None
        ts = self.clock()
        self.core.inject(
            ts, Command(ts_event=ts, ts_recv=ts, action=action, issuer=issuer, reason=reason),
            "command",
        )  # fmt: skip

    def reconcile(self, outcome: Outcome) -> None:
        """The start's reconciliation (``Reconciler.at_start``) against an OMS that agrees,
        holds another position, or does not answer."""
        core = self.core
        assert core is not None

        async def fetch(since_ns: int, timeout_s: float) -> OmsSnapshot:
            if outcome == "no_answer":
                raise AdapterError("no answer from the OMS to FillsSinceRequest within 2 s")
            position = float(self.engine.portfolio.positions[0])
            theirs = position if outcome == "agree" else position + 1.0
            return OmsSnapshot(fills=[], positions={"BTC": theirs}, orders=[], reads=2)

        reconciler = Reconciler(
            self.config, self.engine, self.ledger, self.claims, self.clock, Background(),
            fetch=fetch,
        )  # fmt: skip

        async def run() -> None:
            await reconciler.at_start(core, first_session=False)

        asyncio.run(run())

    def snapshot(self) -> None:
        core = self.core
        assert core is not None

        async def take() -> None:
            self.taker.maybe_take(core, final=True)

        asyncio.run(take())

    def stop(self, *, graceful: bool, snapshot: bool) -> None:
        """A graceful stop journals the daemon's shutdown kill (``Daemon._stop``) and
        may write the final snapshot; a crash just ends the session."""
        assert self.core is not None
        if graceful:
            self.command("kill", issuer="daemon", reason=SHUTDOWN_REASON)
        if snapshot:
            self.snapshot()
        self.core.journal.close()
        self.core = None


@pytest.mark.parametrize("from_snapshot", [True, False], ids=["from_snapshot", "from_journal"])
def test_operator_kill_graceful_stop_then_agreeing_reconciliation_stays_halted(
    tmp_path: Path, from_snapshot: bool
) -> None:
    desk = Desk(tmp_path)
    desk.start(from_snapshot=False)
    desk.command("kill", reason="operator's emergency stop")
    desk.stop(graceful=True, snapshot=True)
    desk.start(from_snapshot=from_snapshot)
    assert desk.engine.risk.state == "HALTED"
    desk.reconcile("agree")  # the OMS agrees: only the shutdown kill is reconciliation's
    assert desk.engine.risk.state == "HALTED"
    assert desk.engine.risk.trading.claim("operator") == "HALTED"
    desk.command("resume", reason="operator resumes")
    assert desk.engine.risk.state == "ACTIVE"
    desk.stop(graceful=False, snapshot=False)


def test_shutdown_kill_alone_is_lifted_by_an_agreeing_reconciliation(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    desk.start(from_snapshot=False)
    desk.stop(graceful=True, snapshot=False)
    desk.start(from_snapshot=False)
    assert desk.engine.risk.state == "HALTED"
    desk.reconcile("agree")
    assert desk.engine.risk.state == "ACTIVE"
    desk.stop(graceful=False, snapshot=False)


@pytest.mark.parametrize("issuer", ["daemon", "reconciliation"])
def test_command_guard_bus_command_naming_a_reserved_issuer_refused(issuer: str) -> None:
    """A signed command from the bus cannot file itself under a claim reconciliation may
    lift: the issuers of the daemon's own commands are refused (and counted by reason)."""
    guard = CommandGuard()
    kill = Command(ts_event=T0, ts_recv=T0, action="kill", issuer=issuer, reason=SHUTDOWN_REASON)
    assert guard.check(kill, T0) == "reserved_issuer"
    assert guard.check(msgspec.structs.replace(kill, issuer="ops"), T0) is None


# the stateful property


class ClaimsMachine(RuleBasedStateMachine):
    """Arbitrary sequences of operator commands, reconciliation outcomes, snapshots,
    graceful stops, crashes and restarts (from the journal or a snapshot), against a
    model of the claims that knows nothing of the engine: each holder's claim, changed
    only by that holder's own commands and by an operator's resume."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="tl-claims-"))
        self.desk = Desk(self.folder)
        self.desk.start(from_snapshot=False)
        self.model: dict[str, TradingStateName] = dict.fromkeys(
            ("operator", "reconciliation", "shutdown"), "ACTIVE"
        )
        self.snapshots = 0

    def teardown(self) -> None:
        if self.desk.core is not None:
            self.desk.core.journal.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    @rule(action=st.sampled_from(["kill", "reduce_only", "resume"]))
    def operator(self, action: CommandAction) -> None:
        if action == "kill":
            self.model["operator"] = "HALTED"
        elif action == "reduce_only":
            if self.model["operator"] != "HALTED":  # only resume leaves a kill
                self.model["operator"] = "REDUCE_ONLY"
        else:
            self.model = dict.fromkeys(self.model, "ACTIVE")
        self.desk.command(action, reason=f"operator {action}")

    @rule(outcome=st.sampled_from(["agree", "differ", "no_answer"]))
    def reconciliation(self, outcome: Outcome) -> None:
        held = {k: v for k, v in self.model.items() if k not in ("reconciliation", "shutdown")}
        before = self.desk.engine.risk.state
        if outcome == "agree":
            self.model["reconciliation"] = self.model["shutdown"] = "ACTIVE"
        else:
            self.model["reconciliation"] = "HALTED"
        self.desk.reconcile(outcome)
        # never lower than what the claims reconciliation does not hold ask for
        after = self.desk.engine.risk.state
        assert all(SEVERITY[after] >= SEVERITY[claim] for claim in held.values()), (
            before, after, held,
        )  # fmt: skip

    @rule()
    def snapshot(self) -> None:
        self.desk.snapshot()
        self.snapshots += 1

    @rule(graceful=st.booleans(), snapshot=st.booleans(), from_snapshot=st.booleans())
    def restart(self, graceful: bool, snapshot: bool, from_snapshot: bool) -> None:
        if graceful:
            self.model["shutdown"] = "HALTED"
        self.desk.stop(graceful=graceful, snapshot=snapshot)
        self.snapshots += snapshot
        self.desk.start(from_snapshot=from_snapshot and self.snapshots > 0)

    @precondition(lambda self: self.desk.core is not None)
    @invariant()
    def claims_persist_with_their_holders(self) -> None:
        """The effective state is the most severe claim of the model (so never below the
        operator's), whatever restarts and reconciliations happened in between."""
        state = self.desk.engine.risk.state
        expected = max(self.model.values(), key=SEVERITY.__getitem__)
        assert state == expected, (self.model, self.desk.engine.risk.trading.claims())
        assert SEVERITY[state] >= SEVERITY[self.model["operator"]]


ClaimsMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_claims_persist_with_their_holders = ClaimsMachine.TestCase
