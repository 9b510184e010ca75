"""Who may act from the dashboard: the holder of the operator token.

The token is a secret of the deployment, read from the environment variable ``[live]
dashboard_token_env`` names (never from the config file). Without one the page is
read-only: the action buttons are not drawn and the action endpoints refuse with 403.
With one, an action must carry ``Authorization: Bearer <token>``; anything else is a 401.
Browsers never attach that header by themselves (unlike a cookie), so another site's
page cannot make a logged-in browser act (no CSRF).

The comparison runs in constant time over bytes, whatever the header holds (any text a
client sends, non-ASCII included, is encoded, never rejected by an exception).
"""

from __future__ import annotations

import hmac
import os
from typing import Final, Literal

from engine.errors import ConfigError

# a guessable token on an endpoint that can kill or flatten is worse than none
MIN_TOKEN_CHARS: Final = 16
_SCHEME: Final = "bearer"

Refusal = Literal["read_only", "unauthenticated", "bad_token"]
"""Why an action is refused: no token configured (403), no or a malformed
``Authorization`` header (401), a token that does not match (401)."""


def read_token(env_name: str) -> str | None:
    """The operator token from ``$env_name`` (None: unset or empty, the page is read-only).

    Raises:
        ConfigError: the token is shorter than ``MIN_TOKEN_CHARS``.
    """
    token = os.environ.get(env_name, "")
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            "live.dashboard_token_env",
            f"the dashboard token in ${env_name} has {len(token)} characters; use at least "
            f"{MIN_TOKEN_CHARS} (for example: openssl rand -hex 24)",
        )
    return token


def check_authorization(header: str | None, token: str | None) -> Refusal | None:
    """Why a request with this ``Authorization`` header may not act; None if it may.
    Never raises."""
    if token is None:
        return "read_only"
    if not header:
        return "unauthenticated"
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != _SCHEME or not given:
        return "unauthenticated"
    try:
        expected = token.encode("utf-8", errors="surrogateescape")
        presented = given.strip().encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate: no token of ours encodes to it
        return "bad_token"
    return None if hmac.compare_digest(expected, presented) else "bad_token"


__all__ = ["MIN_TOKEN_CHARS", "Refusal", "check_authorization", "read_token"]
