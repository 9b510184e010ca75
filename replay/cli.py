"""The ``tradeloop`` command line.

The CLI lives in ``replay`` because it is the one package allowed to import every other
(engine, adapters, strategies through plugins). A user's mistake prints one line and
exits non-zero; a traceback means a bug of ours.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import Config, config_from_dict, load_config
from engine.errors import ConfigError, DataError, TradeloopError

# Only what every command needs is imported here: ``tradeloop --help`` and a small replay
# should cost little more than importing numba, polars and numpy (issue 13, part 5;
# ``bench/startup.py``). Each command imports its own modules; the subcommands defined in
# heavy modules (daemon, MQTT tools, registry, sweep) are registered only when they run.
if TYPE_CHECKING:
    from engine.book.batch import DepthBatch
    from engine.ticks import TickBatch
    from replay.files.discovery import DataSource


def _default_config_path() -> Path:
    return Path(str(resources.files("replay") / "default_config.toml"))


def _ml_config_path() -> Path:
    return Path(str(resources.files("replay") / "ml_config.toml"))


def _load(
    path: str | None, strategy: str | None, model: str | None = None
) -> tuple[Config, str, list[str]]:
    """The config a replay runs: ``--config`` (default: the bundled one; the bundled ML
    config when only ``--model`` is given), with ``--strategy`` and ``--model`` applied.

    A ``--strategy`` other than the config's gets no parameters: the config's
    ``[strategy] params`` belong to the config's strategy (a note says they were dropped).

    Returns:
        The config, the sha256 of the file read, and notes for the user.

    Raises:
        ConfigError: the config is invalid, or ``--model`` is no folder.
    """
    default = _ml_config_path() if model is not None else _default_config_path()
    cfg, digest = load_config(path or default)
    notes: list[str] = []
    if (not strategy or strategy == cfg.strategy.name) and model is None:
        return cfg, digest, notes
    import msgspec

    data = msgspec.to_builtins(cfg)
    if strategy and strategy != cfg.strategy.name:
        if path and cfg.strategy.params:  # the bundled config's own are no user's choice
            notes.append(
                f"--strategy {strategy}: the config's [strategy] params belong to "
                f"{cfg.strategy.name} and were not passed "
                f"({', '.join(sorted(cfg.strategy.params))})"
            )
        data["strategy"] = {"name": strategy, "params": {}}
    if model is not None:
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ConfigError("--model", f"{model}: no such model folder")
        data["model"] = {**data["model"], "path": str(folder.resolve()), "registry": None}
    return config_from_dict(data, str(path or default)), digest, notes


def _note(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"tradeloop: note: {line}", file=sys.stderr)


def _check_out(out: Path, args: argparse.Namespace, what: str) -> None:
    """``--out`` may be written: it is never the data, inside it or around it (a run's
    parquet files would be read as ticks next time, or the data deleted by a replace),
    and an existing ``--out`` is replaced only with ``--force``.

    Raises:
        ConfigError: either rule is broken; nothing has been written.
    """
    target = out.expanduser().resolve()
    data = [getattr(args, "data", None), *(getattr(args, "quotes", None) or ()),
            *(getattr(args, "trades", None) or ())]  # fmt: skip
    for item in data:
        if item is None:
            continue
        d = Path(item).expanduser().resolve()
        folder = d if d.is_dir() else None
        if (
            target == d
            or d.is_relative_to(target)
            or (folder is not None and target.is_relative_to(folder))
        ):
            raise ConfigError(
                "--out", f"{out} is, holds or is inside the data ({item}): pick another folder"
            )
    if out.exists() and not getattr(args, "force", False):
        raise ConfigError("--out", f"{out} exists: pick another {what}, or --force to replace it")


def cmd_sample_data(args: argparse.Namespace) -> int:
    from replay.files.sample_data import generate

    t0 = time.perf_counter()
    q, t = generate(args.out, symbols=args.symbols, hours=args.hours,
                    quote_interval_ms=args.quote_interval_ms, seed=args.seed)  # fmt: skip
    print(f"wrote {q} and {t} in {time.perf_counter() - t0:.1f}s")
    return 0


def _source(args: argparse.Namespace, cfg: Config) -> DataSource:
    """The data a command reads: DATA, ``--quotes``/``--trades`` files, the columns
    (``[columns]``, with ``--columns`` over it) and the time range (``--start``/``--end``,
    else ``[replay] start``/``end``)."""
    from replay.files.discovery import DataSource
    from replay.files.formats import config_column_mapping, parse_column_mapping, parse_time_ns

    quotes = tuple(Path(p) for p in getattr(args, "quotes", None) or ())
    trades = tuple(Path(p) for p in getattr(args, "trades", None) or ())
    data = getattr(args, "data", None)
    if data is None and not quotes and not trades:
        raise ConfigError("DATA", "give a data folder or file, or --quotes/--trades files")
    columns = config_column_mapping(cfg.columns)
    flag = getattr(args, "columns", None)
    if flag:
        columns.update(parse_column_mapping(flag))
    times: list[int | None] = []
    for name in ("start", "end"):
        given = getattr(args, name, None)
        value, what = (given, f"--{name}") if given is not None else (
            getattr(cfg.replay, name), f"replay.{name}")  # fmt: skip
        times.append(None if value is None else parse_time_ns(str(value), what))
    start_ns, end_ns = times
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise ConfigError("--end", "must be after the start (--start or [replay] start)")
    return DataSource(
        path=None if data is None else Path(data),
        quotes=quotes,
        trades=trades,
        columns=columns,
        start_ns=start_ns,
        end_ns=end_ns,
    )


def _with_data(cfg: Config, source: DataSource) -> tuple[Config, list[str]]:
    """The config with the data's symbols it lacks; skipped files and notes printed."""
    from replay.files.init_config import with_data_instruments

    cfg, found, notes = with_data_instruments(cfg, source)
    for line in found.warnings:
        print(f"tradeloop: warning: {line}", file=sys.stderr)
    _note(notes)
    return cfg, [*found.warnings, *notes]


