"""A whole generalization (``generalizations_``) compiled, and everything derived from it.

``generalizations_`` is ``{"features": {name: rule}, "cells": cells or None}``:
one rule per minimized feature (see ``_rules``), features of kind ``"cells"``
being released per cell (see ``_cells``). ``Release`` is the only code that
applies it: ``transform``, the search's checks, the NCP and the group sizes all
go through it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..exceptions import ConfigurationError
from ._cells import CompiledCells, compile_cells
from ._rules import Rule, compile_rule

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Release:
    """A compiled generalization: per-feature rules, and the cells if any."""

    rules: list[Rule]
    cells: CompiledCells | None

    @property
    def positions(self) -> list[int]:
        return [r.position for r in self.rules]

    def released(self, columns: dict[int, Array], *, labels: bool = False) -> dict[int, Array]:
        """New values of each generalized column (representatives, or labels)."""
        out: dict[int, Array] = {}
        for rule in self.rules:
            if rule.kind in ("kept", "cells"):
                continue
            codes = rule.codes(columns[rule.position])
            out[rule.position] = (rule.labels if labels else rule.representatives)[codes]
        if self.cells is not None:
            cell = self.cells.cells_of(columns)
            for f, position in enumerate(self.cells.positions):
                out[position] = (
                    self.cells.labels(cell, f) if labels else self.cells.representatives[f][cell]
                )
        return out

    def penalties(self, columns: dict[int, Array], n_rows: int) -> FloatArray:
        """NCP penalty of each row on each minimized feature, shape (n_rows, features)."""
        out = np.zeros((n_rows, len(self.rules)))
        slot = {rule.position: j for j, rule in enumerate(self.rules)}
        for j, rule in enumerate(self.rules):
            if rule.kind not in ("kept", "cells"):
                out[:, j] = rule.penalties[rule.codes(columns[rule.position])]
        if self.cells is not None and n_rows:
            cell_penalties = self.cells.penalties(self.cells.cells_of(columns))
            for f, position in enumerate(self.cells.positions):
                out[:, slot[position]] = cell_penalties[:, f]
        return out

    def group_codes(self, columns: dict[int, Array]) -> list[IntArray]:
        """Codes whose combinations are the released combinations of the minimized features."""
        codes: list[IntArray] = []
        for rule in self.rules:
            values = columns[rule.position]
            if rule.kind == "kept":
                codes.append(np.asarray(pd.factorize(values)[0], dtype=np.intp))
            elif rule.kind != "cells":
                codes.append(rule.codes(values))
        if self.cells is not None:
            # Cells whose representatives coincide release the same combination.
            reps = pd.DataFrame({f: r for f, r in enumerate(self.cells.representatives)})
            same = np.asarray(pd.util.hash_pandas_object(reps, index=False), dtype=np.uint64)
            _, merged = np.unique(same, return_inverse=True)
            codes.append(merged.reshape(-1)[self.cells.cells_of(columns)].astype(np.intp))
        return codes


def compile_release(
    generalizations: dict[str, Any], names: list[str], features: list[str]
) -> Release:
    """Check ``generalizations_`` against the columns and compile it."""
    if not isinstance(generalizations, dict) or set(generalizations) != {"features", "cells"}:
        raise ConfigurationError('generalizations_ must be {"features": {...}, "cells": ...}')
    per_feature = generalizations["features"]
    if not isinstance(per_feature, dict) or list(per_feature) != list(features):
        raise ConfigurationError(
            "generalizations_['features'] must hold one rule per minimized feature, in order: "
            f"{features}"
        )
    position = {name: names.index(name) for name in features}
    rules = [compile_rule(name, position[name], per_feature[name]) for name in features]
    spec = generalizations["cells"]
    wanted = [r.name for r in rules if r.kind == "cells"]
    if spec is None:
        if wanted:
            raise ConfigurationError(
                f"features {wanted} are released per cell but there are no cells"
            )
        return Release(rules, None)
    if list(spec.get("features", [])) != wanted:
        raise ConfigurationError(
            f"the cells must release exactly the features of kind 'cells' ({wanted}), in order"
        )
    numeric = {r.name: r.numeric for r in rules}
    return Release(rules, compile_cells(spec, position, numeric))
