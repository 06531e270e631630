"""FieldCipher's Arrow path packs the same bytes as its per-value Python encoders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from privml.crypto import _field_encoding as enc
from privml.crypto.field import FieldCipher
from privml.exceptions import ConfigurationError, DecryptionError

# Arrow strings hold valid UTF-8 only: lone surrogates stay on the Python path.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


@given(st.lists(TEXT, max_size=30))
def test_arrow_strings_pack_as_python_strings(values):
    assert enc.pack_values(pa.array(values, pa.large_string()), kind=str) == enc.pack_values(values)
    assert enc.pack_values(pa.array(values, pa.string()), kind=str) == enc.pack_values(values)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30))
def test_arrow_integer_row_keys_pack_as_python_integers(keys):
    prefix = b"ad\x00|"
    assert enc.pack_row_keys(pa.array(keys, pa.int64()), prefix=prefix) == enc.pack_row_keys(
        keys, prefix=prefix
    )


@given(st.lists(TEXT, max_size=30))
def test_arrow_string_row_keys_pack_as_python_strings(keys):
    packed = enc.pack_row_keys(pa.array(keys, pa.large_string()), prefix=b"p")
    assert packed == enc.pack_row_keys(keys, prefix=b"p")


def test_unsigned_row_keys_past_int64_pack_as_python_integers():
    keys = np.array([0, 2**63, 2**64 - 1], dtype=np.uint64)
    assert enc.pack_row_keys(pa.array(keys), prefix=b"") == [
        b"i0",
        b"i%d" % 2**63,
        b"i%d" % (2**64 - 1),
    ]


def test_split_nonces_keeps_every_byte_in_order_trailing_zeros_included():
    block = bytes(12) + bytes(range(1, 13)) + bytes(11) + b"\x01"
    headed, nonces = enc.split_nonces(block, b"\x01\xab\x00\x00\x00")
    assert nonces == [block[0:12], block[12:24], block[24:36]]
    assert headed == [b"\x01\xab\x00\x00\x00" + n for n in nonces]
    assert enc.split_nonces(b"", b"H") == ([], [])


@pytest.mark.parametrize(
    "row_keys",
    [
        pd.RangeIndex(5, 15),
        pd.Series(np.arange(-5, 5)),
        pd.Index(np.arange(10, dtype=np.uint32)),
        pd.Series([f"P-{i}é" for i in range(10)], dtype="str"),
    ],
    ids=["range", "int64", "uint32", "arrow-str"],
)
def test_arrow_tokens_open_one_by_one_with_the_python_row_keys(row_keys):
    values = pd.Series(["", "a", "é", "x" * 40, "\x00", "a\x00", "7", "π", "b", "c"], dtype="str")
    cipher = FieldCipher.generate(dataset="d")
    tokens = cipher.encrypt_series(values, column="c", row_keys=row_keys)
    for token, value, key in zip(tokens, values, row_keys.tolist(), strict=True):
        assert cipher.decrypt(token, column="c", row_key=key) == value
        with pytest.raises(DecryptionError, match="authentication"):
            cipher.decrypt(token, column="c", row_key=str(key) + "x")
    back = cipher.decrypt_series(tokens, column="c", row_keys=row_keys)
    assert back.tolist() == values.tolist()


def test_arrow_row_keys_of_the_wrong_length_are_refused_before_sealing():
    cipher = FieldCipher.generate(dataset="d")
    with pytest.raises(ConfigurationError, match="3 keys for 2 values"):
        cipher.encrypt_series(
            pd.Series(["a", "b"], dtype="str"), column="c", row_keys=pd.RangeIndex(3)
        )


def test_missing_strings_take_the_python_path_and_stay_missing():
    cipher = FieldCipher.generate(dataset="d")
    values = pd.Series(["a", None, "b"], dtype="str")
    tokens = cipher.encrypt_series(values, column="c", row_keys=pd.RangeIndex(3))
    assert cipher.decrypt_series(tokens, column="c", row_keys=pd.RangeIndex(3)).tolist() == [
        "a",
        None,
        "b",
    ]
