"""Typed errors of tradeloop. The whole tree, written once::

    TradeloopError
    ├── ConfigError            invalid configuration (field path and reason)
    ├── PluginLoadError        strategy or model plugin could not be resolved or validated
    ├── DataError              bad tick data (file, row, column, reason)
    │   ├── LeakageError       a dataset column looks ahead of its row's time
    │   └── JournalError       a journal file is corrupt (file, byte offset)
    ├── BadMessage             undecodable or invalid message (raw bytes, source, reason)
    ├── OrderStateError        illegal order transition, unknown order id, overfill
    ├── ClockError             the replay clock was asked to move backwards
    ├── StrategyError          a strategy hook raised; the engine halts trading
    ├── ModelError             model file or manifest rejected (hash, features, format)
    ├── SweepError             a sweep task failed on a user's input (combination, block)
    ├── RegistryError          the model registry refused an operation
    │   └── AuditChainError    the registry's audit log was changed (file, entry)
    └── AdapterError           failure at an I/O boundary (broker, venue, file system)

Third-party exceptions are translated where they enter, with ``raise ... from exc``.
"""

from __future__ import annotations


class TradeloopError(Exception):
    """Root of every error tradeloop raises on purpose."""


class ConfigError(TradeloopError):
    """The configuration is invalid.

    Args:
        where: dotted path of the offending field (``risk.max_order_qty``) or the file.
        reason: what is wrong, in words a user can act on.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        # a command-line flag (``--out``) is not a config field: no "config" in front
        super().__init__(
            f"{where}: {reason}" if where.startswith("-") else f"config {where}: {reason}"
        )


class PluginLoadError(TradeloopError):
    """A strategy or model plugin could not be loaded or failed validation."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"plugin {name!r}: {reason}")


class DataError(TradeloopError):
    """Bad market data in a file: names the file, the row (0-based data row) and the column."""

    def __init__(
        self, file: str, reason: str, *, row: int | None = None, column: str | None = None
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.reason = reason
        where = file
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


class BadMessage(TradeloopError):
    """A message could not be decoded or is invalid."""

    def __init__(self, raw: bytes, source: str, reason: str) -> None:
        self.raw = raw
        self.source = source
        self.reason = reason
        super().__init__(f"bad message from {source}: {reason}")


class LeakageError(DataError):
    """A dataset column depends on data from after its row's time."""


class JournalError(DataError):
    """A journal file is corrupt: names the file and the byte offset of the damage.

    Args:
        file: the file (or stream) name.
        offset: byte offset from the start of the file.
        reason: what is wrong there.
    """

    def __init__(self, file: str, offset: int, reason: str) -> None:
        self.offset = offset
        super().__init__(file, f"byte {offset}: {reason}")


class OrderStateError(TradeloopError):
    """Illegal order transition, unknown client order id, or a fill beyond the order quantity."""


class ClockError(TradeloopError):
    """The replay clock was asked to move backwards."""


class StrategyError(TradeloopError):
    """A strategy hook raised; the event that caused it is attached."""

    def __init__(self, strategy: str, event: object, cause: BaseException) -> None:
        self.strategy = strategy
        self.event = event
        super().__init__(f"strategy {strategy!r} raised {cause!r} on {event!r}")


class ModelError(TradeloopError):
    """A model file or its manifest was refused, or training could not fit one (too few
    usable rows, a walk-forward fold that failed: named)."""


class SweepError(TradeloopError):
    """No combination of a sweep succeeded (each trial's error is in results.parquet), or a
    sweep cannot start (another sweep's folder, a grid that does not validate)."""


class RegistryError(TradeloopError):
    """A model registry refused an operation: unknown version or alias, a stage skipped,
    nothing to roll back to, a model folder that does not load."""


class AuditChainError(RegistryError):
    """The audit log's hash chain is broken: an entry was edited, deleted, reordered or
    torn. Names the file and the first bad entry (1-based line).

    Args:
        file: the audit log.
        line: 1-based line of the first bad entry (one past the end for a missing tail).
        reason: what does not match.
    """

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        super().__init__(f"{file}: entry {line}: {reason}; the audit log was changed")


class AdapterError(TradeloopError):
    """A failure at an I/O boundary."""
