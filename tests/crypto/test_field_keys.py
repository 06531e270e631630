"""FieldCipher keysets: rotation, sealed export, and key material kept out of sight."""

from __future__ import annotations

import base64
import copy
import pickle

import pandas as pd
import pytest

import privml.crypto
from privml import generate_key
from privml.crypto import FieldCipher, FieldKeyset
from privml.exceptions import ConfigurationError, DecryptionError, InvalidKeyError

MATERIAL = bytes(range(32))
OLD = bytes(range(32, 64))


def known_cipher(**kwargs) -> FieldCipher:
    keyset = FieldKeyset({7: OLD, 0xFFFFFFFF: MATERIAL}, primary=0xFFFFFFFF)
    return FieldCipher(keyset, dataset="patients", **kwargs)


def test_public_surface():
    assert set(privml.crypto.__all__) == {"FieldCipher", "FieldKeyset", "generate_key"}


@pytest.mark.parametrize("deterministic", [False, True])
def test_after_rotate_everything_decrypts_and_new_values_use_the_new_key(deterministic):
    cipher = FieldCipher.generate(dataset="d", deterministic=deterministic)
    keys = list(range(50))
    values = pd.Series([f"v{i}" for i in keys])
    before = cipher.encrypt_series(values, column="c", row_keys=keys)
    first = cipher.keyset.primary_id
    second = cipher.rotate()
    third = cipher.rotate()
    assert len({first, second, third}) == 3 and cipher.keyset.primary_id == third
    after = cipher.encrypt_series(values, column="c", row_keys=keys)
    assert {t[1:5] for t in before} == {first.to_bytes(4, "big")}
    assert {t[1:5] for t in after} == {third.to_bytes(4, "big")}
    for tokens in (before, after):
        assert cipher.decrypt_series(tokens, column="c", row_keys=keys).tolist() == values.tolist()
    mixed = pd.concat([before[:25], after[25:]])
    assert cipher.decrypt_series(mixed, column="c", row_keys=keys).tolist() == values.tolist()


def test_reencrypt_then_drop_the_old_key():
    cipher = FieldCipher.generate(dataset="d")
    old_token = cipher.encrypt("x", column="c", row_key=1)
    old_id = cipher.keyset.primary_id
    cipher.rotate()
    new_token = cipher.encrypt(
        cipher.decrypt(old_token, column="c", row_key=1), column="c", row_key=1
    )
    shredded = FieldCipher(cipher.keyset.without(old_id), dataset="d")
    assert shredded.decrypt(new_token, column="c", row_key=1) == "x"
    with pytest.raises(DecryptionError, match="does not hold"):
        shredded.decrypt(old_token, column="c", row_key=1)
    with pytest.raises(ConfigurationError, match="primary"):
        cipher.keyset.without(cipher.keyset.primary_id)


def test_rotate_hook_stores_first_and_can_veto():
    stored = {}

    def store(*, key_id, material):
        stored[key_id] = material

    cipher = known_cipher(on_rotate=store)
    new_id = cipher.rotate()
    assert list(stored) == [new_id] and len(stored[new_id]) == 32
    assert stored[new_id] not in (MATERIAL, OLD)

    def refuse(*, key_id, material):
        raise RuntimeError("storage is down")

    cipher = known_cipher(on_rotate=refuse)
    with pytest.raises(RuntimeError):
        cipher.rotate()
    assert cipher.keyset.primary_id == 0xFFFFFFFF and cipher.keyset.key_ids == (7, 0xFFFFFFFF)


def test_keyset_from_stored_keys_is_stable():
    """Two ciphers built from the same stored keys read each other's tokens (the vault's case)."""
    token = known_cipher().encrypt("x", column="c", row_key=1)
    assert known_cipher().decrypt(token, column="c", row_key=1) == "x"
    assert token[1:5] == b"\xff\xff\xff\xff"


