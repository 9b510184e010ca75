"""Whether a run's data overlaps what its model was trained on (in sample).

A model's figures on the data it was fit on (the manifest's ``train_range``: the first and
last time of the rows the final model was fit on) are in-sample: they overstate what it
does on new data (replays over their own training range showed IC 0.29-0.44 where the
held-out days gave a fraction of it). Replay, its report and the monitor page state the
overlap in words, so no one reads an in-sample figure as an out-of-sample one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from engine.signals.manifest import Manifest


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(ns: int) -> str:
    hours = ns / 3.6e12
    return f"{hours:.2f} h" if hours >= 1 else f"{ns / 6e10:.1f} min"


@dataclass(frozen=True)
class InSample:
    """The overlap ``[start_ns, end_ns]`` of a run's data ``[run_start_ns, run_end_ns]``
    with the model's training range ``[train_start_ns, train_end_ns]``."""

    start_ns: int
    end_ns: int
    run_start_ns: int
    run_end_ns: int
    train_start_ns: int
    train_end_ns: int

    @property
    def share_of_run(self) -> float:
        """The overlap's share of the run's span (1.0 for a run inside the training range)."""
        span = self.run_end_ns - self.run_start_ns
        return (self.end_ns - self.start_ns) / span if span > 0 else 1.0

    @property
    def share_of_training(self) -> float:
        span = self.train_end_ns - self.train_start_ns
        return (self.end_ns - self.start_ns) / span if span > 0 else 1.0

    def text(self) -> str:
        """One sentence for a person, starting with ``in sample``."""
        return (
            f"in sample: {_iso(self.start_ns)} to {_iso(self.end_ns)} "
            f"({_span(self.end_ns - self.start_ns)}, {self.share_of_run:.0%} of this run's data) "
            f"lies inside the model's training range {_iso(self.train_start_ns)} to "
            f"{_iso(self.train_end_ns)}: the model was fit on these ticks, so its figures "
            "there (IC, hit ratio, PnL) overstate what it does on new data; replay data after "
            f"{_iso(self.train_end_ns)} for an out-of-sample figure"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the ranges, both shares and the sentence."""
        return {
            **asdict(self),
            "share_of_run": self.share_of_run,
            "share_of_training": self.share_of_training,
            "text": self.text(),
        }


def in_sample(manifest: Manifest, run_start_ns: int, run_end_ns: int) -> InSample | None:
    """The overlap of ``[run_start_ns, run_end_ns]`` with the manifest's training range,
    or None when the run lies wholly outside it."""
    start = max(run_start_ns, manifest.train_range.start_ns)
    end = min(run_end_ns, manifest.train_range.end_ns)
    if start > end:
        return None
    return InSample(
        start,
        end,
        run_start_ns,
        run_end_ns,
        manifest.train_range.start_ns,
        manifest.train_range.end_ns,
    )
