"""The k-anonymity floor: coarsen until every released combination covers k rows.

A combination is the tuple of released values of all minimized features. While
some combination is shared by fewer than ``k`` of the counted rows, one more
merge is made: for each feature, its group holding the most of those rows is
joined with the neighbouring interval (numeric) or the group (categorical)
that best trades those rows against agreement lost (read from the lost-agreement
tables); the best merge over all features wins. A kept feature whose atoms are
coarser than its values may instead be cut into its atoms. Every step removes
a group, so the loop ends; with every feature dropped, all rows share one
combination, so the floor is out of reach only when there are fewer than
``k`` rows.

The agreement each merge costs is estimated one feature at a time, so with
many quasi-identifiers the floor can cost more than it must; the search then
measures the real agreement, and ``fit`` says when the floor and the target
cannot both be met.

Combinations are counted through a random 64-bit hash of the group codes
(collisions among a few million rows have probability below 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..exceptions import ConfigurationError
from ._atoms import Atoms
from ._partition import Partition

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
HashArray = npt.NDArray[np.uint64]


@dataclass
class _Slot:
    """One feature's current state inside the loop."""

    atoms: Atoms
    errors: FloatArray
    part: Partition | None
    codes: IntArray
    salt: HashArray


def group_sizes(codes: list[IntArray], n_rows: int) -> IntArray:
    """Sizes of the groups of rows sharing the same code in every column, ascending."""
    if not codes:
        return np.array([n_rows], dtype=np.intp) if n_rows else np.zeros(0, dtype=np.intp)
    _, counts = np.unique(np.column_stack(codes), axis=0, return_counts=True)
    return np.sort(counts).astype(np.intp)


def enforce(
    atoms: list[Atoms],
    errors: list[FloatArray],
    partitions: list[Partition | None],
    rows: IntArray,
    k: int,
    unit: float,
) -> list[Partition | None]:
    """Coarsen ``partitions`` until every combination covers ``k`` of ``rows``.

    ``unit`` is the lost agreement of one sampled row, added to each merge's
    cost so that free merges are ranked by the rows they fix.
    """
    if k <= 1:
        return partitions
    if len(rows) < k:
        raise ConfigurationError(
            f"min_group_size={k} is larger than the {len(rows)} training rows: "
            "lower min_group_size or fit on more rows"
        )
    rng = np.random.default_rng(0x5EED)
    slots = []
    for a, e, p in zip(atoms, errors, partitions, strict=True):
        if p is None and a.exact:
            p = Partition(np.arange(a.size, dtype=np.intp), np.arange(a.size, dtype=np.intp))
        codes = a.values[rows] if p is None else p.groups[a.codes[rows]]
        salt = rng.integers(0, 2**63, size=max(a.values.max(initial=0) + 1, a.size) * 2,
                            dtype=np.uint64)  # fmt: skip
        slots.append(_Slot(a, e, p, codes.astype(np.intp), salt))
    hashes = _hash(slots)
    while True:
        _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        short = counts[inverse.reshape(-1)] < k
        if not short.any():
            return [s.part for s in slots]
        best: tuple[float, int, Partition] | None = None
        for index, slot in enumerate(slots):
            move = _best_move(slot, short, unit)
            if move is not None and (best is None or move[0] > best[0]):
                best = (move[0], index, move[1])
        if best is None:  # pragma: no cover - every feature dropped implies one combination
            raise ConfigurationError(f"min_group_size={k} cannot be reached on these rows")
        slot = slots[best[1]]
        old = _salted(slot)
        slot.part = best[2]
        slot.codes = best[2].groups[slot.atoms.codes[rows]].astype(np.intp)
        hashes = hashes - old + _salted(slot)


def _hash(slots: list[_Slot]) -> HashArray:
    total = np.zeros(len(slots[0].codes) if slots else 0, dtype=np.uint64)
    for slot in slots:
        total = total + _salted(slot)
    return total


def _salted(slot: _Slot) -> HashArray:
    # Kept features hash their values in the first half of the salt, groups in the second.
    offset = 0 if slot.part is None else len(slot.salt) // 2
    return slot.salt[slot.codes + offset]


def _best_move(
    slot: _Slot, short: npt.NDArray[np.bool_], unit: float
) -> tuple[float, Partition] | None:
    atoms, errors, part = slot.atoms, slot.errors, slot.part
    if part is None:  # kept, with atoms coarser than the values: cut it into its atoms
        finest = np.arange(atoms.size, dtype=np.intp)
        cost = float(np.trace(errors))
        return float(short.sum()) / (cost + unit), Partition(finest, finest.copy())
    if part.n_groups == 1:
        return None
    groups = part.n_groups
    member = np.zeros((groups, atoms.size), dtype=bool)
    member[part.groups, np.arange(atoms.size)] = True
    summed = member.astype(np.float64) @ errors  # summed[g, k]: group g released as atom k
    own = np.where(member, summed, np.inf).min(axis=1)
    stuck = np.bincount(slot.codes[short], minlength=groups).astype(np.float64)
    g = int(np.argmax(stuck))
    if atoms.numeric:
        others = np.array([j for j in (g - 1, g + 1) if 0 <= j < groups], dtype=np.intp)
    else:
        others = np.delete(np.arange(groups, dtype=np.intp), g)
    union = member[g][None, :] | member[others]
    merged = np.where(union, summed[g][None, :] + summed[others], np.inf).min(axis=1)
    extra = np.maximum(merged - own[g] - own[others], 0.0)
    score = (stuck[g] + stuck[others]) / (extra + unit)
    pick = int(np.argmax(score))
    return float(score[pick]), _merge(part, errors, g, int(others[pick]))


def _merge(part: Partition, errors: FloatArray, g: int, other: int) -> Partition:
    """``part`` with group ``other`` joined to group ``g``, groups renumbered in order."""
    _, groups = np.unique(np.where(part.groups == other, g, part.groups), return_inverse=True)
    groups = groups.reshape(-1).astype(np.intp)
    n_groups = int(groups.max()) + 1
    member = np.zeros((n_groups, groups.size), dtype=bool)
    member[groups, np.arange(groups.size)] = True
    summed = np.where(member, member.astype(np.float64) @ errors, np.inf)
    return Partition(groups, np.argmin(summed, axis=1).astype(np.intp))
