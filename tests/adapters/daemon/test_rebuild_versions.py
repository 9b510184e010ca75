"""A restarted daemon rebuilds each earlier session on the registry versions that session
ran (its manifest), switched to at its first record, not on the versions the registry names
at the restart; and a snapshot taken while another champion ran is restored onto that one.

The journal: session 1 starts on A and switches to B mid-session; session 2 starts on B and
switches to C mid-session. The reference is the engine that lived through it: built on A,
fed session 1, then session 2 (on B, then C). A rebuild for a third session must reach the
same state (orders the engine believes it sent, positions, strategy, zones, risk, model).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from adapters.daemon.assembly import build_live_engine
from adapters.daemon.core import apply_record
from adapters.daemon.rebuild import HISTORY_PER_SESSION, rebuild
from adapters.daemon.session import write_session_files
from adapters.daemon.snapshots import seal_snapshot, snapshot_header
from adapters.daemon.switching import model_switcher
from adapters.journal_file import FileJournalReader, FileJournalWriter
from adapters.journal_folder import write_snapshot
from adapters.reconciliation import History
from engine.assembly import ModelPins, ModelSwitcher
from engine.config import Config, load_config
from engine.engine import Engine
from engine.journal import AnyRecord, ModelSwitch
from engine.ports import SendOnly
from engine.snapshot import capture_state
from engine.ticks import TickBatch
from replay.sessions.journal_replay import load_session, replay_session
from tests.engine.test_model_switch import Outbox
from tests.engine.test_snapshot import state_differences
from tests.model_versions import Versions, make_sample, quote_batch, train_versions, write_config

SNAPSHOT_KEY = "rebuild-versions-test"
SNAP_KEY = b"rebuild-versions-test-hmac-key-0123"  # the snapshots' HMAC key
N = 2400  # quotes of two symbols, 60 s
# session 1: [0, 1200) with A -> B at 600; session 2: [1200, 2400) with B -> C at 1500;
# the snapshot of session 2 is taken at 1800, after its switch
CUTS = (0, 200, 400, 600, 800, 1000, 1200, 1350, 1500, 1650, 1800, 2000, 2200, 2400)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Versions, Path]:
    sample = make_sample(tmp_path_factory.mktemp("rebuild_sample"))
    return train_versions(sample, tmp_path_factory.mktemp("rebuild_models")), sample


@dataclasses.dataclass
class Journal:
    folder: Path
    config: Config
    reference: Engine  # the engine that lived through both sessions
    switches: int  # the reference's model switches (the rebuild's own alignments add some)


def _engine(config: Config, pins: ModelPins, prefix: str) -> tuple[Engine, ModelSwitcher]:
    engine = build_live_engine(config, SendOnly(Outbox()), order_id_prefix=prefix, pins=pins)
    switcher = model_switcher(config, pins)
    assert switcher is not None
    return engine, switcher


def _switch(version: str) -> ModelSwitch:
    return ModelSwitch(alias="champion", version=version, stage="paper", issuer="test",
                       reason="promoted mid-session")  # fmt: skip


def _write(v: Versions, sample: Path, tmp: Path, *, snapshot: bool) -> Journal:
    """Both sessions journaled (in ``tmp / "journal"``) while the reference engine lives
    through them (as their daemons did), each session's manifest with the versions it
    started on."""
    config_path = write_config(tmp, 1883, v.registry)
    config, _ = load_config(config_path)
    config_bytes = config_path.read_bytes()
    folder = tmp / "journal"
    reference, switcher = _engine(config, ModelPins(v.a, "paper"), "n1-s1")
    ticks = quote_batch(sample, reference.instruments, 0, N)
    t = ticks.ts_recv
    sessions = {
        "s1": (ModelPins(v.a, "paper"), 0, 1200, {600: v.b}),
        "s2": (ModelPins(v.b, "paper"), 1200, 2400, {1500: v.c}),
    }
    for session_id, (pins, lo, hi, switches) in sessions.items():
        start_ns = int(t[lo]) - 1
        with FileJournalWriter(folder, session_id=session_id, fsync="never") as writer:
            write_session_files(
                config, config_bytes, folder, session_id, start_ns, f"n1-{session_id}",
                first_seq=writer.next_seq,
                extra={"model_version": pins.version, "model_stage": pins.stage,
                       "challenger_version": pins.challenger, "history_versions": "per_session"},
            )  # fmt: skip
            reference.desk.begin_session(f"n1-{session_id}")
            # the live engine already ran ``pins`` (session 1's build, session 2's last switch)
            assert reference.model_version == pins.version

            def journal(record: AnyRecord) -> None:
                apply_record(reference, record, switcher)

            journal(writer.append_clock(start_ns))
            edges = [c for c in CUTS if lo <= c <= hi]
            for a, b in itertools.pairwise(edges):
                if a in switches:
                    journal(writer.append(int(t[a - 1]), _switch(switches[a])))
                batch: TickBatch = ticks.slice(a, b)
                journal(writer.append(int(batch.ts_recv[-1]), batch))
                if snapshot and b == 1800:
                    writer.commit()
                    payload = capture_state(reference, {"models": switcher.memory})
                    header = snapshot_header(
                        writer, payload, records=writer.next_seq - 1, sessions=["s1", "s2"],
                        ts_recv=int(batch.ts_recv[-1]), config_sha256=SNAPSHOT_KEY,
                    )  # fmt: skip
                    assert header is not None
                    header = seal_snapshot(folder, header, payload, SNAP_KEY)
                    write_snapshot(folder, header, payload)
            writer.commit()
    assert reference.model_version == v.c
    return Journal(folder, config, reference, reference.counters["model_switches"])


def _differences(rebuilt: Engine, journal: Journal) -> list[str]:
    # the rebuild switches at session starts too (to A at session 1's first record when
    # built on another): a count, not a decision
    extra = rebuilt.counters["model_switches"] - journal.switches
    rebuilt.counters["model_switches"] -= extra
    try:
        found = state_differences(rebuilt, journal.reference)
    finally:
        rebuilt.counters["model_switches"] += extra
    # the market's scratch buffers (``np.empty``, filled per batch): their tail is garbage
    return [d for d in found if "['_buf_" not in d]


def _orders(engine: Engine) -> list[tuple[str, str, str, float, str]]:
    """The engine's order book: each order it believes it sent, and its status."""
    return sorted(
        (o.client_order_id, o.request.instrument, o.request.side, o.request.qty, str(o.status))
        for o in engine.orders._orders.values()
    )


