"""Inline SVG line charts, written by hand: no plotting library, no script, no external file.

Every text that reaches the drawing is escaped here; numbers are formatted, never echoed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "line_chart"]

_WIDTH, _HEIGHT = 640, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 20, 30, 50


@dataclass(frozen=True)
class Series:
    """One line of a chart: its label, points, colour and dash pattern (empty: solid)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str
    dash: str = ""


def _ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step + 1e-9) + 1)]


def _num(value: float) -> str:
    return f"{value:.4g}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    limit: float | None = None,
    limit_label: str = "",
) -> str:
    """An ``<svg>`` element plotting ``series`` (step lines) and a horizontal ``limit``.

    Parameters
    ----------
    series : sequence of Series
        The lines, drawn as steps (each value holds until the next point).
    title, x_label, y_label : str
        Escaped here.
    limit : float, optional
        Drawn as a red horizontal line (the budget).
    limit_label : str
        Its legend entry.

    Returns
    -------
    str

    Examples
    --------
    >>> svg = line_chart([Series("a<b", [1, 2], [0.1, 0.3], "#1f77b4")], title="t",
    ...                  x_label="x", y_label="y", limit=1.0, limit_label="budget")
    >>> svg.startswith("<svg") and "a&lt;b" in svg and "<script" not in svg
    True
    """
    xs = [float(x) for s in series for x in s.xs]
    ys = [float(y) for s in series for y in s.ys if math.isfinite(y)]
    x_max = max(xs, default=1.0)
    x_min = min(xs, default=0.0)
    if x_max <= x_min:
        x_min, x_max = x_min - 1, x_max + 1
    y_top = max([*ys, limit if limit is not None and math.isfinite(limit) else 0.0], default=1.0)
    ticks = _ticks(y_top * 1.05)
    y_max = ticks[-1]
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - x_min) / (x_max - x_min) * plot_w

    def py(y: float) -> float:
        return _TOP + plot_h - min(max(y, 0.0), y_max) / y_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="{_WIDTH}" height="{_HEIGHT}" role="img" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{_WIDTH / 2}" y="18" text-anchor="middle" class="chart-title">'
        f"{escape(title)}</text>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#888"/>',
    ]
    for tick in ticks:
        y = py(tick)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(tick)}</text>'
        )
    for x in sorted({x_min, x_max}):
        parts.append(
            f'<text x="{px(x):.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">{_num(x)}</text>'
        )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(14 {_TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    legend: list[tuple[str, str, str]] = []
    if limit is not None and math.isfinite(limit):
        y = py(limit)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" '
            'stroke="#c0392b" stroke-width="1.5"/>'
        )
        legend.append((limit_label, "#c0392b", ""))
    for s in series:
        points = [(px(float(x)), py(float(y))) for x, y in zip(s.xs, s.ys, strict=True)]
        if not points:
            continue
        path = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
        for (_, y0), (x1, y1) in itertools.pairwise(points):
            path.append(f"L{x1:.1f},{y0:.1f}L{x1:.1f},{y1:.1f}")
        dash = f' stroke-dasharray="{escape(s.dash)}"' if s.dash else ""
        parts.append(
            f'<path d="{"".join(path)}" fill="none" stroke="{escape(s.colour)}" '
            f'stroke-width="2"{dash}/>'
        )
        legend.append((s.label, s.colour, s.dash))
    if legend:
        width = 30 + 7 * max(len(label) for label, _, _ in legend)
        parts.append(
            f'<rect x="{_LEFT + 4}" y="{_TOP + 3}" width="{width}" height="{16 * len(legend) + 4}" '
            'fill="#fff" fill-opacity="0.9" stroke="#ddd"/>'
        )
    for i, (label, colour, dash) in enumerate(legend):
        y = _TOP + 14 + 16 * i
        dash_attr = f' stroke-dasharray="{escape(dash)}"' if dash else ""
        parts.append(
            f'<line x1="{_LEFT + 10}" y1="{y - 4}" x2="{_LEFT + 34}" y2="{y - 4}" '
            f'stroke="{escape(colour)}" stroke-width="2"{dash_attr}/>'
            f'<text x="{_LEFT + 40}" y="{y}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
