"""Parquet modular encryption with keys from the vault.

pyarrow generates a fresh data-encryption key (DEK) per column and per footer
of every file and asks a KMS client to wrap it under a "master key". privml's
KMS client uses the vault's per-(dataset, column) keys as master keys and
wraps with AES-256-GCM, binding the key id as associated data. The wrapped
DEKs travel inside the file; the master keys only in ``meta.db``, wrapped by
the vault key. Destroying a column key makes that column of every file that
used it unreadable (crypto-shredding).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import DecryptionError

__all__ = ["ParquetCrypto"]

_AD = b"privml/parquet-dek/v1\x00"
_CACHE = timedelta(minutes=10)


class _VaultKmsClient(pe.KmsClient):  # type: ignore[misc]
    def __init__(self, lookup: Callable[[str], bytes]) -> None:
        pe.KmsClient.__init__(self)
        self._lookup = lookup

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        nonce = secrets.token_bytes(12)
        aead = AESGCM(self._lookup(master_key_identifier))
        sealed = aead.encrypt(nonce, key_bytes, _AD + master_key_identifier.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        raw = base64.b64decode(wrapped_key)
        aead = AESGCM(self._lookup(master_key_identifier))
        try:
            return aead.decrypt(raw[:12], raw[12:], _AD + master_key_identifier.encode())
        except InvalidTag:
            raise DecryptionError(
                f"a Parquet data key wrapped under {master_key_identifier!r} failed authentication"
            ) from None


class ParquetCrypto:
    """Builds pyarrow encryption/decryption properties over a key lookup."""

    def __init__(self, lookup: Callable[[str], bytes]) -> None:
        self._factory = pe.CryptoFactory(lambda _config: _VaultKmsClient(lookup))
        self._kms = pe.KmsConnectionConfig()

    def encryption(
        self, *, footer_key: str, column_keys: Mapping[str, Sequence[str]]
    ) -> pe.FileEncryptionProperties:
        """Encrypt the footer under ``footer_key`` and each listed column under its key.

        ``column_keys`` maps a key id to the columns it protects. Columns not
        listed are stored in plaintext (non-sensitive columns).
        """
        config = pe.EncryptionConfiguration(
            footer_key=footer_key,
            column_keys={k: list(v) for k, v in column_keys.items()},
            encryption_algorithm="AES_GCM_V1",
            plaintext_footer=False,
            double_wrapping=False,
            cache_lifetime=_CACHE,
            internal_key_material=True,
            data_key_length_bits=256,
        )
        return self._factory.file_encryption_properties(self._kms, config)

    def decryption(self) -> pe.FileDecryptionProperties:
        """Properties that decrypt any file written by :meth:`encryption` with known keys."""
        config = pe.DecryptionConfiguration(cache_lifetime=_CACHE)
        return self._factory.file_decryption_properties(self._kms, config)

    def forget(self) -> None:
        """Drop pyarrow's cache of unwrapped data keys."""
        self._factory.remove_cache_entries_for_all_tokens()
