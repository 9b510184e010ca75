"""Which files of a source are tick files, and how to read each: ``DataSource`` (a folder
or a file, files named with their kind, a column mapping, a time range) and
``discover_files`` (each tick file's layout by its columns, the files skipped and why)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import DataError
from replay.files.depth.reader import is_depth_file
from replay.files.formats import QUOTE_COLUMNS, TRADE_COLUMNS, FileLayout, Kind, inspect_file
from replay.files.raw_files import is_tabular

__all__ = ["DataSource", "Discovery", "as_source", "discover", "discover_files", "file_kind"]


def file_kind(path: Path) -> Kind | None:
    """The kind a file's name suggests (``quote``/``trade`` in it): only a hint, used to
    name what is missing when its columns make no tick file."""
    name = path.name.lower()
    if not is_tabular(path):
        return None
    if "quote" in name:
        return "quotes"
    if "trade" in name:
        return "trades"
    return None


@dataclass(frozen=True)
class DataSource:
    """Where ticks come from, beyond a folder: files named with their kind, a column
    mapping and a time range.

    Attributes:
        path: a folder (every tick file in it, by its columns) or one file; may be None
            when files are named.
        quotes: files read as quotes (``--quotes``).
        trades: files read as trades (``--trades``).
        columns: tradeloop column name -> the files' name (``--columns``).
        start_ns: first ``ts_event`` kept (inclusive), ns since the epoch.
        end_ns: end of the range (exclusive).
    """

    path: Path | None = None
    quotes: tuple[Path, ...] = ()
    trades: tuple[Path, ...] = ()
    columns: Mapping[str, str] = field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None

    def __str__(self) -> str:
        parts = [str(p) for p in (self.path, *self.quotes, *self.trades) if p is not None]
        return ", ".join(parts)


@dataclass(frozen=True)
class Discovery:
    """The tick files of a source: each with its layout, the files skipped with the
    reason, and notes on how files are read."""

    files: list[FileLayout]
    skipped: list[tuple[Path, str]]
    # depth parquet files (``engine.book.schema``), found by their columns, in name order
    depth: list[Path] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return [n for f in self.files for n in f.notes]

    @property
    def warnings(self) -> list[str]:
        return [f"skipped {p}: {reason}" for p, reason in self.skipped]

    def of_kind(self, kind: Kind) -> list[FileLayout]:
        return [f for f in self.files if f.kind == kind]


def _has_target(kind: str, target: str) -> bool:
    """Whether files of ``kind`` have tradeloop column ``target``."""
    if target in ("ts_recv", "symbol", "ts_event"):
        return True
    return target in (QUOTE_COLUMNS if kind == "quotes" else (*TRADE_COLUMNS, "is_buyer_maker"))


def as_source(data: str | Path | DataSource) -> DataSource:
    return data if isinstance(data, DataSource) else DataSource(path=Path(data))


def discover_files(data: str | Path | DataSource) -> Discovery:
    """The tick files of ``data``: files of a folder by their columns (files named with
    their kind as such), in name order; depth parquet files (all the columns of
    ``engine.book.schema``) are listed apart in ``Discovery.depth``.

    A file of a folder that is no tick file (another suffix, or columns that make
    neither quotes nor trades) is skipped and named in ``skipped``; a file whose name
    says quotes or trades but whose columns do not fit is an error naming what is
    missing.

    Raises:
        DataError: a path does not exist, a file cannot be read, or no tick file is found.
    """
    source = as_source(data)
    layouts: list[FileLayout] = []
    skipped: list[tuple[Path, str]] = []
    depth: list[Path] = []
    for kind, named in (("quotes", source.quotes), ("trades", source.trades)):
        for p in named:
            if not Path(p).is_file():
                raise DataError(str(p), "no such file")
            found = inspect_file(Path(p), kind=kind, columns=source.columns)  # type: ignore[arg-type]
            assert isinstance(found, FileLayout)
            layouts.append(found)
    root = source.path
    if root is not None:
        if not root.exists():
            raise DataError(str(root), "no such file or folder")
        files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file())
        named_files = {Path(p).resolve() for p in (*source.quotes, *source.trades)}
        for p in files:
            if p.resolve() in named_files:
                continue
            if not is_tabular(p):
                skipped.append((p, "not a .parquet, .csv or .csv.gz file"))
                continue
            if is_depth_file(p):
                depth.append(p)
                continue
            found = inspect_file(p, columns=source.columns)
            if isinstance(found, str):
                hint = file_kind(p)
                if hint is None:
                    skipped.append((p, found))
                    continue
                # the name says what it should be: the reader names the missing column
                found = inspect_file(p, kind=hint, columns=source.columns)
                assert isinstance(found, FileLayout)
            layouts.append(found)
    if not layouts:
        where = str(root) if root is not None else str(source)
        detail = "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
        raise DataError(
            where,
            "no tick files found (parquet or CSV with quote or trade columns)"
            + (f": {detail}" if detail else ""),
        )
    # a mapping that names a column no file has is a typo, not a no-op: without this the
    # replay ran on the files' own columns and said nothing
    # (checked against the files of the kinds that have that column: a config's mapping
    # for trade columns is no typo on a folder of quotes)
    unused = [
        f"{target}={column}"
        for target, column in source.columns.items()
        if any(_has_target(layout.kind, target) for layout in layouts)
        and not any(layout.rename.get(column) == target for layout in layouts)
    ]
    if unused:
        raise DataError(
            "--columns/[columns]",
            f"{', '.join(unused)}: no tick file has such a column",
        )
    return Discovery(layouts, skipped, depth)


def discover(data: str | Path | DataSource) -> tuple[list[Path], list[Path]]:
    """Quote and trade files under ``data`` (a folder, or one file), sorted by name.

    Raises:
        DataError: nothing readable found.
    """
    found = discover_files(data)
    return [f.path for f in found.of_kind("quotes")], [f.path for f in found.of_kind("trades")]
