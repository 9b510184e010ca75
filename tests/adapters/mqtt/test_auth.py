"""Signed operator commands (no broker): a signature binds a command to its target (node,
account, topic), and checking one never raises, whatever the property holds."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.mqtt.auth import canonical_form, check_signature, sign_command, verify
from adapters.mqtt.ingest import CommandIn, Ingest, RawMessage
from adapters.mqtt.topics import Topics
from engine.codec import EventCodec
from engine.events import Command
from engine.instruments import Instrument, InstrumentTable

KEY = b"operator-key"
HERE = Topics(prefix="t/", node="n2", account="a1")
PAYLOAD = b'{"type":"command","action":"resume","ts_event":1,"ts_recv":1}'


def test_sign_command_covers_version_target_and_payload() -> None:
    assert canonical_form(PAYLOAD, HERE) == b"tradeloop-command-v1\nn2\na1\nt/tradeloop/n2/command\n" + PAYLOAD  # fmt: skip
    signature = sign_command(PAYLOAD, KEY, HERE)
    version, node, account, digest = signature.split(":")
    assert (version, node, account, len(digest)) == ("v1", "n2", "a1", 64)


def test_verify_own_signature_accepted_altered_or_other_key_refused() -> None:
    signature = sign_command(PAYLOAD, KEY, HERE)
    assert verify(PAYLOAD, signature, KEY, HERE)
    head, _, digest = signature.rpartition(":")
    assert verify(PAYLOAD, f"{head}:{digest.upper()}", KEY, HERE)  # hex in either case
    assert verify(PAYLOAD, signature.encode(), KEY, HERE)  # bytes as well as text
    assert not verify(PAYLOAD, signature, b"other", HERE)
    assert not verify(PAYLOAD + b"x", signature, KEY, HERE)
    assert not verify(PAYLOAD, None, KEY, HERE)
    assert not verify(PAYLOAD, signature, None, HERE)


def test_check_signature_for_another_node_account_or_topic_refused() -> None:
    """Issue 19, defect 9: a command signed for n1 was accepted by n2."""
    counters: Counter[str] = Counter()
    for target in (Topics("t/", "n1", "a1"), Topics("t/", "n2", "a2")):
        signature = sign_command(PAYLOAD, KEY, target)
        assert check_signature(PAYLOAD, signature, KEY, HERE) == "wrong_target"
        assert not verify(PAYLOAD, signature, KEY, HERE, counters)
    assert counters["commands_wrong_target"] == 2
    # the same node and account under another prefix: captured on another topic
    elsewhere = sign_command(PAYLOAD, KEY, Topics("u/", "n2", "a1"))
    assert check_signature(PAYLOAD, elsewhere, KEY, HERE) == "bad_signature"
    # a claim of another target that its MAC does not prove is a bad signature too
    forged = sign_command(PAYLOAD, b"guess", Topics("t/", "n1", "a1"))
    assert check_signature(PAYLOAD, forged, KEY, HERE) == "bad_signature"
    # the payload-only signature of before, and an unknown version, are not signatures
    legacy = sign_command(PAYLOAD, KEY, HERE).rpartition(":")[2]
    assert check_signature(PAYLOAD, legacy, KEY, HERE) == "malformed"
    assert check_signature(PAYLOAD, "v2" + sign_command(PAYLOAD, KEY, HERE)[2:], KEY, HERE) == "malformed"  # fmt: skip
    assert counters["commands_wrong_target"] == 2


def test_verify_signature_not_ascii_empty_huge_or_bytes_refused_never_raises() -> None:
    """Issue 19, defect 5: a non-ASCII signature made ``hmac.compare_digest`` raise in the
    MQTT client's callback."""
    own = sign_command(PAYLOAD, KEY, HERE)
    hostile: list[object] = [
        "é" * 64, "\u2603", "", " ", "\x00" * 64, "é" * 30_000, "0" * 1_000_000,
        own.replace("a", "é", 1), own + "é", "v1:n2:a1:" + "é" * 64, "v1:é:a1:" + "0" * 64,
        b"\xff" * 64, bytearray(b"\x80" * 64), memoryview(b"v1:n2:a1:" + b"\xfe" * 64),
        b"", 12, 1.5, ["v1"], object(),
    ]  # fmt: skip
    for signature in hostile:
        assert verify(PAYLOAD, signature, KEY, HERE) is False, signature
    released = memoryview(own.encode())
    released.release()
    assert verify(PAYLOAD, released, KEY, HERE) is False


_properties = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet="v1:n2a0é\u2603\x00 ", max_size=100),
    st.binary(),
    st.integers(),
    st.floats(),
    st.builds(lambda s: "v1:n2:a1:" + s, st.text(min_size=60, max_size=70)),
    st.builds(lambda n: "0" * n, st.integers(0, 100_000)),
)


@given(payload=st.binary(max_size=200), signature=_properties)
def test_check_signature_any_property_value_never_raises_never_passes(
    payload: bytes, signature: object
) -> None:
    # mutation-checked: ``_ascii`` returning the value unchanged (no type or ASCII check)
    # raises on bytes and numbers
    refusal = check_signature(payload, signature, KEY, HERE)
    assert refusal in ("unsigned", "malformed", "bad_signature")


_nodes = st.text(alphabet="abcn0123456789_", min_size=1, max_size=6)
_accounts = st.text(alphabet="ab1:.-", min_size=1, max_size=6)
_prefixes = st.sampled_from(["", "t/", "u/"])
_targets = st.builds(Topics, _prefixes, _nodes, _accounts)


@given(payload=st.binary(max_size=100), signed_for=_targets, here=_targets)
def test_signature_verifies_only_at_the_target_it_was_made_for(
    payload: bytes, signed_for: Topics, here: Topics
) -> None:
    # mutation-checked: the account left out of the canonical form lets a command for
    # another account of the same node through once its property names this one
    signature = sign_command(payload, KEY, signed_for)
    refusal = check_signature(payload, signature, KEY, here)
    if signed_for == here:
        assert refusal is None
    elif signed_for.prefix == here.prefix:
        assert refusal == "wrong_target"
    else:
        assert refusal in ("wrong_target", "bad_signature")
    # the property's claim rewritten to name this daemon: only the MAC decides
    rewritten = f"v1:{here.node}:{here.account}:{signature.rpartition(':')[2]}"
    assert (check_signature(payload, rewritten, KEY, here) is None) == (signed_for == here)


def test_ingest_command_for_another_node_not_enqueued_counted() -> None:
    ingest = Ingest(HERE, InstrumentTable([Instrument(symbol="BTC", venue="X")]), fmt="json",
                    max_payload_bytes=65536, command_key=KEY, counters=Counter())  # fmt: skip
    ts = time.time_ns()
    payload = EventCodec("json").encode(Command(ts_event=ts, ts_recv=ts, action="resume"))
    other = sign_command(payload, KEY, Topics("t/", "n1", "a1"))
    messages: list[RawMessage] = [
        (HERE.command, payload, other, False),
        (HERE.command, payload, "é" * 64, False),
        (HERE.command, payload, sign_command(payload, KEY, HERE), False),
    ]
    items = ingest.decode(messages, ts_recv=ts)
    assert [type(item) for item in items] == [CommandIn]
    assert ingest.counters["commands_unauthenticated"] == 2
    assert ingest.counters["commands_wrong_target"] == 1


@pytest.mark.parametrize("node", ["", "a:b", "a\nb"])
def test_sign_command_target_that_cannot_be_named_is_value_error(node: str) -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        sign_command(PAYLOAD, KEY, Topics("", node, "a1"))
