"""The ``tradeloop`` command line.

The CLI lives in ``replay`` because it is the one package allowed to import every other
(engine, adapters, strategies through plugins). A user's mistake prints one line and
exits non-zero; a traceback means a bug of ours.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.daemon_cli import register as register_daemon
from adapters.tools_cli import register as register_tools
from engine.config import Config, config_from_dict, load_config
from engine.errors import ConfigError, TradeloopError
from engine.ticks import TickBatch
from replay.monitor_cli import add_monitor_report_arguments
from replay.registry_cli import add_models_commands
from replay.sweep import add_sweep_arguments

if TYPE_CHECKING:
    from replay.readers import DataSource


def _default_config_path() -> Path:
    return Path(str(resources.files("replay") / "default_config.toml"))


def _ml_config_path() -> Path:
    return Path(str(resources.files("replay") / "ml_config.toml"))


def _load(path: str | None, strategy: str | None) -> tuple[Config, str]:
    cfg, digest = load_config(path or _default_config_path())
    if strategy and strategy != cfg.strategy.name:
        import msgspec

        data = msgspec.to_builtins(cfg)
        data["strategy"] = {"name": strategy, "params": cfg.strategy.params if path else {}}
        cfg = config_from_dict(data)
    return cfg, digest


def cmd_sample_data(args: argparse.Namespace) -> int:
    from replay.sample_data import generate

    t0 = time.perf_counter()
    q, t = generate(args.out, symbols=args.symbols, hours=args.hours,
                    quote_interval_ms=args.quote_interval_ms, seed=args.seed)  # fmt: skip
    print(f"wrote {q} and {t} in {time.perf_counter() - t0:.1f}s")
    return 0


def _source(args: argparse.Namespace) -> DataSource:
    """The data a command reads: DATA, ``--quotes``/``--trades`` files, ``--columns``,
    ``--start``/``--end``."""
    from replay.formats import parse_column_mapping, parse_time_ns
    from replay.readers import DataSource

    quotes = tuple(Path(p) for p in getattr(args, "quotes", None) or ())
    trades = tuple(Path(p) for p in getattr(args, "trades", None) or ())
    data = getattr(args, "data", None)
    if data is None and not quotes and not trades:
        raise ConfigError("DATA", "give a data folder or file, or --quotes/--trades files")
    columns = getattr(args, "columns", None)
    start = getattr(args, "start", None)
    end = getattr(args, "end", None)
    source = DataSource(
        path=None if data is None else Path(data),
        quotes=quotes,
        trades=trades,
        columns=parse_column_mapping(columns) if columns else {},
        start_ns=None if start is None else parse_time_ns(start, "--start"),
        end_ns=None if end is None else parse_time_ns(end, "--end"),
    )
    start_ns, end_ns = source.start_ns, source.end_ns
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise ConfigError("--end", "must be after --start")
    return source


def _with_data(cfg: Config, source: DataSource) -> tuple[Config, list[str]]:
    """The config with the data's symbols it lacks; skipped files and notes printed."""
    from replay.init_config import with_data_instruments

    cfg, found, notes = with_data_instruments(cfg, source)
    for line in found.warnings:
        print(f"tradeloop: warning: {line}", file=sys.stderr)
    for line in notes:
        print(f"tradeloop: note: {line}", file=sys.stderr)
    return cfg, [*found.warnings, *notes]


