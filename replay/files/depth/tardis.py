"""Tardis ``incremental_book_L2`` CSV (optionally gzipped) to tradeloop depth rows.

Columns: ``exchange, symbol, timestamp, local_timestamp, is_snapshot, side, price,
amount`` (times in µs since the epoch; ``side`` ``bid``/``ask``; ``amount`` the level's
new absolute size, 0 removing it). Rows with the same ``local_timestamp`` are one update.
A run of ``is_snapshot`` rows is one snapshot (Tardis sends one at the start of each day
and after each reconnect of its recorder), even when it spans several
``local_timestamp``s: the book is replaced when a snapshot follows non-snapshot rows.

Tardis gives no update ids, so the converter numbers the updates of each symbol 1, 2, ...
(continuous by construction): what the book checks on such files is the snapshot and
reset structure, not the venue's sequence.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import DataError
from replay.files.depth.table import DepthTable

__all__ = ["TardisTables", "read_tardis_l2"]

_REQUIRED = ("symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount")


@dataclass
class TardisTables:
    depth: DepthTable = field(default_factory=DepthTable)
    refused: Counter[str] = field(default_factory=Counter)
    first_refused: dict[str, str] = field(default_factory=dict)
    snapshots: int = 0


@dataclass
class _Open:
    ts_event: int
    ts_recv: int
    local: str
    snapshot: bool
    bids: list[tuple[float, float]] = field(default_factory=list)
    asks: list[tuple[float, float]] = field(default_factory=list)


def read_tardis_l2(path: Path) -> TardisTables:
    """Parse an ``incremental_book_L2`` CSV into depth rows (bad rows refused, counted).

    Raises:
        DataError: the file cannot be read or lacks a required column.
    """
    out = TardisTables()
    next_id: dict[str, int] = {}
    open_: dict[str, _Open] = {}

    def flush(sym: str) -> None:
        u = open_.pop(sym)
        uid = next_id.get(sym, 0) + 1
        next_id[sym] = uid
        out.depth.add_update(
            ts_event=u.ts_event, ts_recv=u.ts_recv, symbol=sym, bids=u.bids, asks=u.asks,
            snapshot=u.snapshot, first_update_id=uid, last_update_id=uid,
            prev_update_id=uid - 1,
        )  # fmt: skip
        out.snapshots += int(u.snapshot)

    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(str(path), f"cannot read: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(str(path), f"not a Tardis incremental_book_L2 file: no {missing}")
    for lineno, row in enumerate(reader):
        try:
            sym = row["symbol"]
            local = row["local_timestamp"]
            ts_event, ts_recv = int(row["timestamp"]) * 1000, int(local) * 1000
            snap = row["is_snapshot"].strip().lower() == "true"
            side = row["side"]
            price, amount = float(row["price"]), float(row["amount"])
            if side not in ("bid", "ask"):
                raise ValueError(f"side {side!r}")
            if not (price > 0.0 and amount >= 0.0) or amount == float("inf"):
                raise ValueError(f"price {price} or amount {amount}")
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"bad row: {type(exc).__name__}"
            out.refused[reason] += 1
            out.first_refused.setdefault(reason, f"row {lineno + 1}: {exc}")
            continue
        cur = open_.get(sym)
        # one snapshot across its rows, whatever their local_timestamps
        same = cur is not None and (
            (snap and cur.snapshot) or (not snap and not cur.snapshot and cur.local == local)
        )
        if cur is not None and not same:
            flush(sym)
        if sym not in open_:
            open_[sym] = _Open(ts_event, ts_recv, local, snap)
        (open_[sym].bids if side == "bid" else open_[sym].asks).append((price, amount))
    for sym in list(open_):
        flush(sym)
    return out
