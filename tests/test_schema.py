from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import privml
from privml import Budget, Field, Schema, SchemaError, Vault

SCHEMA = Schema(
    {
        "age": Field.integer(bounds=(0, 120)),
        "bmi": Field.numeric(bounds=(10.0, 60.0)),
        "smoker": Field.categorical(categories=["yes", "no"]),
        "note": Field.text(),
        "seen": Field.datetime(),
    }
)


def good_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [30, 40, 50, 60, 70, 80],
            "bmi": [20.0, 22.5, 25.0, 27.5, 30.0, 32.5],
            "smoker": ["yes", "no", "no", "yes", "no", "no"],
            "note": ["a", "b", "c", "d", "e", "f"],
            "seen": pd.to_datetime(["2024-01-01"] * 6),
        }
    )


def _edit(column, rows, value):
    frame = good_frame()
    frame[column] = frame[column].astype(object)
    for r in rows:
        frame.loc[r, column] = value
    return frame


CASES = [
    ("bounds", "age", _edit("age", [1, 4], 130)),
    ("bounds", "bmi", _edit("bmi", [2], -5.0)),
    ("dtype", "age", _edit("age", [3], 41.5)),
    ("dtype", "bmi", _edit("bmi", [0, 5], "heavy")),
    ("category", "smoker", _edit("smoker", [2], "sometimes")),
    ("null", "bmi", _edit("bmi", [1], None)),
    ("null", "note", _edit("note", [5], None)),
    ("dtype", "note", _edit("note", [0], 42)),
    ("dtype", "seen", _edit("seen", [4], "not a date")),
    ("missing_column", "note", good_frame().drop(columns=["note"])),
    ("unexpected_column", "ssn", good_frame().assign(ssn="123-45-6789")),
]


@pytest.mark.parametrize(("kind", "column", "frame"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_violation_is_rejected_and_nothing_stored(tmp_path, key, kind, column, frame):
    with Vault.create(tmp_path / "v", key=key) as vault:
        with pytest.raises(SchemaError) as caught:
            vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1))
        [violation] = caught.value.violations
        assert (violation.kind, violation.column) == (kind, column)
        assert repr(column) in str(caught.value)
        expected_rows = [i for i in range(6) if _differs(frame, column, i)]
        if kind not in ("missing_column", "unexpected_column"):
            assert list(violation.rows) == expected_rows
            assert violation.count == len(expected_rows)
        assert vault.datasets() == []
        assert not (tmp_path / "v" / "data").exists()
        [entry] = vault.audit.entries(action="dataset.add").to_dict("records")
        assert entry["outcome"] == "rejected"
        assert entry["details"]["violations"][0]["column"] == column
        assert vault.audit.verify().ok


def _differs(frame, column, row):
    if column not in frame.columns or column not in good_frame().columns:
        return False
    a, b = frame[column].iloc[row], good_frame()[column].iloc[row]
    return bool(a != b) if not (pd.isna(a) and pd.isna(b)) else False


def test_all_problems_reported_at_once():
    frame = _edit("age", [0], 500)
    frame.loc[1, "smoker"] = "maybe"
    with pytest.raises(SchemaError) as caught:
        SCHEMA.validate(frame)
    assert {(v.column, v.kind) for v in caught.value.violations} == {
        ("age", "bounds"),
        ("smoker", "category"),
    }


def test_clip_is_applied_and_audited(tmp_path, key, allow):
    frame = _edit("age", [1, 4], 130)
    frame.loc[2, "bmi"] = 5.0
    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1), on_violation="clip")
        allow(vault, "d")
        back = vault.session("analyst", purpose="research").read("d")
        [entry] = vault.audit.entries(action="dataset.add").to_dict("records")
    assert back["age"].tolist() == [30, 120, 50, 60, 120, 80]
    assert back["bmi"].iloc[2] == 10.0
    assert entry["details"]["clipped"] == {"age": 2, "bmi": 1}