# modules whose numba kernels (``cache=True``) every replay and training run loads
_KERNEL_MODULES = (
    "engine/features/kernels.py",
    "engine/features/program.py",
    "engine/market.py",
    "replay/files/plausibility.py",
)


def _cold_kernels() -> bool:
    """Whether numba will compile (not load) a kernel module: no cache index (``.nbi``)
    as new as its source, where numba keeps it (``__pycache__`` beside the source, or
    under ``NUMBA_CACHE_DIR``)."""
    root = Path(__file__).resolve().parent.parent
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    for module in _KERNEL_MODULES:
        source = root / module
        if not source.is_file():
            continue
        folders = [source.parent / "__pycache__"]
        if cache_dir:
            folders.append(Path(cache_dir) / str(source.parent).lstrip(os.sep))
        stamp = source.stat().st_mtime
        if not any(
            index.stat().st_mtime >= stamp
            for folder in folders
            for index in folder.glob(f"{source.stem}.*.nbi")
        ):
            return True
    return False


def _announce_compile() -> None:
    """On a fresh install (or after the kernels' source changed) numba compiles the
    kernels before the first tick: say so, or the first run looks hung."""
    if _cold_kernels():
        print(
            "tradeloop: note: compiling feature kernels (one time, tens of seconds; later runs "
            "load them from the cache)...",
            file=sys.stderr,
            flush=True,
        )


