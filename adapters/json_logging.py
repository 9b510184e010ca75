"""Structured logs for the daemon: one JSON object per line.

Each line holds ``ts`` (UTC, ISO-8601 with microseconds, from the log record's own
creation time), ``level``, ``logger``, ``message`` and every extra field the call passed
(``log.info("order sent", extra={"client_order_id": cid})``); an exception adds ``exc``.
A value JSON cannot hold is written as its ``repr``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import IO, Any

import msgspec

# attributes every LogRecord has; anything else on a record came from ``extra``
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_ENCODER = msgspec.json.Encoder(enc_hook=repr)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="microseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = value
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        try:
            return _ENCODER.encode(fields).decode()
        except (TypeError, ValueError, OverflowError):
            return _ENCODER.encode({k: repr(v) for k, v in fields.items()}).decode()


def install_json_logging(
    level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Route every log record of the process through one JSON-lines handler.

    Replaces the root logger's handlers (the CLI's plain-text ``basicConfig`` among them).

    Args:
        level: the root logger's level.
        stream: where lines go (default: standard error).

    Returns:
        The installed handler (remove it with ``logging.getLogger().removeHandler``).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


__all__ = ["JsonFormatter", "install_json_logging"]
