"""The tradeloop depth schema: one L2 level change per row (parquet) or one diff update per
message (the live topic ``md/{venue}/{symbol}/depth`` carries ``DepthUpdate``).

Parquet columns (``DEPTH_COLUMNS``), one row per level change, the rows of one update
contiguous and sharing its ids and stamps:

==================  =======  ==========================================================
column              type     meaning
==================  =======  ==========================================================
ts_event            int64    ns UTC, when the venue made the update (Binance ``E``)
ts_recv             int64    ns UTC, when it was received
symbol              string   the instrument
side                int8     ``1`` bid, ``-1`` ask, ``0`` a marker row without a level
price               float64  the level's price (NaN on a marker row)
qty                 float64  the level's new *absolute* size; ``0`` removes the level
snapshot            bool     the update is (part of) a snapshot: it replaces the whole book
reset               bool     the source says the stream broke here (reconnect, lost data)
first_update_id     int64    Binance ``U``: first update id in the update
last_update_id      int64    Binance ``u``: last update id in the update
prev_update_id      int64    Binance futures ``pu`` (the previous update's ``u``); ``-1``
                             where the source has none (spot)
end                 bool     the last row of its update (the book is consistent after it)
==================  =======  ==========================================================

Continuity rules (Binance's documented rules for a local book, applied to every source;
sources without ids, such as Tardis ``incremental_book_L2``, get consecutive ids per
``local_timestamp`` group from their converter, so only their snapshots and resets matter):

1. A snapshot (rows with ``snapshot``) replaces both sides; the book is then *synced* with
   ``last_update_id`` as its id. A REST snapshot's ``lastUpdateId`` goes in all three ids.
2. An update with ``last_update_id`` <= the book's id is stale and dropped (counted).
3. Otherwise it continues the book when ``prev_update_id == book id`` (futures, where
   ``pu`` is given) or ``first_update_id <= book id + 1`` (spot: ``U`` <= id + 1 <= ``u``).
   Anything else is a gap: the book is *out of sync*, counted, and its features are NaN
   until the next snapshot (a gap is never bridged silently).
4. A ``reset`` marker puts the book out of sync the same way (counted apart from gaps).
   A marker with both ``reset`` and ``snapshot`` is a *restart*: a new capture begins
   (the depth reader puts one at the start of every file), the book is emptied and starts
   again as in rule 5; ids of the old capture are not compared with the new one's.
5. Without any snapshot (a capture that began mid-stream), the first update starts a
   *partial* book: ids are checked from there on, but only levels updated since the start
   are known; each side states the time of its first update (``known_since_ns``), and the
   readers print it. Features on a partial book are computed (they are all one has) and
   the book's state says it is partial.

What the book keeps and what it calls *known* (a REST snapshot's depth limit, the price
grid) is stated in ``engine.book.book``.
"""

from __future__ import annotations

from typing import Final

from engine.events import DepthUpdate

__all__ = [
    "ASK",
    "BID",
    "DEPTH_COLUMNS",
    "DEPTH_DTYPES",
    "MARKER",
    "NO_ID",
    "DepthUpdate",
]

BID: Final = 1
ASK: Final = -1
MARKER: Final = 0
NO_ID: Final = -1

# column -> numpy dtype name (``symbol`` is a string column)
DEPTH_DTYPES: Final[dict[str, str]] = {
    "ts_event": "int64",
    "ts_recv": "int64",
    "symbol": "str",
    "side": "int8",
    "price": "float64",
    "qty": "float64",
    "snapshot": "bool",
    "reset": "bool",
    "first_update_id": "int64",
    "last_update_id": "int64",
    "prev_update_id": "int64",
    "end": "bool",
}
DEPTH_COLUMNS: Final[tuple[str, ...]] = tuple(DEPTH_DTYPES)
