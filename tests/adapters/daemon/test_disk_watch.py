"""The journal disk's watermark: one reduce_only per crossing."""

from __future__ import annotations

from adapters.daemon.disk_watch import DISK_LOW_REASON, DiskWatermark


def test_disk_watermark_below_min_free_one_reduce_only_per_crossing() -> None:
    free = [10_000]
    mark = DiskWatermark(5_000, lambda: free[0])
    assert mark.check(1) is None
    free[0] = 4_000
    command = mark.check(2)
    assert command is not None and command.action == "reduce_only"
    assert command.issuer == "daemon" and command.reason.startswith(DISK_LOW_REASON)
    assert mark.check(3) is None  # still low: said once
    free[0] = 6_000
    assert mark.check(4) is None
    free[0] = 1_000
    assert mark.check(5) is not None  # a second crossing


def test_disk_watermark_zero_never_reads_the_disk() -> None:
    def unreadable() -> int:
        raise AssertionError("read")

    assert DiskWatermark(0, unreadable).check(1) is None
