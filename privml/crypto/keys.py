"""The vault key (key-encryption key) and the keys it wraps.

Why this is safe: every data key, the audit signing key and the audit MAC key
are random 256-bit keys, stored only wrapped (AES-256-GCM) under the vault key,
with associated data naming what the key is for, so a wrapped key moved to
another purpose fails to unwrap. The vault key itself is never stored; a
key-check value (HMAC-SHA256 of a fixed label) lets a wrong key fail at open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import (
    ConfigurationError,
    DecryptionError,
    InsecureKeyFileWarning,
    InvalidKeyError,
    KeyFormatError,
    MissingKeyError,
)

__all__ = ["ENV_VAR", "KeySource", "VaultKey", "generate_key"]

ENV_VAR = "PRIVML_VAULT_KEY"
KEY_BYTES = 32
_KCV_LABEL = b"privml/key-check/v1"
_WRAP_PREFIX = b"privml/wrap/v1\x00"
# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB, ~0.1 s; OWASP's minimum for scrypt.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def generate_key() -> bytes:
    """Return a new random 256-bit vault key, URL-safe base64 encoded (44 bytes).

    Keep it in a secrets manager or a file readable only by you; pass it as
    ``key=``, ``key_file=`` or the ``PRIVML_VAULT_KEY`` environment variable.

    Examples
    --------
    >>> key = generate_key()
    >>> len(key), len(base64.urlsafe_b64decode(key))
    (44, 32)
    """
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES))


_B64_TEXT = re.compile(rb"[A-Za-z0-9_-]{43}=")
_ACCEPTED = (
    "32 raw bytes (a bytes object), or their URL-safe base64 encoding: 44 characters "
    "ending in '=', as privml.generate_key() returns (str or bytes; surrounding "
    "whitespace is ignored)"
)


def _decode_key(key: object, *, what: str = "a vault key") -> bytes:
    """Decode a key given as 32 raw bytes or canonical URL-safe base64; refuse all else.

    Exactly one input per key is accepted in each form, so two different inputs
    never open the same vault unless they encode the same 32 bytes. Errors name
    the accepted forms, never the key.
    """
    if isinstance(key, bytes) and len(key) == KEY_BYTES:
        return key
    if isinstance(key, str):
        try:
            text = key.strip().encode("ascii")
        except UnicodeEncodeError:
            raise _refuse(what, "it holds non-ASCII characters") from None
    elif isinstance(key, bytes):
        text = key.strip()
    else:
        raise _refuse(what, f"got a {type(key).__name__}")
    if not _B64_TEXT.fullmatch(text):
        raise _refuse(what, "it is neither 32 raw bytes nor 44 URL-safe base64 characters")
    raw = base64.urlsafe_b64decode(text)
    if len(raw) != KEY_BYTES or base64.urlsafe_b64encode(raw) != text:
        raise _refuse(what, "its base64 is not the canonical encoding of 32 bytes")
    return raw


def _refuse(what: str, reason: str) -> KeyFormatError:
    return KeyFormatError(
        f"{what} must be {_ACCEPTED}; {reason}. A passphrase goes in passphrase= "
        "(it is stretched with scrypt); make a new key with privml.generate_key()."
    )


def _passphrase_bytes(passphrase: str) -> bytes:
    try:
        return passphrase.encode("utf-8")  # strict: a lone surrogate is refused, not replaced
    except UnicodeEncodeError:
        raise KeyFormatError(
            "the passphrase holds characters that are not valid Unicode text (lone "
            "surrogates); give it as a normal str"
        ) from None


@dataclass(frozen=True)
class KeySource:
    """Where a vault key came from, without the key itself (for messages and the audit)."""

    kind: str  # "key", "key_file", "passphrase", "env"


class VaultKey:
    """The key-encryption key of one vault. Wraps and unwraps the vault's other keys."""

    def __init__(self, raw: bytes, source: KeySource) -> None:
        if len(raw) != KEY_BYTES:
            raise ConfigurationError("internal: vault key must be 32 bytes")
        self._aead = AESGCM(raw)
        self._kcv = hmac.new(raw, _KCV_LABEL, hashlib.sha256).hexdigest()
        self.source = source

    @classmethod
    def resolve(
        cls,
        *,
        key: bytes | str | None,
        key_file: str | os.PathLike[str] | None,
        passphrase: str | None,
        salt: bytes | None,
    ) -> VaultKey:
        """Pick the one key source given, else ``PRIVML_VAULT_KEY``.

        ``salt`` is the vault's scrypt salt (needed only for a passphrase).
        """
        given = [
            n
            for n, v in (("key", key), ("key_file", key_file), ("passphrase", passphrase))
            if v is not None
        ]
        if len(given) > 1:
            raise ConfigurationError(
                f"give exactly one of key=, key_file=, passphrase= (got {given})"
            )
        if key is not None:
            return cls(_decode_key(key), KeySource("key"))
        if key_file is not None:
            path = Path(key_file)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise ConfigurationError(f"key file {str(path)!r} does not exist") from None
            if path.stat().st_mode & 0o077:
                warnings.warn(
                    f"key file {str(path)!r} can be read by other users; run: chmod 600 {path}",
                    InsecureKeyFileWarning,
                    stacklevel=3,
                )
            return cls(_decode_key(data, what="the key file's content"), KeySource("key_file"))
        if passphrase is not None:
            if not isinstance(passphrase, str) or len(passphrase) < 12:
                raise ConfigurationError("a passphrase must be a string of at least 12 characters")
            if salt is None:
                raise ConfigurationError("internal: passphrase needs the vault's salt")
            raw = hashlib.scrypt(
                _passphrase_bytes(passphrase),
                salt=salt,
                n=SCRYPT_N,
                r=SCRYPT_R,
                p=SCRYPT_P,
                maxmem=64 * 1024 * 1024,
                dklen=KEY_BYTES,
            )
            return cls(raw, KeySource("passphrase"))
        env = os.environ.get(ENV_VAR)
        if env:
            return cls(_decode_key(env, what=ENV_VAR), KeySource("env"))
        raise MissingKeyError(
            f"no vault key: pass key=, key_file= or passphrase=, or set {ENV_VAR}. "
            "Make a new key with privml.generate_key()."
        )

    def __repr__(self) -> str:
        return f"<privml VaultKey from {self.source.kind}>"

    @classmethod
    def new(
        cls,
        *,
        key: bytes | str | None,
        key_file: str | os.PathLike[str] | None,
        passphrase: str | None,
    ) -> tuple[VaultKey, str | None]:
        """Resolve a key for a new vault (or a rotation); with a passphrase, a fresh salt.

        Returns the key and the KDF record to store in the vault (None for raw keys).
        """
        salt = secrets.token_bytes(16) if passphrase is not None else None
        resolved = cls.resolve(key=key, key_file=key_file, passphrase=passphrase, salt=salt)
        if salt is None:
            return resolved, None
        record = {
            "name": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
        }
        return resolved, json.dumps(record)

    @property
    def check_value(self) -> str:
        """Key-check value stored in the vault so that a wrong key fails at open."""
        return self._kcv

    def verify(self, stored_check_value: str) -> None:
        """Raise :class:`InvalidKeyError` unless this key made ``stored_check_value``."""
        if not hmac.compare_digest(self._kcv, stored_check_value):
            raise InvalidKeyError(
                f"this key (from {self.source.kind}) does not open the vault: its key-check "
                "value does not match. Use the key the vault was created with."
            )

    def wrap(self, key: bytes, *, purpose: str) -> bytes:
        """Encrypt ``key`` under the vault key, bound to ``purpose``."""
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, key, _WRAP_PREFIX + purpose.encode())

    def unwrap(self, wrapped: bytes, *, purpose: str) -> bytes:
        """Inverse of :meth:`wrap`; :class:`DecryptionError` if tampered or moved."""
        try:
            return self._aead.decrypt(wrapped[:12], wrapped[12:], _WRAP_PREFIX + purpose.encode())
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce and tag
            raise DecryptionError(
                f"wrapped key for {purpose!r} failed authentication: meta.db was modified "
                "or the key belongs to another slot"
            ) from None


def new_data_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return secrets.token_bytes(KEY_BYTES)
