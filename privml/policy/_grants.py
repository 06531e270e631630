"""Grant validation, pure: is a grant well formed, and does it fit the vault it goes into?

:func:`shape` checks a grant's fields on their own (effect, mode, selectors, row
filter, expiry); :func:`check` then checks a shaped grant against what the vault
knows (its purposes, principals and dataset schemas, given as arguments) and
returns the grant's :data:`record`, the plain form that is stored, compared and
written to YAML. Nothing here touches storage.

Examples
--------
>>> from datetime import UTC, datetime
>>> from privml.schema import Field, Schema
>>> item = shape({"role": "analyst", "dataset": "visits", "purpose": "research",
...               "mode": "masked", "columns": ["age"]})
>>> record = check(item, purposes={"research"}, principals=set(),
...                schemas={"visits": Schema({"age": Field.integer(bounds=(0, 120))})},
...                now=datetime(2026, 1, 1, tzinfo=UTC))
>>> record["mode"], record["columns"], record["expires"]
('masked', ['age'], None)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..exceptions import ConfigurationError
from ..schema import Schema
from ._model import Grant, Predicate, check_mode

__all__ = ["RECORD_FIELDS", "TAGS_FIX", "check", "expiry", "shape", "to_grant"]

#: The fields of a grant's record, in their stored and written order.
RECORD_FIELDS = (
    "effect",
    "role",
    "principal",
    "dataset",
    "purpose",
    "mode",
    "columns",
    "tags",
    "row_filter",
    "expires",
)
_SELECTORS = ("columns", "tags")
#: How to fix a grant that still selects by ``categories``, the old name of ``tags``.
TAGS_FIX = (
    "select columns by their schema tags with tags=, e.g. tags=['health'] "
    "(a column is selected when any of its tags is listed)"
)


def bad(field: str, message: str) -> ConfigurationError:
    """A ConfigurationError that names the grant field at fault (YAML errors give its line)."""
    err = ConfigurationError(message)
    err.field = field  # type: ignore[attr-defined]
    return err


def shape(item: Mapping[str, Any]) -> dict[str, Any]:
    """Check one grant's fields on their own (no vault lookups) and normalize them.

    Examples
    --------
    >>> shape({"role": "a", "dataset": "d", "purpose": "p", "mode": "rw"})
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: unknown mode 'rw'; modes are [...]
    """
    out = dict(item)
    effect = out.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise bad("effect", f"effect must be 'allow' or 'deny', got {effect!r}")
    out["effect"] = effect
    try:
        out["mode"] = "deny" if effect == "deny" else check_mode(str(out.get("mode")))
    except ConfigurationError as err:
        raise bad("mode", str(err)) from None
    if "categories" in out:
        raise bad("categories", f"categories was renamed: {TAGS_FIX}")
    if (out.get("role") is None) == (out.get("principal") is None):
        raise ConfigurationError("give exactly one of role= or principal=")
    for key in _SELECTORS:
        value = out.get(key)
        if value is not None and (isinstance(value, str) or not isinstance(value, Iterable)):
            raise bad(key, f"{key}= takes a list of names, e.g. {key}=['age']")
        if value is not None:
            out[key] = sorted({str(v) for v in value})
    try:
        out["row_filter"] = [Predicate.parse(p) for p in out.get("row_filter") or []]
    except ConfigurationError as err:
        raise bad("row_filter", str(err)) from None
    try:
        out["expires"] = expiry(out.get("expires"))
    except ConfigurationError as err:
        raise bad("expires", str(err)) from None
    return out


def expiry(value: Any) -> datetime | None:
    """An expiry as an aware datetime (naive ones are taken as UTC); None: never expires.

    Examples
    --------
    >>> expiry("2030-01-01T00:00:00")
    datetime.datetime(2030, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"expires must be an ISO 8601 time, got {value!r}") from None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"expires must be a datetime, got {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check(
    item: Mapping[str, Any],
    *,
    purposes: Iterable[str],
    principals: Iterable[str],
    schemas: Mapping[str, Schema],
    now: datetime,
) -> dict[str, Any]:
    """Check a :func:`shape`-d grant against the vault; return its record.

    ``purposes`` and ``principals`` are the registered names, ``schemas`` the
    datasets' schemas by name, ``now`` the time an expiry must lie after. The
    record holds :data:`RECORD_FIELDS` as plain values (lists, dicts, an ISO
    8601 expiry in UTC) or None.
    """
    dataset, purpose = item["dataset"], item["purpose"]
    if dataset not in schemas:
        raise ConfigurationError(f"unknown dataset {dataset!r}; known: {sorted(schemas)}")
    if purpose not in set(purposes):
        raise ConfigurationError(
            f"unknown purpose {purpose!r}; register it with vault.add_purpose({purpose!r}, ...)"
        )
    principal = item.get("principal")
    if principal is not None and principal not in set(principals):
        raise ConfigurationError(
            f"unknown principal {principal!r}; register it with "
            f"vault.add_principal({principal!r}, roles=[...])"
        )
    _check_selectors(item, dataset, schemas[dataset])
    expires: datetime | None = item["expires"]
    if expires is not None and expires <= now:
        raise ConfigurationError(f"expires={expires.isoformat()} is already past")
    row_filter = [p.to_dict() for p in item["row_filter"]]
    return {
        "effect": item["effect"],
        "role": item.get("role"),
        "principal": principal,
        "dataset": dataset,
        "purpose": purpose,
        "mode": item["mode"],
        "columns": item.get("columns"),
        "tags": item.get("tags"),
        "row_filter": row_filter or None,
        "expires": expires.astimezone(UTC).isoformat() if expires else None,
    }


def _check_selectors(item: Mapping[str, Any], dataset: str, schema: Schema) -> None:
    for column in item.get("columns") or []:
        if column not in schema:
            raise ConfigurationError(f"dataset {dataset!r} has no column {column!r}")
    tags = {tag for f in schema.values() for tag in f.tags}
    for tag in item.get("tags") or []:
        if tag not in tags:
            raise ConfigurationError(
                f"no column of {dataset!r} has the tag {tag!r}; its tags are {sorted(tags)}"
            )
    kinds = {name: f.kind for name, f in schema.items()}
    for predicate in item["row_filter"]:
        predicate.check(kinds)


def to_grant(grant_id: str, record: Mapping[str, Any]) -> Grant:
    """The :class:`Grant` a decision uses, from a stored record."""
    columns, tags = record["columns"], record["tags"]
    return Grant(
        grant_id,
        record["effect"],
        record["dataset"],
        record["purpose"],
        record["mode"],
        role=record["role"],
        principal=record["principal"],
        columns=frozenset(columns) if columns is not None else None,
        tags=frozenset(tags) if tags is not None else None,
        row_filter=tuple(Predicate.parse(p) for p in record["row_filter"] or []),
        expires=datetime.fromisoformat(record["expires"]) if record["expires"] else None,
    )
