"""Best partition of one feature's atoms for a given price of accuracy.

Each feature is cut into *atoms* (single values, narrow ranges or single
categories); a generalization groups atoms and releases one representative
atom per group. For a price ``lam`` (information per unit of lost agreement)
a solver returns the partition that maximizes

    information loss (rows × NCP penalty) − lam × estimated lost agreement,

where the lost agreement of a group is read from a table ``errors[a, k]``: the
share of rows in atom ``a`` whose prediction changes when the feature is set
to atom ``k``'s representative (see ``_context``). Numeric features are cut
into intervals of consecutive atoms by exact dynamic programming; categorical
features are grouped by greedy agglomeration, then compared with one group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_TINY = 1e-12


@dataclass(frozen=True)
class Partition:
    """Groups of atoms: ``groups[a]`` is atom ``a``'s group, ``reps[g]`` group ``g``'s atom."""

    groups: IntArray
    reps: IntArray

    @property
    def n_groups(self) -> int:
        return int(self.reps.size)


def group_cost(errors: FloatArray, members: BoolArray) -> tuple[float, int]:
    """Lost agreement of one group of atoms and the atom whose representative loses least."""
    per_rep = errors[members].sum(axis=0)
    candidates = np.flatnonzero(members)
    best = int(candidates[np.argmin(per_rep[candidates])])
    return float(per_rep[best]), best


class IntervalSolver:
    """Exact best cut of ordered atoms into intervals (dynamic programming over cut points).

    Parameters
    ----------
    weights : array of shape (m,)
        Share of rows in each atom.
    lows, highs : arrays of shape (m,)
        Smallest and largest value in each atom.
    span : float
        The feature's range (max − min); 0 for a constant feature.
    errors : array of shape (m, m)
        Lost-agreement table, see the module docstring.
    """

    def __init__(
        self,
        weights: FloatArray,
        lows: FloatArray,
        highs: FloatArray,
        span: float,
        errors: FloatArray,
    ) -> None:
        m = weights.size
        self.errors = errors
        self.size = m
        upper = np.vstack([np.zeros((1, m)), np.cumsum(errors, axis=0)])  # (m+1, m)
        # sums[a, b, k]: lost agreement of atoms a..b (inclusive) released as atom k.
        sums = upper[None, 1:, :] - upper[:-1, None, :]
        atom = np.arange(m)
        valid = (atom[None, None, :] >= atom[:, None, None]) & (
            atom[None, None, :] <= atom[None, :, None]
        )
        # Among equally good representatives, take the one nearest the interval's median row.
        share = np.concatenate([[0.0], np.cumsum(weights)])
        middle = np.searchsorted(share[1:], (share[:-1, None] + share[None, 1:]) / 2)
        sums = sums + _TINY * np.abs(atom[None, None, :] - middle[:, :, None])
        sums = np.where(valid, sums, np.inf)
        self.rep = np.argmin(sums, axis=2)
        self.cost = np.take_along_axis(sums, self.rep[:, :, None], axis=2)[:, :, 0]
        rows = share[None, 1:] - share[:-1, None]
        width = (highs[None, :] - lows[:, None]) / span if span > 0 else np.zeros((m, m))
        self.info = np.where(atom[:, None] <= atom[None, :], rows * width, -np.inf)

    def solve(self, lam: float) -> tuple[Partition, float]:
        """The best partition at price ``lam`` and its objective value."""
        m = self.size
        best = np.zeros(m + 1)
        start = np.zeros(m, dtype=np.intp)
        for b in range(m):
            gains = best[: b + 1] + self.info[: b + 1, b] - lam * self.cost[: b + 1, b]
            a = int(np.argmax(gains))  # first maximum: the longest last interval
            start[b] = a
            best[b + 1] = gains[a]
        bounds: list[tuple[int, int]] = []
        b = m - 1
        while b >= 0:
            bounds.append((int(start[b]), b))
            b = int(start[b]) - 1
        bounds.reverse()
        groups = np.empty(m, dtype=np.intp)
        reps = np.empty(len(bounds), dtype=np.intp)
        for g, (a, b) in enumerate(bounds):
            groups[a : b + 1] = g
            reps[g] = self.rep[a, b]
        return Partition(groups, reps), float(best[m])


class GroupSolver:
    """Greedy agglomeration of unordered atoms (categories) into groups.

    Parameters
    ----------
    weights : array of shape (m,)
        Share of rows in each atom.
    sizes : array of shape (m,)
        Number of categories in each atom.
    errors : array of shape (m, m)
        Lost-agreement table, see the module docstring.
    """

    def __init__(self, weights: FloatArray, sizes: FloatArray, errors: FloatArray) -> None:
        self.weights = weights
        self.sizes = sizes
        self.domain = float(sizes.sum())
        # Among equally good representatives, take the most frequent category.
        self.errors = errors + _TINY * (1.0 - weights / max(float(weights.max()), _TINY))[None, :]
        self.size = weights.size

    def _info(self, weight: FloatArray, size: FloatArray) -> FloatArray:
        return np.where(size > 1, weight * size / self.domain, 0.0)

    def solve(self, lam: float) -> tuple[Partition, float]:
        """The best partition found at price ``lam`` and its objective value."""
        m = self.size
        members = np.eye(m, dtype=bool)
        errs = self.errors.copy()  # errs[g, k]: lost agreement of group g released as atom k
        weight = self.weights.copy()
        size = self.sizes.copy()
        alive = np.ones(m, dtype=bool)
        own = np.where(members, errs, np.inf).min(axis=1)
        value = self._info(weight, size) - lam * own
        gain = self._pair_gains(np.arange(m), members, errs, weight, size, value, lam, alive)
        for _ in range(m - 1):
            flat = int(np.argmax(gain))
            i, j = divmod(flat, m)
            if not gain[i, j] > _TINY:
                break
            members[i] |= members[j]
            errs[i] += errs[j]
            weight[i] += weight[j]
            size[i] += size[j]
            alive[j] = False
            value[i] = self._info(weight[i : i + 1], size[i : i + 1])[0] - lam * float(
                errs[i][members[i]].min()
            )
            gain[j, :] = gain[:, j] = -np.inf
            row = self._pair_gains(np.array([i]), members, errs, weight, size, value, lam, alive)
            gain[i, :] = gain[:, i] = row[0]
        kept = np.flatnonzero(alive)
        total = float(value[kept].sum())
        merged = self._one_group(lam)
        if merged[1] > total + _TINY:
            return merged
        groups = np.empty(m, dtype=np.intp)
        reps = np.empty(kept.size, dtype=np.intp)
        for g, alive_row in enumerate(kept.tolist()):
            groups[members[alive_row]] = g
            cands = np.flatnonzero(members[alive_row])
            reps[g] = cands[np.argmin(errs[alive_row][cands])]
        return Partition(groups, reps), total

    def _pair_gains(
        self,
        rows: IntArray,
        members: BoolArray,
        errs: FloatArray,
        weight: FloatArray,
        size: FloatArray,
        value: FloatArray,
        lam: float,
        alive: BoolArray,
    ) -> FloatArray:
        union = members[rows][:, None, :] | members[None, :, :]
        cost = np.where(union, errs[rows][:, None, :] + errs[None, :, :], np.inf).min(axis=2)
        info = self._info(weight[rows][:, None] + weight[None, :], size[rows][:, None] + size)
        gain = info - lam * cost - value[rows][:, None] - value[None, :]
        gain[:, ~alive] = -np.inf
        gain[~alive[rows], :] = -np.inf
        gain[np.arange(rows.size), rows] = -np.inf
        return np.asarray(gain, dtype=np.float64)

    def _one_group(self, lam: float) -> tuple[Partition, float]:
        cost, rep = group_cost(self.errors, np.ones(self.size, dtype=bool))
        info = float(self._info(np.array([self.weights.sum()]), np.array([self.domain]))[0])
        partition = Partition(np.zeros(self.size, dtype=np.intp), np.array([rep], dtype=np.intp))
        return partition, info - lam * cost
