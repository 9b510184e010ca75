"""Small SVG charts for the run report and ``tradeloop compare``: lines, filled areas and
step lines on stacked panels with shared time, ticks and labels.

Why not matplotlib: importing and drawing with it cost about 1 s of a tiny replay's
whole-process time (issue 13, part 5), more than the replay itself. These charts are
text, so the HTML page embeds them and a browser scales them; long series are thinned
to the envelope (min and max per pixel column) so the file stays small.
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from replay.pages.thinning import PALETTE, thin

FloatArray = npt.NDArray[np.float64]

WIDTH = 1000
_LEFT, _RIGHT, _TOP_PAD, _BOTTOM_PAD = 78, 14, 8, 6
_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


@dataclass
class Series:
    """One line on a panel. ``step``: the value holds until the next point (positions);
    ``fill``: shade between the line and zero (green above, red below if ``fill`` is
    ``"sign"``, else that colour)."""

    x: FloatArray
    y: FloatArray
    colour: str = PALETTE[0]
    label: str = ""
    step: bool = False
    fill: str | None = None


@dataclass
class Panel:
    """A chart area of ``height`` pixels with a y-axis label and its series."""

    series: list[Series]
    y_label: str
    height: int = 160
    note: str = ""
    markers: list[tuple[float, str, str]] = field(default_factory=list)  # x, colour, text


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[low, high]``."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:,.6g}"


def _range(values: Sequence[FloatArray]) -> tuple[float, float]:
    finite = [v[np.isfinite(v)] for v in values if len(v)]
    finite = [v for v in finite if len(v)]
    if not finite:
        return 0.0, 1.0
    low = float(min(v.min() for v in finite))
    high = float(max(v.max() for v in finite))
    if high - low < 1e-12 * max(1.0, abs(high)):
        pad = max(abs(high) * 1e-3, 1e-9)
        return low - pad, high + pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


def _points(xs: FloatArray, ys: FloatArray) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs.tolist(), ys.tolist(), strict=True))


def _step(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The corner points of a step line (each value held until the next x)."""
    if len(x) < 2:
        return x, y
    sx = np.repeat(x, 2)[1:]
    sy = np.repeat(y, 2)[:-1]
    return sx, sy


