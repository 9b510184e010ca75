"""The command guard: a signed command acted on once, and only while fresh."""

from __future__ import annotations

import pickle

import pytest

from adapters.mqtt.command_guard import DEFAULT_MAX_AGE_NS, CommandGuard, command_digest
from engine.events import Command, CommandAction, Quote

S = 1_000_000_000
AGE = 30 * S
T = 1_700_000_000 * S  # a wall-clock-like receive time


def _command(ts_event: int, action: CommandAction = "kill", **kw: str) -> Command:
    return Command(ts_event=ts_event, ts_recv=ts_event, action=action, issuer="ops", **kw)


def test_command_guard_default_window_is_the_config_default() -> None:
    assert DEFAULT_MAX_AGE_NS == 30 * S


def test_command_guard_fresh_command_accepted_copy_refused_as_duplicate() -> None:
    guard = CommandGuard(AGE)
    kill = _command(T)
    assert guard.check(kill, T + S) is None
    # a redelivery: equal fields, whatever the receiver stamped in ts_recv
    copy = Command(ts_event=T, ts_recv=0, action="kill", issuer="ops")
    assert guard.check(copy, T + 2 * S) == "duplicate"
    assert len(guard) == 1


def test_command_guard_distinct_command_after_duplicate_accepted() -> None:
    guard = CommandGuard(AGE)
    assert guard.check(_command(T), T) is None
    assert guard.check(_command(T), T) == "duplicate"
    assert guard.check(_command(T + 1), T) is None  # a fresh stamp: a new command
    assert guard.check(_command(T, "resume"), T) is None  # another action, same stamp
    assert guard.check(_command(T, reason="again"), T) is None


def test_command_guard_stale_and_future_refused_at_the_window_edge() -> None:
    guard = CommandGuard(AGE)
    assert guard.check(_command(T - AGE - 1), T) == "stale"
    assert guard.check(_command(T + AGE + 1), T) == "future"
    assert len(guard) == 0  # a refused command is not remembered
    assert guard.check(_command(T - AGE), T) is None  # exactly at the edge: fresh
    assert guard.check(_command(T + AGE), T) is None


def test_command_guard_remembers_until_a_copy_would_be_stale() -> None:
    guard = CommandGuard(AGE)
    kill = _command(T)
    assert guard.check(kill, T) is None
    assert guard.check(kill, T + AGE) == "duplicate"  # last instant a copy is fresh
    assert len(guard) == 1
    # past the window the entry is dropped, and the copy is refused as stale instead:
    # forgetting never makes an old command new again
    assert guard.check(kill, T + AGE + 1) == "stale"
    assert len(guard) == 0


def test_command_guard_future_dated_command_remembered_until_its_own_window_ends() -> None:
    guard = CommandGuard(AGE)
    ahead = _command(T + AGE)  # the operator's clock runs ahead: accepted at T
    assert guard.check(ahead, T) is None
    assert guard.check(ahead, T + 2 * AGE) == "duplicate"  # 2 windows of receive time
    assert guard.check(ahead, T + 2 * AGE + 1) == "stale"


def test_command_guard_memory_bounded_by_the_window_under_a_flood() -> None:
    guard = CommandGuard(AGE)
    step = AGE // 1000  # 1000 distinct fresh commands per window
    largest = 0
    for i in range(10_000):
        now = T + i * step
        assert guard.check(_command(now, reason=str(i)), now) is None
        largest = max(largest, len(guard))
    # only commands whose ts_event is within the window of the clock are held
    assert largest == 1001
    guard.expire(T + 10_000 * step + AGE + 1)
    assert len(guard) == 0
    assert guard._heap == []


def test_command_guard_primed_from_journaled_commands_refuses_their_replay() -> None:
    # what the journal holds: the commands applied before the restart, with their
    # receive times; the rebuild applies them and the engine emits each to its sinks
    journaled = [
        (T, _command(T - S, "kill")),
        (T + 5 * S, _command(T + 4 * S, "resume")),
        (T + 6 * S, _command(T + 6 * S, "rollback", target="champion")),
    ]
    restarted = CommandGuard(AGE)
    for _, command in journaled:
        restarted(command)  # as an engine sink during the rebuild
    restarted(
        Quote(ts_event=T, ts_recv=T, instrument="X", bid=1.0, ask=2.0, bid_size=1.0, ask_size=1.0)
    )
    now = T + 10 * S  # the daemon is back 4 s after its last record
    restarted.expire(now)
    for _, command in journaled:
        assert restarted.check(command, now) == "duplicate"
    assert restarted.check(_command(now, "kill"), now) is None

    # the same through ``remember`` with the journal's receive times
    primed = CommandGuard(AGE)
    for ts_recv, command in journaled:
        primed.remember(command, ts_recv)
    for _, command in journaled:
        assert primed.check(command, now) == "duplicate"


def test_command_guard_primed_with_old_commands_holds_none_of_them() -> None:
    guard = CommandGuard(AGE)
    for i in range(100):
        guard(_command(T + i * S))
    guard.expire(T + 200 * S)  # the rebuild ends long after those commands
    assert len(guard) == 0
    guard(_command(T))  # a sink call after time moved on adds nothing stale
    assert len(guard) == 0


def test_command_guard_state_survives_a_snapshot_pickle() -> None:
    guard = CommandGuard(AGE)
    assert guard.check(_command(T), T) is None
    restored = CommandGuard(AGE)
    vars(restored).update(pickle.loads(pickle.dumps(vars(guard))))  # as restore_state does
    assert restored.check(_command(T), T + S) == "duplicate"


def test_command_digest_ignores_ts_recv_and_names_every_other_field() -> None:
    base = _command(T, target="v1", stage="live", reason="r")
    same = Command(
        ts_event=T, ts_recv=123, action="kill", issuer="ops", target="v1", stage="live", reason="r"
    )
    assert command_digest(base) == command_digest(same)
    variants = [
        _command(T + 1, target="v1", stage="live", reason="r"),
        _command(T, "resume", target="v1", stage="live", reason="r"),
        _command(T, target="v2", stage="live", reason="r"),
        _command(T, target="v1", stage="paper", reason="r"),
        _command(T, target="v1", stage="live", reason="s"),
        Command(
            ts_event=T,
            ts_recv=T,
            action="kill",
            issuer="other",
            target="v1",
            stage="live",
            reason="r",
        ),
    ]
    assert len({command_digest(c) for c in [base, *variants]}) == 1 + len(variants)


def test_command_guard_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_age_ns"):
        CommandGuard(0)


def test_command_guard_clock_behind_the_journal_does_not_readmit_a_forgotten_command() -> None:
    """The second reviewer's case: primed and aged out up to the journal's last time, then
    a receive clock behind it (stepped back, or another host after a failover). Mutation-
    checked: judging staleness on the raw receive time accepted the copy."""
    guard = CommandGuard(AGE)
    old = _command(T)
    guard(old)  # applied before the restart
    guard.expire(T + AGE + 10 * S)  # the journal ended past its window: forgotten
    assert len(guard) == 0
    assert guard.check(old, T + AGE // 2) == "stale"  # a clock behind the journal
