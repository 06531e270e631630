"""The report's hand-written SVG charts: scaled points, escaped text, nothing fetched."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from privml.report._svg import Series, _ticks, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_ticks_are_round_and_cover_the_top():
    assert _ticks(1.05) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert _ticks(4.8)[-1] >= 4.8 and len(_ticks(4.8)) <= 7
    assert _ticks(0.0) == [0.0, 1.0]


def test_a_chart_is_well_formed_svg_with_its_points_where_they_belong():
    svg = line_chart(
        [Series("tight", [0, 1, 2], [0.0, 0.5, 1.0], "#00f")],
        title="t",
        x_label="x",
        y_label="y",
        limit=1.0,
        limit_label="budget",
    )
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    (path,) = root.iter(f"{SVG}path")
    budget = next(line for line in root.iter(f"{SVG}line") if line.get("stroke") == "#c0392b")
    coords = [(float(x), float(y)) for x, y in re.findall(r"([\d.]+),([\d.]+)", path.get("d"))]
    # the last point, ε = 1.0, lies on the budget line; the first, ε = 0, on the axis below it
    assert coords[-1][1] == float(budget.get("y1"))
    assert coords[0][1] > coords[-1][1]
    assert coords[0][0] < coords[-1][0]


def test_text_is_escaped_and_nothing_is_linked():
    hostile = "</text><script>alert(1)</script>"
    svg = line_chart(
        [Series(hostile, [1], [0.2], "#000")], title=hostile, x_label=hostile, y_label=hostile
    )
    root = ET.fromstring(svg)
    assert {el.tag.removeprefix(SVG) for el in root.iter()} <= {
        "svg", "title", "text", "rect", "line", "path"
    }  # fmt: skip
    assert hostile in "".join(root.itertext())
    assert not any(
        k.endswith("href") or k.startswith("on") for el in root.iter() for k in el.attrib
    )


def test_an_empty_chart_still_draws():
    root = ET.fromstring(line_chart([], title="none", x_label="x", y_label="y"))
    assert not list(root.iter(f"{SVG}path"))
