"""Keysets for :class:`~privml.crypto.FieldCipher`: one primary key plus decrypt-only older keys.

A keyset maps 32-bit key ids to 256-bit keys. The primary key encrypts; every
key decrypts the tokens that name its id. Keysets are immutable: rotation makes
a new keyset, so a cipher that shares one never sees it change underneath.

Exported keysets are sealed: :func:`seal_keyset` encrypts the whole keyset
(dataset, mode, primary id and every key) with AES-256-GCM under a key derived
from the caller's wrap key, so nothing in it can be read, swapped or downgraded
without that key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import ConfigurationError, DecryptionError, IntegrityError, InvalidKeyError
from .keys import KEY_BYTES, _decode_key

__all__ = ["FieldKeyset", "open_keyset", "seal_keyset"]

_MAX_ID = 2**32 - 1


def _check_key_id(key_id: object) -> int:
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 <= key_id <= _MAX_ID:
        raise ConfigurationError(f"a key id is an int in [0, 2**32), got {key_id!r}")
    return key_id


class FieldKeyset:
    """An immutable set of field-encryption keys: one primary, the others decrypt-only.

    Parameters
    ----------
    keys : mapping of int to bytes
        Key id (an int in ``[0, 2**32)``) to 32 random bytes. This is the door for
        code that stores keys itself (the vault builds a keyset from its unwrapped
        key rows); anyone else should call :meth:`generate`.
    primary : int
        The id of the key that encrypts; it must be in ``keys``.

    Examples
    --------
    >>> keyset = FieldKeyset.generate()
    >>> rotated = keyset.rotated()
    >>> rotated.primary_id != keyset.primary_id, len(rotated.key_ids)
    (True, 2)
    >>> repr(keyset).startswith("FieldKeyset(primary=0x")
    True
    """

    __slots__ = ("_keys", "_primary")

    def __init__(self, keys: Mapping[int, bytes], *, primary: int) -> None:
        checked: dict[int, bytes] = {}
        for key_id, material in keys.items():
            if not isinstance(material, bytes) or len(material) != KEY_BYTES:
                raise ConfigurationError(
                    f"key 0x{_check_key_id(key_id):08x} must be {KEY_BYTES} bytes"
                )
            checked[_check_key_id(key_id)] = material
        if _check_key_id(primary) not in checked:
            raise ConfigurationError(f"the primary key 0x{primary:08x} is not in the keyset")
        self._keys = checked
        self._primary = primary

    @classmethod
    def generate(cls) -> FieldKeyset:
        """Return a keyset holding one new random primary key."""
        key_id = _new_id(())
        return cls({key_id: secrets.token_bytes(KEY_BYTES)}, primary=key_id)

    @property
    def primary_id(self) -> int:
        """The id of the key that encrypts."""
        return self._primary

    @property
    def key_ids(self) -> tuple[int, ...]:
        """Every key id, ascending."""
        return tuple(sorted(self._keys))

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def rotated(self) -> FieldKeyset:
        """Return a keyset with a new random primary key; the old keys stay, decrypt-only."""
        key_id = _new_id(self._keys)
        return FieldKeyset({**self._keys, key_id: secrets.token_bytes(KEY_BYTES)}, primary=key_id)

    def without(self, key_id: int) -> FieldKeyset:
        """Return a keyset without ``key_id`` (not the primary): its tokens no longer decrypt.

        Re-encrypt what it protects first; dropping a key is how its values are erased.
        """
        if key_id == self._primary:
            raise ConfigurationError("the primary key cannot be dropped; rotate first")
        if key_id not in self._keys:
            raise ConfigurationError(f"key 0x{_check_key_id(key_id):08x} is not in the keyset")
        return FieldKeyset(
            {k: v for k, v in self._keys.items() if k != key_id}, primary=self._primary
        )

    def _material(self, key_id: int) -> bytes:
        """The key behind ``key_id``; for privml's own code only. Never log it."""
        return self._keys[key_id]

    def __repr__(self) -> str:
        ids = ", ".join(f"0x{k:08x}" for k in self.key_ids)
        return f"FieldKeyset(primary=0x{self._primary:08x}, keys=[{ids}])"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a FieldKeyset holds secret keys and is not pickled; export it sealed with "
            "FieldCipher.to_bytes(wrap_key=...)"
        )


