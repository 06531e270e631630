"""Key decoding is exact: each accepted input names one key, everything else is refused."""

from __future__ import annotations

import base64
import os

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import privml
from privml import Vault
from privml.crypto import FieldCipher
from privml.crypto.keys import ENV_VAR, _decode_key
from privml.exceptions import ConfigurationError, InvalidKeyError, KeyFormatError

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _assert_no_key_in(message: str, key: object) -> None:
    text = (key.decode("latin-1") if isinstance(key, bytes) else str(key)).strip()
    if len(text) >= 8:  # shorter strings occur in any sentence by chance
        assert text not in message


@given(st.binary(min_size=32, max_size=32))
def test_every_documented_form_decodes_to_the_same_bytes(raw):
    text = base64.urlsafe_b64encode(raw)
    for form in (raw, text, text.decode(), f" {text.decode()}\n", text + b"\r\n"):
        assert _decode_key(form) == raw


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=60), st.text(alphabet=B64 + "=+/ .\n", max_size=50)))
def test_a_str_is_accepted_only_as_the_canonical_encoding_of_its_key(text):
    """Injective: an accepted str is, up to surrounding whitespace, the encoding of its bytes."""
    try:
        raw = _decode_key(text)
    except KeyFormatError as err:
        _assert_no_key_in(str(err), text)
        return
    assert base64.urlsafe_b64encode(raw).decode() == text.strip()


@settings(max_examples=500)
@given(st.binary(max_size=60))
def test_bytes_are_raw_at_32_else_canonical_base64(data):
    try:
        raw = _decode_key(data)
    except KeyFormatError:
        assert len(data) != 32
        return
    assert raw == data if len(data) == 32 else base64.urlsafe_b64encode(raw) == data.strip()


@pytest.mark.parametrize(
    "bad",
    [
        "é" * 32,  # was used as raw bytes after encode("ascii", "replace")
        "ü" * 32,
        "a" * 32,  # a 32-character str is not 32 raw bytes
        "A" * 43,  # unpadded
        "A" * 42 + "B=",  # non-canonical: trailing bits set
        "A" * 20 + "+" + "A" * 22 + "=",  # standard, not URL-safe, alphabet
        "A" * 20 + "!" + "A" * 22 + "=",  # junk that lenient base64 skips
        "AAAA" + "\n" + "A" * 39 + "=",  # whitespace inside
        base64.urlsafe_b64encode(bytes(31)).decode(),
        base64.urlsafe_b64encode(bytes(33)).decode(),
        bytes(31),
        bytes(33),
        "",
        123,
        bytearray(32),
    ],
)
def test_malformed_keys_are_refused_and_not_echoed(bad):
    with pytest.raises(KeyFormatError, match="URL-safe base64") as caught:
        _decode_key(bad)
    assert isinstance(caught.value, InvalidKeyError)
    assert isinstance(caught.value, ConfigurationError)
    _assert_no_key_in(str(caught.value), bad)


def test_non_ascii_strings_do_not_open_a_vault(tmp_path):
    """Two different 32-character strings used to open the same vault; now neither does."""
    with pytest.raises(KeyFormatError):
        Vault.create(tmp_path / "v", key="é" * 32)
    key = base64.urlsafe_b64encode(b"\xfb" * 32)  # holds "-", which lenient decoders alias
    assert b"-" in key
    Vault.create(tmp_path / "w", key=key).close()
    for attempt in ("é" * 32, "ü" * 32, key.decode().replace("-", "+")):
        with pytest.raises(InvalidKeyError):
            Vault.open(tmp_path / "w", key=attempt)
    Vault.open(tmp_path / "w", key=base64.urlsafe_b64decode(key)).close()  # the raw bytes


def test_key_files_and_the_environment_are_decoded_strictly(tmp_path, monkeypatch):
    key = privml.generate_key()
    raw = base64.urlsafe_b64decode(key)
    Vault.create(tmp_path / "v", key=key).close()
    for content in (key + b"\n", raw, b"  " + key):
        path = tmp_path / "key"
        path.write_bytes(content)
        os.chmod(path, 0o600)
        Vault.open(tmp_path / "v", key_file=path).close()
    # a raw key that starts or ends with whitespace bytes is not stripped into another key
    spaced = b" " + raw[1:31] + b"\n"
    path.write_bytes(spaced)
    with pytest.raises(InvalidKeyError, match="does not open"):
        Vault.open(tmp_path / "v", key_file=path)
    path.write_bytes("é".encode() * 16)  # 32 bytes of UTF-8: raw bytes, so just the wrong key
    with pytest.raises(InvalidKeyError, match="does not open"):
        Vault.open(tmp_path / "v", key_file=path)
    path.write_bytes(key[:-1] + b"+=")
    with pytest.raises(KeyFormatError, match="key file"):
        Vault.open(tmp_path / "v", key_file=path)
    monkeypatch.setenv(ENV_VAR, key.decode() + "\n")
    Vault.open(tmp_path / "v").close()
    monkeypatch.setenv(ENV_VAR, "é" * 32)
    with pytest.raises(KeyFormatError, match=ENV_VAR) as caught:
        Vault.open(tmp_path / "v")
    assert "é" not in str(caught.value)


def test_passphrases_go_through_the_kdf_strictly(tmp_path):
    with pytest.raises(KeyFormatError, match="passphrase"):
        Vault.create(tmp_path / "v", passphrase="correct horse \ud800 battery")
    Vault.create(tmp_path / "v", passphrase="correct horse é battery").close()
    with pytest.raises(InvalidKeyError, match="does not open"):
        Vault.open(tmp_path / "v", passphrase="correct horse ? battery")


@pytest.mark.parametrize(
    "wrap_key",
    ["é" * 32, "a" * 32, privml.generate_key()[:-2] + b"B="],
    ids=["non-ascii", "32-ascii-chars", "non-canonical-base64"],  # the same in every collection
)
def test_field_keyset_export_keys_are_decoded_strictly(wrap_key):
    cipher = FieldCipher.generate(dataset="d")
    with pytest.raises(KeyFormatError, match="wrap_key"):
        cipher.to_bytes(wrap_key=wrap_key)


def test_the_cli_reads_keys_strictly(tmp_path, capsys):
    from privml.cli import main

    key = privml.generate_key()
    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset(
            "d",
            pd.DataFrame({"x": [1.0]}),
            schema=privml.Schema({"x": privml.Field.numeric(bounds=(0, 2))}),
            budget=privml.Budget(epsilon=1),
        )
    path = tmp_path / "key"
    path.write_text("é" * 32)
    os.chmod(path, 0o600)
    assert main(["datasets", str(tmp_path / "v"), "--key-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "URL-safe base64" in err and "é" not in err
