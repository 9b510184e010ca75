"""The model registry: content-addressed versions of real trained models, champion and
challenger, stages with their capital limits, and a hash-chained audit log whose every
edit, deletion or reordering is detected and refused."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import re
import shlex
import shutil
import sys
import threading
from pathlib import Path

import lightgbm as lgb
import msgspec
import numpy as np
import pytest

from adapters.model_registry_store import AUDIT_FILE, HEAD_FILE, Registry, resolve, version_id
from engine.config import ModelConfig
from engine.errors import AuditChainError, RegistryError, TradeloopError
from engine.plugins import load_model
from engine.registry_types import (
    AuditContent,
    StageScale,
    decode_entry,
    seal,
    stage_limits,
)
from engine.signals.manifest import (
    FoldReport,
    LabelSpec,
    Manifest,
    TimeRange,
    read_manifest,
    sha256_file,
    write_manifest,
)
from replay.registry.cli import add_models_commands

ROOT = Path(__file__).resolve().parents[3]
DAY_NS = 86_400 * 10**9
T0_NS = 1_717_200_000 * 10**9  # 2024-06-01 00:00:00 UTC
LIST_HEADER = [
    "version",
    "created",
    "(UTC)",
    "stage",
    "aliases",
    "oos_auc",
    "oos_ic",
    "oos_accuracy",
    "name",
]


class FakeWallClock:
    """Stands in for the live clock: one second per reading."""

    def __init__(self) -> None:
        self.ts_ns = T0_NS

    def now_ns(self) -> int:
        self.ts_ns += 10**9
        return self.ts_ns


def train_folder(
    root: Path, name: str, *, features: list[str], seed: int, leaves: int, auc: float
) -> Path:
    """A real LightGBM model folder (model text + manifest + hash), a few ms to train."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, len(features)))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=400) > 0).astype(float)
    params = {
        "objective": "binary",
        "verbose": -1,
        "num_threads": 1,
        "num_leaves": leaves,
        "min_data_in_leaf": 5,
        "learning_rate": 0.1,
        "seed": seed,
    }
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=features), num_boost_round=6)
    folder = root / name
    folder.mkdir()
    booster.save_model(str(folder / "model.txt"))
    span = TimeRange(start_ns=T0_NS - 30 * DAY_NS, end_ns=T0_NS - seed * DAY_NS)
    fold = FoldReport(
        fold=0,
        train=span,
        validation=span,
        test=span,
        train_rows=300,
        test_rows=100,
        best_iteration=6,
        metrics={"auc": auc},
    )
    write_manifest(
        folder,
        Manifest(
            name=name,
            kind="lightgbm",
            model_file="model.txt",
            model_sha256=sha256_file(folder / "model.txt"),
            output="probability",
            feature_names=features,
            feature_fingerprint=f"{seed:064x}",
            feature_specs=[],
            label=LabelSpec(horizon_ns=seed * 10**9),
            train_range=span,
            folds=[fold],
            metrics={"oos_auc": auc, "oos_ic": auc / 10, "oos_accuracy": None},
        ),
    )
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("trained")
    a = train_folder(
        root, "imb-v1", features=["imb", "z_mid", "spread"], seed=1, leaves=4, auc=0.61
    )
    b = train_folder(root, "imb-v2", features=["imb", "z_mid", "flow"], seed=2, leaves=8, auc=0.64)
    return a, b


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models", now_ns=FakeWallClock().now_ns)


