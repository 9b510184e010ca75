"""The journal disk's free-space watermark (``[journal] min_free_bytes``): the daemon goes
REDUCE_ONLY with an Alarm before a full disk stops its journal.

Read at each heartbeat; the crossing becomes a ``reduce_only`` command from issuer
``daemon`` whose reason starts with ``DISK_LOW_REASON``, journaled and applied like every
input the daemon makes itself (``adapters.daemon.core``), so a replay of the journal
takes the same decisions without reading any disk.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

from engine.events import Command

log = logging.getLogger("tradeloop.daemon")

# the reason's start: applying such a command emits a critical Alarm first
DISK_LOW_REASON: Final = "journal disk low"


class DiskWatermark:
    """A ``reduce_only`` command once the disk has less than ``min_free_bytes`` free, and
    again only after it had enough in between.

    Args:
        min_free_bytes: the watermark (0: never).
        free_bytes: the disk's free bytes now (tests pass a fake).
    """

    def __init__(self, min_free_bytes: int, free_bytes: Callable[[], int]) -> None:
        self.min_free_bytes = min_free_bytes
        self.free_bytes = free_bytes
        self.low = False

    @classmethod
    def of(cls, directory: Path, min_free_bytes: int) -> DiskWatermark:
        """The watermark of the disk that holds ``directory``."""
        return cls(min_free_bytes, lambda: shutil.disk_usage(directory).free)

    def check(self, ts_ns: int) -> Command | None:
        """The command to journal at ``ts_ns`` if the disk just went below the mark."""
        if self.min_free_bytes <= 0:
            return None
        try:
            free = self.free_bytes()
        except OSError as exc:
            log.error("journal disk: free space unreadable: %s", exc)
            return None
        if free >= self.min_free_bytes:
            self.low = False
            return None
        if self.low:
            return None
        self.low = True
        reason = f"{DISK_LOW_REASON}: {free} bytes free, below min_free_bytes {self.min_free_bytes}"
        log.critical(reason)
        return Command(ts_event=ts_ns, ts_recv=ts_ns, action="reduce_only", issuer="daemon",
                       reason=reason)  # fmt: skip


__all__ = ["DISK_LOW_REASON", "DiskWatermark"]
