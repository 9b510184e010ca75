"""Malformed tick files through the real CLI, in-process, under both bad-row policies.

Every generated input ends in one of two ways: success with every data row either
replayed or counted once as a skipped bad row, or exit status 2 with exactly one stderr
line ``tradeloop: error: ...`` naming a data file and an empty run folder. Never a
traceback or a polars panic, never a fill at a price or time that no good row carried.

``TRADELOOP_FUZZ_EXAMPLES`` sets the examples per policy (default keeps CI under a
minute); ``TRADELOOP_FUZZ_LOG`` appends one JSON line per input (outcome counts for a long
run); ``TRADELOOP_FUZZ_SAVE`` keeps the files of a failing input there (for
``tests/data/bad/``). The report's PNG is stubbed: matplotlib takes ~2 s per run and
never sees the tick files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings

import replay.backtest.report
from replay.cli import _default_config_path, main

T0 = 1_723_111_200_000_000_000  # 2024-08-08T10:00:00Z
LATENCY_NS = 250_000  # the bundled config's venue latency
EXAMPLES = int(os.environ.get("TRADELOOP_FUZZ_EXAMPLES", "100"))
BAD_FILES = Path(__file__).resolve().parents[1] / "data" / "bad"
QUOTE_COLS = ("ts_event", "symbol", "bid", "ask", "bid_size", "ask_size")
TRADE_COLS = ("ts_event", "symbol", "price", "size", "side")

# a fault on one cell: (name, must the row be refused?)
NUMBER_FAULTS = {
    "nan": True,
    "inf": True,
    "-inf": True,
    "negative": True,
    "null": True,
    "huge": True,
    "tiny": None,
    "zero": None,
    "x100": False,
    "/100": False,
    "text": True,
    "bool": True,
    "spaces": False,
}
TS_FAULTS = {
    "backwards": False,
    "forward": False,
    "seconds": True,
    "millis": True,
    "micros": True,
    "year2262": True,
    "negative": True,
    "null": True,
    "text": True,
    "iso": False,
    "spaces": False,
}
# an unknown symbol is not bad data: an instrument is inferred for it, with a note
SYMBOL_FAULTS = {"unknown": False, "null": True, "empty": True, "spaces": False}
SIDE_FAULTS = {"up": True, "null": True, "zero": True, "short": False, "spaces": False}
ROW_FAULTS = {"crossed": True, "ragged_short": True, "ragged_long": True, "not_utf8": True}
# whole-file faults: None = the file may still be read; "error" = it must be refused
FILE_FAULTS = {
    "none": None,
    "duplicate_column": "error",
    "missing_column": "error",
    "empty": "error",
    "header_only": "error",
    "bom": None,
    "crlf": None,
    "blank_lines": None,
    "header_not_utf8": "error",
    "truncate": "error",
    "flip_bytes": "flip",
    "bad_metadata": None,
    "bool_prices": "column",
    "text_prices": "column",
    "int32_seconds": "column",
    "float_ts": "column",
    "timestamp_ms": None,
    "dictionary_symbol": None,
    "int_side": None,
    "ts_recv": None,
}
CSV_ONLY = {"bom", "crlf", "blank_lines", "header_not_utf8"}
PARQUET_ONLY = {
    "truncate",
    "flip_bytes",
    "bad_metadata",
    "text_prices",
    "float_ts",
    "timestamp_ms",
    "dictionary_symbol",
    "int_side",
}


@dataclass
class TickFile:
    kind: str
    fmt: str
    columns: dict[str, list[object]]
    file_fault: str = "none"
    must_refuse: set[int] = field(default_factory=set)
    tainted: set[int] = field(default_factory=set)
    ragged: dict[int, int] = field(default_factory=dict)  # row -> field delta
    not_utf8: set[int] = field(default_factory=set)
    flip_seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.fmt}"

    @property
    def rows(self) -> int:
        return len(self.columns["ts_event"])

    def good_prices(self) -> set[float]:
        keep = [k for k in range(self.rows) if k not in self.tainted]
        cols = ("bid", "ask") if self.kind == "quotes" else ("price",)
        return {float(_plain(self.columns[c][k])) for c in cols for k in keep}  # type: ignore[arg-type]

    def good_ts(self) -> list[int]:
        keep = [k for k in range(self.rows) if k not in self.tainted]
        return [int(_plain(self.columns["ts_event"][k])) for k in keep]  # type: ignore[call-overload]


def _cell_fault(value: object, fault: str, *, is_ts: bool = False) -> object:
    v = value
    table: dict[str, object] = {
        "nan": math.nan,
        "inf": math.inf,
        "-inf": -math.inf,
        "null": None,
        "huge": 1e300,
        "tiny": 1e-300,
        "zero": 0.0,
        "text": "abc",
        "bool": True,
    }
    if is_ts:
        assert isinstance(v, int)
        return {
            "backwards": v - 5 * 10**9,
            "forward": v + 86_400 * 10**9,
            "seconds": v // 10**9,
            "millis": v // 10**6,
            "micros": v // 10**3,
            "year2262": 9_300_000_000 * 10**9,
            "negative": -v,
            "null": None,
            "text": "yesterday",
            "iso": ("iso", v),
            "spaces": ("spaces", v),
        }[fault]
    if fault in table:
        return table[fault]
    assert isinstance(v, float)
    return {"negative": -v, "x100": v * 100, "/100": round(v / 100, 6), "spaces": ("spaces", v)}[
        fault
    ]


@st.composite
def tick_file(draw: st.DrawFn, kind: str) -> TickFile:
    fmt = draw(st.sampled_from(["csv", "parquet"]))
    n = draw(st.integers(0, 40))
    gaps = draw(
        st.lists(st.sampled_from([0, 1, 1_000, 10**6, 10**8, 10**9]), min_size=n, max_size=n)
    )
    ts = [T0 + sum(gaps[: k + 1]) for k in range(n)]
    steps = draw(st.lists(st.integers(-500, 500), min_size=n, max_size=n))
    mid = [round(60_000.0 + sum(steps[: k + 1]) * 0.01, 2) for k in range(n)]
    sizes = draw(st.lists(st.sampled_from([0.001, 0.5, 1.0, 3.25]), min_size=n, max_size=n))
    columns: dict[str, list[object]]
    if kind == "quotes":
        columns = {
            "ts_event": list(ts),
            "symbol": ["BTC-USD"] * n,
            "bid": [round(m - 0.5, 2) for m in mid],
            "ask": [round(m + 0.5, 2) for m in mid],
            "bid_size": list(sizes),
            "ask_size": list(reversed(sizes)),
        }
    else:
        sides = draw(
            st.lists(
                st.sampled_from(["buy", "sell", "b", "s", "BUY", "1", "-1"]), min_size=n, max_size=n
            )
        )
        columns = {
            "ts_event": list(ts),
            "symbol": ["BTC-USD"] * n,
            "price": list(mid),
            "size": list(sizes),
            "side": sides,
        }
    f = TickFile(kind, fmt, columns)
    other_format = PARQUET_ONLY if fmt == "csv" else CSV_ONLY
    faults = sorted(set(FILE_FAULTS) - other_format - {"none"})
    # half the files are whole, so that row faults and successful replays are common
    f.file_fault = draw(st.sampled_from(["none"] * len(faults) + faults))
    f.flip_seed = draw(st.integers(0, 2**31))
    numbers = [c for c in columns if c not in ("ts_event", "symbol", "side")]
    touched: set[tuple[int, str]] = set()  # one fault per cell, several per row
    ts_faults: dict[int, str] = {}
    for _ in range(draw(st.integers(0, min(n, 6)))):
        row = draw(st.integers(0, n - 1))
        fault = ""
        targets = ["ts_event", "symbol", "number", "row", *(["side"] if kind == "trades" else [])]
        target = draw(st.sampled_from(targets))
        if target == "number":
            target = draw(st.sampled_from(numbers))
        if target == "row":
            fault = draw(st.sampled_from(sorted(ROW_FAULTS)))
            if fmt == "parquet" and fault != "crossed":
                continue  # ragged rows and undecodable bytes exist only in CSV
            if fault == "crossed" and kind != "quotes":
                continue
            target = {"crossed": "bid", "not_utf8": "symbol"}.get(fault, "row")
        if (row, target) in touched:
            continue
        touched.add((row, target))
        if target == "ts_event":
            fault = draw(st.sampled_from(sorted(TS_FAULTS)))
            must = TS_FAULTS[fault]
            ts_faults[row] = fault
            columns[target][row] = _cell_fault(columns[target][row], fault, is_ts=True)
        elif target == "symbol" and fault != "not_utf8":
            fault = draw(st.sampled_from(sorted(SYMBOL_FAULTS)))
            must = SYMBOL_FAULTS[fault]
            columns[target][row] = {
                "unknown": "ZZZ",
                "null": None,
                "empty": "",
                "spaces": ("spaces", "BTC-USD"),
            }[fault]
        elif target == "side":
            fault = draw(st.sampled_from(sorted(SIDE_FAULTS)))
            must = SIDE_FAULTS[fault]
            columns[target][row] = {
                "up": "up",
                "null": None,
                "zero": "0",
                "short": "S",
                "spaces": ("spaces", "sell"),
            }[fault]
        elif target in numbers and fault != "crossed":
            fault = draw(st.sampled_from(sorted(NUMBER_FAULTS)))
            must = NUMBER_FAULTS[fault]
            if must is None:  # zero and tiny: refused as a price, fine as a quote size
                must = target in ("bid", "ask", "price") or (fault == "zero" and target == "size")
            columns[target][row] = _cell_fault(columns[target][row], fault)
        else:
            must = True
            if fault == "crossed":
                columns["bid"][row] = _value(columns["ask"][row], 60_000.0) + 1.0
                touched.add((row, "ask"))  # a later fault on the ask could uncross it
            elif fault.startswith("ragged"):
                f.ragged[row] = -1 if fault == "ragged_short" else 1
            else:
                f.not_utf8.add(row)
        if must:
            f.must_refuse.add(row)
        # a row is tainted (its prices and time are not evidence of good data) unless the
        # fault is harmless: spaces, ISO text, "S", or a plausible size
        harmless = fault in ("spaces", "iso", "short", "unknown") or target.endswith("size")
        if must or not harmless:
            f.tainted.add(row)
    # the reader finds a file's unit from the magnitude most of its first rows have: where
    # as many rows are in seconds (say) as in ns, the file is read in seconds and the ns rows
    # are the wrong ones, so the oracle above holds only while the ns rows are the majority
    in_ns = sum(
        1
        for k in range(n)
        if ts_faults.get(k, "none") in ("none", "backwards", "forward", "spaces")
        and k not in f.ragged
        and k not in f.not_utf8
    )
    for unit in ("seconds", "millis", "micros"):
        in_unit = sum(1 for v in ts_faults.values() if v == unit)
        assume(in_unit == 0 or in_unit < in_ns)
    return f


def _value(v: object, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else default


@st.composite
def data_sets(draw: st.DrawFn) -> list[TickFile]:
    kinds = draw(st.sampled_from([["quotes"], ["quotes", "trades"], ["trades"]]))
    return [draw(tick_file(k)) for k in kinds]


# writing


def _csv_cell(v: object) -> bytes:
    if isinstance(v, tuple):
        tag, inner = v
        if tag == "iso":
            s, ns = divmod(int(inner), 10**9)  # type: ignore[call-overload]
            return (
                pl.Series([s * 10**9 + ns])
                .cast(pl.Datetime("ns"))
                .dt.strftime("%Y-%m-%dT%H:%M:%S%.9fZ")[0]
                .encode()
            )
        return b"  " + _csv_cell(inner) + b"\t "
    if v is None:
        return b""
    if isinstance(v, bool):
        return b"true" if v else b"false"
    if isinstance(v, float):
        return repr(v).encode()
    return str(v).encode()


def _plain(v: object) -> object:
    return v[1] if isinstance(v, tuple) else v


def write_csv(f: TickFile, path: Path) -> None:
    names = list(f.columns)
    fault = f.file_fault
    if fault == "missing_column":
        names = names[:-1]
    if fault == "duplicate_column":
        names = [*names, names[2]]
    if fault == "ts_recv":
        names = [*names, "ts_recv"]
    header = ",".join(names).encode()
    if fault == "header_not_utf8":
        header = header.replace(b"symbol", b"symb\xffl")
    lines = [header]
    for k in range(f.rows):
        cells = []
        for c in names:
            col = "ts_event" if c == "ts_recv" else c
            v = f.columns[col][k]
            if fault == "bool_prices" and col in ("bid", "ask", "price"):
                v = True
            if fault == "int32_seconds" and col == "ts_event":
                v = _plain(v) // 10**9 if isinstance(_plain(v), int) else v  # type: ignore[operator]
            cells.append(_csv_cell(v))
        if k in f.not_utf8:
            cells[1] = cells[1] + b"\xff\xfe"
        if k in f.ragged:
            cells = cells[:-1] if f.ragged[k] < 0 else [*cells, b"7"]
        lines.append(b",".join(cells))
        if fault == "blank_lines" and k % 3 == 0:
            lines.append(b"")
    eol = b"\r\n" if fault == "crlf" else b"\n"
    data = eol.join(lines) + eol
    if fault == "header_only":
        data = header + eol
    if fault == "empty":
        data = b""
    if fault == "bom":
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)


def write_parquet(f: TickFile, path: Path) -> None:
    fault = f.file_fault
    arrays: dict[str, pa.Array] = {}
    for c, values in f.columns.items():
        plain = [_plain(v) for v in values]
        if c == "ts_event":
            ints = [v if isinstance(v, int) and -(2**63) <= v < 2**63 else None for v in plain]
            if fault == "int32_seconds":
                arrays[c] = pa.array([None if v is None else v // 10**9 for v in ints], pa.int32())
            elif fault == "float_ts":
                arrays[c] = pa.array([None if v is None else float(v) for v in ints], pa.float64())
            elif fault == "timestamp_ms":
                arrays[c] = pa.array(
                    [None if v is None else v // 10**6 for v in ints], pa.timestamp("ms")
                )
                # what the file now says, for the checks of fill times
                f.columns[c] = [v // 10**6 * 10**6 if isinstance(v, int) else v for v in plain]
            else:
                arrays[c] = pa.array(ints, pa.int64())
        elif c in ("symbol", "side"):
            texts = [v if isinstance(v, str) else None for v in plain]
            if fault == "int_side" and c == "side":
                sign = {"buy": 1, "b": 1, "1": 1, "BUY": 1, "sell": -1, "s": -1, "S": -1, "-1": -1}
                arrays[c] = pa.array(
                    [sign.get(v, 0) if v is not None else None for v in texts], pa.int64()
                )
            elif fault == "dictionary_symbol" and c == "symbol":
                arrays[c] = pa.array(texts, pa.string()).dictionary_encode()
            else:
                arrays[c] = pa.array(texts, pa.string())
        else:
            nums = [
                float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
                for v in plain
            ]
            if fault == "bool_prices" and c in ("bid", "ask", "price"):
                arrays[c] = pa.array([True] * len(nums), pa.bool_())
            elif fault == "text_prices" and c in ("bid", "ask", "price"):
                arrays[c] = pa.array([None if v is None else repr(v) for v in nums], pa.string())
            else:
                arrays[c] = pa.array(nums, pa.float64())
    names = list(arrays)
    cols = list(arrays.values())
    if fault == "missing_column":
        names, cols = names[:-1], cols[:-1]
    if fault == "duplicate_column":
        names, cols = [*names, names[2]], [*cols, cols[2]]
    if fault == "ts_recv":
        names, cols = [*names, "ts_recv"], [*cols, cols[0]]
    table = pa.table(cols, names=names)
    if fault == "bad_metadata":
        table = table.replace_schema_metadata({b"origin": b"\xff\xfe"})
    if fault == "header_only":
        table = table.slice(0, 0)
    pq.write_table(table, path)
    if fault == "empty":
        path.write_bytes(b"")
    if fault == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: max(0, len(raw) - 1 - f.flip_seed % 200)])
    if fault == "flip_bytes":
        raw = bytearray(path.read_bytes())
        seed = f.flip_seed
        for _ in range(1 + seed % 4):
            seed = (seed * 1_103_515_245 + 12_345) % 2**31
            raw[seed % len(raw)] ^= 1 + seed % 255
        path.write_bytes(bytes(raw))


# the harness


def _config(folder: Path, policy: str) -> Path:
    # short EMAs so that a few dozen quotes already trade
    text = (
        _default_config_path()
        .read_text()
        .replace("span = 400", "span = 2")
        .replace("span = 4000", "span = 5")
        .replace('on_bad_row = "raise"', f'on_bad_row = "{policy}"')
    )
    path = folder / f"{policy}.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _no_plot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay.backtest.report, "plot_svg", lambda *a, **k: "<svg/>")


def run_cli(
    data: Path, files: list[Path], policy: str, capfd: pytest.CaptureFixture[str]
) -> tuple[int, str, Path]:
    out = data.parent / f"run-{policy}"
    capfd.readouterr()
    code = main(
        ["replay", str(data), "--out", str(out), "--config", str(_config(data.parent, policy))]
    )
    err = capfd.readouterr().err
    assert "Traceback" not in err and "panicked" not in err, err
    assert code in (0, 2), err
    if code == 2:
        # notes and warnings (skipped files, inferred instruments) may come first; the
        # error itself is exactly one line
        lines = [
            line
            for line in err.splitlines()
            if not line.startswith(("tradeloop: note: ", "tradeloop: warning: "))
        ]
        assert len(lines) == 1 and lines[0].startswith("tradeloop: error: "), err
        assert any(str(p) in lines[0] for p in files), err
        assert not out.exists(), "run folder written on error"
    return code, err, out


def check(files: list[TickFile], policy: str, capfd: pytest.CaptureFixture[str]) -> str:
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        data = root / "data"
        data.mkdir()
        paths = []
        for f in files:
            p = data / f.name
            write_csv(f, p) if f.fmt == "csv" else write_parquet(f, p)
            paths.append(p)
        try:
            code, err, out = run_cli(data, paths, policy, capfd)
            if code == 0:
                _check_success(files, policy, out)
        except BaseException:
            if "TRADELOOP_FUZZ_SAVE" in os.environ:
                keep = Path(os.environ["TRADELOOP_FUZZ_SAVE"]) / root.name
                shutil.copytree(data, keep)
            raise
        outcome = "success" if code == 0 else "clean error"
        if "TRADELOOP_FUZZ_LOG" in os.environ:
            with open(os.environ["TRADELOOP_FUZZ_LOG"], "a") as log:
                log.write(
                    json.dumps(
                        {
                            "policy": policy,
                            "outcome": outcome,
                            "faults": [f.file_fault for f in files],
                            "error": err.strip(),
                        }
                    )
                    + "\n"
                )
        return outcome
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_success(files: list[TickFile], policy: str, out: Path) -> None:
    assert all(FILE_FAULTS[f.file_fault] != "error" for f in files)
    metrics = json.loads((out / "metrics.json").read_text())
    skipped = sum(metrics["bad_rows_skipped"].values())
    exact = all(FILE_FAULTS[f.file_fault] is None for f in files)
    if exact:
        rows = sum(f.rows for f in files)
        assert metrics["ticks"] + skipped == rows, (metrics["ticks"], metrics["bad_rows_skipped"])
        assert skipped >= sum(len(f.must_refuse) for f in files)
    if policy == "raise":
        assert skipped == 0
        if exact:
            assert not any(f.must_refuse for f in files)
    fills = pl.read_parquet(out / "trades.parquet")
    if fills.height == 0:
        return
    prices = set().union(*(f.good_prices() for f in files if f.file_fault != "flip_bytes"))
    stamps = sorted(t for f in files for t in f.good_ts())
    assert stamps, "fills without a good row"
    for price, ts in zip(fills["price"].to_list(), fills["ts_event"].to_list(), strict=True):
        assert 1e-12 <= price <= 1e12 and 946_684_800 * 10**9 <= ts < 4_102_444_800 * 10**9
        if all(FILE_FAULTS[f.file_fault] is None for f in files):
            assert price in prices, (price, sorted(prices)[:5])
            assert stamps[0] <= ts <= stamps[-1] + LATENCY_NS, ts


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["raise", "skip"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=data_sets())
def test_cli_malformed_tick_files_fail_cleanly_or_replay_good_rows(
    files: list[TickFile], policy: str, capfd: pytest.CaptureFixture[str]
) -> None:
    check(files, policy, capfd)


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_cli_regression_files_replay_or_fail_in_one_line(
    tmp_path: Path, policy: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every input that once crashed a replay (tests/data/bad/) now replays or exits 2
    with one line naming the file."""
    files = sorted(p for p in BAD_FILES.iterdir() if p.suffix in (".csv", ".parquet"))
    assert files
    for path in files:
        data = tmp_path / path.stem / "data"
        data.mkdir(parents=True)
        shutil.copy(path, data / path.name)
        run_cli(data, [data / path.name], policy, capfd)
