"""Sealing and opening :class:`~privml.crypto.FieldCipher` tokens for one keyset.

Why this is safe
----------------
*Randomized* (format 0x01): each value is sealed with AES-256-GCM under a fresh
96-bit nonce read from the operating system's CSPRNG. The AES key is a subkey
derived with HKDF-SHA256 from the keyset key, the format, the dataset and the
column, so GCM's bound for random nonces (at most 2**32 values per key keeps the
chance of any repeated nonce below 2**-32) applies to each column separately.
The associated data binds format, key id, dataset, column and row key in an
unambiguous binary encoding, so a token copied to another cell or keyset, or
changed in any bit, fails authentication; no plaintext is returned unless the
tag verifies, and the error names the position, never the row key or value.

*Deterministic* (format 0x02, opt-in): AES-256-SIV (RFC 5297), a nonce-free,
misuse-resistant AEAD, under a per-(dataset, column) subkey; the associated data
binds format, key id, dataset and column. Its only leak is the intended one:
equal values in a column give equal tokens.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import ConfigurationError, DecryptionError, IntegrityError
from ._field_encoding import (
    FORMAT_DETERMINISTIC,
    FORMAT_RANDOMIZED,
    KEY_ID_BYTES,
    NONCE_BYTES,
    Value,
    ad_prefix,
    derivation_info,
    pack_row_key,
    pack_row_keys,
    pack_value,
    pack_values,
    random_nonce,
    random_nonce_block,
    split_nonces,
    unpack_values,
)
from ._field_keyset import FieldKeyset

__all__ = ["Engine", "check_column"]

HEAD = 1 + KEY_ID_BYTES  # format byte and key id
_TAG = 16
_CHUNK = 1 << 16  # values sealed per batch: bounds the temporary lists of a big column


class Engine:
    """Seals and opens tokens of one (keyset, dataset, mode); caches per-column subkeys.

    Bound to one immutable keyset, so its caches never go stale: rotating makes a new
    engine.
    """

    __slots__ = ("_dataset", "_deterministic", "_fmt", "_keyset", "_open", "_seal")

    def __init__(self, keyset: FieldKeyset, *, dataset: str, deterministic: bool) -> None:
        self._keyset = keyset
        self._dataset = dataset
        self._deterministic = deterministic
        self._fmt = FORMAT_DETERMINISTIC if deterministic else FORMAT_RANDOMIZED
        # column -> (primitive, associated data or its prefix, token header), primary key
        self._seal: dict[str, tuple[Any, Any, bytes]] = {}
        # column -> token header -> (primitive, associated data or its prefix)
        self._open: dict[str, dict[bytes, tuple[Any, Any]]] = {}

    # -- sealing --------------------------------------------------------------------------

    def seal_one(self, value: object, row_key: object, column: str) -> bytes:
        """One token; ``row_key`` is ignored when deterministic."""
        state = self._seal.get(column) if type(column) is str else None
        prim, ad, header = state or self._seal_state(column)
        if self._deterministic:
            return header + prim.encrypt(pack_value(value), ad)  # type: ignore[no-any-return]
        nonce = random_nonce()
        sealed = prim.encrypt(nonce, pack_value(value), ad + pack_row_key(row_key))
        return header + nonce + sealed  # type: ignore[no-any-return]

    def seal(
        self,
        values: list[Any] | pa.Array,
        row_keys: list[Any] | pa.Array | None,
        column: str,
        *,
        value_kind: type | None = None,
        row_kind: type | None = None,
    ) -> list[bytes]:
        """One token per value; ``row_keys`` (same length) is ``None`` when deterministic.

        ``value_kind`` and ``row_kind`` name the one type of all values or row keys,
        when the caller knows it (see :func:`uniform_kind`). Either may be an Arrow
        array without nulls (see :func:`~privml.crypto._field_series.arrow_values`),
        packed in C.
        """
        prim, ad, header = self._seal.get(column) or self._seal_state(column)
        enc = prim.encrypt
        tokens: list[bytes] = []
        for start in range(0, len(values), _CHUNK):
            plain = pack_values(values[start : start + _CHUNK], kind=value_kind)
            if row_keys is None:
                tokens += [header + enc(p, ad) for p in plain]
                continue
            ads = pack_row_keys(row_keys[start : start + _CHUNK], prefix=ad, kind=row_kind)
            headed, nonces = split_nonces(random_nonce_block(len(plain)), header)
            tokens += [
                h + enc(n, p, a) for h, n, p, a in zip(headed, nonces, plain, ads, strict=True)
            ]
        return tokens

    # -- opening --------------------------------------------------------------------------

    def open(
        self, tokens: list[Any], rows: list[bytes] | None, column: str, *, single: bool = False
    ) -> list[Value]:
        """Decrypt every token, or raise :class:`DecryptionError` naming the first bad one.

        A token that authenticates but holds no known value encoding raises
        :class:`IntegrityError`.

        ``rows`` holds each token's packed row key (``None`` when deterministic).
        """
        states = self._open.setdefault(column, {})
        minimum = HEAD + _TAG + 1 + (0 if rows is None else NONCE_BYTES)
        plains: list[bytes] = []
        try:
            if rows is None:
                for token in tokens:
                    if type(token) is not bytes or len(token) < minimum:
                        token = self._shaped(token, minimum)
                    siv, ad = states.get(token[:HEAD]) or self._open_state(column, token)
                    plains.append(siv.decrypt(token[HEAD:], ad))
            else:
                body = HEAD + NONCE_BYTES
                for token, row in zip(tokens, rows, strict=True):
                    if type(token) is not bytes or len(token) < minimum:
                        token = self._shaped(token, minimum)
                    aead, prefix = states.get(token[:HEAD]) or self._open_state(column, token)
                    plains.append(aead.decrypt(token[HEAD:body], token[body:], prefix + row))
        except InvalidTag:
            raise DecryptionError(
                f"token {_where(column, len(plains), single)} failed authentication: it was made "
                "for another row, column or dataset, under another key, or it was modified"
            ) from None
        except DecryptionError as err:
            raise DecryptionError(f"token {_where(column, len(plains), single)} {err}") from None
        try:
            return unpack_values(plains)
        except IntegrityError as err:  # authentic, but not a value this privml wrote
            raise IntegrityError(f"a token of column {column!r}: {err}") from None

    # -- keys -----------------------------------------------------------------------------

    def _derive(self, key_id: int, column: str) -> tuple[Any, Any]:
        info = derivation_info(self._fmt, self._dataset, column)
        size = 64 if self._deterministic else 32  # AES-256-SIV takes two 256-bit keys
        hkdf = HKDF(algorithm=SHA256(), length=size, salt=None, info=info)
        subkey = hkdf.derive(self._keyset._material(key_id))
        ad = ad_prefix(self._fmt, key_id.to_bytes(KEY_ID_BYTES, "big"), self._dataset, column)
        if self._deterministic:
            return AESSIV(subkey), [ad]
        return AESGCM(subkey), ad

    def _seal_state(self, column: str) -> tuple[Any, Any, bytes]:
        check_column(column)
        key_id = self._keyset.primary_id
        header = bytes([self._fmt]) + key_id.to_bytes(KEY_ID_BYTES, "big")
        state = (*self._derive(key_id, column), header)
        self._seal[column] = state
        return state

    def _open_state(self, column: str, token: bytes) -> tuple[Any, Any]:
        if token[0] != self._fmt:
            raise DecryptionError(f"is not a {self._mode()} FieldCipher token: {_hint(token)}")
        key_id = int.from_bytes(token[1:HEAD], "big")
        if key_id not in self._keyset:
            raise DecryptionError(
                f"is under key 0x{key_id:08x}, which this keyset does not hold: the key was "
                "dropped, or the token belongs to another keyset"
            )
        state = self._derive(key_id, column)
        self._open.setdefault(column, {})[token[:HEAD]] = state
        return state

    def _shaped(self, token: object, minimum: int) -> bytes:
        """The slow path for a token that is not bytes or is short: convert or explain."""
        if not isinstance(token, bytes | bytearray | memoryview):
            raise DecryptionError(
                f"is a {type(token).__name__}, not the bytes that FieldCipher.encrypt returned"
            )
        token = bytes(token)
        if token and token[0] != self._fmt:
            raise DecryptionError(f"is not a {self._mode()} FieldCipher token: {_hint(token)}")
        if len(token) < minimum:
            raise DecryptionError("is too short to be a FieldCipher token (truncated?)")
        return token

    def _mode(self) -> str:
        return "deterministic" if self._deterministic else "randomized"


def check_column(column: object) -> None:
    """Refuse a column name that is not a str."""
    if type(column) is not str:
        raise ConfigurationError(f"column must be a str, got {type(column).__name__}")


def _where(column: str, position: int, single: bool) -> str:
    return f"for column {column!r}" if single else f"at position {position} of column {column!r}"


def _hint(token: bytes) -> str:
    if token[0] == FORMAT_DETERMINISTIC:
        return "it was made deterministic; open it with a cipher made with deterministic=True"
    if token[0] == FORMAT_RANDOMIZED:
        return "it was made randomized; open it with a cipher made with deterministic=False"
    return f"its format byte 0x{token[0]:02x} is unknown"
