"""Generalization rules: the plain-JSON form in ``generalizations_`` and what applies it.

One rule per minimized feature, a dict with ``"type"`` (``"numeric"`` or
``"categorical"``) and ``"kind"``:

- ``"kept"``: released unchanged.
- ``"ranges"`` (numeric): ``"cuts"`` ``c_1 < … < c_r`` make ``r + 1`` intervals
  ``(-inf, c_1)``, ``[c_1, c_2)``, …, ``[c_r, inf)``; a value ``v`` falls in
  interval ``i`` = the number of cuts ``<= v``. ``"extents"`` are the smallest and
  largest training value in each interval, ``"representatives"`` the training
  value released for it, ``"range"`` the training ``[min, max]``.
- ``"groups"`` (categorical): ``"groups"`` lists the categories of each group,
  ``"representatives"`` the category released for it. A category in no group
  was never seen in training and is refused.
- ``"dropped"``: every value is released as ``"representative"``; numeric
  rules keep ``"range"``, categorical ones ``"categories"`` (the domain).
- ``"cells"``: released per cell, see ``_cells``.

``compile_rule`` turns one dict into arrays; ``Rule.codes`` is the only place
where a value is mapped to its group, so ``transform``, the search and the
NCP all read the same mapping.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..exceptions import ConfigurationError, SchemaError, SchemaViolation
from ._ncp import group_penalties, range_penalties

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

KINDS = ("kept", "ranges", "groups", "dropped", "cells")
ANY = "*"


def plain(value: Any) -> Any:
    """A numpy scalar as the matching Python scalar (JSON-able); other values unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def plain_list(values: Sequence[Any] | Array) -> list[Any]:
    return [plain(v) for v in values]


def kept_rule(numeric: bool) -> dict[str, Any]:
    return {"type": _type(numeric), "kind": "kept"}


def cells_rule(numeric: bool) -> dict[str, Any]:
    return {"type": _type(numeric), "kind": "cells"}


def dropped_rule(numeric: bool, representative: Any, domain: Sequence[Any]) -> dict[str, Any]:
    key = "range" if numeric else "categories"
    return {
        "type": _type(numeric),
        "kind": "dropped",
        "representative": plain(representative),
        key: plain_list(domain),
    }


def ranges_rule(
    cuts: Array, extents: Sequence[tuple[Any, Any]], reps: Array, vmin: Any, vmax: Any
) -> dict[str, Any]:
    return {
        "type": "numeric",
        "kind": "ranges",
        "cuts": plain_list(cuts),
        "extents": [[plain(lo), plain(hi)] for lo, hi in extents],
        "representatives": plain_list(reps),
        "range": [plain(vmin), plain(vmax)],
    }


def groups_rule(groups: Sequence[Sequence[Any]], reps: Sequence[Any]) -> dict[str, Any]:
    return {
        "type": "categorical",
        "kind": "groups",
        "groups": [plain_list(g) for g in groups],
        "representatives": plain_list(reps),
    }


def _type(numeric: bool) -> str:
    return "numeric" if numeric else "categorical"


@dataclass(frozen=True)
class Rule:
    """One feature's rule as arrays (see the module docstring for the dict form).

    Attributes
    ----------
    name : str
    position : int
        Column of the feature in ``X``.
    kind : str
    numeric : bool
    cuts : ndarray
        Interval cut points (``"ranges"`` only).
    categories : pandas.Index or None
        Every known category (``"groups"`` only).
    group_of_category : ndarray
        Group of each entry of ``categories``.
    representatives, labels : ndarray
        Released value and interval/group label of each group.
    penalties : ndarray
        NCP penalty of each group (see ``_ncp`` for what it measures).
    """

    name: str
    position: int
    kind: str
    numeric: bool
    cuts: FloatArray
    categories: pd.Index | None
    group_of_category: IntArray
    representatives: Array
    labels: Array
    penalties: FloatArray

    def codes(self, values: Array) -> IntArray:
        """The group of each value (for kinds ``"ranges"``, ``"groups"``, ``"dropped"``)."""
        if self.kind == "ranges":
            return np.searchsorted(self.cuts, values.astype(np.float64), side="right")
        if self.kind == "dropped":
            return np.zeros(len(values), dtype=np.intp)
        assert self.categories is not None
        found = np.asarray(self.categories.get_indexer(values), dtype=np.intp)
        unseen = found < 0
        if unseen.any():
            rows = np.flatnonzero(unseen)
            shown = ", ".join(repr(plain(v)) for v in pd.unique(values[unseen])[:5])
            raise SchemaError(
                [
                    SchemaViolation(
                        self.name,
                        "category",
                        int(rows.size),
                        tuple(int(r) for r in rows[:5]),
                        f"categories never seen when the Minimizer was fitted ({shown})",
                    )
                ],
                hint="Refit the Minimizer on data that holds these categories, or map them to "
                "a known category first; generalizations_ lists the known ones.",
            )
        return self.group_of_category[found]


