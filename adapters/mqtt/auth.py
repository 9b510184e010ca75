"""Operator commands are signed: HMAC-SHA256 of the exact payload bytes, hex, carried as
the MQTT 5 user property ``signature``. The broker's ACL (only the operator user may
publish on the command topic) is the second layer.

A signature says who wrote a command, not when or how often it arrives: a QoS 1
redelivery or a captured message published again verifies as well as the original. A
sender stamps every command with a fresh ``ts_event`` (the current time, never reused);
``adapters.mqtt.command_guard`` refuses one stamped outside ``[live] command_max_age`` of
the receive clock and any copy of a command already accepted."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_PROPERTY = "signature"


def sign_command(payload: bytes, key: bytes) -> str:
    """The hex HMAC-SHA256 of ``payload`` under ``key``."""
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(payload: bytes, signature: str | None, key: bytes | None) -> bool:
    """True if ``signature`` is ``payload``'s signature under ``key``.

    Compared in constant time. No key or no signature never verifies.
    """
    if key is None or not signature:
        return False
    return hmac.compare_digest(sign_command(payload, key), signature.strip().lower())
