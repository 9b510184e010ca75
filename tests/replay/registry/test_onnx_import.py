"""``tradeloop models import`` and ``tradeloop evaluate``: an ONNX model trained elsewhere
becomes a model folder, is held at the shadow stage while it has no out-of-sample figures,
and is promotable once evaluated on data after its training range (data overlapping it is
refused). ``models add`` works without $USER."""

from __future__ import annotations

import getpass
from pathlib import Path

import numpy as np
import pytest

from adapters.model_registry_store import Registry
from engine.errors import RegistryError
from engine.model_registry import out_of_sample_evidence
from engine.signals.manifest import read_manifest
from engine.signals.onnx_model import OnnxModel
from replay.cli import main
from replay.files.sample_data import START_NS, generate
from tests.onnx_support import FEATURES, export, fit, training_rows


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate(out, symbols=1, hours=0.1, quote_interval_ms=100.0, seed=3)
    return out


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    X, y = training_rows()
    path = tmp_path_factory.mktemp("graph") / "flow.onnx"
    path.write_bytes(export(fit("mlp", X, y), len(FEATURES)))
    return path


def _import(graph: Path, out: Path, train_end: str, *extra: str) -> int:
    return main(["models", "import", str(graph), "--features", ",".join(FEATURES),
                 "--label", "classification", "--horizon", "2s", "--train-end", train_end,
                 "--out", str(out), *extra])  # fmt: skip


def test_models_import_writes_a_folder_the_engine_loads(
    graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(graph, tmp_path / "m", "2023-12-31T00:00:00") == 0
    assert "no out-of-sample figures" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "m")
    assert manifest.kind == "onnx" and manifest.family is None and manifest.metrics == {}
    assert manifest.onnx is not None and manifest.onnx.output == "probabilities"
    assert manifest.onnx.column == 1 and manifest.onnx.scaling is not None
    assert manifest.train_range.end_ns == START_NS - 86_400 * 10**9
    assert out_of_sample_evidence(manifest) is None
    assert np.isfinite(OnnxModel.load(tmp_path / "m").predict(training_rows(5)[0])).all()


def test_models_import_unknown_feature_or_bad_graph_is_one_line(
    graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["models", "import", str(graph), "--features", "imb,nope,spread", "--label",
                 "classification", "--horizon", "2s", "--train-end", "2023-12-31",
                 "--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and err.count("\n") == 1
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    assert _import(junk, tmp_path / "y", "2023-12-31") == 2
    err = capsys.readouterr().err
    assert "cannot load the graph" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # two features for a three-wide graph
    code = main(["models", "import", str(graph), "--features", "imb,spread", "--label",
                 "classification", "--horizon", "2s", "--train-end", "2023-12-31",
                 "--out", str(tmp_path / "z")])  # fmt: skip
    assert code == 2 and "shape" in capsys.readouterr().err


def test_imported_model_held_at_shadow_until_evaluated(
    graph: Path, sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # issue 24.4: no $USER, no $LOGNAME: the registry still records who
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.delenv("LOGNAME", raising=False)
    assert _import(graph, tmp_path / "imported", "2023-12-31T00:00:00") == 0
    reg = str(tmp_path / "models")
    assert main(["models", "add", str(tmp_path / "imported"), "--registry", reg]) == 0
    version = read_version(reg)
    capsys.readouterr()
    assert main(["models", "show", version, "--registry", reg]) == 0
    shown = capsys.readouterr().out
    assert "none stated: held at shadow" in shown and "score probabilities[:, 1]" in shown
    with pytest.raises(RegistryError, match=r"no out-of-sample figures.*shadow"):
        Registry(reg).promote(version, alias="champion", who="ana", reason="try", stage="paper")
    capsys.readouterr()
    code = main(["models", "promote", version, "--to", "champion", "--stage", "paper",
                 "--reason", "go", "--registry", reg])  # fmt: skip
    assert code == 2 and "tradeloop evaluate" in capsys.readouterr().err
    # at shadow it may be champion: it scores, sends nothing
    Registry(reg).promote(version, alias="champion", who="ana", reason="watch it")

    assert main(["evaluate", str(tmp_path / "imported"), str(sample), "--out",
                 str(tmp_path / "evaluated")]) == 0  # fmt: skip
    evaluated = read_manifest(tmp_path / "evaluated")
    fold = evaluated.folds[-1]
    assert fold.test.start_ns > evaluated.train_range.end_ns and fold.test_rows > 100
    assert evaluated.metrics["oos_rows"] == fold.test_rows
    assert evaluated.metrics["oos_auc"] is not None
    assert out_of_sample_evidence(evaluated) is not None
    assert evaluated.model_sha256 == read_manifest(tmp_path / "imported").model_sha256
    assert any("tradeloop evaluate" in w for w in evaluated.warnings)
    assert not any(w.startswith("imported from") for w in evaluated.warnings)
    new, added = Registry(reg).add(tmp_path / "evaluated", who="ana")
    assert added and new != version
    Registry(reg).promote(new, alias="champion", who="ana", reason="evaluated", stage="paper")
    # the first add, without $USER: the login name from the password database here
    assert Registry(reg).state().entries[0].who == getpass.getuser()


def read_version(registry: str) -> str:
    (version,) = Registry(registry).state().versions
    return version


def test_evaluate_refuses_data_overlapping_the_training_range(
    graph: Path, sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(graph, tmp_path / "late", "2024-01-01T00:03:00") == 0  # mid-sample
    capsys.readouterr()
    code = main(["evaluate", str(tmp_path / "late"), str(sample), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and "not be out of sample" in err and err.count("\n") == 1
    assert not (tmp_path / "e").exists()
