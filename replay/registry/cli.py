"""``tradeloop models ...``: the model registry on the command line.

Each command takes the parsed ``Namespace`` and returns an exit code; a user's mistake (an
unknown version, a skipped stage, a broken audit chain) is a ``TradeloopError`` the
dispatcher prints as one line, exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import msgspec

from adapters.model_registry_store import Registry
from engine.config import load_config
from engine.errors import ConfigError, RegistryError
from engine.model_registry import Resolved, out_of_sample_evidence
from engine.registry_types import (
    ALIASES,
    STAGES,
    Alias,
    Stage,
)
from engine.signals.manifest import LabelSpec, Manifest, TimeRange, read_verified_model
from engine.units import parse_duration_ns
from replay.registry.fold_bounds import fold_problems, fold_rows

SHORT = 12  # hex digits of a version shown in tables
LIST_METRICS = ("oos_auc", "oos_ic", "oos_accuracy")


def add_models_commands(subparsers: Any) -> None:
    """Add ``models`` with its subcommands to the dispatcher's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", default="models", help="registry folder (default: models)")
    m = subparsers.add_parser(
        "models", help="model registry: versions, champion/challenger, stages, audit log"
    )
    sub = m.add_subparsers(dest="models_command", required=True)

    a = sub.add_parser("add", parents=[common], help="add a model folder as a version")
    a.add_argument("model_dir", help="model folder (model file, manifest.json, manifest.sha256)")
    a.add_argument("--note", default="", help="why it was added (kept in the audit log)")
    a.add_argument("--who", help="who adds it (default: $USER)")
    a.set_defaults(func=cmd_add)

    ls = sub.add_parser("list", parents=[common], help="versions, stages, aliases, metrics")
    ls.set_defaults(func=cmd_list)

    s = sub.add_parser("show", parents=[common], help="one version's manifest summary")
    s.add_argument("ref", metavar="VERSION|ALIAS")
    s.add_argument(
        "--folds",
        action="store_true",
        help="also print each walk-forward fold's ranges, label ends and purge boundaries, "
        "and verify the purge from them (exit 2 if a check fails)",
    )
    s.set_defaults(func=cmd_show)

    p = sub.add_parser("promote", parents=[common], help="point an alias at a version")
    p.add_argument("ref", metavar="VERSION|ALIAS")
    p.add_argument("--to", required=True, choices=ALIASES, dest="alias")
    p.add_argument("--stage", choices=STAGES, help="move the version's stage (one step up)")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.add_argument("--who", help="who decides (default: $USER)")
    p.set_defaults(func=cmd_promote)

    r = sub.add_parser("rollback", parents=[common], help="an alias back to its previous version")
    r.add_argument("alias", nargs="?", default="champion", choices=ALIASES)
    r.add_argument("--reason", required=True, help="why (kept in the audit log)")
    r.add_argument("--who", help="who decides (default: $USER)")
    r.set_defaults(func=cmd_rollback)

    d = sub.add_parser("diff", parents=[common], help="two versions side by side")
    d.add_argument("a", metavar="A")
    d.add_argument("b", metavar="B")
    d.set_defaults(func=cmd_diff)

    v = sub.add_parser("verify", parents=[common], help="check the audit chain and versions")
    v.set_defaults(func=cmd_verify)

    i = sub.add_parser(
        "import",
        help="write a model folder for an ONNX model trained elsewhere (held at shadow until "
        "`tradeloop evaluate` measures it)",
    )
    i.add_argument("model", metavar="MODEL.onnx", help="the ONNX graph: one float32 input")
    i.add_argument("--features", required=True, help="its input columns in order: a,b,c "
                   "(names of the config's [[features]])")  # fmt: skip
    i.add_argument("--label", required=True, choices=("classification", "regression"),
                   help="classification: the score is P(up); regression: the forward return")  # fmt: skip
    i.add_argument("--horizon", required=True, help="the label's horizon (2s, 500ms, 1m)")
    i.add_argument("--train-end", required=True, metavar="TIME",
                   help="the last time its training data saw (ISO, UTC unless stated); "
                   "`tradeloop evaluate` refuses data up to it")  # fmt: skip
    i.add_argument("--train-start", metavar="TIME", help="the first (default: not stated)")
    i.add_argument("--config", help="config whose [[features]] the model reads (default: "
                   "the bundled ML config)")  # fmt: skip
    i.add_argument("--out", required=True, help="model folder to write")
    i.add_argument("--name", help="model name (default: the folder's name)")
    i.add_argument("--output", help="the graph output holding the score (default: the "
                   "probabilities of a classifier, the one float output of a regressor)")  # fmt: skip
    i.add_argument("--column", type=int, help="its column (-1: a [rows] output)")
    i.add_argument("--force", action="store_true", help="replace --out if it exists")
    i.set_defaults(func=cmd_import)


def _who(args: argparse.Namespace) -> str:
    """``--who``, else the login name ($USER, $LOGNAME, the password database), else the
    numeric user id: a container without $USER or a passwd entry can still add a model,
    and the audit log still says which account did."""
    who = args.who or os.environ.get("USER") or os.environ.get("LOGNAME")
    if who:
        return str(who)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (a bare container)
        return f"uid {os.getuid()}"


