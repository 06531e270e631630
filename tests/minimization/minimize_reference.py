"""A slow, independent reading of ``generalizations_``: one record at a time, in plain Python.

The tests compare ``Minimizer.transform`` and ``Minimizer.ncp_`` with what this
reading says, for every row.
"""

from __future__ import annotations

import math
from typing import Any


def _cell_path(cells: dict[str, Any], record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The cell of ``record``, and what its path says about each cell feature."""
    said: dict[str, Any] = {}
    for name in cells["features"]:
        numeric = cells["_numeric"][name]
        said[name] = [-math.inf, math.inf] if numeric else set(cells["domains"][name])
    node = cells["nodes"][0]
    while "cell" not in node:
        name = node["feature"]
        if "at_least" in node:
            answer = float(record[name]) >= node["at_least"]
            low, high = said[name]
            cut = node["at_least"]
            said[name] = [max(low, cut), high] if answer else [low, min(high, cut)]
        else:
            answer = record[name] == node["equals"]
            said[name] = said[name] & {node["equals"]} if answer else said[name] - {node["equals"]}
        node = cells["nodes"][node["yes"] if answer else node["no"]]
    return node["cell"], said


def released_record(generalizations: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What ``transform`` (``output="representative"``) must release for one record."""
    out = dict(record)
    cells = _with_types(generalizations)
    for name, rule in generalizations["features"].items():
        value = record[name]
        kind = rule["kind"]
        if kind == "ranges":
            out[name] = rule["representatives"][sum(1 for c in rule["cuts"] if c <= value)]
        elif kind == "groups":
            index = next(i for i, group in enumerate(rule["groups"]) if value in group)
            out[name] = rule["representatives"][index]
        elif kind == "dropped":
            out[name] = rule["representative"]
    if cells is not None:
        cell, _ = _cell_path(cells, record)
        for f, name in enumerate(cells["features"]):
            out[name] = cells["representatives"][cell][f]
    return out


def penalties(generalizations: dict[str, Any], record: dict[str, Any]) -> list[float]:
    """NCP penalty of one record on each minimized feature (Ghinita et al.)."""
    cells = _with_types(generalizations)
    said = _cell_path(cells, record)[1] if cells is not None else {}
    out = []
    for name, rule in generalizations["features"].items():
        value, kind = record[name], rule["kind"]
        if kind == "kept":
            out.append(0.0)
        elif kind == "ranges":
            low, high = rule["extents"][sum(1 for c in rule["cuts"] if c <= value)]
            span = rule["range"][1] - rule["range"][0]
            out.append((high - low) / span if span > 0 else 0.0)
        elif kind == "groups":
            size = next(len(g) for g in rule["groups"] if value in g)
            domain = sum(len(g) for g in rule["groups"])
            out.append(size / domain if size > 1 else 0.0)
        elif kind == "dropped":
            domain = rule["range"] if rule["type"] == "numeric" else rule["categories"]
            spread = domain[1] > domain[0] if rule["type"] == "numeric" else len(domain) > 1
            out.append(1.0 if spread else 0.0)
        else:  # cells
            domain = cells["domains"][name]
            if rule["type"] == "numeric":
                low, high = said[name]
                span = domain[1] - domain[0]
                width = max(min(high, domain[1]) - max(low, domain[0]), 0.0)
                out.append(width / span if span > 0 else 0.0)
            else:
                size = len(said[name])
                out.append(size / len(domain) if size > 1 else 0.0)
    return out


def _with_types(generalizations: dict[str, Any]) -> dict[str, Any] | None:
    cells = generalizations["cells"]
    if cells is None:
        return None
    types = {n: r["type"] == "numeric" for n, r in generalizations["features"].items()}
    return {**cells, "_numeric": types}