def _new_id(taken: Iterable[int]) -> int:
    used = set(taken)
    while True:
        key_id = secrets.randbits(32)
        if key_id not in used:
            return key_id


# -- sealed export ------------------------------------------------------------------------

_MAGIC = b"privml/field-keyset/v1\x00"
_KCV_LABEL = b"privml/field-keyset/key-check/v1"
_KCV_BYTES = 16
_NONCE_BYTES = 12


def _wrapping_key(wrap_key: bytes | str) -> tuple[AESGCM, bytes]:
    raw = _decode_key(wrap_key, what="wrap_key")
    kcv = hmac.new(raw, _KCV_LABEL, hashlib.sha256).digest()[:_KCV_BYTES]
    hkdf = HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=_MAGIC)
    return AESGCM(hkdf.derive(raw)), kcv


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def seal_keyset(
    keyset: FieldKeyset, *, dataset: str, deterministic: bool, wrap_key: bytes | str
) -> bytes:
    """Encrypt ``keyset`` with its dataset and mode under ``wrap_key``.

    Layout: ``magic ‖ key-check value (16) ‖ nonce (12) ‖ AES-256-GCM(payload)``,
    associated data ``magic ‖ key-check value``; payload ``mode (1) ‖ primary id (4)
    ‖ len ‖ dataset ‖ count (4) ‖ (id (4) ‖ key (32))*``.
    """
    aead, kcv = _wrapping_key(wrap_key)
    payload = bytearray([1 if deterministic else 0])
    payload += keyset.primary_id.to_bytes(4, "big")
    payload += _lp(dataset.encode("utf-8", "surrogatepass"))
    payload += len(keyset.key_ids).to_bytes(4, "big")
    for key_id in keyset.key_ids:
        payload += key_id.to_bytes(4, "big") + keyset._material(key_id)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _MAGIC + kcv + nonce + aead.encrypt(nonce, bytes(payload), _MAGIC + kcv)


def open_keyset(data: bytes, *, wrap_key: bytes | str) -> tuple[FieldKeyset, str, bool]:
    """Inverse of :func:`seal_keyset`: return ``(keyset, dataset, deterministic)``."""
    if not isinstance(data, bytes) or not data.startswith(_MAGIC):
        raise DecryptionError("these bytes are not a keyset exported by FieldCipher.to_bytes")
    aead, kcv = _wrapping_key(wrap_key)
    head = len(_MAGIC)
    if not hmac.compare_digest(data[head : head + _KCV_BYTES], kcv):
        raise InvalidKeyError(
            "this wrap_key did not seal this keyset (key-check value differs); pass the "
            "wrap_key given to FieldCipher.to_bytes"
        )
    nonce = data[head + _KCV_BYTES : head + _KCV_BYTES + _NONCE_BYTES]
    try:
        payload = aead.decrypt(nonce, data[head + _KCV_BYTES + _NONCE_BYTES :], _MAGIC + kcv)
    except (InvalidTag, ValueError):
        raise DecryptionError(
            "the exported keyset failed authentication: it was modified"
        ) from None
    return _parse(payload)


def _parse(payload: bytes) -> tuple[FieldKeyset, str, bool]:
    try:
        primary = int.from_bytes(payload[1:5], "big")
        size = int.from_bytes(payload[5:9], "big")
        dataset = payload[9 : 9 + size].decode("utf-8", "surrogatepass")
        at = 9 + size
        count = int.from_bytes(payload[at : at + 4], "big")
        at += 4
        keys: dict[int, bytes] = {}
        for _ in range(count):
            keys[int.from_bytes(payload[at : at + 4], "big")] = payload[at + 4 : at + 36]
            at += 36
        if at != len(payload) or payload[0] not in (0, 1):
            raise ValueError("trailing or missing bytes")
        return FieldKeyset(keys, primary=primary), dataset, payload[0] == 1
    except (ValueError, ConfigurationError):  # authentic, but not a layout this privml wrote
        raise IntegrityError(
            "the exported keyset has an unknown layout: it was made by a newer privml"
        ) from None
