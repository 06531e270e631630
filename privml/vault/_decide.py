"""The policy's steps for one request: who asks, which columns, at which mode, under which rows.

Pure functions of the compiled policy, the schema and the request; they read no
data and write nothing. The door (:mod:`privml.vault._door`) and the public read
(:mod:`privml.vault._session`) call them, and audit what they refuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._array_fields import ARRAY_KINDS, array_refusal
from ..exceptions import AccessDenied, ConfigurationError
from ..policy._model import MODES, ROW_MODES, ColumnDecision, PolicyModel, Predicate, mode_allows
from ..schema import Schema

__all__ = [
    "Asker",
    "check_array_use",
    "conditions",
    "countable",
    "decide",
    "readable",
    "require",
    "row_columns",
]


@dataclass(frozen=True)
class Asker:
    """A principal acting for a purpose."""

    principal: str
    purpose: str

    def unknown(self, model: PolicyModel) -> str | None:
        """Why the policy does not know this principal or purpose (with the fix), or None."""
        if not model.knows_principal(self.principal):
            return (
                f"unknown principal {self.principal!r}: register it with "
                f"vault.add_principal({self.principal!r}, roles=[...])"
            )
        if not model.knows_purpose(self.purpose):
            return (
                f"unknown purpose {self.purpose!r}: register it with vault.add_purpose("
                f"{self.purpose!r}, description=..., lawful_basis=...)"
            )
        return None

    def denied(self, message: str, **context: str | None) -> AccessDenied:
        """An :class:`~privml.AccessDenied` naming this principal and purpose."""
        return AccessDenied(message, principal=self.principal, purpose=self.purpose, **context)

    def explain(self, dataset: str) -> str:
        """The call that shows this asker's decisions on ``dataset``."""
        return f"vault.explain({self.principal!r}, purpose={self.purpose!r}, dataset={dataset!r})"


def decide(
    model: PolicyModel, asker: Asker, dataset: str, schema: Schema
) -> dict[str, ColumnDecision]:
    """Every column's decision; an unknown principal or purpose is refused."""
    problem = asker.unknown(model)
    if problem:
        raise asker.denied(problem, dataset=dataset)
    tags = {name: f.tags for name, f in schema.items()}
    return model.decide(asker.principal, asker.purpose, dataset, tags)


def require(
    asker: Asker,
    dataset: str,
    schema: Schema,
    decisions: Mapping[str, ColumnDecision],
    column: str,
    needed: str,
) -> None:
    """Refuse unless ``column`` exists and its mode allows ``needed``.

    The schema is told only to an asker the policy lets use some column: anyone else
    is refused alike for a column that exists and one that does not, naming none.
    """
    usable = [c for c in schema.names if decisions[c].mode != "deny"]
    if not usable:
        raise _nothing(asker, dataset, needed)
    if column not in schema:
        raise ConfigurationError(
            f"dataset {dataset!r} has no column {column!r}; the columns "
            f"{asker.principal!r} may use for {asker.purpose!r} are {usable}"
        )
    mode = decisions[column].mode
    if not mode_allows(mode, needed):
        raise asker.denied(
            f"{asker.principal!r} acting for {asker.purpose!r} may not use column {column!r} "
            f"of dataset {dataset!r} this way: its mode is {mode!r}, this needs {needed!r} "
            f"or more revealing (modes, most revealing first: {', '.join(MODES[:-1])}). "
            f"See {asker.explain(dataset)}, or ask for vault.grant(..., mode={needed!r}, "
            f"columns=[{column!r}]).",
            dataset=dataset,
            column=column,
            mode=mode,
            needed=needed,
        )


def countable(
    asker: Asker, dataset: str, schema: Schema, decisions: Mapping[str, ColumnDecision], needed: str
) -> list[str]:
    """The columns usable at ``needed``: a row count sees the rows all of them admit."""
    usable = [c for c in schema.names if mode_allows(decisions[c].mode, needed)]
    if not usable:
        raise _nothing(asker, dataset, needed)
    return usable


def _nothing(asker: Asker, dataset: str, needed: str) -> AccessDenied:
    """The refusal of an asker who may use no column of ``dataset`` (naming none)."""
    return asker.denied(
        f"{asker.principal!r} acting for {asker.purpose!r} may use no column of "
        f"{dataset!r} for this release (needs {needed!r}). See {asker.explain(dataset)}.",
        dataset=dataset,
        mode="deny",
        needed=needed,
    )


