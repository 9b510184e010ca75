"""The run report's interactive page: the run's data is in it (fill prices and positions,
decoded from the page's own chart document), bokeh's JavaScript is inlined (no http(s)
script source: the page opens offline), the same run gives the same page, a long run is
thinned, and the page draws in a real headless Chromium without a script error."""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from replay.cli import main
from replay.pages.interactive import bokeh_script, embed, run_layout

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("interactive") / "run"
    assert main(["replay", str(sample_dir), "--strategy", "ema_cross", "--out", str(out)]) == 0
    return out


def chart_document(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="chart-run-data">(.*?)</script>', page,
                      re.S)  # fmt: skip
    assert match is not None, "no chart document in the page"
    doc: dict[str, Any] = json.loads(match.group(1).replace("<\\/", "</"))
    return doc


def arrays(node: Any, name: str) -> list[np.ndarray]:
    """Every column ``name`` of every data source in a bokeh document, decoded."""
    found: list[np.ndarray] = []
    if isinstance(node, dict):
        if node.get("type") == "map" and "entries" in node:
            for key, value in node["entries"]:
                if key == name:
                    found.append(decode(value))
        for value in node.values():
            found.extend(arrays(value, name))
    elif isinstance(node, list):
        for value in node:
            found.extend(arrays(value, name))
    return found


def decode(value: Any) -> np.ndarray:
    if isinstance(value, dict) and value.get("type") == "ndarray":
        array = value["array"]
        raw = base64.b64decode(array["data"]) if isinstance(array, dict) else None
        if raw is not None:
            if raw[:2] == b"\x1f\x8b":  # bokeh gzips large arrays
                raw = gzip.decompress(raw)
            return np.frombuffer(raw, dtype=value["dtype"])
        return np.asarray(array, dtype=value["dtype"])
    return np.asarray(value, dtype=np.float64)


def test_report_page_holds_every_fill_price_and_position_and_inlines_its_javascript(
    run_dir: Path,
) -> None:
    page = (run_dir / "report.html").read_text()
    trades = pl.read_parquet(run_dir / "trades.parquet")
    assert trades.height > 0
    doc = chart_document(page)
    # fills are drawn as markers whose hover shows qty and position after: the page holds
    # exactly the fills of trades.parquet (a small run: no marker thinning)
    qty = np.sort(np.concatenate(arrays(doc, "qty")))
    assert np.array_equal(qty, np.sort(trades["qty"].to_numpy()))
    position = np.sort(np.concatenate(arrays(doc, "position")))
    assert np.array_equal(position, np.sort(trades["position_after"].to_numpy()))
    # every instrument traded has its price and position panels, by name
    for symbol in trades["instrument"].unique().to_list():
        assert f"{symbol}: mid price and fills" in page and f"{symbol}: position" in page
    # offline: bokeh inlined, no script fetched from anywhere
    # (the bundle's code names URLs of features this page does not use, e.g. MathJax;
    # the browser test shows nothing is fetched)
    assert not re.search(r"<(?:script|link|img)[^>]+(?:src|href)=", page)
    assert bokeh_script() in page and len(bokeh_script()) > 500_000
    assert "Bokeh.embed.embed_item" in page


def test_report_page_is_the_same_for_the_same_run(run_dir: Path, tmp_path: Path) -> None:
    # bokeh numbers its objects per process; the page renumbers them, so a second
    # report in the same process is byte-identical (mutation: drop the renumbering)
    again = tmp_path / "again"
    config = run_dir / "config.toml"
    data = json.loads((run_dir / "metrics.json").read_text())["data_files"][0]["file"]
    assert main(["replay", str(Path(data).parent), "--config", str(config), "--out",
                 str(again)]) == 0  # fmt: skip
    # (the metrics table differs: config_file_sha256 is of another file)
    first, second = ((d / "report.html").read_text() for d in (run_dir, again))
    assert chart_document(first) == chart_document(second)
    charts = re.compile(r'<div id="chart-run">.*?</script><script>.*?</script>', re.S)
    assert charts.search(first) and charts.search(first)[0] == charts.search(second)[0]


def test_long_series_are_thinned_to_a_light_page() -> None:
    n = 2_000_000  # a day of quotes at 23 a second, on one instrument
    ts = np.arange(n, dtype=np.int64) * 43_000_000 + 1_700_000_000_000_000_000
    walk = np.cumsum(np.random.default_rng(3).normal(0, 1, n)) + 1e5
    spike = n // 3
    walk[spike] += 5_000  # a one-tick spike survives the thinning (envelope)
    mids = {"X": (ts, walk)}
    side = np.where(np.arange(50_000) % 2 == 0, 1, -1).astype(np.int8)
    fill_ts = ts[:: n // 50_000][:50_000]
    fills = {"X": {"ts": fill_ts, "side": side, "qty": np.ones(50_000),
                   "price": walk[:: n // 50_000][:50_000], "position": side.astype(float)}}  # fmt: skip
    html = embed(run_layout(ts, walk, np.zeros(n), fills, mids), "run")
    assert len(html) < 2_500_000  # thinned: the raw columns alone are ~64 MB
    doc = chart_document(html)
    ys = np.concatenate(arrays(doc, "y"))
    assert walk[spike] in ys
    markers = np.concatenate(arrays(doc, "qty"))
    assert 2_000 <= len(markers) <= 3_000  # MAX_MARKERS, taken evenly


@pytest.mark.slow  # a browser start: about 5 s on a quiet machine, 17 s on a busy one
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt install chromium)")
def test_report_page_draws_in_headless_chromium_without_errors(run_dir: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1800})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            # offline: any request beyond the file itself is recorded and refused
            fetched: list[str] = []
            page.route(re.compile(r"^(?!file:).*"),
                       lambda route: (fetched.append(route.request.url), route.abort()))  # fmt: skip
            page.goto((run_dir / "report.html").as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length === 1",
                                   timeout=20_000)  # fmt: skip
            # drawn: one canvas per panel, with a size
            page.wait_for_selector("#chart-run canvas", state="attached", timeout=20_000)
            # values on hover: the pointer over the equity chart shows its time and value
            # (bokeh lays the charts out after the first draw: the pointer moves again
            # until the layout has settled)
            tips = page.locator(".bk-Tooltip")  # one per hover tool, shown when it has a hit
            for attempt in range(20):
                box = page.locator("canvas").first.bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + box["width"] / 2 + attempt, box["y"] + box["height"] / 2)
                page.wait_for_timeout(250)
                tooltip = " ".join(tips.locator("div").all_inner_texts())  # in its shadow root
                if "time (UTC)" in tooltip:
                    break
            roots = page.evaluate("() => Bokeh.documents[0].roots().length")
            titles = page.evaluate(
                "() => [...Bokeh.documents[0].all_models].filter(m => m.type === 'Title')"
                ".map(m => m.text)"
            )
        finally:
            browser.close()
    assert errors == [] and fetched == []
    assert "time (UTC)" in tooltip and "equity" in tooltip
    assert roots == 1
    assert any(t.endswith(": position") for t in titles) and any("equity" in t for t in titles)