def test_clip_does_not_hide_other_problems():
    frame = _edit("age", [1], 130)
    frame.loc[2, "smoker"] = "maybe"
    with pytest.raises(SchemaError, match="smoker"):
        SCHEMA.validate(frame, on_violation="clip")


def test_nullable_fields_accept_nulls():
    schema = Schema(
        {"n": Field.integer(bounds=(0, 9), nullable=True), "t": Field.text(nullable=True)}
    )
    frame, _ = schema.validate(pd.DataFrame({"n": [1, None], "t": ["x", None]}))
    assert str(frame["n"].dtype) == "Int64" and frame["n"].isna().tolist() == [False, True]


def test_bool_is_not_a_number():
    with pytest.raises(SchemaError, match="dtype"):
        Schema({"x": Field.numeric(bounds=(0, 1))}).validate(pd.DataFrame({"x": [True, False]}))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Field.numeric(bounds=(1, 1)),
        lambda: Field.numeric(bounds=(0, float("inf"))),
        lambda: Field.numeric(bounds="wide"),
        lambda: Field.integer(bounds=(0.5, 3)),
        lambda: Field.categorical(categories=[]),
        lambda: Field.categorical(categories=["a", "a"]),
        lambda: Schema({}),
        lambda: Schema({"x": "numeric"}),
    ],
)
def test_bad_declarations(make):
    with pytest.raises(privml.ConfigurationError):
        make()


def test_schema_round_trips_through_dict():
    assert Schema.from_dict(SCHEMA.to_dict()) == SCHEMA
    assert Schema.from_dict(SCHEMA.to_dict()).fingerprint == SCHEMA.fingerprint


def test_timezone_aware_datetimes_become_utc():
    schema = Schema({"t": Field.datetime()})
    stamps = pd.Series(pd.to_datetime(["2024-01-01 12:00"]).tz_localize("Europe/Paris"))
    frame, _ = schema.validate(pd.DataFrame({"t": stamps}))
    assert frame["t"].iloc[0] == pd.Timestamp("2024-01-01 11:00")


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=50))
def test_clip_always_lands_in_bounds(values):
    schema = Schema({"x": Field.numeric(bounds=(-10.0, 10.0))})
    frame, clipped = schema.validate(pd.DataFrame({"x": values}), on_violation="clip")
    assert frame["x"].between(-10.0, 10.0).all()
    assert clipped.get("x", 0) == int(np.sum(np.abs(np.array(values)) > 10.0))


# -- the Mapping contract -----------------------------------------------------------------

FIELDS = [
    Field.integer(bounds=(0, 120)),
    Field.numeric(bounds=(0.0, 1.0)),
    Field.categorical(categories=["a", "b"]),
    Field.text(),
]
_names = st.text(min_size=1, max_size=8).filter(lambda s: s.isprintable())


@given(
    st.dictionaries(_names, st.sampled_from(FIELDS), min_size=1, max_size=6),
    st.one_of(_names, st.integers(), st.none()),
)
def test_a_schema_follows_the_mapping_contract(fields, probe):
    schema = Schema(fields)
    assert isinstance(schema, Mapping)
    assert len(schema) == len(fields) and list(schema) == list(fields)
    assert list(schema.keys()) == list(fields) and schema.keys() == fields.keys()
    assert list(schema.values()) == list(fields.values())
    assert list(schema.items()) == list(fields.items()) and schema.items() == fields.items()
    assert schema == fields and fields == schema and schema == Schema(dict(fields))
    assert (schema != fields) is False
    assert (probe in schema) == (probe in fields)
    sentinel = object()
    assert schema.get(probe) == fields.get(probe)
    assert schema.get(probe, sentinel) is fields.get(probe, sentinel)
    if probe in fields:
        assert schema[probe] is fields[probe]
    else:
        with pytest.raises(KeyError) as info:
            schema[probe]
        assert isinstance(info.value, privml.exceptions.UnknownColumnError)
        assert info.value.known == tuple(fields)