@pytest.mark.parametrize(
    ("keys", "primary", "match"),
    [
        ({1: b"short"}, 1, "32 bytes"),
        ({1: MATERIAL}, 2, "not in the keyset"),
        ({-1: MATERIAL}, -1, "2\\*\\*32"),
        ({2**32: MATERIAL}, 2**32, "2\\*\\*32"),
        ({True: MATERIAL}, True, "2\\*\\*32"),
    ],
)
def test_keyset_validation(keys, primary, match):
    with pytest.raises(ConfigurationError, match=match):
        FieldKeyset(keys, primary=primary)


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize(
    "wrap_key",
    [generate_key(), generate_key().decode(), bytes(range(32))],
    ids=["key-bytes", "key-text", "raw-32-bytes"],  # the same names in every collection
)
def test_export_round_trip(deterministic, wrap_key):
    cipher = known_cipher(deterministic=deterministic)
    token = cipher.encrypt(3.5, column="c", row_key=1)
    again = FieldCipher.from_bytes(cipher.to_bytes(wrap_key=wrap_key), wrap_key=wrap_key)
    assert (again.dataset, again.deterministic) == ("patients", deterministic)
    assert again.keyset.key_ids == cipher.keyset.key_ids
    assert again.keyset.primary_id == cipher.keyset.primary_id
    assert again.decrypt(token, column="c", row_key=1) == 3.5


def test_export_is_sealed():
    wrap_key = generate_key()
    blob = known_cipher().to_bytes(wrap_key=wrap_key)
    assert MATERIAL not in blob and OLD not in blob and b"patients" not in blob
    with pytest.raises(InvalidKeyError, match="wrap_key"):
        FieldCipher.from_bytes(blob, wrap_key=generate_key())
    for bit in range(len(blob) * 8):
        changed = bytearray(blob)
        changed[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((DecryptionError, InvalidKeyError)):
            FieldCipher.from_bytes(bytes(changed), wrap_key=wrap_key)
    for size in range(len(blob)):
        with pytest.raises((DecryptionError, InvalidKeyError)):
            FieldCipher.from_bytes(blob[:size], wrap_key=wrap_key)


@pytest.mark.parametrize("wrap_key", [b"short", "not base64!", 123, bytes(31), "é" * 32])
def test_bad_wrap_keys_are_refused(wrap_key):
    with pytest.raises(ConfigurationError, match="wrap_key"):
        known_cipher().to_bytes(wrap_key=wrap_key)


def forms(material: bytes) -> list[str]:
    return [
        material.hex(),
        material.hex().upper(),
        repr(material),
        base64.b64encode(material).decode(),
        base64.urlsafe_b64encode(material).decode(),
        str(list(material)),
    ]


def assert_no_material(text: str) -> None:
    for material in (MATERIAL, OLD):
        for form in forms(material):
            assert form not in text


def test_reprs_hold_no_key_material():
    cipher = known_cipher()
    for obj in (cipher, cipher.keyset, known_cipher(deterministic=True)):
        assert_no_material(repr(obj))
        assert_no_material(str(obj))
        assert_no_material(format(obj))
    assert repr(cipher.keyset) == "FieldKeyset(primary=0xffffffff, keys=[0x00000007, 0xffffffff])"
    assert repr(cipher) == (
        "FieldCipher(dataset='patients', mode='randomized', primary=0xffffffff, keys=2)"
    )


def test_errors_hold_no_key_material():
    cipher = known_cipher()
    token = cipher.encrypt("x", column="c", row_key=1)
    attempts = [
        lambda: cipher.decrypt(token, column="c", row_key=2),
        lambda: cipher.decrypt(token[:10], column="c", row_key=1),
        lambda: cipher.decrypt(b"\x09" + token[1:], column="c", row_key=1),
        lambda: cipher.decrypt(b"\x01\x00\x00\x00\x01" + token[5:], column="c", row_key=1),
        lambda: cipher.encrypt(object(), column="c", row_key=1),
        lambda: cipher.encrypt("x", column="c"),
        lambda: FieldCipher.from_bytes(cipher.to_bytes(wrap_key=MATERIAL), wrap_key=OLD),
        lambda: FieldKeyset({1: MATERIAL}, primary=2),
        lambda: pickle.dumps(cipher),
        lambda: pickle.dumps(cipher.keyset),
    ]
    for attempt in attempts:
        with pytest.raises(Exception) as caught:
            attempt()
        assert_no_material(str(caught.value))
        assert_no_material(repr(caught.value))
        assert caught.value.__cause__ is None


def test_ciphers_and_keysets_are_not_pickled_or_copied():
    cipher = known_cipher()
    for obj in (cipher, cipher.keyset):
        with pytest.raises(TypeError, match="to_bytes"):
            pickle.dumps(obj)
        with pytest.raises(TypeError, match="to_bytes"):
            copy.deepcopy(obj)