def cmd_replay(args: argparse.Namespace) -> int:
    from replay.journal_replay import cmd_replay_journal, is_journal_dir
    from replay.report import write_report
    from replay.runner import run_replay

    if args.data is not None and is_journal_dir(Path(args.data)):
        return cmd_replay_journal(args)
    if not args.out:
        raise ConfigError("--out", "a tick replay needs a run folder to write (--out RUN)")

    source = _source(args)
    cfg, digest = _load(args.config, args.strategy)
    cfg, notes = _with_data(cfg, source)
    t0 = time.perf_counter()
    run = run_replay(cfg, source, batch_size=args.batch_size)
    elapsed = time.perf_counter() - t0
    metrics = write_report(run, args.out, digest, notes=notes)
    ticks = metrics["ticks"]
    print(
        f"replayed {ticks:,} ticks in {elapsed:.2f}s ({ticks / max(elapsed, 1e-9):,.0f} ticks/s); "
        f"{metrics['num_trades']} fills, pnl {metrics['pnl']:,.2f}, {_sharpe_text(metrics)}"
    )
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


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
    from replay.training import train

    source = _source(args)
    cfg, _ = load_config(args.config or _ml_config_path())
    cfg, _notes = _with_data(cfg, source)
    t0 = time.perf_counter()
    result = train(cfg, source, args.out)
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
    for w in result.manifest.warnings:
        print(f"warning: {w}")
    print(f"model: {result.folder} (report: {result.folder / 'training_report.html'})")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from replay.init_config import init_config_text

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(str(out), "exists: pick another --out, or --force to overwrite it")
    base, _ = load_config(args.config or _default_config_path())
    text, notes = init_config_text(base, _source(args))
    for line in notes:
        print(f"tradeloop: note: {line}", file=sys.stderr)
    # validated before it is written: what init writes, replay loads
    config_from_dict(tomllib.loads(text), str(out))
    out.write_text(text)
    print(f"wrote {out}: edit it, then: tradeloop replay {args.data} --config {out} --out RUN")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Sample data -> EMA-cross baseline replay -> train on the first two thirds ->
    replay the held-out third with the model."""
    from replay.sample_data import split_by_time

    out = Path(args.out)
    data = out / "data"
    cmd_sample_data(
        argparse.Namespace(
            out=str(data), symbols=3, hours=args.hours, quote_interval_ms=50.0, seed=7
        )
    )
    cmd_replay(argparse.Namespace(config=None, strategy=None, data=str(data), out=str(out / "replay"),
                                  batch_size=None))  # fmt: skip
    cut = split_by_time(data, out / "train", out / "holdout", 2 / 3)
    print(f"split at ts {cut}: {out / 'train'} for training, {out / 'holdout'} held out")
    cmd_train(argparse.Namespace(config=None, data=str(out / "train"), out=str(out / "model")))
    text = _ml_config_path().read_text()
    model_dir = (out / "model").resolve()
    ml_cfg = out / "ml_replay.toml"
    ml_cfg.write_text(text.replace("[model]\n", f'[model]\npath = "{model_dir.as_posix()}"\n', 1))
    return cmd_replay(argparse.Namespace(config=str(ml_cfg), strategy=None, data=str(out / "holdout"),
                                         out=str(out / "ml_replay"), batch_size=None))  # fmt: skip


def _cmd_monitor_report(args: argparse.Namespace) -> int:
    from replay.monitor_cli import cmd_monitor_report

    return cmd_monitor_report(args)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from replay.sweep import cmd_sweep

    return cmd_sweep(args)


def _cmd_parity(args: argparse.Namespace) -> int:
    from replay.parity import cmd_parity

    return cmd_parity(args)


def _sample_data(
    out_dir: str | Path, *, symbols: int, hours: float, quote_interval_ms: float, seed: int
) -> tuple[Path, Path]:
    """Sample tick files for live-demo (imported only when used)."""
    from replay.sample_data import generate

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


def _tick_files(config: Config, data: str | Path) -> tuple[Iterator[TickBatch], int | None]:
    """Opens tick files for the live tools (``publish``), with replay's readers."""
    from engine.instruments import InstrumentTable
    from replay.readers import BadRowCounts, total_rows
    from replay.runner import tick_batches

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
        help="your column names: ts_event=time,bid=best_bid,... (tradeloop name=your name)",
    )
    p.add_argument("--start", help="first ts_event kept: ISO-8601 (UTC) or integer time")
    p.add_argument("--end", help="end of the range (excluded): ISO-8601 (UTC) or integer time")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tradeloop", description="ML signals into a real trading loop: replay and live."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample-data", help="write a deterministic synthetic tick set")
    s.add_argument("out", help="output folder")
    s.add_argument("--symbols", type=int, default=3)
    s.add_argument("--hours", type=float, default=24.0)
    s.add_argument(
        "--quote-interval-ms", type=float, default=50.0, help="mean gap between quotes per symbol"
    )
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=cmd_sample_data)

    r = sub.add_parser("replay", help="replay tick files through a strategy and write a report")
    r.add_argument(
        "data",
        nargs="?",
        help="folder of tick files (parquet, csv, csv.gz; kind told by their columns), one "
        "file, or a live journal folder",
    )
    _add_data_arguments(r)
    r.add_argument("--strategy", help="entry-point name or module:Class (overrides the config)")
    r.add_argument("--config", help="TOML config (default: the bundled one)")
    r.add_argument("--out", help="run folder to write (tick replays)")
    r.add_argument("--session", help="journal replay: session id (default: the latest)")
    r.add_argument(
        "--batch-size", type=_batch_size, help="micro-batch size (results do not depend on it)"
    )
    r.set_defaults(func=cmd_replay)

    t = sub.add_parser(
        "train", help="train a model on tick files (walk-forward, purged) and write a model folder"
    )
    t.add_argument("data", nargs="?", help="folder of tick files, or one file")
    _add_data_arguments(t)
    t.add_argument(
        "--config",
        help="TOML config with [[features]] and [train] (default: the bundled ML config)",
    )
    t.add_argument("--out", required=True, help="model folder to write")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser(
        "init", help="write a config for your data (instruments inferred) to edit and replay"
    )
    i.add_argument("data", nargs="?", help="folder of tick files, or one file")
    _add_data_arguments(i)
    i.add_argument("--out", required=True, help="config file to write (TOML)")
    i.add_argument(
        "--config", help="config whose features, strategy and risk to start from (default: bundled)"
    )
    i.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    i.set_defaults(func=cmd_init)

    d = sub.add_parser(
        "demo",
        help="sample data -> baseline replay -> train -> replay held-out data with the model",
    )
    d.add_argument("--out", default="tradeloop-demo", help="folder for data and report")
    d.add_argument("--hours", type=float, default=24.0)
    d.set_defaults(func=cmd_demo)

    pa = sub.add_parser(
        "parity",
        help="replay a recorded live session and compare its decisions with the live log",
    )
    pa.add_argument("journal_dir", help="the daemon's [journal] dir")
    pa.add_argument("--session", help="session id (default: the latest)")
    pa.set_defaults(func=_cmd_parity)

    add_models_commands(sub)

    mr = sub.add_parser(
        "monitor-report",
        help="model monitor page (HTML + PNG) of a run folder or a live journal",
    )
    add_monitor_report_arguments(mr)
    mr.set_defaults(func=_cmd_monitor_report)

    sw = sub.add_parser(
        "sweep",
        help="parameter grid x walk-forward blocks on Dask, with deflated Sharpe and PBO",
    )
    add_sweep_arguments(sw)
    sw.set_defaults(func=_cmd_sweep)

    # the live composition roots live in ``adapters``; this dispatcher hands the tools
    # replay's readers, which ``adapters`` may not import
    register_daemon(sub, sample_data=_sample_data, entry=(sys.executable, "-m", "replay.cli"))
    register_tools(sub, tick_files=_tick_files, default_config=_default_config_path())
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