def test_a_schema_differs_from_other_mappings_and_from_non_mappings():
    fields = dict(SCHEMA)
    assert {**fields, "extra": Field.text()} != SCHEMA
    assert {**fields, "age": Field.integer(bounds=(0, 99))} != SCHEMA
    assert list(fields) != SCHEMA and SCHEMA != "age"
    with pytest.raises(TypeError):
        hash(SCHEMA)  # like a dict: equal to mutable mappings, so never hashable


def test_an_unknown_column_names_the_known_ones_and_is_not_repr_quoted():
    with pytest.raises(KeyError) as info:
        SCHEMA["agee"]
    assert str(info.value) == (
        "no column 'agee' in the schema; columns are ['age', 'bmi', 'smoker', 'note', 'seen']"
    )
    assert isinstance(info.value, privml.ConfigurationError)  # ``except ValueError`` still works
    assert SCHEMA.get("agee") is None and SCHEMA.get("agee", 0) == 0


def test_tags_take_one_string_or_several_and_keep_their_order():
    assert Field.numeric(bounds=(0, 1), tags="health").tags == ("health",)
    assert Field.text(tags=["lab", "health", "lab"]).tags == ("lab", "health")
    assert Field.integer(bounds=(0, 1)).tags == ()
    field = Field.categorical(categories=["a", "b"], tags=("x", "y"))
    assert Field.from_dict(field.to_dict()) == field
    assert field.to_dict()["tags"] == ["x", "y"] and "category" not in field.to_dict()


@pytest.mark.parametrize("bad", [[""], [3], 3, ["ok\ud800"]])
def test_bad_tags_are_refused(bad):
    with pytest.raises(privml.ConfigurationError, match="tags"):
        Field.text(tags=bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Field.numeric(bounds=(0, 1), category="health"),
        lambda: Field.identifier(category="id"),
        lambda: Field.categorical(categories=["a", "b"], category="health"),
        lambda: Field.text(category="notes"),
        lambda: Field.datetime(category="visits"),
        lambda: Field.integer(bounds=(0, 1), category="health"),
    ],
)
def test_the_old_category_keyword_names_tags(make):
    with pytest.raises(privml.ConfigurationError, match=r"category= was renamed: .*tags="):
        make()


def test_a_stored_schema_with_the_old_category_key_still_reads():
    legacy = {"kind": "numeric", "sensitive": True, "category": "health", "bounds": [0, 1]}
    assert Field.from_dict(legacy) == Field.numeric(bounds=(0, 1), tags="health")
    assert Field.from_dict({"kind": "text", "sensitive": True}).tags == ()


@pytest.mark.parametrize("category", ["", 5, None])
def test_an_old_category_no_grant_could_select_reads_as_no_tag(category):
    # Before the rename category= was not checked: "" or 5 were stored, and a grant's
    # categories (strings) never selected them. Such a schema still reads, without tags.
    stored = {"kind": "numeric", "sensitive": True, "category": category, "bounds": [0, 1]}
    assert Field.from_dict(stored) == Field.numeric(bounds=(0, 1))


def test_a_schema_dict_reads_tags_as_the_constructors_do():
    # One tag as a string is that tag, not its letters: a deny by tags=['health'] selects it.
    one = Field.from_dict({"kind": "text", "sensitive": True, "tags": "health"})
    assert one.tags == ("health",)
    # A legacy "category" next to "tags" is one more tag, never dropped.
    both = {"kind": "text", "sensitive": True, "category": "health", "tags": ["lab"]}
    assert Field.from_dict(both).tags == ("health", "lab")
    schema = Schema.from_dict({"fields": [{"name": "notes", **both}]})
    assert schema["notes"].tags == ("health", "lab")


@pytest.mark.parametrize("key", ["bounds", "categories"])
def test_a_schema_dict_refuses_a_string_where_a_list_belongs(key):
    with pytest.raises(privml.ConfigurationError, match=key):
        Field.from_dict({"kind": "categorical", "sensitive": True, key: "FM"})
