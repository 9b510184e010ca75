"""Training datasets from tick files, computed by the same feature kernels as the live loop.

Rows are sampled (the first quote of each instrument in every ``sample_interval``), the
label is the forward mid log-return over a horizon, read at the instrument's first quote
at or after ``t + horizon``. That quote's time is the row's *label end*, which the
walk-forward split purges by (across a data gap it lies well past ``t + horizon``). A
label whose quote comes later than ``t + horizon + label_tolerance`` measures a return
over a different horizon and is dropped (counted in ``Dataset.late_label_rows``).

L2 book features (``engine.features.book_features`` kinds in ``[[features]]``) are computed
from the depth files next to the ticks and joined as of each row's time
(``book_features_asof``).

Extra research columns may be added as functions of the data; each is audited for
look-ahead: recomputed on data truncated at several cut times, a causal column cannot
change on rows before the cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from engine.book.batch import F_END
from engine.config import Config
from engine.errors import ConfigError, DataError
from engine.features import FeatureSet, FeatureSpec
from engine.features.book_features import BookFeatureSet, BookFeatureSpec
from engine.features.feature_set import split_features
from engine.instruments import InstrumentTable
from engine.ticks import QUOTE
from replay.backtest.runner import tick_batches
from replay.files.depth.reader import DepthFileReader
from replay.files.discovery import DataSource, as_source, discover_files
from replay.files.raw_files import total_rows
from replay.files.readers import BadRowCounts


@dataclass(frozen=True)
class QuoteHistory:
    """Every quote's time, instrument and mid (what labels and extra columns are built from)."""

    ts: npt.NDArray[np.int64]
    instrument: npt.NDArray[np.int32]
    mid: npt.NDArray[np.float64]

    def upto(self, cut_ns: int) -> QuoteHistory:
        k = int(np.searchsorted(self.ts, cut_ns, side="right"))
        return QuoteHistory(self.ts[:k], self.instrument[:k], self.mid[:k])


NO_LABEL_END = np.iinfo(np.int64).max
"""``label_end_ns`` of a row with no forward quote at all: its label never ends, so any
purge removes it (such rows have no label and are never used anyway)."""


