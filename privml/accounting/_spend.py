"""What a scope has spent: running tallies summed over a purpose's subtree (no accounting here).

A scope is the dataset, one principal, or one purpose *with every purpose
below it*: a charge for ``research/onc`` counts against the allocations of
``research/onc`` and of each of its ancestors, as a grant for a purpose covers
its sub-purposes. The tree is read when the check runs, so a purpose moved
under another one later counts against its new ancestors from then on (and
everything it spent moves with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ..storage import sealed
from ..storage.tables import purposes
from ._store import DatasetRow, allocations, read_state
from .composition import Tally

__all__ = ["Scope", "lineage", "purpose_parents", "scopes_to_check", "spent", "subtree"]


@dataclass(frozen=True)
class Scope:
    """A budget to check: ``key`` ("", "principal:<name>" or "purpose:<name>"), its cap,
    and the running-tally scopes whose sum it is."""

    key: str
    cap: float
    members: tuple[str, ...]


def purpose_parents(conn: sa.Connection) -> dict[str, str | None]:
    """Every registered purpose and its parent."""
    # Read whole and checked: a purpose re-parented in the file would escape an allocation.
    return {r.name: r.parent for r in sealed.scope_rows(conn, purposes)}


def lineage(parents: dict[str, str | None], purpose: str) -> list[str]:
    """``purpose`` and its ancestors, nearest first (a cycle ends the walk)."""
    chain: list[str] = []
    current: str | None = purpose
    while current is not None and current not in chain:
        chain.append(current)
        current = parents.get(current)
    return chain


def subtree(parents: dict[str, str | None], purpose: str) -> list[str]:
    """``purpose`` and every registered purpose below it."""
    below = [p for p in parents if p != purpose and purpose in lineage(parents, p)]
    return [purpose, *sorted(below)]


def scopes_to_check(
    conn: sa.Connection, ds: DatasetRow, principal: str, purpose: str
) -> list[Scope]:
    """The dataset and every allocation a charge by ``principal`` for ``purpose`` meets."""
    caps = allocations(conn, ds.name)
    out = [Scope("", ds.budget.epsilon, ("",))]
    key = f"principal:{principal}"
    if key in caps:
        out.append(Scope(key, caps[key], (key,)))
    if any(k.startswith("purpose:") for k in caps):
        parents = purpose_parents(conn)
        for name in lineage(parents, purpose):
            key = f"purpose:{name}"
            if key in caps:
                members = tuple(f"purpose:{p}" for p in subtree(parents, name))
                out.append(Scope(key, caps[key], members))
    return out


def purpose_scope(conn: sa.Connection, name: str) -> tuple[str, ...]:
    """The running-tally scopes of a purpose's subtree."""
    return tuple(f"purpose:{p}" for p in subtree(purpose_parents(conn), name))


def spent(conn: sa.Connection, dataset: str, members: tuple[str, ...]) -> tuple[Tally, int]:
    """The tally of a scope (the sum of its members' running tallies) and a revision stamp."""
    tally, revision = Tally.empty(), 0
    for member in members:
        part, rev = read_state(conn, dataset, member)
        tally, revision = tally + part, revision + rev
    return tally, revision
