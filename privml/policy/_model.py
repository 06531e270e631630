"""Access decisions: who may see which columns of a dataset, for which purpose, in which mode.

This module is pure: it maps a request and a set of grants to a decision and
touches no storage. The vault persists grants (``vault.grant``), and sessions
ask the compiled :class:`PolicyModel` before any data leaves.

The decision rule, per column:

1. Deny by default.
2. A matching, unexpired ``deny`` wins over every grant.
3. Otherwise the most revealing mode among the matching, unexpired grants.

A grant matches when its subject is the principal or one of the principal's
roles, its purpose is the request's purpose or an ancestor of it (a grant for
``"research"`` covers ``"research/oncology"``), its dataset is the request's,
and it selects the column by name or by one of the tags the schema gives the
column (or selects no columns, meaning all). Modes, most revealing first: :data:`MODES`.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import ConfigurationError

__all__ = ["MODES", "ColumnDecision", "Grant", "PolicyModel", "Predicate", "mode_allows"]

#: Access modes, most revealing first; a grant's mode is one of them.
MODES = ("raw", "pseudonymized", "masked", "dp_training", "dp_aggregate", "deny")
_RANK = {mode: rank for rank, mode in enumerate(MODES)}
#: Modes in which values themselves leave the vault (after rendering).
ROW_MODES = frozenset(MODES[:3])

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SET_OPS = ("in", "not in")


def mode_allows(mode: str, needed: str) -> bool:
    """True when ``mode`` is at least as revealing as ``needed`` (and is not ``deny``).

    Examples
    --------
    >>> mode_allows("raw", "dp_aggregate"), mode_allows("dp_aggregate", "masked")
    (True, False)
    """
    return mode != "deny" and _RANK[mode] <= _RANK[needed]


def check_mode(mode: str) -> str:
    if mode not in _RANK:
        raise ConfigurationError(f"unknown mode {mode!r}; modes are {list(MODES)}")
    return mode


@dataclass(frozen=True)
class Predicate:
    """A structured row condition ``column op value``; never a string that gets evaluated.

    Operators: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``.

    Examples
    --------
    >>> p = Predicate("site", "in", ("A", "B"))
    >>> p.mask(pd.DataFrame({"site": ["A", "C", "B"]})).tolist()
    [True, False, True]
    """

    column: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if not isinstance(self.op, str) or (self.op not in _OPS and self.op not in _SET_OPS):
            # Echo only what looks like an operator: a misplaced value is not repeated.
            looks = isinstance(self.op, str) and len(self.op) <= 6 and set(self.op) <= set("<>=!")
            shown = f" {self.op!r}" if looks else ""
            raise ConfigurationError(f"unknown operator{shown}; use one of {[*_OPS, *_SET_OPS]}")
        if self.op in _SET_OPS:
            if isinstance(self.value, str) or not isinstance(self.value, Iterable):
                got = type(self.value).__name__  # never the value: it may be personal data
                raise ConfigurationError(f"{self.op!r} needs a list of values, got a {got}")
            object.__setattr__(self, "value", tuple(self.value))

    @classmethod
    def parse(cls, item: Predicate | Sequence[Any] | Mapping[str, Any]) -> Predicate:
        """Accept a Predicate, a ``(column, op, value)`` triple or a mapping."""
        if isinstance(item, Predicate):
            return item
        if isinstance(item, Mapping):
            try:
                return cls(item["column"], item["op"], item["value"])
            except KeyError as missing:
                raise ConfigurationError(f"row condition is missing {missing}") from None
        if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 3:
            return cls(str(item[0]), str(item[1]), item[2])
        shape = f" of length {len(item)}" if isinstance(item, Sequence) else ""
        raise ConfigurationError(
            "a row condition is (column, op, value), e.g. ('site', '==', 'A'); "
            f"got a {type(item).__name__}{shape}"
        )

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows that satisfy the condition (nulls never do)."""
        col = frame[self.column]
        if self.op == "in":
            out = col.isin(self.value)
        elif self.op == "not in":
            out = ~col.isin(self.value) & col.notna()
        else:
            out = _OPS[self.op](col, self.value)
        return np.asarray(out.fillna(False) if hasattr(out, "fillna") else out, dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        """This condition as a JSON-ready dict: column, operator and value."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"column": self.column, "op": self.op, "value": value}

    def check(self, columns: Mapping[str, str]) -> None:
        """Refuse conditions the column cannot answer; ``columns`` maps names to field kinds.

        The value (each value, for ``in``) must be of the column's kind: a number
        for numeric and integer columns, a timestamp for datetime ones, a string
        for text and identifiers, a category value for categorical ones. Errors
        name the column and the kind expected, never the value.

        Examples
        --------
        >>> Predicate("age", "<", "forty").check({"age": "integer"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        privml.exceptions.ConfigurationError: row condition on column 'age' compares it with ...
        """
        kind = columns.get(self.column)
        if kind is None:
            raise ConfigurationError(f"row condition names unknown column {self.column!r}")
        if kind in ("tensor", "sequence"):
            raise ConfigurationError(
                f"row conditions cannot compare {self.column!r}, a {kind} column: filter on "
                "a scalar column"
            )
        if self.op in ("<", "<=", ">", ">=") and kind not in ("numeric", "integer", "datetime"):
            raise ConfigurationError(
                f"{self.op!r} needs an ordered column; {self.column!r} is {kind} "
                "(use '==', '!=', 'in' or 'not in')"
            )
        values = self.value if self.op in _SET_OPS else (self.value,)
        for value in values:
            expected = _comparable(kind, value)
            if expected is not None:
                raise ConfigurationError(
                    f"row condition on column {self.column!r} compares it with a "
                    f"{type(value).__name__}; {_article(kind)} {kind} column needs {expected}"
                )


def _comparable(kind: str, value: Any) -> str | None:
    """None if ``value`` can be compared with a column of ``kind``; else what is needed."""
    if isinstance(value, str) and not _is_unicode(value):
        return "valid Unicode text (this value holds a lone surrogate)"
    if kind in ("numeric", "integer"):
        ok = isinstance(value, int | float | np.integer | np.floating)
        return None if ok and not isinstance(value, bool | np.bool_) else "a number"
    if kind == "datetime":
        if isinstance(value, datetime | np.datetime64):
            return None
        if isinstance(value, str):
            try:
                pd.Timestamp(value)
            except (ValueError, TypeError, OverflowError):
                return "a timestamp (a datetime or an ISO 8601 string)"
            return None
        return "a timestamp (a datetime or an ISO 8601 string)"
    if kind in ("text", "identifier"):
        return None if isinstance(value, str) else "a string"
    if isinstance(value, str | int | float | bool | np.generic):
        return None
    return "a category value (str, int, float or bool)"


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Grant:
    """One rule: a subject (principal or role) may see columns of a dataset for a purpose."""

    grant_id: str
    effect: str  # "allow" or "deny"
    dataset: str
    purpose: str
    mode: str
    role: str | None = None
    principal: str | None = None
    columns: frozenset[str] | None = None
    tags: frozenset[str] | None = None
    row_filter: tuple[Predicate, ...] = ()
    expires: datetime | None = None

    def selects(self, column: str, tags: Collection[str]) -> bool:
        """Whether the grant covers ``column`` (whose schema tags are ``tags``)."""
        if self.columns is None and self.tags is None:
            return True
        return (self.columns is not None and column in self.columns) or (
            self.tags is not None and not self.tags.isdisjoint(tags)
        )

    def live(self, now: datetime) -> bool:
        """Whether the grant is unexpired at ``now``."""
        return self.expires is None or now < self.expires

    def admits(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows this grant reveals: those meeting every condition of its row filter."""
        keep = np.ones(len(frame), dtype=bool)
        for predicate in self.row_filter:
            keep &= predicate.mask(frame)
        return keep


@dataclass(frozen=True)
class ColumnDecision:
    """The decision for one column: its mode and the grants that decided it."""

    column: str
    mode: str
    grant_ids: tuple[str, ...]
    policy_hash: str
    grants: tuple[Grant, ...] = field(default=(), repr=False, compare=False)

    @property
    def row_filters(self) -> tuple[tuple[Predicate, ...], ...]:
        """The deciding grants' row filters (a row is visible if any one admits it)."""
        return tuple(g.row_filter for g in self.grants)


class PolicyModel:
    """Grants compiled for fast decisions. Build it once per policy version.

    Grants are indexed by (dataset, subject, purpose), so a request looks up
    only the few grants that can match instead of scanning them all.

    Examples
    --------
    >>> health = frozenset({"health"})
    >>> model = PolicyModel(
    ...     [
    ...         Grant("g1", "allow", "visits", "research", "masked", role="analyst"),
    ...         Grant("g2", "allow", "visits", "research", "raw", role="analyst",
    ...               columns=frozenset({"age"})),
    ...         Grant("g3", "deny", "visits", "research", "deny", principal="bob",
    ...               tags=health),
    ...     ],
    ...     parents={"research": None},
    ...     roles={"ann": ("analyst",), "bob": ("analyst",)},
    ...     policy_hash="h",
    ... )
    >>> columns = {"age": ("demographic",), "glucose": ("health", "lab")}
    >>> [(d.column, d.mode) for d in model.decide("ann", "research", "visits", columns).values()]
    [('age', 'raw'), ('glucose', 'masked')]
    >>> model.decide("bob", "research", "visits", columns)["glucose"].mode
    'deny'
    """

    def __init__(
        self,
        grants: Iterable[Grant],
        *,
        parents: Mapping[str, str | None],
        roles: Mapping[str, Sequence[str]],
        policy_hash: str,
    ) -> None:
        self.policy_hash = policy_hash
        self._parents = dict(parents)
        self._roles = {name: tuple(r) for name, r in roles.items()}
        self._index: dict[tuple[str, str, str], list[Grant]] = defaultdict(list)
        for grant in grants:
            subject = f"p:{grant.principal}" if grant.principal is not None else f"r:{grant.role}"
            self._index[(grant.dataset, subject, grant.purpose)].append(grant)

    def knows_principal(self, name: str) -> bool:
        """Whether ``name`` is a registered principal."""
        return name in self._roles

    def knows_purpose(self, name: str) -> bool:
        """Whether ``name`` is a registered purpose."""
        return name in self._parents

    def lineage(self, purpose: str) -> list[str]:
        """``purpose`` and its ancestors, nearest first."""
        chain, seen = [], set()
        current: str | None = purpose
        while current is not None and current not in seen:
            chain.append(current)
            seen.add(current)
            current = self._parents.get(current)
        return chain

    def candidates(self, principal: str, purpose: str, dataset: str) -> list[Grant]:
        """Every grant whose subject, purpose and dataset match the request."""
        subjects = [f"p:{principal}", *(f"r:{role}" for role in self._roles.get(principal, ()))]
        found: list[Grant] = []
        for p in self.lineage(purpose):
            for s in subjects:
                found.extend(self._index.get((dataset, s, p), ()))
        return found

    def decide(
        self,
        principal: str,
        purpose: str,
        dataset: str,
        columns: Mapping[str, Collection[str]],
        *,
        now: datetime | None = None,
    ) -> dict[str, ColumnDecision]:
        """Decide every column in ``columns`` (a mapping of column name to its schema tags).

        Each live candidate grant is placed once under the columns it selects (by name
        or by tag); grants that select every column are summarized once per request
        (their denies, their most revealing mode and the grants holding it), so a
        column costs work in proportion to the grants that name it, not to all of them.
        """
        moment = now or datetime.now().astimezone()
        live = [
            g
            for g in self.candidates(principal, purpose, dataset)
            if g.expires is None or moment < g.expires
        ]
        denying = [g.effect == "deny" or g.mode == "deny" for g in live]
        rank = [_RANK[g.mode] for g in live]
        base_denies: list[int] = []  # positions in ``live`` of denies that select every column
        base_rank = len(MODES)  # the most revealing mode among the other grants of every column
        base_best: list[int] = []
        named: dict[str, list[int]] = {}  # column -> positions of the grants selecting it
        by_tag: dict[str, list[str]] | None = None
        for position, grant in enumerate(live):
            if grant.columns is None and grant.tags is None:
                if denying[position]:
                    base_denies.append(position)
                elif rank[position] < base_rank:
                    base_rank, base_best = rank[position], [position]
                elif rank[position] == base_rank:
                    base_best.append(position)
                continue
            if grant.columns is not None:
                for column in grant.columns:
                    if column in columns:
                        named.setdefault(column, []).append(position)
            if grant.tags is not None:
                if by_tag is None:
                    by_tag = _columns_by_tag(columns)
                for tag in grant.tags:
                    for column in by_tag.get(tag, ()):
                        found = named.setdefault(column, [])
                        if not found or found[-1] != position:  # by name and by tag: once
                            found.append(position)
        base = base_denies or base_best
        decided: dict[tuple[int, ...], tuple[str, tuple[str, ...], tuple[Grant, ...]]] = {}
        out: dict[str, ColumnDecision] = {}
        for column in columns:
            own = named.get(column)
            if own is None:
                deciding = base
            else:
                denies = [p for p in own if denying[p]]
                if denies or base_denies:
                    deciding = sorted(base_denies + denies)
                else:
                    best = min(rank[p] for p in own)
                    mine = [p for p in own if rank[p] == best]
                    if best < base_rank:
                        deciding = mine
                    elif best == base_rank:
                        deciding = sorted(base_best + mine)
                    else:
                        deciding = base_best
            key = tuple(deciding)
            done = decided.get(key)
            if done is None:
                grants = tuple(live[p] for p in key)
                # deny by default; a deny wins; else the mode all deciding grants share
                mode = "deny" if not grants or denying[key[0]] else grants[0].mode
                done = decided[key] = (mode, tuple(sorted(g.grant_id for g in grants)), grants)
            out[column] = ColumnDecision(column, done[0], done[1], self.policy_hash, done[2])
        return out


def _columns_by_tag(columns: Mapping[str, Collection[str]]) -> dict[str, list[str]]:
    """Each tag of ``columns`` with the columns that carry it, in the request's order."""
    by_tag: dict[str, list[str]] = {}
    for column, tags in columns.items():
        for tag in set(tags):
            by_tag.setdefault(tag, []).append(column)
    return by_tag
