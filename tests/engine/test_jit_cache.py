"""numba's on-disk cache of the feature program: an edit of the kernels' file alone must
recompile the interpreter that has them compiled in (numba stamps a function with its own
file only; ``engine.features.jit_cache`` stamps the family with one hash)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from engine.features import jit_cache, program

ROOT = Path(__file__).resolve().parents[2]

# runs one feature update and reports the interpreter's cache hits and misses
PROBE = """
import json
import numpy as np
from engine.features import FeatureSet, FeatureSpec
from engine.features import program
from engine.ticks import TickBatch
fs = FeatureSet([FeatureSpec(name="mid", kind="mid"),
                 FeatureSpec(name="e", kind="ema", input="mid", span=3)])
n = 8
ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64)
mid = 100.0 + np.arange(n, dtype=np.float64)
batch = TickBatch.quotes(ts, ts, np.zeros(n, np.int32), mid - 0.5, mid + 0.5, np.ones(n), np.ones(n))
fs.update(batch, fs.new_state(1))
stats = program.run_program.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values())}))
"""


def _probe(tree: Path) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env["PYTHONPATH"] = str(tree)
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_jit_cache_stamps_the_interpreter_with_both_files() -> None:
    locator = program.run_program._cache._impl._locator
    assert type(locator).__name__.startswith("Family")
    assert locator.get_source_stamp() == jit_cache.STAMP == jit_cache._family_stamp()


def test_jit_cache_an_edit_of_the_kernels_alone_recompiles_the_interpreter(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "engine", tree / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    first = _probe(tree)
    assert first["misses"] >= 1
    again = _probe(tree)
    assert again == {"hits": again["hits"], "misses": 0} and again["hits"] >= 1
    kernels = tree / "engine" / "features" / "kernels.py"
    kernels.write_text(kernels.read_text() + "\n# an edit of the kernels only\n")
    edited = _probe(tree)
    assert edited["hits"] == 0 and edited["misses"] >= 1
