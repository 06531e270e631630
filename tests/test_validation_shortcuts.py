"""Bounds checked by a column's minimum and maximum: the same verdicts as value by value,
and an error that names the column and counts the rows, never a value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml import Field, Schema, SchemaError
from privml._validation import _all_within, _outside, convert

INTEGER = Field.integer(bounds=(0, 120))
NUMERIC = Field.numeric(bounds=(-10.0, 10.0))
# values that appear nowhere else in a message: an echo of any of them would show
SECRET_LOW, SECRET_HIGH = -987_654_321, 876_543_219


def _bounds_violations(col: pd.Series, field: Field, *, clip: bool = False):
    out, found, clipped = convert(col, "c", field, clip=clip)
    return out, [v for v in found if v.kind == "bounds"], clipped


@pytest.mark.parametrize(
    ("field", "col"),
    [
        (INTEGER, pd.Series(np.arange(0, 121), dtype="int64")),
        (NUMERIC, pd.Series(np.linspace(-10, 10, 1001))),
        (Field.integer(bounds=(0, 120), nullable=True), pd.Series([0, None, 120], dtype="Int64")),
    ],
)
def test_a_column_within_its_bounds_passes_unchanged(field: Field, col: pd.Series) -> None:
    out, found, clipped = _bounds_violations(col, field)
    assert found == [] and clipped == 0
    pd.testing.assert_series_equal(out, col, check_dtype=False)


@pytest.mark.parametrize("where", ["low", "high"])
@pytest.mark.parametrize("field", [INTEGER, NUMERIC])
def test_a_value_past_either_end_is_found_with_its_row(where: str, field: Field) -> None:
    values = np.zeros(1000, dtype="int64" if field.kind == "integer" else "float64")
    rows = [3, 997] if where == "low" else [0, 500]
    values[rows] = SECRET_LOW if where == "low" else SECRET_HIGH
    _, [violation], _ = _bounds_violations(pd.Series(values), field)
    assert violation.column == "c" and violation.count == 2
    assert list(violation.rows) == rows


@pytest.mark.parametrize("field", [INTEGER, NUMERIC])
def test_out_of_bounds_values_clip_and_are_counted(field: Field) -> None:
    values = pd.Series([SECRET_LOW, 5, SECRET_HIGH], dtype="int64")
    out, found, clipped = _bounds_violations(values, field, clip=True)
    assert found == [] and clipped == 2
    low, high = field.bounds or (0, 0)
    assert out.tolist() == [low, 5, high]


def test_nan_and_nulls_are_nulls_not_bounds_violations() -> None:
    col = pd.Series([1.0, np.nan, None, 2.0])
    out, found, _ = convert(col, "c", Field.numeric(bounds=(0, 5), nullable=True), clip=False)
    assert found == []
    assert out.isna().tolist() == [False, True, True, False]
    _, found, _ = convert(col, "c", Field.numeric(bounds=(0, 5)), clip=False)
    assert [(v.kind, v.count) for v in found] == [("null", 2)]


def test_a_nan_among_numbers_fails_the_shortcut_and_is_found_row_by_row() -> None:
    values = np.array([1.0, np.nan, 2.0])
    valid = np.ones(3, dtype=bool)
    assert not _all_within(values, valid, 0.0, 5.0)
    assert _outside(values, valid, 0.0, 5.0).tolist() == [False, True, False]


def test_an_empty_column_is_within_any_bounds() -> None:
    assert _all_within(np.array([], dtype="float64"), np.array([], dtype=bool), 0.0, 1.0)
    for field, dtype in [(INTEGER, "int64"), (NUMERIC, "float64")]:
        out, found, clipped = convert(pd.Series([], dtype=dtype), "c", field, clip=False)
        assert found == [] and clipped == 0 and len(out) == 0


def test_nulls_leave_the_rows_to_the_full_check() -> None:
    values = np.array([1.0, np.nan, 200.0])
    valid = np.array([True, False, True])
    assert not _all_within(values, valid, 0.0, 120.0)
    assert _outside(values, valid, 0.0, 120.0).tolist() == [False, False, True]


@settings(max_examples=200)
@given(
    st.lists(st.one_of(st.integers(-200, 200), st.floats(-300, 300)), max_size=30),
    st.sampled_from([(0.0, 120.0), (-10.0, 10.0), (-200.0, 200.0)]),
)
def test_the_shortcut_agrees_with_the_row_by_row_check(items, bounds) -> None:
    values = np.array(items, dtype="float64")
    valid = np.ones(len(values), dtype=bool)
    if _all_within(values, valid, *bounds):
        assert not _outside(values, valid, *bounds).any()


def test_the_error_names_the_column_and_the_rows_but_no_value() -> None:
    frame = pd.DataFrame({"age": [30, SECRET_HIGH, 40, SECRET_LOW], "w": [1.0, 2.0, 3.0, 4.0]})
    schema = Schema({"age": INTEGER, "w": NUMERIC})
    with pytest.raises(SchemaError) as raised:
        schema.validate(frame, on_violation="reject")
    message = str(raised.value)
    [violation] = raised.value.violations
    assert (violation.column, violation.kind, violation.count) == ("age", "bounds", 2)
    assert "age" in message and "2" in message
    for secret in (SECRET_HIGH, SECRET_LOW):
        assert str(secret) not in message and str(abs(secret)) not in repr(raised.value)


@pytest.mark.parametrize("clip", [False, True])
def test_a_nullable_integer_column_keeps_its_nulls_and_exact_values(clip: bool) -> None:
    big = 2**53 + 1  # not a float64: a float round trip would change it
    col = pd.Series([0, None, big, None, 5], dtype="Int64")
    field = Field.integer(bounds=(0, 2**60), nullable=True)
    out, found, clipped = convert(col, "c", field, clip=clip)
    assert found == [] and clipped == 0
    assert str(out.dtype) == "Int64"
    assert out.isna().tolist() == [False, True, False, True, False]
    assert out[2] == big and out[4] == 5
    as_numbers, found, _ = convert(
        col, "c", Field.numeric(bounds=(0, 2**60), nullable=True), clip=clip
    )
    assert found == [] and str(as_numbers.dtype) == "float64"
    assert as_numbers.isna().tolist() == [False, True, False, True, False]


def test_a_null_in_a_nullable_integer_column_is_no_bounds_violation_but_out_of_bounds_is() -> None:
    field = Field.integer(bounds=(0, 120), nullable=True)
    col = pd.Series([0, None, SECRET_HIGH, 120], dtype="Int64")
    _, found, _ = convert(col, "c", field, clip=False)
    assert [(v.kind, v.count, v.rows) for v in found] == [("bounds", 1, (2,))]
    out, found, clipped = convert(col, "c", field, clip=True)
    assert found == [] and clipped == 1
    assert out.tolist() == [0, pd.NA, 120, 120]
    _, found, _ = convert(col, "c", Field.integer(bounds=(0, 120)), clip=False)
    assert [(v.kind, v.count) for v in found] == [("null", 1), ("bounds", 1)]
