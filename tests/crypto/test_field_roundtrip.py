"""FieldCipher: every supported value decrypts to itself, with its type."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _field_helpers import ROW_KEYS, VALUES, same
from hypothesis import given, settings
from hypothesis import strategies as st

from privml.crypto import FieldCipher
from privml.exceptions import ConfigurationError

RANDOMIZED = FieldCipher.generate(dataset="patients")
DETERMINISTIC = FieldCipher.generate(dataset="patients", deterministic=True)


@settings(max_examples=300)
@given(value=VALUES, row_key=ROW_KEYS, column=st.text())
def test_randomized_round_trip(value, row_key, column):
    token = RANDOMIZED.encrypt(value, column=column, row_key=row_key)
    assert same(RANDOMIZED.decrypt(token, column=column, row_key=row_key), value)


@settings(max_examples=300)
@given(value=VALUES, column=st.text())
def test_deterministic_round_trip_and_equal_tokens(value, column):
    token = DETERMINISTIC.encrypt(value, column=column)
    assert same(DETERMINISTIC.decrypt(token, column=column), value)
    assert DETERMINISTIC.encrypt(value, column=column) == token


@settings(max_examples=100)
@given(values=st.lists(VALUES, max_size=20))
def test_series_round_trip(values):
    series = pd.Series(values, dtype=object, index=[f"r{i}" for i in range(len(values))])
    for cipher in (RANDOMIZED, DETERMINISTIC):
        tokens = cipher.encrypt_series(series, column="c", row_keys=series.index)
        back = cipher.decrypt_series(tokens, column="c", row_keys=series.index)
        assert back.index.equals(series.index)
        assert all(same(a, b) for a, b in zip(back, values, strict=True))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "é😀\u0000",
        "\ud800",
        b"",
        b"\x00\xff",
        0,
        -1,
        2**64,
        -(2**1000),
        True,
        False,
        None,
        math.nan,
        math.inf,
        -math.inf,
        -0.0,
    ],
)
def test_edge_values(value):
    token = RANDOMIZED.encrypt(value, column="c", row_key=7)
    assert same(RANDOMIZED.decrypt(token, column="c", row_key=7), value)


def test_randomized_tokens_differ_for_equal_values():
    a = RANDOMIZED.encrypt("same", column="c", row_key=1)
    b = RANDOMIZED.encrypt("same", column="c", row_key=1)
    assert a != b


def test_equal_looking_values_of_other_types_stay_apart():
    tokens = {DETERMINISTIC.encrypt(v, column="c") for v in (1, True, 1.0, "1", b"1")}
    assert len(tokens) == 5


def test_numpy_scalars_map_to_python_types():
    cases = [
        (np.int64(-5), -5),
        (np.float32(0.5), 0.5),
        (np.bool_(True), True),
        (np.str_("x"), "x"),
    ]
    for given_value, expected in cases:
        token = RANDOMIZED.encrypt(given_value, column="c", row_key=np.int64(3))
        assert same(RANDOMIZED.decrypt(token, column="c", row_key=3), expected)


def test_token_layout():
    key_id = RANDOMIZED.keyset.primary_id.to_bytes(4, "big")
    token = RANDOMIZED.encrypt("abc", column="c", row_key=1)
    assert token[:5] == b"\x01" + key_id and len(token) == 1 + 4 + 12 + 1 + 3 + 16
    det = DETERMINISTIC.encrypt("abc", column="c")
    assert det[:1] == b"\x02" and len(det) == 1 + 4 + 16 + 1 + 3


def test_pandas_dtypes_and_missing_values():
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": pd.Series(["x", None, ""], dtype="str"),
            "count": pd.Series([1, None, 3], dtype="Int64"),
            "kind": pd.Categorical(["F", None, "M"]),
            "score": [1.5, math.nan, -math.inf],
            "flag": [True, False, True],
            "blob": pd.Series([b"\x00", None, b""], dtype=object),
        },
    )
    frame.index = pd.Index([10, 20, 30], name="row")
    expected = {
        "text": ["x", None, ""],
        "count": [1, None, 3],
        "kind": ["F", None, "M"],
        "score": [1.5, math.nan, -math.inf],
        "flag": [True, False, True],
        "blob": [b"\x00", None, b""],
    }
    for column, want in expected.items():
        tokens = RANDOMIZED.encrypt_series(frame[column], column=column, row_keys=frame["id"])
        assert tokens.index.equals(frame.index) and tokens.name == column
        back = RANDOMIZED.decrypt_series(tokens, column=column, row_keys=frame["id"])
        assert back.dtype == object and back.index.equals(frame.index)
        assert all(same(a, b) for a, b in zip(back, want, strict=True)), column


def test_plain_lists_work_too():
    tokens = RANDOMIZED.encrypt_series(["a", "b"], column="c", row_keys=[1, 2])
    assert RANDOMIZED.decrypt_series(tokens, column="c", row_keys=[1, 2]).tolist() == ["a", "b"]
    assert RANDOMIZED.encrypt_series([], column="c", row_keys=[]).empty


def test_unsupported_value_names_the_fix():
    with pytest.raises(ConfigurationError, match="isoformat"):
        RANDOMIZED.encrypt(pd.Timestamp("2024-01-01"), column="c", row_key=1)


@pytest.mark.parametrize("row_key", [None, 1.5, True, ("a",)])
def test_bad_row_keys_are_refused(row_key):
    with pytest.raises(ConfigurationError, match="row"):
        RANDOMIZED.encrypt("x", column="c", row_key=row_key)


def test_row_keys_are_required_and_must_match_in_length():
    with pytest.raises(ConfigurationError, match="row_keys="):
        RANDOMIZED.encrypt_series(pd.Series(["a"]), column="c")
    with pytest.raises(ConfigurationError, match="1 keys for 2 values"):
        RANDOMIZED.encrypt_series(pd.Series(["a", "b"]), column="c", row_keys=[1])
    with pytest.raises(ConfigurationError, match="not a str"):
        RANDOMIZED.encrypt_series(pd.Series(["a", "b"]), column="c", row_keys="ab")


def test_deterministic_ignores_row_keys():
    token = DETERMINISTIC.encrypt("x", column="c", row_key=1)
    assert DETERMINISTIC.decrypt(token, column="c", row_key=2) == "x"
    assert DETERMINISTIC.decrypt(token, column="c") == "x"


@pytest.mark.parametrize("column", [None, 3, b"c"])
def test_column_must_be_a_str(column):
    with pytest.raises(ConfigurationError, match="column must be a str"):
        RANDOMIZED.encrypt("x", column=column, row_key=1)


def test_dataset_must_be_a_non_empty_str():
    with pytest.raises(ConfigurationError, match="dataset"):
        FieldCipher.generate(dataset="")


@pytest.mark.parametrize(
    "series",
    [
        pd.Series(["a", "", "é😀"], dtype="str"),
        pd.Series([1.5, math.nan, -0.0]),
        pd.Series([1, -(2**40), 0]),
        pd.Series([True, False, True]),
    ],
    ids=["str", "float", "int", "bool"],
)
def test_typed_columns_encode_like_single_values(series):
    """The per-dtype fast paths give the same bytes as the per-value path."""
    column_tokens = DETERMINISTIC.encrypt_series(series, column="c").tolist()
    assert column_tokens == [DETERMINISTIC.encrypt(v, column="c") for v in series.tolist()]
    for row_keys in (pd.RangeIndex(3), pd.Series(["x", "y", "z"], dtype="str")):
        tokens = RANDOMIZED.encrypt_series(series, column="c", row_keys=row_keys)
        for token, value, key in zip(tokens, series.tolist(), row_keys.tolist(), strict=True):
            assert same(RANDOMIZED.decrypt(token, column="c", row_key=key), value)


def test_keyset_must_be_a_field_keyset():
    with pytest.raises(ConfigurationError, match="FieldKeyset"):
        FieldCipher(b"\x00" * 32, dataset="d")
