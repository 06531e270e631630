"""Declaring a dataset's privacy unit: checked against its schema before anything is stored.

The unit must be ``"row"`` or an identifier field of the schema. Only an
identifier: it is the schema's declared "who" (a patient id, an employee
number), never null, and stored as a keyed pseudonym, so contributions are
bounded on pseudonyms without decrypting a real identity. A categorical or
numeric column groups many people under one value (a sex, a ward): taken as a
unit, it would bound one person's neighbours, not one person.
"""

from __future__ import annotations

from typing import Any

from ..accounting._unit import MAX_ROWS_PER_UNIT, ROW, PrivacyUnit
from ..exceptions import ConfigurationError
from ..schema import Schema

__all__ = ["declare_unit"]


def declare_unit(schema: Schema, privacy_unit: Any, max_rows_per_unit: Any) -> PrivacyUnit:
    """The unit ``add_dataset`` was asked for, or a :class:`ConfigurationError` naming the fix.

    Omitted, it is ``"row"`` when the schema has no identifier field; a schema with
    one must declare it (rows of one person would otherwise each count as a person).
    """
    identifiers = [n for n, f in schema.items() if f.kind == "identifier"]
    if privacy_unit is None:
        if identifiers:
            raise ConfigurationError(
                f"the schema has identifier field(s) {identifiers}: declare the privacy unit. "
                f"If one person can have several rows, pass privacy_unit={identifiers[0]!r} and "
                "max_rows_per_unit=k (the most rows of one person a release uses); if every row "
                'is a different person, pass privacy_unit="row"'
            )
        privacy_unit = "row"
    if not isinstance(privacy_unit, str):
        raise ConfigurationError(
            f'privacy_unit= takes "row" or the name of an identifier column, '
            f"got a {type(privacy_unit).__name__}"
        )
    if privacy_unit == "row":
        if max_rows_per_unit is not None:
            raise ConfigurationError(
                'max_rows_per_unit= applies to a person-level unit only; with privacy_unit="row" '
                "every row is its own unit: leave max_rows_per_unit out, or name the identifier "
                "column as privacy_unit"
            )
        return ROW
    if privacy_unit not in schema:
        raise ConfigurationError(
            f"privacy_unit={privacy_unit!r} is not a column of the schema; "
            f'give "row" or one of its identifier fields {identifiers}'
        )
    field = schema[privacy_unit]
    if field.kind != "identifier" or field.nullable:
        raise ConfigurationError(
            f"privacy_unit={privacy_unit!r} is a {field.kind} field; the unit must be a "
            f"(non-nullable) identifier field naming one person per value: declare it as "
            f'Field.identifier(), or give "row" or one of {identifiers}'
        )
    if (
        not isinstance(max_rows_per_unit, int)
        or isinstance(max_rows_per_unit, bool)
        or not 1 <= max_rows_per_unit <= MAX_ROWS_PER_UNIT
    ):
        raise ConfigurationError(
            f"privacy_unit={privacy_unit!r} needs max_rows_per_unit=k, a whole number from 1 to "
            f"{MAX_ROWS_PER_UNIT}: the most rows of one person any release uses (a keyed random "
            "sample of that person's rows). Noise grows with k: choose the smallest k that keeps "
            "most of each person's rows"
        )
    return PrivacyUnit(privacy_unit, max_rows_per_unit)