def readable(
    asker: Asker,
    dataset: str,
    schema: Schema,
    decisions: Mapping[str, ColumnDecision],
    columns: Sequence[str] | None,
) -> list[str]:
    """The columns a read returns: those asked for (each at least ``masked``), or all readable."""
    if columns is not None:
        for column in columns:
            require(asker, dataset, schema, decisions, column, "masked")
            if _unmaskable(schema, decisions, column):
                raise asker.denied(
                    f"{asker.principal!r} acting for {asker.purpose!r} may see column {column!r} "
                    f"of dataset {dataset!r} only masked, and a {schema[column].kind} field has "
                    "no mask unless its schema declares mask=Mask.redact(): it needs 'raw' to be "
                    f"read (or dp_training, to train on it with DP-SGD). See "
                    f"{asker.explain(dataset)}.",
                    dataset=dataset,
                    column=column,
                    mode="masked",
                    needed="raw",
                )
        return list(dict.fromkeys(columns))
    wanted = [
        c
        for c in schema.names
        if decisions[c].mode in ROW_MODES and not _unmaskable(schema, decisions, c)
    ]
    if not wanted:
        raise asker.denied(
            f"{asker.principal!r} acting for {asker.purpose!r} may read no column of "
            f"dataset {dataset!r}. See {asker.explain(dataset)}.",
            dataset=dataset,
            mode="deny",
            needed="masked",
        )
    return wanted


#: The one mechanism that takes tensor and sequence columns (besides raw reads).
ARRAY_ACTIONS = frozenset({"dp.train"})


def check_array_use(schema: Schema, columns: Sequence[str], needed: str, action: str) -> None:
    """Refuse a tensor or sequence column in any release but DP-SGD training or a raw read.

    DP statistics, group-by, diffprivlib fits and minimization work on scalar
    columns; handed an array column they would fail inside, or worse, treat it as
    something it is not. Checked with the policy, before any data or charge.
    """
    if action in ARRAY_ACTIONS or needed == "raw":
        return
    for column in columns:
        field = schema.get(column)
        if field is not None and field.kind in ARRAY_KINDS:
            raise array_refusal(column, field.kind, _use(action))


def _use(action: str) -> str:
    """The mechanism an action names, in words."""
    if action == "dp.fit":
        return "a diffprivlib model"
    if action == "dataset.minimize":
        return "data minimization"
    if action.startswith("dp.groupby."):
        return f"a DP group-by ({action.removeprefix('dp.groupby.')})"
    if action.startswith("dp."):
        return f"a DP statistic ({action.removeprefix('dp.')})"
    return f"{action!r}"


def _unmaskable(schema: Schema, decisions: Mapping[str, ColumnDecision], column: str) -> bool:
    """A column decided ``masked`` whose field has no mask (a tensor or sequence without one)."""
    field = schema[column]
    return decisions[column].mode == "masked" and field.kind in ARRAY_KINDS and field.mask is None


def conditions(
    asker: Asker,
    dataset: str,
    schema: Schema,
    decisions: Mapping[str, ColumnDecision],
    where: object,
    *,
    needs: str = "raw",
) -> list[Predicate]:
    """Parse ``where`` and check each condition's value kind and its column's mode.

    Filtering rows on a value reveals it, so reads need the column in ``raw``;
    inside a DP release (``needs="dp_aggregate"``) the filter is covered by the noise.
    """
    if where is None:
        return []
    if isinstance(where, Predicate | Mapping) or (
        isinstance(where, Sequence)
        and len(where) == 3
        and isinstance(where[1], str)
        and not isinstance(where[0], Sequence | Mapping | Predicate)
    ):
        where = [where]
    if not isinstance(where, Sequence) or isinstance(where, str | bytes):
        raise ConfigurationError("where= takes a list of (column, op, value) conditions")
    parsed = [Predicate.parse(p) for p in where]
    kinds = {name: f.kind for name, f in schema.items()}
    for p in parsed:
        # the column's mode first: its kind is told only to an asker allowed to use it
        require(asker, dataset, schema, decisions, p.column, needs)
        p.check(kinds)  # the value's kind, before any read or charge
    return parsed


def row_columns(columns: Sequence[str], where: Sequence[Predicate]) -> tuple[str, ...]:
    """The columns whose grants' row filters apply: those used and those filtered on."""
    return tuple(dict.fromkeys([*columns, *(p.column for p in where)]))
