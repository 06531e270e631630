"""FieldCipher: a token moved, changed or cut fails with DecryptionError, never a wrong value."""

from __future__ import annotations

import pandas as pd
import pytest
from _field_helpers import ROW_KEYS, VALUES
from hypothesis import given, settings

from privml.crypto import FieldCipher, FieldKeyset
from privml.exceptions import DecryptionError

CIPHER = FieldCipher.generate(dataset="patients")
SIV = FieldCipher(CIPHER.keyset, dataset="patients", deterministic=True)
SAMPLES = ["diabetes", "", 2**70, -1.5, True, None, b"\x00\x01"]


def fails(cipher, token, **where):
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, **where)


@settings(max_examples=100)
@given(value=VALUES, row=ROW_KEYS, other=ROW_KEYS)
def test_moved_to_another_row_fails(value, row, other):
    token = CIPHER.encrypt(value, column="c", row_key=row)
    if type(row) is type(other) and row == other:
        return
    fails(CIPHER, token, column="c", row_key=other)


def test_equal_looking_row_keys_are_different_rows():
    token = CIPHER.encrypt("x", column="c", row_key=7)
    for other in ("7", b"7"):
        fails(CIPHER, token, column="c", row_key=other)


@pytest.mark.parametrize("cipher", [CIPHER, SIV], ids=["randomized", "deterministic"])
def test_moved_to_another_column_or_dataset_fails(cipher):
    other_dataset = FieldCipher(
        cipher.keyset, dataset="patients2", deterministic=cipher.deterministic
    )
    for value in SAMPLES:
        token = cipher.encrypt(value, column="diagnosis", row_key="P-1")
        fails(cipher, token, column="diagnos1s", row_key="P-1")
        fails(cipher, token, column="", row_key="P-1")
        fails(other_dataset, token, column="diagnosis", row_key="P-1")


def test_length_prefixes_keep_dataset_and_column_apart():
    a = FieldCipher(CIPHER.keyset, dataset="ab")
    b = FieldCipher(CIPHER.keyset, dataset="a")
    token = a.encrypt("x", column="c", row_key=1)
    fails(b, token, column="bc", row_key=1)


@pytest.mark.parametrize("deterministic", [False, True])
def test_another_key_fails(deterministic):
    cipher = FieldCipher.generate(dataset="patients", deterministic=deterministic)
    token = cipher.encrypt("x", column="c", row_key=1)
    stranger = FieldCipher.generate(dataset="patients", deterministic=deterministic)
    with pytest.raises(DecryptionError, match="does not hold"):
        stranger.decrypt(token, column="c", row_key=1)
    # Same key id, other key material: the tag does not verify.
    twin = FieldKeyset({cipher.keyset.primary_id: bytes(32)}, primary=cipher.keyset.primary_id)
    with pytest.raises(DecryptionError, match="failed authentication"):
        FieldCipher(twin, dataset="patients", deterministic=deterministic).decrypt(
            token, column="c", row_key=1
        )


def test_modes_do_not_open_each_other():
    with pytest.raises(DecryptionError, match="deterministic=True"):
        CIPHER.decrypt(SIV.encrypt("x", column="c"), column="c", row_key=1)
    with pytest.raises(DecryptionError, match="deterministic=False"):
        SIV.decrypt(CIPHER.encrypt("x", column="c", row_key=1), column="c")


@pytest.mark.parametrize("cipher", [CIPHER, SIV], ids=["randomized", "deterministic"])
@pytest.mark.parametrize("value", SAMPLES)
def test_every_flipped_bit_fails(cipher, value):
    token = cipher.encrypt(value, column="c", row_key="r")
    for bit in range(len(token) * 8):
        changed = bytearray(token)
        changed[bit // 8] ^= 1 << (bit % 8)
        fails(cipher, bytes(changed), column="c", row_key="r")


@pytest.mark.parametrize("cipher", [CIPHER, SIV], ids=["randomized", "deterministic"])
@pytest.mark.parametrize("value", SAMPLES)
def test_truncated_or_extended_tokens_fail(cipher, value):
    token = cipher.encrypt(value, column="c", row_key="r")
    for size in range(len(token)):
        fails(cipher, token[:size], column="c", row_key="r")
        fails(cipher, token[len(token) - size :], column="c", row_key="r")
    fails(cipher, token + b"\x00", column="c", row_key="r")


@pytest.mark.parametrize("token", [None, "token", 12, bytearray(3)])
def test_things_that_are_not_tokens_fail(token):
    fails(CIPHER, token, column="c", row_key="r")


def test_series_fails_whole_and_names_the_position():
    keys = pd.Series(["P-1", "P-2", "P-3"])
    tokens = CIPHER.encrypt_series(pd.Series(["a", "b", "c"]), column="c", row_keys=keys)
    swapped = tokens.iloc[[0, 2, 1]].reset_index(drop=True)
    with pytest.raises(DecryptionError, match="position 1 of column 'c'"):
        CIPHER.decrypt_series(swapped, column="c", row_keys=keys)


def test_messages_leak_neither_row_keys_nor_values():
    token = CIPHER.encrypt("secret-value", column="c", row_key="P-SECRET-1")
    with pytest.raises(DecryptionError) as caught:
        CIPHER.decrypt(token, column="c", row_key="P-SECRET-2")
    assert "SECRET" not in str(caught.value) and "secret" not in str(caught.value)


def test_deterministic_tokens_are_not_bound_to_rows():
    """The documented trade-off: equal values share a token, in any row."""
    keys = ["P-1", "P-2"]
    tokens = SIV.encrypt_series(pd.Series(["x", "x"]), column="c", row_keys=keys)
    assert tokens[0] == tokens[1]
    assert SIV.decrypt(tokens[0], column="c", row_key="P-2") == "x"
