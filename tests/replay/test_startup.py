"""Start-up structure (issue 13, part 5): what ``tradeloop`` imports before it works. The
figures are ``bench/startup.py``'s; no timing is asserted here (shared machines differ 3x)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("matplotlib", "dask", "distributed", "aiomqtt", "paho", "lightgbm", "uvloop")


def _modules(code: str) -> set[str]:
    """The top-level packages imported after ``code`` runs in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_and_its_help_import_nothing_heavy() -> None:
    loaded = _modules(
        "import contextlib, io\nfrom replay.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_a_tick_replay_with_its_report_does_not_import_matplotlib(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    loaded = _modules(
        "from replay.cli import main\n"
        f"assert main(['sample-data', {str(data)!r}, '--symbols', '1', '--hours', '0.005']) == 0\n"
        f"assert main(['replay', {str(data)!r}, '--out', {str(run)!r}]) == 0"
    )
    assert (run / "report.html").is_file() and (run / "report.svg").is_file()
    assert not loaded & {"matplotlib", "dask", "distributed", "aiomqtt", "paho", "lightgbm"}
