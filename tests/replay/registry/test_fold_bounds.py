"""The folds' bounds in the manifest (``FoldBounds``) and ``tradeloop models show --folds``:
what training records is what the dataset says, the purge is verified from the manifest
alone, and a manifest whose folds break the purge (edited, or written by a wrong split)
fails the check naming the fold."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from adapters.model_registry_store import Registry
from engine.signals.manifest import FoldBounds, FoldReport, Manifest, read_manifest, write_manifest
from replay.registry.fold_bounds import fold_problems, fold_rows
from replay.research.dataset import build_dataset
from replay.research.training.folds import walk_forward_splits
from replay.research.training.run import train
from tests.replay.registry.test_registry import FakeWallClock, cli
from tests.replay.research.test_training import ml_config


@pytest.fixture(scope="module")
def trained(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("folds") / "flow"
    train(ml_config(), sample_dir, out, progress=False)
    return out


def test_fold_bounds_in_the_manifest_are_what_the_dataset_says(
    trained: Path, sample_dir: Path
) -> None:
    cfg = ml_config()
    m = read_manifest(trained)
    ds = build_dataset(cfg, sample_dir, progress=False)
    splits, _ = walk_forward_splits(cfg, ds)
    assert [f.fold for f in m.folds] == [s.fold for s in splits] == [0, 1, 2]
    embargo = cfg.train.embargo_ns
    for f, s in zip(m.folds, splits, strict=True):
        b = f.bounds
        assert b is not None
        assert (b.test_block_start_ns, b.test_block_end_ns) == (s.test_start_ns, s.test_end_ns)
        assert b.embargo_ns == embargo == m.label.horizon_ns
        assert b.purge_before_ns == s.test_start_ns - embargo
        assert b.validation_purge_before_ns == ds.ts[s.validation[0]] - embargo
        assert b.train_label_end_ns == ds.label_end_ns[s.train].max()
        assert b.validation_label_end_ns == ds.label_end_ns[s.validation].max()
        # and the rule holds on the rows themselves
        fit = np.concatenate([s.train, s.validation])
        assert ds.label_end_ns[fit].max() < b.purge_before_ns
    assert fold_problems(m) == ([], [])


def test_models_show_folds_prints_and_verifies_the_purge(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "models"
    version, _ = Registry(reg, now_ns=FakeWallClock().now_ns).add(trained, who="ana", note="")
    code, out, err = cli(
        ["models", "show", "--registry", str(reg), version[:12], "--folds"], capsys
    )
    assert code == 0, err
    assert "train labels end" in out and "purge before" in out and "test block" in out
    assert out.count("\n0  ") + out.count("\n1  ") + out.count("\n2  ") == 3  # one row per fold
    assert "folds verified: 3 of 3" in out
    # without the flag, the summary alone
    code, out, _ = cli(["models", "show", "--registry", str(reg), version[:12]], capsys)
    assert code == 0 and "purge before" not in out


def _with_fold(m: Manifest, k: int, **changes: object) -> Manifest:
    f = m.folds[k]
    bounds_changes = {c: v for c, v in changes.items() if c in FoldBounds.__struct_fields__}
    fold_changes = {c: v for c, v in changes.items() if c not in bounds_changes}
    assert f.bounds is not None
    new = msgspec.structs.replace(
        f, bounds=msgspec.structs.replace(f.bounds, **bounds_changes), **fold_changes
    )
    return msgspec.structs.replace(m, folds=[new if g.fold == k else g for g in m.folds])


def test_models_show_folds_fails_a_label_that_reads_into_the_test_block(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a manifest written by a split that purged by t + horizon instead of the label's end:
    # one training label ends a second into fold 1's test block
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in trained.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    m = read_manifest(trained)
    b = m.folds[1].bounds
    assert b is not None
    write_manifest(bad, _with_fold(m, 1, train_label_end_ns=b.test_block_start_ns + 10**9))
    reg = tmp_path / "models"
    version, _ = Registry(reg, now_ns=FakeWallClock().now_ns).add(bad, who="ana", note="")
    code, out, err = cli(
        ["models", "show", "--registry", str(reg), version[:12], "--folds"], capsys
    )
    assert code == 2
    assert "FAILED: fold 1: a training row's label ends at" in out
    assert "inside the embargo or the test block" in out
    assert err.count("\n") == 1 and "2 fold check(s) failed" in err  # the test block and validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b, f: {"embargo_ns": b.embargo_ns // 2,
                       "purge_before_ns": b.test_block_start_ns - b.embargo_ns // 2},
         "shorter than the label horizon"),
        (lambda b, f: {"purge_before_ns": b.purge_before_ns + 1}, "is not the test block's start"),
        (lambda b, f: {"validation_label_end_ns": b.purge_before_ns},
         "an early-stopping row's label ends"),
        (lambda b, f: {"train_label_end_ns": b.validation_purge_before_ns},
         "at or after the early-stopping rows' purge boundary"),
        (lambda b, f: {"train_label_end_ns": f.train.end_ns}, "label ends recorded are not"),
        (lambda b, f: {"test_block_end_ns": f.test.end_ns}, "not inside the test block"),
        (lambda b, f: {"validation_purge_before_ns": b.validation_purge_before_ns - 1},
         "validation purge boundary"),
    ],
)  # fmt: skip
def test_fold_checks_each_rule_fails_on_its_violation(
    trained: Path, change: object, message: str
) -> None:
    m = read_manifest(trained)
    f = m.folds[2]
    assert f.bounds is not None
    bad = _with_fold(m, 2, **change(f.bounds, f))  # type: ignore[operator]
    problems, _ = fold_problems(bad)
    assert any(message in p and p.startswith("fold 2") for p in problems), problems


def test_fold_checks_find_overlapping_test_ranges_and_blocks(trained: Path) -> None:
    m = read_manifest(trained)
    f0, f1 = m.folds[0], m.folds[1]
    assert f0.bounds is not None and f1.bounds is not None
    overlap = _with_fold(
        m, 0, test=msgspec.structs.replace(f0.test, end_ns=f1.test.start_ns),
        test_block_end_ns=f1.bounds.test_block_start_ns + 1,
    )  # fmt: skip
    problems, _ = fold_problems(overlap)
    assert "folds 0 and 1: their test ranges overlap" in problems
    assert "folds 0 and 1: their test blocks overlap" in problems


def test_fold_checks_note_a_manifest_from_before_fold_bounds(trained: Path) -> None:
    m = read_manifest(trained)
    old = msgspec.structs.replace(
        m, folds=[msgspec.structs.replace(f, bounds=None) for f in m.folds]
    )
    problems, notes = fold_problems(old)
    assert problems == [] and "cannot be checked" in notes[0]
    assert fold_rows(old)[1][3] == "-"
    # and such a manifest still decodes (the field is optional)
    raw = msgspec.json.encode(old)
    assert msgspec.json.decode(raw, type=Manifest).folds[0].bounds is None
    assert isinstance(old.folds[0], FoldReport)