def test_rebuild_applies_each_session_on_the_versions_it_ran(
    versions: tuple[Versions, Path], tmp_path: Path
) -> None:
    """Built on C (what the registry names at the restart), the rebuild decides session
    1's first half on A, its second on B, session 2 on B then C: the reference's state.

    Fails on the code before the fix (session 1's records before its switch decided again
    by C: other orders in the book than the ones sent live), and if ``history_apply``
    ignores the manifests (``return apply_record``)."""
    v, sample = versions
    journal = _write(v, sample, tmp_path, snapshot=False)
    assert _orders(journal.reference)  # the models did trade: the books can differ
    rebuilt, switcher = _engine(journal.config, ModelPins(v.c, "paper"), "n1-s3")
    history = rebuild(rebuilt, journal.folder, switcher=switcher)
    assert history.sessions == ["s1", "s2"]
    assert history.snapshot_seq == 0
    assert switcher.sessions_without_versions == []
    assert _orders(rebuilt) == _orders(journal.reference)
    assert _differences(rebuilt, journal) == []


def test_rebuild_from_a_snapshot_taken_after_a_switch_runs_the_switched_model(
    versions: tuple[Versions, Path], tmp_path: Path
) -> None:
    """Session 2's snapshot was taken on C (switched to mid-session); its restart builds on
    B (the session's versions, which the snapshot is valid for). Restored, the engine
    scores with C, so the tail (session 2 after the snapshot) is decided as it was live.

    Fails if the restore keeps the build's model object (``ModelSwitcher.restored`` not
    called, or a no-op): the tail is decided by B under C's version id."""
    v, sample = versions
    journal = _write(v, sample, tmp_path, snapshot=True)
    rebuilt, switcher = _engine(journal.config, ModelPins(v.b, "paper"), "n1-s3")
    history: History = rebuild(
        rebuilt, journal.folder, config_sha256=SNAPSHOT_KEY, extras={"models": switcher.memory},
        switcher=switcher, snapshot_mac_key=SNAP_KEY,
    )  # fmt: skip
    assert history.snapshot_seq > 0 and history.snapshots_invalid == 0
    assert rebuilt.model_version == v.c
    assert rebuilt.model is not None and rebuilt.model is not journal.reference.model
    assert _orders(rebuilt) == _orders(journal.reference)
    assert _differences(rebuilt, journal) == []


def test_a_session_without_recorded_versions_is_counted_and_runs_on_what_ran_before(
    versions: tuple[Versions, Path], tmp_path: Path
) -> None:
    """A manifest without versions (a daemon older than the record): its records are
    applied on the versions that ran before it, and the session is counted."""
    v, sample = versions
    journal = _write(v, sample, tmp_path, snapshot=False)
    manifest = journal.folder / "session-s2.json"
    data = json.loads(manifest.read_text())
    del data["model_version"]
    manifest.write_text(json.dumps(data))
    rebuilt, switcher = _engine(journal.config, ModelPins(v.c, "paper"), "n1-s3")
    rebuild(rebuilt, journal.folder, switcher=switcher)
    assert switcher.sessions_without_versions == ["s2"]
    assert rebuilt.model_version == v.c  # session 2's own switch still applies


def test_journal_replay_of_a_later_session_applies_the_earlier_ones_on_their_versions(
    versions: tuple[Versions, Path], tmp_path: Path
) -> None:
    """``replay_session`` of a third session (recorded on C, rebuilt per session) first
    applies sessions 1 and 2 as its daemon did: its book is the reference's.

    Fails if the replay applies the history on the session's own versions
    (``per_session`` ignored): session 1's orders before its switch are C's."""
    v, sample = versions
    journal = _write(v, sample, tmp_path, snapshot=False)
    folder = journal.folder
    config_bytes = (tmp_path / "live.toml").read_bytes()
    last = max(r.seq for r in FileJournalReader(folder))
    start_ns = max(r.ts_recv for r in FileJournalReader(folder)) + 1
    with FileJournalWriter(folder, session_id="s3", fsync="never") as writer:
        write_session_files(
            journal.config, config_bytes, folder, "s3", start_ns, "n1-s3",
            first_seq=writer.next_seq,
            extra={"model_version": v.c, "model_stage": "paper", "challenger_version": "",
                   "history_versions": HISTORY_PER_SESSION, "rebuilt_records": last},
        )  # fmt: skip
        writer.append_clock(start_ns)
        writer.commit()
    (folder / "decisions-s3.jsonl").write_text("")
    result = replay_session(load_session(folder, "s3"))
    assert result.history_records == last
    assert _orders(result.engine) == _orders(journal.reference)
