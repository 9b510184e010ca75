"""The run folder of a live session: ``tradeloop replay JOURNAL --out RUN``.

The session is replayed from its journal by ``replay.sessions.journal_replay`` (the engine
that ran, the same records in the same order), with the tick replay's recorder and mid
sampler attached once the earlier sessions are applied, and the result goes through the
tick replay's own writer (``write_report``): the same files, the same page. What differs
is said in ``metrics.json``'s ``data_notes``: the session, its mode and the journal.

The report covers the session only: its fills, and the equity samples from its first
record on (the samples of the earlier sessions the daemon rebuilt first are dropped).
Realized PnL and positions are the engine's, so a session that started with a position
carried from an earlier one reports it as held from the start.

replay.backtest may not import replay.sessions (sessions sit below it); the dispatcher
passes the session and its replay function in, described here by the protocols below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from adapters.journal_folder import journal_files
from engine.config import Config
from engine.engine import Engine
from engine.monitor import ModelMonitor
from replay.backtest.mids import MidSampler
from replay.backtest.report import write_report
from replay.backtest.runner import Recorder, ReplayRun
from replay.files.readers import BadRowCounts

Attach = Callable[[Engine], Callable[[], None] | None]


class SessionInfoLike(Protocol):
    session_id: str
    mode: str
    config_sha256: str


class SessionLike(Protocol):
    journal_dir: Path
    info: SessionInfoLike
    config: Config


class ResultLike(Protocol):
    engine: Engine
    history_records: int


R = TypeVar("R", bound=ResultLike)


def write_session_report(
    session: SessionLike,
    replay: Callable[..., R],
    out: Path,
    summary: Callable[[R], str],
) -> tuple[R, dict[str, Any]]:
    """Replay ``session`` with ``replay(session, attach=...)`` and write its run folder at
    ``out`` (as ``write_report``); returns the replay's result and the figures.

    Raises:
        DataError, ConfigError, PluginLoadError, AdapterError: as the replay.
        ConfigError: ``out`` exists and is not a run folder.
    """
    recorder = Recorder()
    holder: dict[str, MidSampler] = {}

    def attach(engine: Engine) -> Callable[[], None]:
        # the earlier sessions' equity samples are not this session's
        engine.market.sample_ts.clear()
        engine.market.sample_equity.clear()
        engine.sinks.append(recorder)
        mids = holder.setdefault("mids", MidSampler(engine.instruments.symbols))

        def after_record() -> None:
            now = engine.clock.now_ns()
            if now:
                mids.add_point(now, engine.market.mids())

        return after_record

    result = replay(session, attach=attach)
    engine = result.engine
    monitor = next((s for s in engine.sinks if isinstance(s, ModelMonitor)), None)
    run = ReplayRun(
        engine=engine,
        recorder=recorder,
        bad_rows=BadRowCounts(),
        files=journal_files(session.journal_dir),
        config=session.config,
        monitor=monitor,
        mids=holder.get("mids"),
    )
    info = session.info
    notes = [
        f"live session {info.session_id} ({info.mode}) replayed from the journal "
        f"{session.journal_dir}",
        summary(result),
    ]
    if result.history_records:
        notes.append(
            f"{result.history_records} records of earlier sessions applied first, as the "
            "daemon rebuilt them; their fills and equity are not in this report"
        )
    return result, write_report(run, out, info.config_sha256, notes=notes)
