"""Rounding masks give what the plain pandas formula gives: values, nulls, dtype, index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml.masks import Mask, _end_buckets


def formula(values: pd.Series, g: float, bounds, integer: bool) -> pd.Series:
    index = np.floor(values.astype("float64") / g)
    if bounds is not None:
        low, high = _end_buckets(bounds, g, integer=integer)
        index = index.clip(low, max(low, high))
    floored = index * g
    if (integer or pd.api.types.is_integer_dtype(values)) and float(g).is_integer():
        return floored.astype("Int64")
    return floored


@settings(max_examples=200)
@given(
    st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), max_size=40),
    st.sampled_from([1.0, 2.0, 5.0, 10.0, 2.5, 0.1]),
    st.sampled_from([None, (0, 120), (-1000, 1000)]),
)
def test_integer_columns_round_as_the_formula(items, g, bounds):
    values = pd.Series(pd.array(items, dtype="Int64"), name="age", index=range(5, 5 + len(items)))
    got = Mask.round(g).apply(values, bounds=bounds, integer=True)
    pd.testing.assert_series_equal(got, formula(values, g, bounds, True))


@settings(max_examples=200)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), max_size=40),
    st.sampled_from([1.0, 10.0, 2.5, 0.1]),
    st.sampled_from([None, (20.0, 250.0)]),
)
def test_float_columns_round_as_the_formula(items, g, bounds):
    values = pd.Series([np.nan if v is None else v for v in items], dtype="float64", name="w")
    got = Mask.round(g).apply(values, bounds=bounds)
    pd.testing.assert_series_equal(got, formula(values, g, bounds, False))


def test_an_infinity_in_a_whole_number_column_is_refused_as_pandas_refuses_it():
    values = pd.Series([1.0, np.inf])
    with pytest.raises((ValueError, TypeError, OverflowError)):
        Mask.round(10).apply(values, integer=True)


@settings(max_examples=200)
@given(
    st.lists(st.integers(-(2**50), 2**50), max_size=40),
    st.sampled_from([2.0, 3.0, 10.0, 1000.0]),
    st.sampled_from([None, (0, 120), (-(2**50), 2**50), (-1000, 1000)]),
    st.booleans(),
)
def test_int64_columns_round_in_integers_as_the_formula(items, g, bounds, integer):
    values = pd.Series(np.array(items, dtype="int64"), name="n", index=range(3, 3 + len(items)))
    got = Mask.round(g).apply(values, bounds=bounds, integer=integer)
    pd.testing.assert_series_equal(got, formula(values, g, bounds, integer))
    assert values.tolist() == items  # the column itself is left as it was


@settings(max_examples=100)
@given(
    st.lists(st.one_of(st.none(), st.integers(-(2**50), 2**50)), max_size=40),
    st.sampled_from([2.0, 7.0, 10.0]),
    st.sampled_from([None, (-(2**50), 2**50)]),
)
def test_nullable_integer_columns_round_in_integers_as_the_formula(items, g, bounds):
    values = pd.Series(pd.array(items, dtype="Int64"), name="n")
    got = Mask.round(g).apply(values, bounds=bounds, integer=True)
    pd.testing.assert_series_equal(got, formula(values, g, bounds, True))


def test_an_integer_column_rounds_on_a_random_million_as_before():
    rng = np.random.default_rng(11)
    values = pd.Series(rng.integers(18, 95, 1_000_000), name="age")
    got = Mask.round(10).apply(values, bounds=(0, 120), integer=True)
    pd.testing.assert_series_equal(got, formula(values, 10.0, (0, 120), True))
