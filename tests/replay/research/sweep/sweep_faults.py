"""A strategy for the sweep tests that fails on purpose: the EMA-cross baseline plus a
``fault`` param, and one marker file per run so a test can count the trials that ran.

Used as ``strategy.name = "tests.replay.research.sweep.sweep_faults:FaultyEmaCross"``; the worker
processes import it by that path.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from strategies.ema_cross import EmaCross, EmaCrossParams


class FaultyParams(EmaCrossParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``fault``: "" (none), "raise", "raise_once", "kill", "kill_once", "hang";
    ``marker_dir``: where each run leaves a file (and the *_once faults their flag)."""

    fault: str = ""
    marker_dir: str = ""


class FaultyEmaCross(EmaCross):
    name = "faulty_ema_cross"
    Params = FaultyParams

    def __init__(self, params: FaultyParams) -> None:  # type: ignore[override]
        super().__init__(params)
        self.fault = params.fault
        self.markers = Path(params.marker_dir)

    def _first(self, flag: str) -> bool:
        """True for the first run of all processes to ask (O_EXCL is atomic)."""
        try:
            os.close(os.open(self.markers / flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def on_start(self) -> None:
        # on_start runs in the replay only, not when the sweep validates the params
        (self.markers / f"run-{self.fault or 'none'}-{uuid.uuid4().hex}").touch()
        if self.fault == "raise" or (self.fault == "raise_once" and self._first("raised")):
            raise ValueError(f"fault {self.fault!r} on purpose")
        if self.fault == "kill" or (self.fault == "kill_once" and self._first("killed")):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fault == "hang":
            time.sleep(600)