def cli(argv: str | list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """What the dispatcher does: parse, run, a TradeloopError is one line and exit 2."""
    argv = shlex.split(argv) if isinstance(argv, str) else argv
    parser = argparse.ArgumentParser(prog="tradeloop")
    add_models_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
    except TradeloopError as exc:
        print(f"tradeloop: error: {exc}", file=sys.stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


def files_sha256(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def with_two(registry: Registry, models: tuple[Path, Path]) -> tuple[str, str]:
    va, _ = registry.add(models[0], who="ana", note="first fit")
    vb, _ = registry.add(models[1], who="ana", note="more leaves")
    return va, vb


def test_add_model_folder_is_stored_under_its_content_address(
    registry: Registry, models: tuple[Path, Path]
) -> None:
    va, vb = with_two(registry, models)
    manifest = read_manifest(models[0])
    assert va == version_id(manifest, (models[0] / "model.txt").read_bytes())
    assert va != vb
    stored = registry.version_dir(va)
    assert files_sha256(stored) == {n: sha256_file(models[0] / n) for n in files_sha256(stored)}
    assert set(files_sha256(stored)) == {"model.txt", "manifest.json", "manifest.sha256"}
    # what is stored loads with the engine's own loader, as the daemon will load it
    assert load_model(ModelConfig(kind="lightgbm", path=str(stored))).feature_names == (
        "imb",
        "z_mid",
        "spread",
    )
    assert registry.state().versions[va].stage == "shadow"


def test_add_same_content_twice_is_a_no_op(
    registry: Registry, models: tuple[Path, Path], tmp_path: Path
) -> None:
    va, new = registry.add(models[0], who="ana")
    copy = shutil.copytree(models[0], tmp_path / "elsewhere")
    audit = (registry.root / AUDIT_FILE).read_bytes()
    assert new
    assert registry.add(copy, who="bob") == (va, False)
    assert (registry.root / AUDIT_FILE).read_bytes() == audit


@pytest.mark.parametrize("damage", ["model byte", "manifest byte", "model text rehashed"])
def test_add_tampered_model_folder_is_refused(
    registry: Registry, models: tuple[Path, Path], tmp_path: Path, damage: str
) -> None:
    folder = Path(shutil.copytree(models[0], tmp_path / "tampered"))
    if damage == "model byte":
        data = bytearray((folder / "model.txt").read_bytes())
        data[200] ^= 1
        (folder / "model.txt").write_bytes(bytes(data))
    elif damage == "manifest byte":
        text = (folder / "manifest.json").read_text().replace("0.61", "0.71")
        (folder / "manifest.json").write_text(text)
    else:  # damaged trees behind a manifest updated to match: the parse refuses it
        text = (folder / "model.txt").read_text().replace("num_leaves=", "num_leaves=x", 1)
        (folder / "model.txt").write_text(text)
        m = msgspec.structs.replace(
            read_manifest(folder), model_sha256=sha256_file(folder / "model.txt")
        )
        write_manifest(folder, m)
    registry.root.mkdir()
    with pytest.raises(RegistryError, match="not added"):
        registry.add(folder, who="ana")
    assert not (registry.root / AUDIT_FILE).exists()
    assert not list((registry.root).glob("versions/*"))


def test_promote_challenger_then_champion_resolves_each(
    registry: Registry, models: tuple[Path, Path]
) -> None:
    va, vb = with_two(registry, models)
    registry.promote(va, alias="champion", who="ana", reason="baseline", stage="paper")
    registry.promote(vb[:8], alias="challenger", who="ana", reason="try more leaves")
    assert resolve(registry.root, "champion") == registry.version_dir(va)
    assert resolve(registry.root, "challenger") == registry.version_dir(vb)
    entry = registry.promote(
        "challenger", alias="champion", who="bo", reason="beat A", stage="paper"
    )
    assert (entry.from_version, entry.from_stage, entry.version, entry.stage) == (
        va,
        "paper",
        vb,
        "paper",
    )
    found = registry.lookup("champion")
    assert (found.path, found.stage, found.aliases) == (
        registry.version_dir(vb),
        "paper",
        ("champion", "challenger"),
    )
    assert (found.audit_seq, found.audit_entry_sha256) == (entry.seq, entry.entry_sha256)
    alias_file = msgspec.json.decode((registry.root / "aliases" / "champion").read_bytes())
    assert (alias_file["version"], alias_file["stage"]) == (vb, "paper")


def test_rollback_returns_previous_champion_bit_for_bit(
    registry: Registry, models: tuple[Path, Path]
) -> None:
    va, vb = with_two(registry, models)
    registry.promote(va, alias="champion", who="ana", reason="baseline", stage="paper")
    before = files_sha256(resolve(registry.root, "champion"))
    registry.promote(vb, alias="champion", who="ana", reason="new fit")
    entry = registry.rollback("champion", who="ana", reason="IC alarm")
    assert (entry.action, entry.version, entry.from_version, entry.stage) == (
        "rollback",
        va,
        vb,
        "paper",
    )
    path = resolve(registry.root, "champion")
    assert files_sha256(path) == before == {n: sha256_file(models[0] / n) for n in before}
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("champion", who="ana", reason="again")


def test_rollback_twice_walks_back_two_champions(
    registry: Registry, models: tuple[Path, Path], tmp_path: Path
) -> None:
    va, vb = with_two(registry, models)
    vc, _ = registry.add(
        train_folder(tmp_path, "c", features=["imb", "z_mid", "x"], seed=3, leaves=4, auc=0.6),
        who="ana",
    )
    for v in (va, vb, vc):
        registry.promote(v, alias="champion", who="ana", reason="next")
    assert registry.rollback("champion", who="ana", reason="r").version == vb
    assert registry.rollback("champion", who="ana", reason="r").version == va


def test_stage_widens_one_step_at_a_time(registry: Registry, models: tuple[Path, Path]) -> None:
    va, _ = with_two(registry, models)
    with pytest.raises(RegistryError, match=r"one step at a time.*next is paper, not live"):
        registry.promote(va, alias="champion", who="ana", reason="skip", stage="live")
    registry.promote(va, alias="champion", who="ana", reason="step", stage="paper")
    registry.promote(va, alias="champion", who="ana", reason="step", stage="live")
    assert registry.lookup("champion").stage == "live"
    registry.promote(va, alias="champion", who="ana", reason="back off", stage="shadow")
    assert registry.lookup("champion").stage == "shadow"
    with pytest.raises(RegistryError, match="already"):
        registry.promote(va, alias="champion", who="ana", reason="same", stage="shadow")


def test_stage_limits_scale_max_position_per_stage() -> None:
    assert [stage_limits(s, 2.0) for s in ("shadow", "paper", "live")] == [0.0, 0.5, 2.0]
    scale = msgspec.convert({"shadow": 0.0, "paper": 0.1, "live": 0.5}, StageScale)
    assert stage_limits("paper", 2.0, scale) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="finite"):
        stage_limits("live", float("nan"))


@pytest.mark.parametrize(
    ("scale", "reason"),
    [
        ({"shadow": 0.1}, "shadow opens no position"),
        ({"paper": 0.8, "live": 0.5}, "widen"),
        ({"live": 1.5}, "<= 1.0"),
    ],
)
def test_stage_scale_that_does_not_widen_is_refused(scale: dict[str, float], reason: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=reason):
        msgspec.convert(scale, StageScale)


def test_cli_list_show_diff_print_versions_side_by_side(
    registry: Registry, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reg = f"--registry {registry.root}"
    code, out, _ = cli(f"models add {models[0]} {reg} --who ana", capsys)
    va = out.split()[-1]
    assert code == 0 and out.startswith(f"added {va[:12]} (stage shadow)")
    code, out, _ = cli(f"models add {models[0]} {reg} --who ana", capsys)
    assert (code, out) == (0, f"already there, unchanged: {va}\n")
    vb = cli(f"models add {models[1]} {reg} --note v2 --who bo", capsys)[1].split()[-1]
    argv = f"models promote {va[:8]} --to champion --stage paper --reason baseline --who ana {reg}"
    code, out, _ = cli(argv, capsys)
    assert code == 0 and f"champion: unset -> {va[:12]} (paper); audit entry 3" in out

    code, out, _ = cli(f"models list {reg}", capsys)
    lines = out.splitlines()
    assert lines[0].split() == LIST_HEADER
    first = lines[1].split()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", " ".join(first[1:3]))
    assert first[:1] + first[3:] == [va[:12], "paper", "champion", "0.61", "0.061", "n/a", "imb-v1"]
    assert lines[2].split()[3:7] == ["shadow", "-", "0.64", "0.064"]

    code, out, _ = cli(f"models show champion {reg}", capsys)
    assert code == 0
    shown = {line.split("  ")[0]: line.split("  ", 1)[1].strip() for line in out.splitlines()}
    assert shown["version"] == va and shown["features"] == "imb, z_mid, spread"
    assert shown["train range"] == "2024-05-02 00:00:00 .. 2024-05-31 00:00:00 UTC"
    assert shown["label"] == "classification, horizon 1s, dead zone 0 bps"
    assert shown["stage"] == "paper" and shown["aliases"] == "champion"

    code, out, _ = cli(f"models diff champion {vb[:10]} {reg}", capsys)
    rows = {line[2:].split("  ")[0].strip(): line for line in out.splitlines()}
    assert code == 0
    assert rows["features only in"].startswith("*") and "spread" in rows["features only in"]
    assert rows["metric oos_auc"].split()[-2:] == ["0.61", "0.64"]
    assert rows["param num_leaves"].split()[-2:] == ["4", "8"]
    assert rows["label"].startswith("*") and "horizon 2s" in rows["label"]
    assert rows["name"].startswith("*") and not rows["kind"].startswith("*")
    assert rows["feature set"].startswith("*")  # fingerprints that differ in the last digit
    assert "other parameters equal" in out


def test_cli_who_defaults_to_user(
    registry: Registry,
    models: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USER", "carol")
    cli(["models", "add", str(models[0]), "--registry", str(registry.root)], capsys)
    assert registry.state().entries[0].who == "carol"
    # issue 24.4: without $USER (a container, cron) the add works: the password database's
    # name, else the numeric uid, is who added it
    monkeypatch.delenv("USER")
    monkeypatch.delenv("LOGNAME", raising=False)
    code, _, err = cli(["models", "add", str(models[1]), "--registry", str(registry.root)], capsys)
    assert (code, err) == (0, "")
    assert registry.state().entries[1].who == getpass.getuser()

    def no_passwd_entry() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    third = train_folder(registry.root.parent, "imb-v3", features=["imb", "z_mid", "spread"],
                         seed=3, leaves=3, auc=0.6)  # fmt: skip
    code, _, err = cli(["models", "add", str(third), "--registry", str(registry.root)], capsys)
    assert (code, err) == (0, "")
    assert registry.state().entries[2].who == f"uid {os.getuid()}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "feedbeef"], "no version 'feedbeef'"),
        (["show", "abc"], "neither an alias"),
        (["show", "challenger"], "alias challenger is not set"),
        (["rollback", "--reason", "x", "--who", "a"], "champion has no earlier version"),
    ],
)
def test_cli_user_mistake_is_one_line_exit_2(
    registry: Registry,
    models: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    registry.add(models[0], who="ana")
    code, out, err = cli(["models", *argv, "--registry", str(registry.root)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("tradeloop: error: ") and message in err and err.count("\n") == 1


def test_cli_on_missing_registry_says_how_to_create_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(["models", "list", "--registry", str(tmp_path / "none")], capsys)
    assert code == 2 and "no model registry here" in err


def history(registry: Registry, models: tuple[Path, Path]) -> tuple[str, str]:
    va, vb = with_two(registry, models)
    registry.promote(va, alias="champion", who="ana", reason="baseline")
    registry.promote(vb, alias="challenger", who="ana", reason="shadow it")
    registry.promote(vb, alias="champion", who="bo", reason="beat A")
    return va, vb


def test_audit_chain_verifies_and_records_who_when_what_why(
    registry: Registry, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    va, vb = history(registry, models)
    code, out, _ = cli(["models", "verify", "--registry", str(registry.root)], capsys)
    assert code == 0 and out.startswith("audit chain intact: 5 entries")
    lines = (registry.root / AUDIT_FILE).read_bytes().splitlines(keepends=True)
    entries = [decode_entry(line) for line in lines]
    assert [e.action for e in entries] == ["add", "add", "promote", "promote", "promote"]
    last = entries[-1]
    assert (last.who, last.alias, last.version, last.from_version, last.reason) == (
        "bo",
        "champion",
        vb,
        va,
        "beat A",
    )
    assert [e.ts_ns for e in entries] == [T0_NS + i * 10**9 for i in range(1, 6)]
    assert entries[0].prev_sha256 == "0" * 64
    for prev, entry in zip(lines, entries[1:], strict=False):
        assert entry.prev_sha256 == hashlib.sha256(prev).hexdigest()


def _rewrite(registry: Registry, how: str) -> str:
    """Damage the audit log; returns what the error must name."""
    path = registry.root / AUDIT_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    if how == "byte edited":
        lines[1] = lines[1].replace(b'"more leaves"', b'"more leaveS"')
        expected = "entry 2: content does not match"
    elif how == "edited, hash recomputed":
        entry = decode_entry(lines[2])
        fields = {f: getattr(entry, f) for f in AuditContent.__struct_fields__}
        lines[2] = seal(AuditContent(**{**fields, "who": "mallory"}))[1]
        expected = "entry 4: prev_sha256 does not match entry 3's bytes"
    elif how == "whitespace added":
        lines[0] = lines[0].replace(b'","', b'", "', 1)
        expected = "entry 1: bytes differ from the entry's canonical form"
    elif how == "middle deleted":
        del lines[2]
        expected = "entry 3: has seq 3 where 2 belongs"
    elif how == "last deleted":
        del lines[-1]
        expected = "entry 5: audit.head names entry 5 but the log ends at entry 4"
    elif how == "reordered":
        lines[2], lines[3] = lines[3], lines[2]
        expected = "entry 3: has seq 3 where 2 belongs"
    elif how == "torn tail":
        lines[-1] = lines[-1][:-10]
        expected = "entry 5: incomplete last line"
    else:
        raise AssertionError(how)
    path.write_bytes(b"".join(lines))
    return expected


TAMPERING = [
    "byte edited",
    "edited, hash recomputed",
    "whitespace added",
    "middle deleted",
    "last deleted",
    "reordered",
    "torn tail",
]


@pytest.mark.parametrize("how", TAMPERING)
def test_tampered_audit_log_is_detected_naming_first_bad_entry(
    registry: Registry, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str], how: str
) -> None:
    history(registry, models)
    expected = _rewrite(registry, how)
    code, out, err = cli(["models", "verify", "--registry", str(registry.root)], capsys)
    assert (code, out) == (2, "")
    assert expected in err and "the audit log was changed" in err and err.count("\n") == 1


@pytest.mark.parametrize("how", TAMPERING)
def test_every_command_refuses_a_broken_chain(
    registry: Registry, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str], how: str
) -> None:
    va, _ = history(registry, models)
    _rewrite(registry, how)
    audit = (registry.root / AUDIT_FILE).read_bytes()
    reg = ["--registry", str(registry.root)]
    for argv in (
        ["list"],
        ["show", "champion"],
        ["diff", "champion", "challenger"],
        ["promote", va, "--to", "champion", "--reason", "r", "--who", "a"],
        ["rollback", "--reason", "r", "--who", "a"],
    ):
        code, _, err = cli(["models", *argv, *reg], capsys)
        assert code == 2 and "the audit log was changed" in err, argv
    with pytest.raises(AuditChainError):
        resolve(registry.root, "champion")
    assert (registry.root / AUDIT_FILE).read_bytes() == audit


def test_rewritten_log_that_breaks_the_rules_is_refused(
    registry: Registry, models: tuple[Path, Path]
) -> None:
    """Hashes recomputed over the whole log still cannot smuggle in what promote refuses."""
    va, _ = with_two(registry, models)
    path = registry.root / AUDIT_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    forged = AuditContent(
        seq=2,
        ts_ns=T0_NS,
        who="mallory",
        action="promote",
        alias="champion",
        version=va,
        from_version=None,
        stage="live",
        from_stage=None,
        reason="skip",
        prev_sha256=hashlib.sha256(lines[-1]).hexdigest(),
    )
    path.write_bytes(b"".join([*lines, seal(forged)[1]]))
    with pytest.raises(AuditChainError, match="entry 3: skips a stage"):
        registry.verify()


def test_interrupted_add_is_noted_and_completed_by_adding_again(
    registry: Registry, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash after the version folder's rename and before the audit append."""
    _, vb = with_two(registry, models)
    path = registry.root / AUDIT_FILE
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:1]))
    (registry.root / HEAD_FILE).unlink()
    code, out, _ = cli(f"models verify --registry {registry.root}", capsys)
    assert code == 0 and f"versions/{vb} is not in the audit log" in out
    assert registry.add(models[1], who="ana") == (vb, True)
    assert registry.verify().notes == ()


def test_alias_file_edited_to_another_version_is_refused(
    registry: Registry, models: tuple[Path, Path]
) -> None:
    va, vb = history(registry, models)
    path = registry.root / "aliases" / "challenger"
    path.write_bytes(path.read_bytes().replace(vb.encode(), va.encode()))
    with pytest.raises(RegistryError, match="never gave challenger: the file was edited"):
        resolve(registry.root, "champion")


def test_views_behind_the_log_are_noted_then_rewritten(
    registry: Registry, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash between the log's append and the views' rename leaves them behind the log:
    not tampering; the log is the truth and the next change rewrites them."""
    va, vb = history(registry, models)
    (registry.root / "aliases" / "champion").unlink()
    (registry.root / HEAD_FILE).unlink()
    code, out, _ = cli(["models", "verify", "--registry", str(registry.root)], capsys)
    assert code == 0 and "note: alias file champion missing" in out
    assert resolve(registry.root, "champion") == registry.version_dir(vb)
    registry.promote(va, alias="challenger", who="ana", reason="swap")
    assert cli(["models", "verify", "--registry", str(registry.root)], capsys)[1].startswith(
        "audit chain intact: 6 entries"
    )


def test_version_folder_changed_after_add_is_refused(
    registry: Registry, models: tuple[Path, Path]
) -> None:
    va, _ = history(registry, models)
    model = registry.version_dir(va) / "model.txt"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes().replace(b"num_leaves=", b"num_leaves=9", 1))
    with pytest.raises(RegistryError, match="changed after training"):
        registry.rollback("champion", who="ana", reason="back to A")
    with pytest.raises(RegistryError, match="changed after training"):
        registry.verify()


def test_concurrent_promotes_keep_one_chain_and_readers_see_whole_alias_files(
    registry: Registry, models: tuple[Path, Path]
) -> None:
    va, vb = with_two(registry, models)
    registry.promote(va, alias="challenger", who="ana", reason="start")
    alias_file = registry.root / "aliases" / "challenger"
    done = threading.Event()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def writer(me: int) -> None:
        own = Registry(registry.root, now_ns=FakeWallClock().now_ns)
        try:
            for i in range(15):
                target = vb if (i + me) % 2 == 0 else va
                try:
                    own.promote(target, alias="challenger", who=f"w{me}", reason=f"{i}")
                except RegistryError as exc:  # the other writer got there first
                    assert "already" in str(exc)
        except BaseException as exc:
            errors.append(exc)

    def file_reader() -> None:  # no lock: the rename alone keeps a reader from a torn file
        try:
            while not done.is_set():
                seen.add(msgspec.json.decode(alias_file.read_bytes())["version"])
        except BaseException as exc:
            errors.append(exc)

    def resolver() -> None:
        try:
            while not done.is_set():
                Registry(registry.root).lookup("challenger")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    watchers = [threading.Thread(target=file_reader), threading.Thread(target=resolver)]
    for w in watchers:
        w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for w in watchers:
        w.join()
    assert errors == []
    report = registry.verify()
    assert report.entries >= 4 and report.notes == ()
    assert seen <= {va, vb}
    assert not list((registry.root / "aliases").glob(".*"))  # no temp file left behind


def test_registry_reads_wall_time_only_through_the_clock() -> None:
    for name in (
        "adapters/model_registry_store.py",
        "replay/registry/cli.py",
        "engine/registry_types.py",
    ):
        text = (ROOT / name).read_text()
        assert "time.time" not in text and "datetime.now" not in text and "import time" not in text
