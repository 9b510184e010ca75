"""Binance market-data captures to tradeloop tables.

A capture is one message per line, ``<local receive time, int ns UTC> <JSON>``, the JSON
either a combined-stream envelope (``{"stream": ..., "data": {...}}``) or the bare event.
``depthUpdate`` events become depth rows (``U``/``u``, and ``pu`` on futures streams),
``bookTicker`` quotes and ``trade`` trades.

A REST depth snapshot (``{"lastUpdateId": N, "bids": [...], "asks": [...]}``) follows
Binance's procedure (buffer the diffs, fetch the snapshot, drop the diffs it covers, apply
the rest from the one with ``U`` <= N + 1 <= ``u``):

- given apart (``--snapshot``), it is placed just before the first diff with ``u`` > N;
- saved as a line of the capture, it is applied where it was received, and the diffs
  received before it that it does not cover (``u`` > N, kept in a short buffer) are
  applied again after it, at its receive time (sizes are absolute, so applying a diff
  twice is what the procedure does). The diffs before it built a partial book.

Every time is the local receive time: ``ts_event`` too, because ``bookTicker`` carries no
venue time and one clock must order the three streams (as in ``../shared/data/binance``);
the venue's ``E`` is not kept.
"""

from __future__ import annotations

import gzip
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from engine.book.schema import NO_ID
from engine.errors import DataError
from replay.files.depth.table import DepthTable

__all__ = ["CaptureTables", "RestSnapshot", "read_capture", "read_rest_snapshot"]

_decoder = msgspec.json.Decoder()


@dataclass
class RestSnapshot:
    """A REST depth snapshot (``GET /api/v3/depth``) and when it was received."""

    last_update_id: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    ts_recv: int | None = None


@dataclass
class CaptureTables:
    """What a capture holds, as columns, and what was refused."""

    depth: DepthTable = field(default_factory=DepthTable)
    quotes: dict[str, list[Any]] = field(
        default_factory=lambda: {
            c: [] for c in ("ts_event", "ts_recv", "symbol", "bid", "ask", "bid_size", "ask_size")
        }
    )
    trades: dict[str, list[Any]] = field(
        default_factory=lambda: {
            c: [] for c in ("ts_event", "ts_recv", "symbol", "price", "size", "side")
        }
    )
    refused: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    first_refused: dict[str, str] = field(default_factory=dict)
    snapshots_placed: int = 0
    replayed_diffs: int = 0


def _levels(raw: object, where: str) -> list[tuple[float, float]]:
    if not isinstance(raw, list):
        raise ValueError(f"{where} is not a list")
    out = []
    for pair in raw:
        price, qty = float(pair[0]), float(pair[1])
        if not (price > 0.0 and qty >= 0.0) or price == float("inf") or qty == float("inf"):
            raise ValueError(f"{where} has a bad level {pair!r}")
        out.append((price, qty))
    return out


def read_rest_snapshot(path: Path, ts_recv: int | None = None) -> RestSnapshot:
    """Read a REST depth snapshot saved as JSON.

    Raises:
        DataError: the file is missing, not JSON, or has no ``lastUpdateId``/bids/asks.
    """
    try:
        raw = _decoder.decode(path.read_bytes())
        return RestSnapshot(
            int(raw["lastUpdateId"]),
            _levels(raw["bids"], "bids"),
            _levels(raw["asks"], "asks"),
            ts_recv,
        )
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc}") from exc
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(str(path), f"not a Binance depth snapshot: {exc}") from exc


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            yield from f
    except (OSError, EOFError) as exc:
        raise DataError(str(path), f"cannot read: {exc}") from exc


