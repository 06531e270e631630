"""The document diff on its own: kept, added and revoked grants, and errors with their line."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from privml.exceptions import ConfigurationError
from privml.policy._diff import plan, present, same
from privml.policy._grants import check, shape
from privml.policy._yaml import parse
from privml.schema import Field, Schema

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SCHEMAS = {"visits": Schema({"age": Field.integer(bounds=(0, 120)), "note": Field.text()})}
DOC = """
purposes:
  care: {description: x, lawful_basis: y}
grants:
  - {id: g-keep, role: nurse, dataset: visits, purpose: care, mode: masked}
  - {id: g-edit, role: nurse, dataset: visits, purpose: care, mode: raw, columns: [age]}
  - {role: nurse, dataset: visits, purpose: care, mode: deny, effect: deny, columns: [note]}
"""


def _record(**item):
    return check(shape(item), purposes={"care"}, principals=(), schemas=SCHEMAS, now=NOW)


def test_plan_keeps_unchanged_ids_and_revokes_the_rest():
    active = {
        "g-keep": _record(role="nurse", dataset="visits", purpose="care", mode="masked"),
        "g-edit": _record(
            role="nurse", dataset="visits", purpose="care", mode="masked", columns=["age"]
        ),
        "g-gone": _record(role="clerk", dataset="visits", purpose="care", mode="raw"),
    }
    changes = plan(parse(textwrap.dedent(DOC)), active, schemas=SCHEMAS, now=NOW)
    assert changes.keep == {"g-keep"}
    assert changes.revoke == {"g-edit", "g-gone"}
    added = [(r["mode"], r["columns"]) for r in changes.add]
    assert added == [("raw", ["age"]), ("deny", ["note"])]


def test_plan_names_the_line_of_a_grant_that_does_not_fit():
    doc = parse(textwrap.dedent(DOC).replace("columns: [note]", "columns: [weight]"))
    with pytest.raises(ConfigurationError, match=r"line 7, grants\[2\]: .*no column 'weight'"):
        plan(doc, {}, schemas=SCHEMAS, now=NOW)


def test_same_ignores_nothing_but_ids_and_times():
    a = _record(role="nurse", dataset="visits", purpose="care", mode="raw")
    assert same(a, {**a, "id": "g-x", "created": "now"})
    assert not same(a, {**a, "mode": "masked"})
    assert present(a) == {"effect": "allow", "role": "nurse", "dataset": "visits",
                          "purpose": "care", "mode": "raw"}  # fmt: skip