def _is_journal(path: Path) -> bool:
    """Whether DATA is a live journal folder. ``replay.sessions.journal_replay`` brings the daemon
    and MQTT client in (~0.2 s): a folder with no journal or session file is ruled out
    first without it (the patterns ``is_journal_dir`` looks for)."""
    if not path.is_dir():
        return False
    from adapters.journal_folder import journal_files

    if not journal_files(path) and not any(path.glob("session-*.json")):
        return False
    from replay.sessions.journal_replay import is_journal_dir

    return is_journal_dir(path)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.out:
        _check_out(Path(args.out), args, "--out")
    if args.data is not None and _is_journal(Path(args.data)):
        from replay.sessions import journal_replay as jr

        if not args.out:
            return jr.cmd_replay_journal(args)
        from replay.backtest.session_report import write_session_report

        session = jr.load_session(Path(args.data), getattr(args, "session", None))
        result, _ = write_session_report(session, jr.replay_session, Path(args.out),
                                         jr.replay_summary)  # fmt: skip
        print(f"{jr.replay_summary(result)}\nreport: {Path(args.out) / 'report.html'}")
        return 0
    if not args.out:
        raise ConfigError("--out", "a tick replay needs a run folder to write (--out RUN)")

    cfg, digest, cfg_notes = _load(args.config, args.strategy, args.model)
    _note(cfg_notes)
    source = _source(args, cfg)
    cfg, notes = _with_data(cfg, source)
    _announce_compile()
    from replay.backtest.report import monitor_alarms_line, write_report
    from replay.backtest.runner import run_replay

    t0 = time.perf_counter()
    run = run_replay(cfg, source, batch_size=args.batch_size)
    elapsed = time.perf_counter() - t0
    if run.engine.counters["ticks"] == 0:
        # a range past the data (or files with no rows) is a mistake, not an empty report
        raise DataError(
            str(args.data or "DATA"),
            "no tick replayed: no rows"
            + (" in the range --start/--end ([replay] start/end)" if _ranged(source) else "")
            + ", or every row refused (see the warnings above)",
        )
    metrics = write_report(run, args.out, digest, notes=[*cfg_notes, *notes])
    ticks = metrics["ticks"]
    print(
        f"replayed {ticks:,} ticks in {elapsed:.2f}s ({ticks / max(elapsed, 1e-9):,.0f} ticks/s); "
        f"{metrics['num_trades']} fills, pnl {metrics['pnl']:,.2f}, {_sharpe_text(metrics)}"
    )
    print(f"report: {Path(args.out) / 'report.html'}")
    if alarms := monitor_alarms_line(run, Path(args.out)):
        print(alarms)
    overlap = (metrics["header"].get("model") or {}).get("in_sample")
    if overlap:
        print(f"tradeloop: warning: {overlap['text']}", file=sys.stderr)
    return 0


def _ranged(source: DataSource) -> bool:
    return source.start_ns is not None or source.end_ns is not None


def _sharpe_text(metrics: dict[str, Any]) -> str:
    """The annualised Sharpe where the span allows it, else the per-period figure with its
    sample size (a short run's annualised figure is noise blown up)."""
    if metrics.get("annualised"):
        return f"sharpe {_figure(metrics['sharpe'], '.2f')} (annualised)"
    periods = metrics.get("periods", 0)
    return (
        f"sharpe per period {_figure(metrics.get('sharpe_per_period'), '.4f')} over {periods:,} "
        "periods (span too short to annualise)"
    )


def _figure(value: float | None, spec: str) -> str:
    """A metric for a person: ``n/a`` where it is undefined (None or NaN)."""
    if value is None or value != value:
        return "n/a"
    return format(value, spec)


