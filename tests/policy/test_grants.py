"""Grant validation on its own: shape, then fit against given principals, purposes and schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privml.exceptions import ConfigurationError
from privml.policy import Predicate
from privml.policy._grants import RECORD_FIELDS, check, expiry, shape, to_grant
from privml.schema import Field, Schema

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SCHEMAS = {
    "adult": Schema(
        {
            "age": Field.integer(bounds=(17, 100), tags="demographic"),
            "sex": Field.categorical(categories=["F", "M"], tags="demographic"),
            "hours": Field.integer(bounds=(0, 100), tags="employment"),
            "note": Field.text(),
        }
    )
}
BASE = {"role": "hr", "dataset": "adult", "purpose": "hr", "mode": "raw"}


def _check(**changes):
    item = shape({**BASE, **changes})
    return check(item, purposes={"hr"}, principals={"ines"}, schemas=SCHEMAS, now=NOW)


@pytest.mark.parametrize(
    ("changes", "field", "match"),
    [
        ({"effect": "maybe"}, "effect", "effect must be 'allow' or 'deny'"),
        ({"mode": "rw"}, "mode", "unknown mode 'rw'"),
        ({"columns": "age"}, "columns", r"columns= takes a list of names"),
        ({"tags": 7}, "tags", r"tags= takes a list of names"),
        ({"categories": ["health"]}, "categories", r"categories was renamed: .*tags=\['health'\]"),
        ({"row_filter": [("age", "<")]}, "row_filter", "a row condition is"),
        ({"expires": "next tuesday"}, "expires", "ISO 8601"),
        ({"expires": 12}, "expires", "must be a datetime"),
    ],
)
def test_shape_names_the_field_at_fault(changes, field, match):
    with pytest.raises(ConfigurationError, match=match) as caught:
        shape({**BASE, **changes})
    assert caught.value.field == field  # type: ignore[attr-defined]


def test_shape_wants_exactly_one_subject():
    with pytest.raises(ConfigurationError, match="exactly one of role= or principal="):
        shape({**BASE, "principal": "ines"})
    with pytest.raises(ConfigurationError, match="exactly one of role= or principal="):
        shape({"dataset": "adult", "purpose": "hr", "mode": "raw"})


def test_a_deny_has_mode_deny_whatever_it_says():
    assert shape({**BASE, "effect": "deny", "mode": "raw"})["mode"] == "deny"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dataset": "payroll"}, r"unknown dataset 'payroll'; known: \['adult'\]"),
        ({"purpose": "marketing"}, r"register it with vault.add_purpose\('marketing'"),
        ({"role": None, "principal": "eve"}, r"register it with vault.add_principal\('eve'"),
        ({"columns": ["salary"]}, "dataset 'adult' has no column 'salary'"),
        ({"tags": ["finance"]}, r"tag 'finance'; its tags are \['demographic', 'employment'\]"),
        ({"row_filter": [("salary", ">", 3)]}, "unknown column 'salary'"),
        ({"row_filter": [("sex", "<", "M")]}, "needs an ordered column"),
        ({"expires": NOW}, "is already past"),
    ],
)
def test_check_refuses_what_the_vault_does_not_know(changes, match):
    with pytest.raises(ConfigurationError, match=match):
        _check(**changes)


def test_check_returns_the_plain_record():
    record = _check(
        columns=["sex", "age", "age"],
        row_filter=[("hours", ">=", 10)],
        expires="2030-01-01T01:00:00+01:00",
    )
    assert tuple(record) == RECORD_FIELDS
    assert record["columns"] == ["age", "sex"]
    assert record["tags"] is None
    assert record["row_filter"] == [{"column": "hours", "op": ">=", "value": 10}]
    assert record["expires"] == "2030-01-01T00:00:00+00:00"


def test_naive_expiry_is_utc():
    assert expiry(datetime(2030, 1, 1)) == datetime(2030, 1, 1, tzinfo=UTC)
    assert expiry(None) is None


selectors = st.one_of(st.none(), st.lists(st.sampled_from(["age", "sex", "hours", "note"])))
tag_lists = st.one_of(st.none(), st.lists(st.sampled_from(["demographic", "employment"])))


@given(
    columns=selectors,
    tags=tag_lists,
    mode=st.sampled_from(["raw", "masked", "dp_aggregate"]),
    deny=st.booleans(),
    days=st.one_of(st.none(), st.integers(1, 3650)),
    low=st.integers(17, 100),
)
def test_records_are_stable_and_compile_to_the_same_grant(columns, tags, mode, deny, days,
                                                          low):  # fmt: skip
    expires = NOW + timedelta(days=days) if days is not None else None
    item = {
        **BASE,
        "mode": mode,
        "effect": "deny" if deny else "allow",
        "columns": columns,
        "tags": tags,
        "row_filter": [("age", ">=", low)],
        "expires": expires,
    }
    shaped = shape(item)
    assert shape(shaped) == shaped  # shaping is idempotent
    record = check(shaped, purposes={"hr"}, principals=set(), schemas=SCHEMAS, now=NOW)
    grant = to_grant("g-1", record)
    assert grant.mode == ("deny" if deny else mode)
    assert grant.columns == (frozenset(columns) if columns is not None else None)
    assert grant.tags == (frozenset(tags) if tags is not None else None)
    assert grant.row_filter == (Predicate("age", ">=", low),)
    assert grant.expires == expires
