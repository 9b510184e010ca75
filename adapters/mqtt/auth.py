"""Operator commands are signed, and bound to their target. The broker's ACL (only the
operator user may publish on the command topic) is the second layer.

The signature is an HMAC-SHA256, under the command key, of a versioned canonical form
that names the target as well as the payload::

    b"tradeloop-command-v1\\n" + node + b"\\n" + account + b"\\n" + topic + b"\\n" + payload

(``topic`` is the full command topic, prefix included), carried as the MQTT 5 user
property ``signature`` in the form ``v1:<node>:<account>:<64 hex digits>``. A command
signed for node n1 (or another account, or captured on another topic) does not verify at
n2: the payload names no node, so a signature over the payload alone let a captured
``resume`` lift another node's kill. The node and account in the property say which
target the signer meant; the MAC is what proves it, so a command that verifies for the
target it names, and that target is not this daemon, is counted apart
(``commands_wrong_target``: a replay from another node's topic, or an operator's
mistake), while anything else is a bad signature.

A signature says who wrote a command and for whom, not when or how often it arrives: a
QoS 1 redelivery or a captured message published again verifies as well as the original.
A sender stamps every command with a fresh ``ts_event`` (the current time, never reused);
``adapters.mqtt.command_guard`` refuses one stamped outside ``[live] command_max_age`` of
the receive clock and any copy of a command already accepted.

Verification never raises, whatever the property holds (any text, bytes, empty, huge):
it runs inside the MQTT client's callback, where an exception dropped the connection.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import MutableMapping
from typing import Final, Literal

from adapters.mqtt.topics import Topics

SIGNATURE_PROPERTY: Final = "signature"
SIGNATURE_VERSION: Final = "v1"
_DOMAIN: Final = b"tradeloop-command-v1"
_HEX_DIGITS: Final = 64
# a valid property is the version, a node, an account and 64 hex digits; anything much
# longer is refused unread (a broker lets through user properties of up to 64 KiB)
_MAX_SIGNATURE_CHARS: Final = 1024
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")

SignatureRefusal = Literal["no_key", "unsigned", "malformed", "bad_signature", "wrong_target"]
"""Why a command's signature does not let it through: no command key configured, no
signature, a property not of the form ``v1:<node>:<account>:<hex>`` (not ASCII, too long,
another version), a MAC that does not verify, or a valid MAC for another target."""


def canonical_form(payload: bytes, topics: Topics) -> bytes:
    """The bytes a command's signature covers: the version, the target (node, account,
    command topic) and the payload."""
    target = (topics.node, topics.account, topics.command)
    return b"\n".join((_DOMAIN, *(part.encode() for part in target), payload))


def sign_command(payload: bytes, key: bytes, topics: Topics) -> str:
    """The ``signature`` property of ``payload`` sent to the daemon of ``topics`` (its
    node, account and topic prefix), under ``key``.

    Raises:
        ValueError: the node or account cannot be named in the property (empty, or with
            a ``:`` in the node or a newline in either).
    """
    node, account = topics.node, topics.account
    if not node or not account or ":" in node or "\n" in node + account:
        raise ValueError(f"cannot sign for node {node!r}, account {account!r}")
    digest = hmac.new(key, canonical_form(payload, topics), hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}:{node}:{account}:{digest}"


def check_signature(
    payload: bytes, signature: object, key: bytes | None, topics: Topics
) -> SignatureRefusal | None:
    """Why ``signature`` does not let ``payload`` through to the daemon of ``topics``;
    None if it does. Never raises. MACs are compared in constant time."""
    if key is None:
        return "no_key"
    if signature is None:
        return "unsigned"
    text = _ascii(signature)
    if text is None:
        return "malformed"
    if not text:
        return "unsigned"
    version, _, rest = text.strip().partition(":")
    node, _, rest = rest.partition(":")
    account, _, given = rest.rpartition(":")
    if version != SIGNATURE_VERSION or not node or not account or not _is_hex(given):
        return "malformed"
    target = topics if (node, account) == (topics.node, topics.account) else None
    claimed = target or Topics(topics.prefix, node, account)
    expected = hmac.new(key, canonical_form(payload, claimed), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.lower().encode()):
        return "bad_signature"
    return None if target is not None else "wrong_target"


def verify(
    payload: bytes,
    signature: object,
    key: bytes | None,
    topics: Topics,
    counters: MutableMapping[str, int] | None = None,
) -> bool:
    """True if ``signature`` is ``payload``'s signature under ``key`` for the daemon of
    ``topics``. Never raises.

    Args:
        payload: the command's bytes as received.
        signature: the ``signature`` user property (None: absent); any value is refused
            safely.
        key: the command key (None: nothing verifies).
        topics: this daemon's topics (node, account, command topic).
        counters: where a command validly signed for another target is counted
            (``commands_wrong_target``, one kind of unauthenticated command).
    """
    refusal = check_signature(payload, signature, key, topics)
    if refusal is None:
        return True
    if refusal == "wrong_target" and counters is not None:
        counters["commands_wrong_target"] += 1  # the caller counts and logs the refusal
    return False


def _ascii(signature: object) -> str | None:
    """The property as ASCII text, or None (not text or bytes, not ASCII, too long)."""
    if isinstance(signature, str):
        if len(signature) > _MAX_SIGNATURE_CHARS or not signature.isascii():
            return None
        return signature
    if isinstance(signature, bytes | bytearray | memoryview):
        try:
            view = memoryview(signature)
            if view.nbytes > _MAX_SIGNATURE_CHARS:
                return None
            raw = view.tobytes()
        except (ValueError, TypeError):  # a released view
            return None
        return raw.decode("ascii") if raw.isascii() else None
    return None


def _is_hex(text: str) -> bool:
    return len(text) == _HEX_DIGITS and _HEX.issuperset(text.encode())


__all__ = [
    "SIGNATURE_PROPERTY",
    "SIGNATURE_VERSION",
    "SignatureRefusal",
    "canonical_form",
    "check_signature",
    "sign_command",
    "verify",
]
