"""Training datasets from tick files, computed by the same feature kernels as the live loop.

Rows are sampled (the first quote of each instrument in every ``sample_interval``), the
label is the forward mid log-return over a horizon. Extra research columns may be added
as functions of the data; each is audited for look-ahead: recomputed on data truncated
at several cut times, a causal column cannot change on rows before the cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from engine.config import Config
from engine.features import FeatureSet
from engine.instruments import InstrumentTable
from engine.ticks import QUOTE
from replay.readers import BadRowCounts, total_rows
from replay.runner import tick_batches


@dataclass(frozen=True)
class QuoteHistory:
    """Every quote's time, instrument and mid (what labels and extra columns are built from)."""

    ts: npt.NDArray[np.int64]
    instrument: npt.NDArray[np.int32]
    mid: npt.NDArray[np.float64]

    def upto(self, cut_ns: int) -> QuoteHistory:
        k = int(np.searchsorted(self.ts, cut_ns, side="right"))
        return QuoteHistory(self.ts[:k], self.instrument[:k], self.mid[:k])


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
    files: list[Path]
    quotes: QuoteHistory
    lookahead: list[str] = field(default_factory=list)
    bad_rows: BadRowCounts = field(default_factory=BadRowCounts)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def forward_returns(quotes: QuoteHistory, row_ts: npt.NDArray[np.int64], row_inst: npt.NDArray[np.int32],
                    horizon_ns: int) -> npt.NDArray[np.float64]:  # fmt: skip
    """log(mid at the first quote at or after t + horizon / mid at or before t), per row."""
    out = np.full(row_ts.shape[0], np.nan)
    for i in np.unique(row_inst):
        q = quotes.instrument == i
        qts, qmid = quotes.ts[q], quotes.mid[q]
        rows = np.flatnonzero(row_inst == i)
        now = np.searchsorted(qts, row_ts[rows], side="right") - 1
        fwd = np.searchsorted(qts, row_ts[rows] + horizon_ns, side="left")
        ok = (now >= 0) & (fwd < qts.shape[0])
        out[rows[ok]] = np.log(qmid[fwd[ok]] / qmid[now[ok]])
    return out


def build_dataset(config: Config, data: str | Path, *, extra_columns: dict[str, ExtraColumn] | None = None,
                  progress: bool | None = None) -> Dataset:  # fmt: skip
    """Stream the tick files through the config's ``FeatureSet`` and sample rows.

    Raises:
        DataError: bad input (as in replay).
    """
    instruments = InstrumentTable(list(config.instruments))
    fs = FeatureSet(list(config.features))
    model_features = list(config.train.features) or list(fs.names)
    cols = [fs.names.index(n) for n in model_features]
    interval = config.train.sample_interval_ns
    state = fs.new_state(len(instruments))
    last_bucket = np.full(len(instruments), -1, np.int64)
    bad = BadRowCounts()
    batches, files = tick_batches(config, data, instruments, bad)
    xs, ts_rows, inst_rows, q_ts, q_inst, q_mid = [], [], [], [], [], []
    with tqdm(total=total_rows(files), unit="tick", unit_scale=True, desc="features",
              disable=None if progress is None else not progress, leave=False) as bar:  # fmt: skip
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
            inst_rows.append(batch.instrument[rows])
            bar.update(len(batch))
    quotes = QuoteHistory(np.concatenate(q_ts), np.concatenate(q_inst), np.concatenate(q_mid))
    ts = np.concatenate(ts_rows)
    inst = np.concatenate(inst_rows)
    X = np.vstack(xs) if xs else np.empty((0, len(cols)))
    names = list(model_features)
    lookahead: list[str] = []
    for name, fn in (extra_columns or {}).items():
        full = np.asarray(fn(quotes, ts, inst), np.float64)
        if audit_lookahead(fn, quotes, ts, inst, full):
            lookahead.append(name)
        X = np.column_stack([X, full])
        names.append(name)
    fwd = forward_returns(quotes, ts, inst, config.train.horizon_ns)
    return Dataset(ts, inst, X, names, fwd, files, quotes, lookahead, bad)


def audit_lookahead(fn: ExtraColumn, quotes: QuoteHistory, ts: npt.NDArray[np.int64],
                    inst: npt.NDArray[np.int32], full: npt.NDArray[np.float64]) -> bool:  # fmt: skip
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
