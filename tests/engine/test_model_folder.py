"""Model folders: a damaged model file or manifest is a ModelError naming the line (or the
hash that failed), never a crash of the process; the manifest is hashed and validated;
what the loader scores is what ``Booster.predict`` (the oracle, in tests only) returns."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import msgspec
import numpy as np
import pytest

from engine.errors import ModelError
from engine.signals.lightgbm_model import LightGBMModel
from engine.signals.lightgbm_text import parse_model_text
from engine.signals.manifest import (
    MANIFEST_FILE,
    MANIFEST_HASH_FILE,
    FoldReport,
    LabelSpec,
    Manifest,
    TimeRange,
    read_manifest,
    sha256_file,
    write_manifest,
)
from engine.signals.trees import CompiledTrees
from tests.property.test_tree_evaluator import one_split_model

FEATURES = ["a", "b", "c"]
ROOT = Path(__file__).resolve().parents[2]


def train_booster(objective: str = "binary", **params: object) -> lgb.Booster:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1500, 3))
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    raw = np.nan_to_num(X[:, 0]) * 2 + np.nan_to_num(X[:, 1]) + rng.normal(size=1500)
    y = (raw > 0).astype(float) if objective == "binary" else np.abs(raw) + 0.05
    return lgb.train({"objective": objective, "verbose": -1, "num_leaves": 8, "min_data_in_leaf": 5, **params},
                     lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=12)  # fmt: skip


def manifest_for(folder: Path, output: str = "probability") -> Manifest:
    undefined = float("nan")  # what training computes for a metric of a one-class fold
    span = TimeRange(start_ns=1_000, end_ns=2_000)
    fold = FoldReport(fold=0, train=span, validation=span, test=span, train_rows=10, test_rows=5,
                      best_iteration=3, metrics={"auc": undefined, "ic": 0.1})  # fmt: skip
    return Manifest(name="m", kind="lightgbm", model_file="model.txt", model_sha256=sha256_file(folder / "model.txt"),
                    output=output, feature_names=FEATURES, feature_fingerprint="f" * 64, feature_specs=[],
                    label=LabelSpec(), train_range=span, folds=[fold],
                    metrics={"oos_auc": undefined, "oos_ic": 0.2, "oos_precision": None})  # fmt: skip


def make_folder(root: Path, booster: lgb.Booster, output: str = "probability") -> Path:
    folder = root / "model"
    folder.mkdir()
    booster.save_model(str(folder / "model.txt"))
    write_manifest(folder, manifest_for(folder, output))
    return folder


def replace_model(folder: Path, data: bytes) -> None:
    """Damage the model file and update the manifest (and its hash) to match it."""
    (folder / "model.txt").write_bytes(data)
    m = msgspec.structs.replace(
        read_manifest(folder), model_sha256=sha256_file(folder / "model.txt")
    )
    write_manifest(folder, m)


def write_raw_manifest(folder: Path, doc: dict[str, object]) -> None:
    """A hand-edited manifest with a matching hash: only field validation can refuse it."""
    data = json.dumps(doc, indent=2).replace("Infinity", "1e999").encode()  # JSON's overflow
    (folder / MANIFEST_FILE).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (folder / MANIFEST_HASH_FILE).write_text(f"{digest}  {MANIFEST_FILE}\n")


@pytest.fixture(scope="module")
def binary_booster() -> lgb.Booster:
    return train_booster()


@pytest.fixture
def folder(tmp_path: Path, binary_booster: lgb.Booster) -> Path:
    return make_folder(tmp_path, binary_booster)


def queries() -> np.ndarray:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(500, 3))
    X[rng.uniform(size=X.shape) < 0.1] = 0.0
    return X


# ---- loading and scoring ----------------------------------------------------------------


def test_model_folder_loads_and_scores_like_booster_predict(
    folder: Path, binary_booster: lgb.Booster
) -> None:
    model = LightGBMModel.load(folder)
    X = queries()
    np.testing.assert_allclose(model.predict(X), binary_booster.predict(X), rtol=0, atol=1e-9)
    X[0, 1] = np.nan
    assert np.isnan(model.predict(X[:1]))[0]  # warm-up rule: NaN feature, NaN score


def test_reg_sqrt_model_scores_like_booster_predict(tmp_path: Path) -> None:
    booster = train_booster("regression", reg_sqrt=True)
    model = LightGBMModel.load(make_folder(tmp_path, booster, output="raw"))
    X = queries()
    np.testing.assert_allclose(model.predict(X), booster.predict(X), rtol=0, atol=1e-9)


def test_manifest_output_that_the_objective_cannot_give_is_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, train_booster("regression"), output="probability")
    with pytest.raises(ModelError, match="objective 'regression' does not give manifest output 'probability'"):  # fmt: skip
        LightGBMModel.load(folder)


def test_loader_never_runs_lightgbm(folder: Path) -> None:
    # LightGBM's loader crashes on damaged text; the engine's loader must not even import it
    code = f"""
        import sys
        from engine.signals.lightgbm_model import LightGBMModel
        LightGBMModel.load({str(folder)!r}).predict(__import__("numpy").zeros((1, 3)))
        assert "lightgbm" not in sys.modules, "lightgbm was imported"
    """
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr


# ---- the manifest -----------------------------------------------------------------------


def test_undefined_metrics_are_written_as_null_and_load_as_none(folder: Path) -> None:
    doc = json.loads((folder / MANIFEST_FILE).read_bytes())
    assert doc["metrics"]["oos_auc"] is None and doc["folds"][0]["metrics"]["auc"] is None
    m = read_manifest(folder)
    assert m.metrics == {"oos_auc": None, "oos_ic": 0.2, "oos_precision": None}
    assert m.folds[0].metrics == {"auc": None, "ic": 0.1}
    LightGBMModel.load(folder)


def test_edited_manifest_is_refused_by_its_hash(folder: Path) -> None:
    path = folder / MANIFEST_FILE
    path.write_bytes(path.read_bytes().replace(b'"probability"', b'"raw"'))
    with pytest.raises(ModelError, match="manifest was changed after it was written"):
        read_manifest(folder)


def test_manifest_without_its_hash_file_is_refused(folder: Path) -> None:
    (folder / MANIFEST_HASH_FILE).unlink()
    with pytest.raises(ModelError, match=r"manifest\.sha256: cannot read"):
        read_manifest(folder)
    (folder / MANIFEST_HASH_FILE).write_text("not a hash\n")
    with pytest.raises(ModelError, match="expected one line"):
        read_manifest(folder)


def _set(doc: dict[str, object], path: str, value: object) -> None:
    *parents, last = path.split(".")
    node: object = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("output", "banana", r"Invalid enum value 'banana' - at `\$\.output`"),
        ("kind", "xgboost", r"at `\$\.kind`"),
        ("model_sha256", "abc", r"at `\$\.model_sha256`"),
        ("model_file", "../model.txt", r"at `\$\.model_file`"),
        ("model_file", "/etc/passwd", r"at `\$\.model_file`"),
        ("metrics.oos_ic", 1e999, r"at `\$\.metrics\[\.\.\.\]`"),
        ("metrics.oos_ic", "high", r"at `\$\.metrics\[\.\.\.\]`"),
        ("folds.0.metrics.ic", 1e999, r"at `\$\.folds\[0\]\.metrics\[\.\.\.\]`"),
        ("folds.0.train_rows", -1, r"at `\$\.folds\[0\]\.train_rows`"),
        ("feature_importance", {"a": -0.5}, r"at `\$\.feature_importance\[\.\.\.\]`"),
        ("label.horizon_ns", 0, r"at `\$\.label\.horizon_ns`"),
        ("label.kind", "ranking", r"at `\$\.label\.kind`"),
        ("label.dead_zone_bps", -1.0, r"at `\$\.label\.dead_zone_bps`"),
        ("train_range.end_ns", 5, r"ends \(5\) before it starts"),
        ("feature_names", [], r"at `\$\.feature_names`"),
        ("feature_names", ["a", "a", "c"], r"repeats a name"),
        ("name", "", r"at `\$\.name`"),
        ("surprise", 1, r"unknown field `surprise`"),
    ],
)
def test_manifest_fields_are_validated(folder: Path, field: str, value: object, match: str) -> None:
    doc = json.loads((folder / MANIFEST_FILE).read_bytes())
    _set(doc, field, value)
    write_raw_manifest(folder, doc)
    with pytest.raises(ModelError, match=match):
        read_manifest(folder)


def test_write_manifest_refuses_what_the_loader_would_refuse(folder: Path) -> None:
    before = (folder / MANIFEST_FILE).read_bytes()
    bad = msgspec.structs.replace(read_manifest(folder), output="banana")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="banana"):
        write_manifest(folder, bad)
    assert (folder / MANIFEST_FILE).read_bytes() == before  # nothing half-written


# ---- damaged model text, hash updated to match ------------------------------------------


def _line_no(text: str, prefix: str, occurrence: int = 0) -> int:
    hits = [i + 1 for i, line in enumerate(text.split("\n")) if line.startswith(prefix)]
    return hits[occurrence]


def _edit_line(prefix: str, edit: Callable[[list[str]], list[str]], occurrence: int = 0) -> Callable[[str], str]:  # fmt: skip
    def apply(text: str) -> str:
        lines = text.split("\n")
        k = _line_no(text, prefix, occurrence) - 1
        key, _, value = lines[k].partition("=")
        lines[k] = key + "=" + " ".join(edit(value.split(" ")))
        return "\n".join(lines)

    return apply


def _first(value: str) -> Callable[[list[str]], list[str]]:
    return lambda tokens: [value, *tokens[1:]]


def _cut_after(marker: str) -> Callable[[str], str]:
    return lambda text: text[: text.index(marker) + len(marker)]


DAMAGE: list[tuple[str, Callable[[str], str], str, int]] = [
    ("nan threshold", _edit_line("threshold=", _first("nan")), "threshold", 0),
    ("inf threshold written as 1e999", _edit_line("threshold=", _first("1e999")), "threshold", 0),
    ("nan leaf value", _edit_line("leaf_value=", _first("nan")), "leaf_value", 0),
    ("inf leaf value", _edit_line("leaf_value=", _first("inf")), "leaf_value", 0),
    ("leaf value dropped", _edit_line("leaf_value=", lambda t: t[:-1]), "leaf_value", 0),
    ("num_leaves raised", _edit_line("num_leaves=", lambda t: [str(int(t[0]) + 1)]), "split_feature", 0),
    ("num_leaves lowered", _edit_line("num_leaves=", lambda t: [str(int(t[0]) - 1)]), "split_feature", 0),
    ("num_leaves zero", _edit_line("num_leaves=", lambda t: ["0"]), "num_leaves", 0),
    ("split feature beyond max_feature_idx", _edit_line("split_feature=", _first("3")), "split_feature", 0),
    ("negative split feature", _edit_line("split_feature=", _first("-1")), "split_feature", 0),
    ("child out of range", _edit_line("left_child=", _first("99")), "left_child", 0),
    ("leaf child out of range", _edit_line("right_child=", _first("-99")), "right_child", 0),
    ("child points at the root", _edit_line("left_child=", _first("0")), "left_child", 0),
    ("shared child", _edit_line("right_child=", lambda t: [t[0], t[0], *t[2:]]), "right_child", 0),
    ("categorical bit", _edit_line("decision_type=", _first("9")), "decision_type", 0),
    ("unknown decision bits", _edit_line("decision_type=", _first("16")), "decision_type", 0),
    ("missing type 3", _edit_line("decision_type=", _first("12")), "decision_type", 0),
    ("num_cat set", _edit_line("num_cat=", lambda t: ["1"]), "num_cat", 0),
    ("linear tree", _edit_line("is_linear=", lambda t: ["1"]), "is_linear", 0),
    ("nan shrinkage", _edit_line("shrinkage=", lambda t: ["nan"]), "shrinkage", 0),
    ("word in a count", _edit_line("leaf_count=", _first("many")), "leaf_count", 0),
    ("double space", _edit_line("threshold=", lambda t: ["", *t]), "threshold", 0),
    ("tree size edited", _edit_line("tree_sizes=", _first("99")), "Tree=0", 0),
    ("tree count short", _edit_line("tree_sizes=", lambda t: t[:-1]), "tree_sizes", 0),
    ("objective unknown", _edit_line("objective=", lambda t: ["lambdarank"]), "objective", 0),
    ("sigmoid nan", _edit_line("objective=", lambda t: ["binary", "sigmoid:nan"]), "objective", 0),
    ("sigmoid zero", _edit_line("objective=", lambda t: ["binary", "sigmoid:0"]), "objective", 0),
    ("format version", _edit_line("version=", lambda t: ["v9"]), "version", 0),
    ("feature names short", _edit_line("feature_names=", lambda t: t[:-1]), "feature_names", 0),
    ("max_feature_idx beyond names", _edit_line("max_feature_idx=", lambda t: ["7"]), "feature_names", 0),
    ("tree renumbered", lambda s: s.replace("Tree=1\n", "Tree=2\n"), "Tree=2", 0),
    ("end of trees lost", lambda s: s.replace("end of trees", "end of tree"), "end of tree", 0),
    ("cut inside a tree's leaf values", _cut_after("leaf_value=-"), "leaf_value", 0),
    ("cut inside the header", _cut_after("feature_na"), "feature_na", 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "where", "occurrence"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE]
)
def test_damaged_model_text_is_refused_naming_the_line(folder: Path, damage: Callable[[str], str], where: str,
                                                       occurrence: int) -> None:  # fmt: skip
    text = damage((folder / "model.txt").read_text())
    replace_model(folder, text.encode())
    with pytest.raises(
        ModelError, match=rf"model\.txt, line {_line_no(text, where, occurrence)}: "
    ):
        LightGBMModel.load(folder)


def test_children_forming_a_cycle_are_refused(tmp_path: Path) -> None:
    text = one_split_model(2, 0.5).replace("num_leaves=2", "num_leaves=4")
    text = text.replace("split_feature=0\n", "split_feature=0 1 1\n").replace(
        "split_gain=1\n", "split_gain=1 1 1\n"
    )
    text = text.replace("threshold=0.5\n", "threshold=0.5 0.5 0.5\n").replace(
        "decision_type=2\n", "decision_type=2 2 2\n"
    )
    # node 0 -> two leaves; nodes 1 and 2 are each other's child: one parent each, unreachable
    text = text.replace("left_child=-1\n", "left_child=-1 2 1\n").replace(
        "right_child=-2\n", "right_child=-2 -3 -4\n"
    )
    text = text.replace("leaf_value=-1.25 2.5\n", "leaf_value=1 2 3 4\n").replace(
        "leaf_weight=1 1\n", "leaf_weight=1 1 1 1\n"
    )
    text = text.replace("leaf_count=1 1\n", "leaf_count=1 1 1 1\n").replace(
        "internal_value=0\n", "internal_value=0 0 0\n"
    )
    text = text.replace("internal_weight=2\n", "internal_weight=2 2 2\n").replace("internal_count=2\n", "internal_count=2 2 2\n")  # fmt: skip
    with pytest.raises(ModelError, match=rf"line {_line_no(text, 'left_child=')}: tree 0: 2 of 3 nodes cannot be reached"):  # fmt: skip
        parse_model_text(text, "cycle.txt")


def test_truncation_anywhere_is_refused_naming_a_line(
    folder: Path, binary_booster: lgb.Booster
) -> None:
    data = (folder / "model.txt").read_bytes()
    end = data.index(b"end of trees\n") + len(b"end of trees\n")
    cuts = sorted({*range(0, len(data), 37), *(k + 1 for k in range(len(data)) if data[k] == 10)})
    X = queries()
    for cut in cuts:
        if cut >= end:  # the trees are complete: what follows does not change a prediction
            whole, cut_model = CompiledTrees.from_text(data), CompiledTrees.from_text(data[:cut])
            np.testing.assert_array_equal(cut_model.predict(X), whole.predict(X))
            continue
        with pytest.raises(ModelError, match=r"<model text>, line \d+: "):
            parse_model_text(data[:cut])
    # through the folder, with the manifest updated to the truncated bytes
    for cut in cuts[:: max(1, len(cuts) // 25)]:
        replace_model(folder, data[:cut])
        if cut >= end:
            np.testing.assert_allclose(
                LightGBMModel.load(folder).predict(X), binary_booster.predict(X), atol=1e-9
            )
        else:
            with pytest.raises(ModelError, match=r"model\.txt, line \d+: "):
                LightGBMModel.load(folder)


def test_byte_flips_are_refused_or_give_a_valid_model(folder: Path) -> None:
    data = (folder / "model.txt").read_bytes()
    end = data.index(b"end of trees")
    rng = np.random.default_rng(5)
    refused = 0
    for _ in range(400):
        damaged = bytearray(data)
        k = int(rng.integers(0, end))
        damaged[k] = int(
            rng.choice([0, 10, 13, 32, 45, 46, 48, 57, 61, 101, 110, 255, damaged[k] ^ 1])
        )
        try:
            trees = parse_model_text(bytes(damaged))
        except ModelError as exc:
            assert re.search(r"line \d+: ", str(exc)), exc
            refused += 1
            continue
        # accepted (a digit changed, say): a model the evaluator can walk
        assert CompiledTrees(trees).predict(queries()).shape == (500,)
    assert refused > 100
    # without the manifest updated, any flip is a hash mismatch
    (folder / "model.txt").write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(ModelError, match=r"sha256 .* does not match the manifest's"):
        LightGBMModel.load(folder)


def test_damage_that_aborts_lightgbm_is_a_model_error_in_a_subprocess(folder: Path) -> None:
    # these files abort LightGBM's own loader (SIGABRT) or crash it (SIGSEGV); the engine
    # must refuse each one and live
    text = (folder / "model.txt").read_text()
    damaged = {
        "nan": _edit_line("threshold=", _first("nan"))(text),
        "cut": text[: text.index("Tree=1") + 120],
        "cut_late": text[: len(text) // 3],
    }
    for name, body in damaged.items():
        sub = folder.parent / name
        sub.mkdir()
        (sub / "model.txt").write_text(body)
        write_manifest(sub, manifest_for(sub))
    code = """
        import sys
        from engine.errors import ModelError
        from engine.signals.lightgbm_model import LightGBMModel
        for folder in sys.argv[1:]:
            try:
                LightGBMModel.load(folder)
            except ModelError as exc:
                print("refused:", exc)
    """
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *(str(folder.parent / n) for n in damaged)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert len(re.findall(r"refused: .*model\.txt, line \d+: ", run.stdout)) == 3, run.stdout