def cmd_train(args: argparse.Namespace) -> int:
    from replay.research.training.assessment import summary_lines
    from replay.research.training.run import train

    _check_out(Path(args.out), args, "--out")
    cfg, _ = load_config(args.config or _ml_config_path())
    source = _source(args, cfg)
    cfg, _notes = _with_data(cfg, source)
    if args.scheduler and args.workers is not None:
        raise ConfigError("--workers", "sizes the local process pool; not with --scheduler")
    if args.ladder and (args.workers not in (None, 1) or args.scheduler):
        raise ConfigError(
            "--ladder",
            "runs every fit in this process so its times compare; not with --workers or "
            "--scheduler",
        )
    _announce_compile()
    if args.ladder:
        from replay.research.ladder.command import run_ladder_command

        return run_ladder_command(cfg, source, Path(args.out))
    t0 = time.perf_counter()
    result = train(
        cfg, source, args.out, workers=args.workers or 1, scheduler=args.scheduler or None
    )
    m = result.manifest.metrics
    line = (
        f"trained {result.manifest.kind} in {time.perf_counter() - t0:.1f}s on "
        f"{len(result.manifest.folds)} walk-forward folds: out-of-sample AUC "
        f"{_figure(m.get('oos_auc'), '.3f')}, IC {_figure(m.get('oos_ic'), '.4f')}, "
        f"accuracy {_figure(m.get('oos_accuracy'), '.3f')}"
    )
    if "baseline_logistic_oos_auc" in m:
        line += (
            f" (logistic baseline: AUC {_figure(m['baseline_logistic_oos_auc'], '.3f')}, "
            f"IC {_figure(m.get('baseline_logistic_oos_ic'), '.4f')})"
        )
    print(line)
    if result.manifest.statistics is not None:
        for extra in summary_lines(result.manifest.statistics):
            print(extra)
    for w in result.manifest.warnings:
        print(f"warning: {w}")
    print(f"model: {result.folder} (report: {result.folder / 'training_report.html'})")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from replay.files.init_config import init_config_text

    out = Path(args.out)
    # a config file may sit beside the data (it is not read as ticks): only never clobbered
    if out.exists() and not args.force:
        raise ConfigError("--out", f"{out} exists: pick another --out, or --force to overwrite it")
    base, _ = load_config(args.config or _default_config_path())
    text, notes = init_config_text(base, _source(args, base))
    _note(notes)
    # validated before it is written: what init writes, replay loads
    config_from_dict(tomllib.loads(text), str(out))
    out.write_text(text)
    print(f"wrote {out}: edit it, then: tradeloop replay {args.data} --config {out} --out RUN")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo's pipeline (``replay.backtest.demo``), each step a command as typed."""
    from replay.backtest.demo import run_demo

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError("--out", f"{out} exists: pick another --out, or --force to replace it")
    return run_demo(out, args.hours, _run, _ml_config_path().read_text(), force=args.force)


def _run(argv: list[str]) -> int:
    """One step of the demo, parsed as the user would type it."""
    args = build_parser(argv[0]).parse_args(argv)
    return int(args.func(args))


def cmd_compare(args: argparse.Namespace) -> int:
    from replay.backtest.compare import write_compare_page

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError("--out", f"{out} exists: pick another --out, or --force to replace it")
    page = write_compare_page([Path(r) for r in args.runs], out)
    print(f"wrote {page} ({len(args.runs)} runs)")
    return 0


def _cmd_parity(args: argparse.Namespace) -> int:
    from replay.sessions.parity import cmd_parity

    return cmd_parity(args)


def _sample_data(
    out_dir: str | Path, *, symbols: int, hours: float, quote_interval_ms: float, seed: int
) -> tuple[Path, Path]:
    """Sample tick files for live-demo (imported only when used)."""
    from replay.files.sample_data import generate

    return generate(
        out_dir, symbols=symbols, hours=hours, quote_interval_ms=quote_interval_ms, seed=seed
    )


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 2**24:
        raise argparse.ArgumentTypeError(f"must be between 1 and {2**24:,}, got {value:,}")
    return value