def read_capture(
    path: Path, *, snapshot: RestSnapshot | None = None, symbol: str | None = None
) -> CaptureTables:
    """Parse a capture into depth rows, quotes and trades.

    A line that is not ``<int> <JSON>`` or an event with bad fields is refused and counted
    by reason (``CaptureTables.refused``), never half-applied; streams other than depth,
    bookTicker and trade are counted in ``other``. ``symbol`` keeps only that symbol.

    Raises:
        DataError: the file cannot be read.
    """
    out = CaptureTables()
    pending = snapshot
    # the last diffs, for a snapshot saved in the capture: 50 diffs at 100 ms are 5 s, far
    # longer than a REST request takes
    recent: deque[tuple[str, list[tuple[float, float]], list[tuple[float, float]], int, int, int]]
    recent = deque(maxlen=50)
    for lineno, line in enumerate(_lines(path)):
        line = line.strip()
        if not line:
            continue
        head, _, body = line.partition(b" ")
        try:
            ts = int(head)
            msg = _decoder.decode(body)
        except (ValueError, msgspec.DecodeError):
            out.refused["not '<ns> <json>'"] += 1
            continue
        data = msg.get("data", msg) if isinstance(msg, dict) else None
        if not isinstance(data, dict):
            out.refused["not a JSON object"] += 1
            continue
        if "lastUpdateId" in data and "e" not in data:
            # a REST snapshot saved into the capture: applied where Binance's procedure
            # puts it (before the first diff it does not cover)
            try:
                snap = RestSnapshot(
                    int(data["lastUpdateId"]),
                    _levels(data["bids"], "bids"),
                    _levels(data["asks"], "asks"),
                    ts,
                )
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                out.refused[f"bad depth snapshot: {type(exc).__name__}"] += 1
                continue
            sid = snap.last_update_id
            if not recent:
                # no diff yet (its symbol unknown too): the forward rule places it
                pending = snap
                continue
            sym_of = recent[-1][0]
            out.depth.add_update(
                ts_event=ts, ts_recv=ts, symbol=sym_of, bids=snap.bids, asks=snap.asks,
                snapshot=True, first_update_id=sid, last_update_id=sid, prev_update_id=sid,
            )  # fmt: skip
            out.snapshots_placed += 1
            for sym_r, bids_r, asks_r, first_r, last_r, prev_r in recent:
                if last_r > sid:
                    out.depth.add_update(
                        ts_event=ts, ts_recv=ts, symbol=sym_r, bids=bids_r, asks=asks_r,
                        first_update_id=first_r, last_update_id=last_r, prev_update_id=prev_r,
                    )  # fmt: skip
                    out.replayed_diffs += 1
            continue
        try:
            sym = str(data["s"])
            if symbol is not None and sym != symbol:
                continue
            event = data.get("e")
            if event == "depthUpdate":
                first, last = int(data["U"]), int(data["u"])
                prev = int(data["pu"]) if "pu" in data else NO_ID
                bids, asks = _levels(data["b"], "b"), _levels(data["a"], "a")
                if pending is not None and last > pending.last_update_id:
                    sid = pending.last_update_id
                    out.depth.add_update(
                        ts_event=pending.ts_recv or ts, ts_recv=pending.ts_recv or ts,
                        symbol=sym, bids=pending.bids, asks=pending.asks, snapshot=True,
                        first_update_id=sid, last_update_id=sid, prev_update_id=sid,
                    )  # fmt: skip
                    out.snapshots_placed += 1
                    pending = None
                out.depth.add_update(
                    ts_event=ts, ts_recv=ts, symbol=sym, bids=bids, asks=asks,
                    first_update_id=first, last_update_id=last, prev_update_id=prev,
                )  # fmt: skip
                recent.append((sym, bids, asks, first, last, prev))
            elif event == "trade":
                price, size = float(data["p"]), float(data["q"])
                if not (price > 0.0 and size > 0.0):
                    raise ValueError("price or size not positive")
                q = out.trades
                # ``m``: the buyer is the maker, so the aggressor sold
                row = (ts, ts, sym, price, size, "sell" if data["m"] else "buy")
                for name, value in zip(q, row, strict=True):
                    q[name].append(value)
            elif event is None and "b" in data and "a" in data and "B" in data:
                bid, ask = float(data["b"]), float(data["a"])
                bs, asz = float(data["B"]), float(data["A"])
                if not (bid > 0.0 and ask > 0.0 and bs >= 0.0 and asz >= 0.0):
                    raise ValueError("bad bookTicker prices or sizes")
                q = out.quotes
                for name, value in zip(q, (ts, ts, sym, bid, ask, bs, asz), strict=True):
                    q[name].append(value)
            else:
                out.other[str(event)] += 1
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            reason = f"bad {data.get('e', 'bookTicker')}: {type(exc).__name__}"
            out.refused[reason] += 1
            out.first_refused.setdefault(reason, f"line {lineno + 1}: {exc}")
    return out