def chart(
    panels: Sequence[Panel],
    *,
    title: str,
    x_label: str,
    x_range: tuple[float, float] | None = None,
    legend: bool = False,
) -> str:
    """One SVG document: ``panels`` stacked, sharing the x-axis (ticks on the last)."""
    xs = [s.x for p in panels for s in p.series]
    x0, x1 = x_range if x_range is not None else _range(xs)
    if x1 <= x0:
        x1 = x0 + 1.0
    inner = WIDTH - _LEFT - _RIGHT
    ids = "clip" + hashlib.sha256(title.encode()).hexdigest()[:8]
    legend_rows = math.ceil(len(panels[0].series) / 4) if legend and panels else 0
    top = 26 + 16 * legend_rows
    height = top + sum(p.height + _TOP_PAD + _BOTTOM_PAD for p in panels) + 34
    out = [
        # a viewBox and no fixed size: the chart takes the page's width, keeping its shape
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" {_FONT}>',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="17" text-anchor="middle" font-size="13">'
        f"{html.escape(title)}</text>",
    ]
    if legend_rows:
        for k, s in enumerate(panels[0].series):
            lx, ly = _LEFT + (k % 4) * (inner / 4), 32 + 16 * (k // 4)
            out.append(
                f'<line x1="{lx:.0f}" y1="{ly - 4}" x2="{lx + 18:.0f}" y2="{ly - 4}" '
                f'stroke="{s.colour}" stroke-width="2"/><text x="{lx + 22:.0f}" y="{ly}">'
                f"{html.escape(s.label)}</text>"
            )

    def sx(v: FloatArray) -> FloatArray:
        return _LEFT + (v - x0) / (x1 - x0) * inner

    y_top = top
    for panel in panels:
        y_top += _TOP_PAD
        h = panel.height
        lo, hi = _range([s.y for s in panel.series])
        lo, hi = min(lo, 0.0) if any(s.fill for s in panel.series) else lo, hi
        if any(s.fill for s in panel.series):
            hi = max(hi, 0.0)

        def sy(
            v: FloatArray, lo: float = lo, hi: float = hi, top: float = y_top, h: int = h
        ) -> FloatArray:
            return top + h - (v - lo) / (hi - lo) * h

        out.append(
            f'<rect x="{_LEFT}" y="{y_top}" width="{inner}" height="{h}" fill="none" '
            'stroke="#bbb"/>'
        )
        for tick in _ticks(lo, hi, max(2, h // 40)):
            ty = float(sy(np.array([tick]))[0])
            out.append(
                f'<line x1="{_LEFT}" y1="{ty:.1f}" x2="{_LEFT + inner}" y2="{ty:.1f}" '
                f'stroke="#eee"/><text x="{_LEFT - 4}" y="{ty + 4:.1f}" text-anchor="end">'
                f"{_label(tick)}</text>"
            )
        out.append(
            f'<text transform="translate(14,{y_top + h / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{html.escape(panel.y_label)}</text>'
        )
        for s in panel.series:
            x, y = thin(s.x, s.y) if not s.step else (s.x, s.y)
            if s.step:
                x, y = _step(x, y)
            px, py = sx(x), sy(y)
            if s.fill is not None and len(px):
                zero = float(sy(np.array([0.0]))[0])
                area = f"{px[0]:.1f},{zero:.1f} {_points(px, py)} {px[-1]:.1f},{zero:.1f}"
                if s.fill == "sign":
                    # ids unique on a page that embeds several charts, and the same each run
                    clip = f"{ids}-{len(out)}"
                    out.append(_clipped(area, y_top, zero - y_top, "#27ae60", clip + "a"))
                    out.append(_clipped(area, zero, y_top + h - zero, "#c0392b", clip + "b"))
                else:
                    out.append(f'<polygon points="{area}" fill="{s.fill}" opacity="0.55"/>')
            if len(px) > 1 and (s.fill is None or s.step):
                out.append(
                    f'<polyline points="{_points(px, py)}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="{1.0 if s.step else 1.3}"/>'
                )
        for mx, colour, text in panel.markers:
            vx = float(sx(np.array([mx]))[0])
            out.append(
                f'<line x1="{vx:.1f}" y1="{y_top}" x2="{vx:.1f}" y2="{y_top + h}" '
                f'stroke="{colour}" stroke-dasharray="4 3"/>'
                + (
                    f'<text x="{vx + 3:.1f}" y="{y_top + 12}" fill="{colour}">'
                    f"{html.escape(text)}</text>"
                    if text
                    else ""
                )
            )
        if panel.note:
            out.append(
                f'<text x="{_LEFT + inner / 2}" y="{y_top + h / 2}" text-anchor="middle" '
                f'fill="#777">{html.escape(panel.note)}</text>'
            )
        y_top += h + _BOTTOM_PAD
    for tick in _ticks(x0, x1, 8):
        tx = float(sx(np.array([tick]))[0])
        out.append(
            f'<text x="{tx:.1f}" y="{y_top + 14}" text-anchor="middle">{_label(tick)}</text>'
        )
    out.append(
        f'<text x="{_LEFT + inner / 2}" y="{y_top + 30}" text-anchor="middle">'
        f"{html.escape(x_label)}</text></svg>"
    )
    return "\n".join(out)


def _clipped(points: str, y: float, height: float, colour: str, clip: str) -> str:
    """An area shaded only within the band ``[y, y + height]`` (above or below zero)."""
    if height <= 0:
        return ""
    return (
        f'<clipPath id="{clip}"><rect x="0" y="{y:.1f}" width="{WIDTH}" '
        f'height="{height:.1f}"/></clipPath><polygon points="{points}" fill="{colour}" '
        f'opacity="0.5" clip-path="url(#{clip})"/>'
    )