def _bounded(kind: Callable[[str], float], low: float, high: float, *, open_low: bool = False
             ) -> Callable[[str], Any]:  # fmt: skip
    """An argparse ``type`` that refuses values outside ``[low, high]`` (``(low, high]``
    with ``open_low``), NaN and infinity: argparse prints the one line and exits 2."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        inside = (low < value if open_low else low <= value) and value <= high
        if not inside:  # NaN fails both comparisons
            bracket = "(" if open_low else "["
            raise argparse.ArgumentTypeError(f"must be in {bracket}{low:g}, {high:g}], got {text}")
        return value

    return parse


def _depth_files(config: Config, data: str | Path) -> Iterator[DepthBatch] | None:
    """Opens the depth files of a folder for the live tools (``publish``), with replay's
    reader; None when it holds none."""
    from replay.files.depth.feed import depth_files

    return depth_files(config, data)


def _tick_files(config: Config, data: str | Path) -> tuple[Iterator[TickBatch], int | None]:
    """Opens tick files for the live tools (``publish``), with replay's readers."""
    from engine.instruments import InstrumentTable
    from replay.backtest.runner import tick_batches
    from replay.files.raw_files import total_rows
    from replay.files.readers import BadRowCounts

    batches, files = tick_batches(
        config, data, InstrumentTable(list(config.instruments)), BadRowCounts()
    )
    return batches, total_rows(files)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quotes",
        action="append",
        metavar="FILE",
        help="a quote file, whatever its name (repeatable)",
    )
    p.add_argument(
        "--trades",
        action="append",
        metavar="FILE",
        help="a trade file, whatever its name (repeatable)",
    )
    p.add_argument(
        "--columns",
        metavar="MAP",
        help="your column names: ts_event=time,bid=best_bid,... (tradeloop name=your name); "
        "over the config's [columns]",
    )
    p.add_argument(
        "--start",
        help="first ts_event kept: ISO-8601 (UTC) or integer time (default: [replay] start, "
        "else the data's first)",
    )
    p.add_argument(
        "--end",
        help="end of the range (excluded): ISO-8601 (UTC) or integer time (default: [replay] "
        "end, else the data's last)",
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Says an option's default where it has one worth saying (not None or False) and its
    help does not already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class _Version(argparse.Action):
    """``--version``: read from the package metadata only when asked (it costs an import)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:  # fmt: skip
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:  # fmt: skip
        print(f"tradeloop {version()}")
        parser.exit()


def version() -> str:
    """The installed package's version, else the checkout's ``pyproject.toml``."""
    from importlib import metadata

    try:
        return metadata.version("tradeloop")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def _register_models(sub: Any) -> None:
    from replay.registry.cli import add_models_commands

    add_models_commands(sub)


def _register_monitor_report(sub: Any) -> None:
    from replay.monitor.cli import add_monitor_report_arguments, cmd_monitor_report

    mr = sub.add_parser("monitor-report", help=_LAZY_HELP["monitor-report"])
    add_monitor_report_arguments(mr)
    mr.set_defaults(func=cmd_monitor_report)


def _register_sweep(sub: Any) -> None:
    from replay.research.sweep.command import add_sweep_arguments, cmd_sweep

    sw = sub.add_parser("sweep", help=_LAZY_HELP["sweep"])
    add_sweep_arguments(sw)
    sw.set_defaults(func=cmd_sweep)


def _register_daemon(sub: Any) -> None:
    # the live composition roots live in ``adapters``; this dispatcher hands the tools
    # replay's readers, which ``adapters`` may not import
    from adapters.daemon.cli import register

    register(sub, sample_data=_sample_data, entry=(sys.executable, "-m", "replay.cli"))


def _register_why(sub: Any) -> None:
    from adapters.explanations import add_why_arguments, cmd_why

    why = sub.add_parser("why", help=_LAZY_HELP["why"])
    add_why_arguments(why)
    why.set_defaults(func=cmd_why)


def _register_evaluate(sub: Any) -> None:
    from replay.research.evaluate import add_evaluate_arguments, cmd_evaluate

    ev = sub.add_parser("evaluate", help=_LAZY_HELP["evaluate"])
    add_evaluate_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)


def _register_book(sub: Any) -> None:
    from replay.files.depth.command import add_book_commands

    add_book_commands(sub)


def _register_tools(sub: Any) -> None:
    from adapters.tools.cli import register

    register(
        sub,
        tick_files=_tick_files,
        default_config=_default_config_path(),
        depth_files=_depth_files,
    )


# Subcommands whose modules are heavy to import (MQTT, Dask, the registry): built only when
# one of them runs; otherwise a stub with the same help keeps ``tradeloop --help`` complete.
_LAZY_HELP = {
    "models": "model registry: versions, champion/challenger, stages, audit log",
    "monitor-report": "model monitor page (HTML + PNG) of a run folder or a live journal",
    "sweep": "parameter grid x walk-forward blocks on a process pool or Dask (resumable), "
    "with deflated Sharpe and PBO",
    "run": "the live daemon beside the OMS (mode shadow, paper or live from the config)",
    "live-demo": "the live path on one machine: broker, OMS simulator, daemon and a sample feed",
    "publish": "play tick files onto an MQTT broker as a live market-data feed",
    "oms-sim": "play the OMS on an MQTT broker: acks, fills, cancels, reconciliation",
    "command": "send a signed operator command to your daemon; print the state it then reports",
    "certs": "make a CA and the broker's TLS certificate for a first deployment",
    "why": "a live decision explained: orders, signal, model version, features, contributions",
    "evaluate": "out-of-sample figures of a model folder on data after its training range",
    "book": "L2 order-book data: convert Binance captures and Tardis files to depth parquet",
}
_LAZY_REGISTER: dict[str, Callable[[Any], None]] = {
    "models": _register_models,
    "monitor-report": _register_monitor_report,
    "sweep": _register_sweep,
    "run": _register_daemon,
    "live-demo": _register_daemon,
    "publish": _register_tools,
    "oms-sim": _register_tools,
    "command": _register_tools,
    "certs": _register_tools,
    "why": _register_why,
    "evaluate": _register_evaluate,
    "book": _register_book,
}


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option: the
    dispatcher's own options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``tradeloop`` parser. ``command``: the subcommand about to run, whose parser is
    built in full even when its module is heavy (the others are help stubs)."""
    p = argparse.ArgumentParser(
        prog="tradeloop",
        description="ML signals into a real trading loop: replay and live.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--version", action=_Version, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)

    s = add("sample-data", help="write a deterministic synthetic tick set")
    s.add_argument("out", help="output folder")
    s.add_argument("--symbols", type=_bounded(int, 1, 1000), default=3, help="instruments")
    s.add_argument("--hours", type=_bounded(float, 0, 24 * 366, open_low=True), default=24.0,
                   help="hours of market data")  # fmt: skip
    s.add_argument("--quote-interval-ms", type=_bounded(float, 0, 3.6e6, open_low=True),
                   default=50.0, help="mean gap between quotes per symbol")  # fmt: skip
    s.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1), default=7, help="random seed")
    s.set_defaults(func=cmd_sample_data)

    r = add("replay", help="replay tick files, or a live session's journal, and write a report")
    r.add_argument(
        "data",
        nargs="?",
        help="folder of tick files (parquet, csv, csv.gz; kind told by their columns), one "
        "file, or a live journal folder",
    )
    _add_data_arguments(r)
    r.add_argument("--strategy", help="entry-point name or module:Class (overrides the config; "
                   "the config's [strategy] params are then not passed)")  # fmt: skip
    r.add_argument("--config", help="TOML config (default: the bundled one; with --model, the "
                   "bundled ML config)")  # fmt: skip
    r.add_argument("--model", metavar="DIR", help="model folder (tradeloop train --out) "
                   "replacing the config's [model] path")  # fmt: skip
    r.add_argument("--out", help="run folder to write: report.html, metrics.json, trades "
                   "(a journal without --out: its summary only)")  # fmt: skip
    r.add_argument("--force", action="store_true", help="replace --out if it exists")
    r.add_argument("--session", help="journal replay: session id (default: the latest)")
    r.add_argument("--batch-size", type=_batch_size,
                   help="micro-batch size, 1..16,777,216 (default: [replay] batch_size; "
                   "results do not depend on it)")  # fmt: skip
    r.set_defaults(func=cmd_replay)

    t = add("train", help="train a model on tick files (walk-forward, purged) and write a "
            "model folder")  # fmt: skip
    t.add_argument("data", nargs="?", help="folder of tick files, or one file")
    _add_data_arguments(t)
    t.add_argument(
        "--config",
        help="TOML config with [[features]] and [train] (default: the bundled ML config)",
    )
    t.add_argument("--out", required=True, help="model folder to write")
    t.add_argument("--force", action="store_true", help="write into --out if it exists")
    t.add_argument(
        "--workers",
        type=_bounded(int, 1, 4096),
        metavar="N",
        help="run the walk-forward folds on a local pool of N processes (default: 1, in this "
        "process); each fit uses one thread, so at most one per core; same model bytes",
    )
    t.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the walk-forward folds on the Dask cluster of this scheduler address",
    )
    t.add_argument(
        "--ladder",
        action="store_true",
        help="fit every model family (linear to MLP) on the same folds and write one report "
        "that recommends the simplest not significantly worse than the best",
    )
    t.set_defaults(func=cmd_train)

    i = add("init", help="write a config for your data (instruments inferred) to edit and replay")
    i.add_argument("data", nargs="?", help="folder of tick files, or one file")
    _add_data_arguments(i)
    i.add_argument("--out", required=True, help="config file to write (TOML)")
    i.add_argument(
        "--config", help="config whose features, strategy and risk to start from (default: bundled)"
    )
    i.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    i.set_defaults(func=cmd_init)

    d = add("demo", help="sample data -> baseline replay -> train -> held-out replays with the "
            "model and the baseline -> monitor page -> comparison (8 timed steps)")  # fmt: skip
    d.add_argument("--out", default="tradeloop-demo", help="folder for data and report")
    d.add_argument("--hours", type=_bounded(float, 0, 24 * 366, open_low=True), default=24.0,
                   help="hours of sample data")  # fmt: skip
    d.add_argument("--force", action="store_true", help="replace --out's contents if it exists")
    d.set_defaults(func=cmd_demo)

    c = add("compare", help="one HTML page with runs side by side: metrics and equity curves")
    c.add_argument("runs", nargs="+", metavar="RUN", help="replay run folders (--out of replay)")
    c.add_argument("--out", required=True, help="HTML page to write")
    c.add_argument("--force", action="store_true", help="replace --out if it exists")
    c.set_defaults(func=cmd_compare)

    pa = add("parity", help="replay a recorded live session and compare its decisions with the "
             "live log")  # fmt: skip
    pa.add_argument("journal_dir", help="the daemon's [journal] dir")
    pa.add_argument("--session", help="session id (default: the latest)")
    pa.set_defaults(func=_cmd_parity)

    chosen = _LAZY_REGISTER.get(command or "")
    if chosen is not None:
        chosen(sub)
    for name, help_text in _LAZY_HELP.items():
        if name not in sub.choices:
            add(name, help=help_text)
    _finish(p)
    return p


def _finish(parser: argparse.ArgumentParser) -> None:
    """Every subcommand (nested too) says its defaults and takes ``-v`` after its name."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            child.formatter_class = _HelpFormatter
            if "-v" not in child._option_string_actions:
                # SUPPRESS: without the flag here, the dispatcher's value stands
                child.add_argument("-v", "--verbose", action="store_true",
                                   default=argparse.SUPPRESS, help="log at INFO level")  # fmt: skip
            _finish(child)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return int(args.func(args))
    except TradeloopError as exc:
        print(f"tradeloop: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"tradeloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tradeloop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