def default_label_tolerance_ns(horizon_ns: int, sample_interval_ns: int) -> int:
    """``max(sample_interval, horizon / 10)``: a label may read its quote up to one
    sampling interval late (the rows themselves are only placed to within one interval)
    or 10% of the horizon late, whichever is longer; 2 s at 250 ms sampling gives 250 ms."""
    return max(sample_interval_ns, horizon_ns // 10)


@dataclass(frozen=True)
class ForwardLabels:
    """Per row: the forward return, the time of the quote it reads, and whether that quote
    came too late (``returns`` is NaN for late rows and rows with no forward quote)."""

    returns: npt.NDArray[np.float64]
    end_ns: npt.NDArray[np.int64]
    late: npt.NDArray[np.bool_]


ExtraColumn = Callable[
    [QuoteHistory, npt.NDArray[np.int64], npt.NDArray[np.int32]], npt.NDArray[np.float64]
]
"""f(quotes, row_ts, row_instrument) -> one value per row."""


@dataclass
class Dataset:
    ts: npt.NDArray[np.int64]
    instrument: npt.NDArray[np.int32]
    X: npt.NDArray[np.float64]
    feature_names: list[str]
    forward_return: npt.NDArray[np.float64]
    label_end_ns: npt.NDArray[np.int64]
    label_tolerance_ns: int
    late_label_rows: int
    files: list[Path]
    quotes: QuoteHistory
    lookahead: list[str] = field(default_factory=list)
    bad_rows: BadRowCounts = field(default_factory=BadRowCounts)
    # each row's quoted spread (ask - bid over the mid, bps): the cost of crossing it
    spread_bps: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def forward_labels(
    quotes: QuoteHistory,
    row_ts: npt.NDArray[np.int64],
    row_inst: npt.NDArray[np.int32],
    horizon_ns: int,
    tolerance_ns: int | None = None,
) -> ForwardLabels:
    """log(mid at the first quote at or after t + horizon / mid at or before t), per row,
    with the time of that forward quote; with ``tolerance_ns``, a forward quote later than
    ``t + horizon + tolerance_ns`` makes the row late (its return NaN)."""
    n = row_ts.shape[0]
    out = np.full(n, np.nan)
    end = np.full(n, NO_LABEL_END, np.int64)
    late = np.zeros(n, np.bool_)
    for i in np.unique(row_inst):
        q = quotes.instrument == i
        qts, qmid = quotes.ts[q], quotes.mid[q]
        rows = np.flatnonzero(row_inst == i)
        now = np.searchsorted(qts, row_ts[rows], side="right") - 1
        fwd = np.searchsorted(qts, row_ts[rows] + horizon_ns, side="left")
        ok = (now >= 0) & (fwd < qts.shape[0])
        end[rows[ok]] = qts[fwd[ok]]
        out[rows[ok]] = np.log(qmid[fwd[ok]] / qmid[now[ok]])
    if tolerance_ns is not None:
        late = (end != NO_LABEL_END) & (end > row_ts + horizon_ns + tolerance_ns)
        out[late] = np.nan
    return ForwardLabels(out, end, late)


def forward_returns(
    quotes: QuoteHistory,
    row_ts: npt.NDArray[np.int64],
    row_inst: npt.NDArray[np.int32],
    horizon_ns: int,
) -> npt.NDArray[np.float64]:
    """The forward returns of ``forward_labels`` with no tolerance (for research columns)."""
    return forward_labels(quotes, row_ts, row_inst, horizon_ns).returns


def build_dataset(
    config: Config,
    data: str | Path | DataSource,
    *,
    extra_columns: dict[str, ExtraColumn] | None = None,
    label_tolerance_ns: int | None = None,
    progress: bool | None = None,
) -> Dataset:
    """Stream the tick files through the config's ``FeatureSet`` and sample rows.

    Args:
        label_tolerance_ns: how late a label's forward quote may be (see
            ``default_label_tolerance_ns``, the default).

    Raises:
        DataError: bad input (as in replay).
        ConfigError: a negative ``label_tolerance_ns``.
    """
    horizon = config.train.horizon_ns
    if label_tolerance_ns is None:
        label_tolerance_ns = default_label_tolerance_ns(horizon, config.train.sample_interval_ns)
    if label_tolerance_ns < 0:
        raise ConfigError("train.label_tolerance", f"must be >= 0, got {label_tolerance_ns} ns")
    instruments = InstrumentTable(list(config.instruments))
    tick_specs, book_specs = split_features(list(config.features))
    # tick features need at least one; with L2 features only, the mid alone drives labels
    fs = FeatureSet(tick_specs or [FeatureSpec(name="mid", kind="mid")])
    declared = [s.name for s in config.features]
    model_features = list(config.train.features) or declared
    book_names = [b.name for b in book_specs]
    unknown = [n for n in model_features if n not in declared]
    if unknown:
        raise ConfigError("train.features", f"{unknown} are not declared in [[features]]")
    tick_model = [n for n in model_features if n not in book_names]
    cols = [fs.names.index(n) for n in tick_model]
    interval = config.train.sample_interval_ns
    state = fs.new_state(len(instruments))
    last_bucket = np.full(len(instruments), -1, np.int64)
    bad = BadRowCounts()
    batches, files = tick_batches(config, data, instruments, bad)
    xs, ts_rows, inst_rows, q_ts, q_inst, q_mid = [], [], [], [], [], []
    spreads: list[npt.NDArray[np.float64]] = []
    with tqdm(
        total=total_rows(files),
        unit="tick",
        unit_scale=True,
        desc="features",
        disable=None if progress is None else not progress,
        leave=False,
    ) as bar:
        for batch in batches:
            feats = fs.update(batch, state)
            quote = batch.kind == QUOTE
            q_ts.append(batch.ts_event[quote])
            q_inst.append(batch.instrument[quote])
            q_mid.append(0.5 * (batch.bid[quote] + batch.ask[quote]))
            keep = np.zeros(len(batch), np.bool_)
            bucket = batch.ts_event // interval
            for i in range(len(instruments)):
                idx = np.flatnonzero(quote & (batch.instrument == i))
                if idx.shape[0] == 0:
                    continue
                b = bucket[idx]
                first = np.concatenate([[b[0] != last_bucket[i]], b[1:] != b[:-1]])
                keep[idx[first]] = True
                last_bucket[i] = b[-1]
            rows = np.flatnonzero(keep)
            xs.append(np.ascontiguousarray(feats[rows][:, cols]))
            ts_rows.append(batch.ts_event[rows])
            mid = 0.5 * (batch.bid[rows] + batch.ask[rows])
            spreads.append((batch.ask[rows] - batch.bid[rows]) / mid * 1e4)
            inst_rows.append(batch.instrument[rows])
            bar.update(len(batch))
    quotes = QuoteHistory(np.concatenate(q_ts), np.concatenate(q_inst), np.concatenate(q_mid))
    ts = np.concatenate(ts_rows)
    inst = np.concatenate(inst_rows)
    X_tick = np.vstack(xs) if xs else np.empty((0, len(cols)))
    if any(n in book_names for n in model_features):
        X_book = book_features_asof(config, data, instruments, book_specs, ts, inst)
        X = np.empty((ts.shape[0], len(model_features)))
        for c, n in enumerate(model_features):
            X[:, c] = (
                X_book[:, book_names.index(n)]
                if n in book_names
                else X_tick[:, tick_model.index(n)]
            )
    else:
        X = X_tick
    names = list(model_features)
    lookahead: list[str] = []
    for name, fn in (extra_columns or {}).items():
        full = np.asarray(fn(quotes, ts, inst), np.float64)
        if audit_lookahead(fn, quotes, ts, inst, full):
            lookahead.append(name)
        X = np.column_stack([X, full])
        names.append(name)
    labels = forward_labels(quotes, ts, inst, horizon, label_tolerance_ns)
    return Dataset(
        ts,
        inst,
        X,
        names,
        labels.returns,
        labels.end_ns,
        label_tolerance_ns,
        int(labels.late.sum()),
        files,
        quotes,
        lookahead,
        bad,
        spread_bps=np.concatenate(spreads) if spreads else np.empty(0),
    )


def book_features_asof(
    config: Config,
    data: str | Path | DataSource,
    instruments: InstrumentTable,
    specs: list[BookFeatureSpec],
    row_ts: npt.NDArray[np.int64],
    row_inst: npt.NDArray[np.int32],
) -> npt.NDArray[np.float64]:
    """L2 features of each row: the values after the last complete depth update of the
    row's instrument at or before the row's time (NaN before the first one).

    Each depth file is its own capture (``DepthFileReader`` starts the book afresh at
    each), so the files may come in any order.

    Raises:
        DataError: no depth file in ``data``, or bad depth data under
            ``on_bad_row="raise"``.
    """
    source = as_source(data)
    found = discover_files(source)
    if not found.depth:
        raise DataError(
            str(source),
            "L2 book features need depth files (tradeloop depth parquet: "
            "`tradeloop book convert` makes them); none found",
        )
    book = BookFeatureSet(
        specs,
        len(instruments),
        ticks=[i.tick_size for i in instruments.instruments],
        levels=config.book.levels,
    )
    e_ts: list[npt.NDArray[np.int64]] = []
    e_inst: list[npt.NDArray[np.int32]] = []
    e_val: list[npt.NDArray[np.float64]] = []
    for path in found.depth:
        reader = DepthFileReader(
            path,
            instruments.index,
            on_bad_row=config.replay.on_bad_row,
            start_ns=source.start_ns,
            end_ns=source.end_ns,
        )
        for batch in reader:
            out = book.update(batch)
            ends = np.flatnonzero(batch.flags & F_END)
            e_ts.append(batch.ts_event[ends])
            e_inst.append(batch.instrument[ends])
            e_val.append(out[ends])
    ts = np.concatenate(e_ts) if e_ts else np.empty(0, np.int64)
    ins = np.concatenate(e_inst) if e_inst else np.empty(0, np.int32)
    vals = np.vstack(e_val) if e_val else np.empty((0, len(specs)))
    X = np.full((row_ts.shape[0], len(specs)), np.nan)
    for i in np.unique(row_inst):
        mine = np.flatnonzero(ins == i)
        order = mine[np.argsort(ts[mine], kind="stable")]
        rows = np.flatnonzero(row_inst == i)
        at = np.searchsorted(ts[order], row_ts[rows], side="right") - 1
        ok = at >= 0
        X[rows[ok]] = vals[order[at[ok]]]
    return X


def audit_lookahead(
    fn: ExtraColumn,
    quotes: QuoteHistory,
    ts: npt.NDArray[np.int64],
    inst: npt.NDArray[np.int32],
    full: npt.NDArray[np.float64],
) -> bool:
    """True if the column changes on rows before a cut when the data after it is removed."""
    if ts.shape[0] < 4:
        return False
    for q in (0.25, 0.5, 0.75):
        cut = int(ts[int(q * (ts.shape[0] - 1))])
        rows = ts <= cut
        truncated = np.asarray(fn(quotes.upto(cut), ts[rows], inst[rows]), np.float64)
        if not np.array_equal(truncated, full[rows], equal_nan=True):
            return True
    return False