def compile_rule(name: str, position: int, rule: dict[str, Any]) -> Rule:
    """Check one rule dict and turn it into arrays."""
    kind = rule.get("kind")
    numeric = rule.get("type") == "numeric"
    if kind not in KINDS or rule.get("type") not in ("numeric", "categorical"):
        raise ConfigurationError(
            f"generalization of {name!r}: type must be 'numeric' or 'categorical' and kind one "
            f"of {KINDS}, got {rule.get('type')!r}/{kind!r}"
        )
    empty_f = np.zeros(0, dtype=np.float64)
    empty_i = np.zeros(0, dtype=np.intp)
    if kind in ("kept", "cells"):
        return Rule(
            name, position, kind, numeric, empty_f, None, empty_i, empty_f, empty_f, empty_f
        )
    if kind == "dropped":
        domain = rule["range"] if numeric else rule["categories"]
        spread = (domain[1] > domain[0]) if numeric else len(domain) > 1
        reps = np.array([rule["representative"]], dtype=object if not numeric else None)
        labels = np.array([ANY], dtype=object)
        return Rule(name, position, kind, numeric, empty_f, None, empty_i, reps, labels,
                    np.array([1.0 if spread else 0.0]))  # fmt: skip
    reps = np.asarray(rule["representatives"], dtype=None if numeric else object)
    if kind == "ranges":
        cuts = np.asarray(rule["cuts"], dtype=np.float64)
        vmin, vmax = rule["range"]
        widths = np.array([hi - lo for lo, hi in rule["extents"]], dtype=np.float64)
        if cuts.size + 1 != reps.size or reps.size != widths.size or np.any(np.diff(cuts) <= 0):
            raise ConfigurationError(
                f"generalization of {name!r}: need increasing cuts and one extent and "
                "representative per interval"
            )
        penalties = range_penalties(widths, float(vmax - vmin))
        return Rule(name, position, kind, numeric, cuts, None, empty_i, reps,
                    _interval_labels(cuts), penalties)  # fmt: skip
    groups = rule["groups"]
    flat = [c for g in groups for c in g]
    categories = pd.Index(flat, dtype=object)
    if not categories.is_unique or len(groups) != reps.size:
        raise ConfigurationError(
            f"generalization of {name!r}: each category must be in exactly one group, "
            "with one representative per group"
        )
    owner = np.repeat(np.arange(len(groups), dtype=np.intp), [len(g) for g in groups])
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    penalties = group_penalties(sizes, len(flat))
    labels = np.array(["|".join(str(c) for c in g) for g in groups], dtype=object)
    return Rule(name, position, kind, numeric, empty_f, categories, owner, reps, labels, penalties)


def _interval_labels(cuts: FloatArray) -> Array:
    text = [number_text(c) for c in cuts]
    labels = [f"< {text[0]}"]
    labels += [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(text)]
    labels.append(f">= {text[-1]}")
    return np.array(labels, dtype=object)


def number_text(x: float) -> str:
    """A number as short text: integers without a decimal point."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def describe(rule: dict[str, Any]) -> str:
    """A one-line human reading of a rule dict, for ``Minimizer.report``."""
    kind = rule["kind"]
    if kind == "kept":
        return "kept as is"
    if kind == "cells":
        return "released per cell"
    if kind == "dropped":
        return f"dropped (every value released as {rule['representative']!r})"
    if kind == "ranges":
        labels = _interval_labels(np.asarray(rule["cuts"], dtype=np.float64))
        return f"{len(labels)} ranges: " + ", ".join(labels)
    groups = rule["groups"]
    merged = ["{" + ", ".join(str(c) for c in g) + "}" for g in groups if len(g) > 1]
    single = sum(1 for g in groups if len(g) == 1)
    tail = f" + {single} alone" if single else ""
    return f"{len(groups)} groups: " + ", ".join(merged) + tail