def _time(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def cmd_add(args: argparse.Namespace) -> int:
    version, new = Registry(args.registry).add(args.model_dir, who=_who(args), note=args.note)
    if new:
        print(f"added {version[:SHORT]} (stage shadow): {version}")
    else:
        print(f"already there, unchanged: {version}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    state = registry.state()
    if not state.versions:
        print(f"no versions in {args.registry}")
        return 0
    rows = [["version", "created (UTC)", "stage", "aliases", *LIST_METRICS, "name"]]
    for version, info in sorted(state.versions.items(), key=lambda kv: kv[1].created_ns):
        manifest = registry.manifest(version)
        rows.append(
            [
                version[:SHORT],
                _time(info.created_ns),
                info.stage,
                ",".join(state.aliases_of(version)) or "-",
                *(_metric(manifest.metrics.get(k)) for k in LIST_METRICS),
                manifest.name,
            ]
        )
    print(_table(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    found = registry.lookup(args.ref)
    info = registry.state().versions[found.version]
    m = found.manifest
    lines = [
        ("version", found.version),
        ("path", str(found.path)),
        ("stage", found.stage),
        ("aliases", ", ".join(found.aliases) or "-"),
        ("added", f"{_time(info.created_ns)} UTC by {info.added_by}: {info.note}"),
        ("name", m.name),
        ("kind", f"{m.kind} ({m.output})"),
        ("model file", f"{m.model_file} sha256 {m.model_sha256}"),
        ("features", ", ".join(m.feature_names)),
        ("feature set", m.feature_fingerprint),
        ("label", _label(m)),
        ("train range", _range(m)),
        ("folds", str(len(m.folds))),
        ("out of sample", out_of_sample_evidence(m) or "none stated: held at shadow"),
        *_onnx_rows(m),
        *((f"metric {k}", _metric(v)) for k, v in sorted(m.metrics.items())),
        *(("warning", w) for w in m.warnings),
    ]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    if getattr(args, "folds", False):
        _show_folds(found.version, m)
    return 0


def _show_folds(version: str, m: Manifest) -> None:
    """The folds' table, then the purge verified from it (``replay.registry.fold_bounds``).

    Raises:
        RegistryError: a check failed (each failure is printed first).
    """
    print()
    print(_table(fold_rows(m)) if m.folds else "no walk-forward folds recorded")
    problems, notes = fold_problems(m)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        raise RegistryError(
            f"{version[:SHORT]}: {len(problems)} fold check(s) failed (listed above): the "
            "out-of-sample figures of this manifest may rest on leaked labels"
        )
    checked = sum(f.bounds is not None for f in m.folds)
    if checked:
        print(
            f"folds verified: {checked} of {len(m.folds)}; every training and early-stopping "
            "label ends before its purge boundary (test block start minus the embargo), the "
            "embargo is at least the horizon, and no two test blocks or test ranges overlap"
        )


def _label(m: Manifest) -> str:
    return (
        f"{m.label.kind}, horizon {m.label.horizon_ns / 1e9:g}s, "
        f"dead zone {m.label.dead_zone_bps:g} bps"
    )


def _range(m: Manifest) -> str:
    return f"{_time(m.train_range.start_ns)} .. {_time(m.train_range.end_ns)} UTC"


def cmd_promote(args: argparse.Namespace) -> int:
    alias: Alias = args.alias
    stage: Stage | None = args.stage
    entry = Registry(args.registry).promote(
        args.ref, alias=alias, who=_who(args), reason=args.reason, stage=stage
    )
    before = f"{entry.from_version[:SHORT]} ({entry.from_stage})" if entry.from_version else "unset"
    print(
        f"{alias}: {before} -> {entry.version[:SHORT]} ({entry.stage}); "
        f"audit entry {entry.seq + 1} {entry.entry_sha256[:SHORT]}"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    alias: Alias = args.alias
    entry = Registry(args.registry).rollback(alias, who=_who(args), reason=args.reason)
    print(
        f"{alias} rolled back: {(entry.from_version or '')[:SHORT]} ({entry.from_stage}) -> "
        f"{entry.version[:SHORT]} ({entry.stage}); "
        f"audit entry {entry.seq + 1} {entry.entry_sha256[:SHORT]}"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = Registry(args.registry).verify()
    for note in report.notes:
        print(f"note: {note}")
    print(
        f"audit chain intact: {report.entries} entries, head {report.head_sha256[:SHORT]}; "
        "every version matches its address"
    )
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    a, b = registry.lookup(args.a), registry.lookup(args.b)
    rows: list[tuple[str, str, str]] = [
        ("version", a.version[:SHORT], b.version[:SHORT]),
        ("stage", a.stage, b.stage),
        ("aliases", ",".join(a.aliases) or "-", ",".join(b.aliases) or "-"),
    ]
    rows += _manifest_rows(a.manifest, b.manifest)
    rows += _keyed_rows("metric", a.manifest.metrics, b.manifest.metrics, _metric)
    pa, pb = _params(a), _params(b)
    equal = sum(1 for k in pa.keys() & pb.keys() if pa[k] == pb[k])
    differ = {k: pa.get(k, "-") for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k)}
    rows += _keyed_rows("param", differ, {k: pb.get(k, "-") for k in differ}, str)
    table = [["", "field", f"A {args.a}", f"B {args.b}"]]
    table += [["*" if x != y else "", name, x, y] for name, x, y in rows]
    print(_table(table))
    print(f"({equal} other parameters equal; * marks a difference)")
    return 0


def _manifest_rows(a: Manifest, b: Manifest) -> list[tuple[str, str, str]]:
    only_a = [f for f in a.feature_names if f not in b.feature_names]
    only_b = [f for f in b.feature_names if f not in a.feature_names]
    return [
        ("name", a.name, b.name),
        ("kind", f"{a.kind} ({a.output})", f"{b.kind} ({b.output})"),
        ("label", _label(a), _label(b)),
        ("train range", _range(a), _range(b)),
        ("folds", str(len(a.folds)), str(len(b.folds))),
        ("features", ", ".join(a.feature_names), ", ".join(b.feature_names)),
        ("features only in", ", ".join(only_a) or "-", ", ".join(only_b) or "-"),
        ("feature set", a.feature_fingerprint, b.feature_fingerprint),
    ]


def _keyed_rows(
    prefix: str, a: dict[str, Any], b: dict[str, Any], fmt: Any
) -> list[tuple[str, str, str]]:
    return [
        (f"{prefix} {k}", fmt(a[k]) if k in a else "-", fmt(b[k]) if k in b else "-")
        for k in sorted(a.keys() | b.keys())
    ]


def _params(found: Resolved) -> dict[str, str]:
    """Training parameters from the model file: LightGBM's ``parameters:`` block, a linear
    model's weights."""
    _, data = read_verified_model(found.path, found.manifest)
    if found.manifest.kind == "linear":
        doc = msgspec.json.decode(data)
        weights = dict(zip(doc.get("features", []), doc.get("weights", []), strict=False))
        return {
            **{f"weight {k}": f"{v:.6g}" for k, v in weights.items()},
            "bias": f"{doc.get('bias', 0.0):.6g}",
            "link": str(doc.get("link", "identity")),
        }
    params: dict[str, str] = {}
    inside = False
    for raw in data.decode("utf-8", "replace").splitlines():
        if raw == "parameters:":
            inside = True
        elif raw == "end of parameters":
            break
        elif inside and raw.startswith("[") and raw.endswith("]") and ": " in raw:
            key, _, value = raw[1:-1].partition(": ")
            params[key] = value
    return params


def _onnx_rows(m: Manifest) -> list[tuple[str, str]]:
    if m.onnx is None:
        return []
    column = "" if m.onnx.column < 0 else f"[:, {m.onnx.column}]"
    return [
        ("onnx", f"input {m.onnx.input}, score {m.onnx.output}{column}; {m.onnx.producer}"),
        ("scaling", "inside the graph, recorded" if m.onnx.scaling else "none recorded"),
    ]


def parse_time_ns(text: str, what: str) -> int:
    """An ISO time (UTC unless it says otherwise) or integer nanoseconds since the epoch.

    Raises:
        ConfigError: neither.
    """
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(what, f"not an ISO time or epoch nanoseconds: {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def cmd_import(args: argparse.Namespace) -> int:
    # onnx and ONNX Runtime load only for this command (the registry's others need neither)
    from replay.registry.onnx_import import import_onnx

    config_path = args.config or str(resources.files("replay") / "ml_config.toml")
    config, _ = load_config(config_path)
    try:
        horizon = parse_duration_ns(args.horizon)
    except ValueError as exc:
        raise ConfigError("--horizon", str(exc)) from exc
    if horizon <= 0:
        raise ConfigError("--horizon", f"must be > 0, got {args.horizon!r}")
    end = parse_time_ns(args.train_end, "--train-end")
    start = end if args.train_start is None else parse_time_ns(args.train_start, "--train-start")
    if start > end:
        raise ConfigError("--train-start", "is after --train-end")
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    if not features:
        raise ConfigError("--features", "name at least one feature")
    manifest = import_onnx(
        args.model,
        args.out,
        config=config,
        features=features,
        label=LabelSpec(kind=args.label, horizon_ns=horizon),
        train_range=TimeRange(start_ns=start, end_ns=end),
        name=args.name,
        output=args.output,
        column=args.column,
        force=args.force,
    )
    spec = manifest.onnx
    assert spec is not None  # an onnx manifest always has its spec (Manifest checks it)
    column = "" if spec.column < 0 else f"[:, {spec.column}]"
    print(
        f"wrote {args.out}: {len(features)} features, score {spec.output}{column}, "
        f"scaling {'recorded' if spec.scaling else 'none found'}; no out-of-sample figures: "
        f"next `tradeloop evaluate {args.out} DATA --out EVALUATED` on data after "
        f"{_time(end)} UTC"
    )
    return 0
