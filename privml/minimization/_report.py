"""``Minimizer.report``: the generalization in words, one row per minimized feature."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._cells import CompiledCells
from ._rules import describe


def feature_table(
    generalizations: dict[str, Any], feature_ncp: dict[str, float], cells: CompiledCells | None
) -> pd.DataFrame:
    """Columns ``feature``, ``kind``, ``generalization``, ``information kept``."""
    rows = []
    for name, rule in generalizations["features"].items():
        text = describe(rule)
        if rule["kind"] == "cells" and cells is not None:
            text = _cell_text(cells, cells.names.index(name))
        rows.append((name, rule["kind"], text, 1.0 - feature_ncp[name]))
    return pd.DataFrame(rows, columns=["feature", "kind", "generalization", "information kept"])


def _cell_text(cells: CompiledCells, f: int) -> str:
    total = int(cells.leaf_node.size)
    asked = int(np.sum(cells.boxes.penalties[cells.leaf_node, f] < 1.0))
    if asked == 0:
        return (
            f"dropped: no question asks about it; each of the {total} cells releases its own value"
        )
    return f"released per cell: narrowed in {asked} of {total} cells, any value in the others"
