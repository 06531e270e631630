"""Per-value authenticated encryption for records, exports and online features.

:class:`FieldCipher` seals single values (a cell, an online feature, a field of
an export) so that each token decrypts only in the cell it was made for. Tokens
are ``bytes``:

- randomized (default): ``0x01 ‖ key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)``,
  AES-256-GCM, associated data binding (format, key id, dataset, column, row key);
- deterministic (``deterministic=True``): ``0x02 ‖ key id (4) ‖ SIV tag (16) ‖
  ciphertext``, AES-256-SIV, associated data binding (format, key id, dataset, column).

Why this is safe: see :mod:`privml.crypto._field_engine`, which holds the
encryption code and the argument next to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn, Protocol

import pandas as pd
import pyarrow as pa

from ..exceptions import ConfigurationError
from ._field_encoding import RowKey, Value, pack_row_key, pack_row_keys
from ._field_engine import Engine, check_column
from ._field_keyset import FieldKeyset, open_keyset, seal_keyset
from ._field_series import (
    arrow_row_keys,
    arrow_values,
    row_keys_list,
    uniform_kind,
    values_list,
)

__all__ = ["DropHook", "FieldCipher", "RotateHook"]


class RotateHook(Protocol):
    """Called by :meth:`FieldCipher.rotate` with the new key before it becomes primary.

    The vault passes one that stores the key wrapped; if it raises, nothing changes.
    """

    def __call__(self, *, key_id: int, material: bytes) -> None: ...


class DropHook(Protocol):
    """Called by :meth:`FieldCipher.drop` before a key leaves the keyset.

    The vault passes one that destroys the key's wrapped bytes; if it raises, nothing changes.
    """

    def __call__(self, *, key_id: int) -> None: ...


class FieldCipher:
    """Authenticated encryption of single values, bound to their dataset, column and row.

    Randomized AES-256-GCM by default: equal values give unrelated tokens, and a
    token decrypts only in the cell it was made for. ``deterministic=True`` uses
    AES-256-SIV instead, so equal values in a column give equal tokens (for joins
    and lookups). **Warning:** deterministic tokens reveal which rows share a value
    and how often each value occurs; anyone who knows the distribution of a column
    (diagnoses, postcodes, first names) can often match tokens to values by
    frequency analysis. Use it only for high-entropy identifiers, and prefer keyed
    pseudonyms when nothing needs decrypting.

    Supported values: ``str``, ``bytes``, ``int`` (any size), ``float`` (NaN and
    ±inf included), ``bool`` and ``None``. Each value decrypts to the type it had;
    numpy scalars and subclasses decrypt as the built-in type they stand for. Row
    keys are ``str``, ``bytes`` or ``int``. A token is 34 bytes longer than the
    value's bytes (22 when deterministic), so it reveals the value's length.

    Parameters
    ----------
    keyset : FieldKeyset
        The keys: the primary encrypts, the others only decrypt.
    dataset : str
        The dataset every token is bound to.
    deterministic : bool, default False
        Use AES-256-SIV (see the warning above).
    on_rotate : RotateHook, optional
        Called by :meth:`rotate` to store a new key before it is used (the vault's hook).
    on_drop : DropHook, optional
        Called by :meth:`drop` to destroy a stored key before it is dropped (the vault's hook).

    Examples
    --------
    >>> cipher = FieldCipher.generate(dataset="patients")
    >>> token = cipher.encrypt("diabetes", column="diagnosis", row_key="P-1001")
    >>> cipher.decrypt(token, column="diagnosis", row_key="P-1001")
    'diabetes'
    >>> cipher.decrypt(token, column="diagnosis", row_key="P-1002")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    privml.exceptions.DecryptionError: token for column 'diagnosis' failed authentication: ...
    """

    __slots__ = ("_dataset", "_deterministic", "_engine", "_keyset", "_on_drop", "_on_rotate")

    def __init__(
        self,
        keyset: FieldKeyset,
        *,
        dataset: str,
        deterministic: bool = False,
        on_rotate: RotateHook | None = None,
        on_drop: DropHook | None = None,
    ) -> None:
        if not isinstance(keyset, FieldKeyset):
            raise ConfigurationError("keyset must be a FieldKeyset (see FieldCipher.generate)")
        if not isinstance(dataset, str) or not dataset:
            raise ConfigurationError("dataset must be a non-empty str")
        self._dataset = dataset
        self._deterministic = bool(deterministic)
        self._on_rotate = on_rotate
        self._on_drop = on_drop
        self._use(keyset)

    def _use(self, keyset: FieldKeyset) -> None:
        self._keyset = keyset
        self._engine = Engine(keyset, dataset=self._dataset, deterministic=self._deterministic)

    # -- keys -----------------------------------------------------------------------------

    @classmethod
    def generate(cls, *, dataset: str, deterministic: bool = False) -> FieldCipher:
        """Return a standalone cipher with a new random keyset.

        Keep its keys with :meth:`to_bytes`; they are exported only sealed.
        """
        return cls(FieldKeyset.generate(), dataset=dataset, deterministic=deterministic)

    def to_bytes(self, *, wrap_key: bytes | str) -> bytes:
        """Export the keyset, dataset and mode, encrypted under ``wrap_key``.

        ``wrap_key`` is 32 random bytes or their URL-safe base64 form (44 characters,
        as :func:`privml.generate_key` returns). Keep it apart from the exported bytes.

        Examples
        --------
        >>> from privml import generate_key
        >>> wrap_key = generate_key()
        >>> cipher = FieldCipher.generate(dataset="patients")
        >>> token = cipher.encrypt(71, column="age", row_key=1)
        >>> again = FieldCipher.from_bytes(cipher.to_bytes(wrap_key=wrap_key), wrap_key=wrap_key)
        >>> again.decrypt(token, column="age", row_key=1)
        71
        """
        return seal_keyset(
            self._keyset,
            dataset=self._dataset,
            deterministic=self._deterministic,
            wrap_key=wrap_key,
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, wrap_key: bytes | str) -> FieldCipher:
        """Open what :meth:`to_bytes` exported.

        Raises :class:`~privml.exceptions.InvalidKeyError` for another ``wrap_key`` and
        :class:`~privml.exceptions.DecryptionError` if ``data`` was modified.
        """
        keyset, dataset, deterministic = open_keyset(data, wrap_key=wrap_key)
        return cls(keyset, dataset=dataset, deterministic=deterministic)

    def rotate(self) -> int:
        """Add a new random primary key and return its id.

        New values are encrypted under it; tokens under older keys still decrypt until
        they are re-encrypted (decrypt, then encrypt) and the old key is dropped with
        :meth:`drop`.

        Examples
        --------
        >>> cipher = FieldCipher.generate(dataset="d")
        >>> old = cipher.encrypt("x", column="c", row_key=1)
        >>> new_id = cipher.rotate()
        >>> cipher.keyset.primary_id == new_id, cipher.decrypt(old, column="c", row_key=1)
        (True, 'x')
        """
        rotated = self._keyset.rotated()
        if self._on_rotate is not None:
            key_id = rotated.primary_id
            self._on_rotate(key_id=key_id, material=rotated._material(key_id))
        self._use(rotated)
        return rotated.primary_id

    def drop(self, key_id: int) -> None:
        """Drop the decrypt-only key ``key_id`` for good: tokens under it stop decrypting.

        This is how values are crypto-shredded: re-encrypt what must stay readable
        first. A vault's cipher (:meth:`privml.Vault.field_cipher`) destroys the
        key's wrapped bytes in the vault (audited by key id) before dropping it;
        a standalone cipher drops it from memory, and keysets exported earlier
        with :meth:`to_bytes` still hold it. The primary key cannot be dropped.

        Examples
        --------
        >>> cipher = FieldCipher.generate(dataset="d")
        >>> old_id = cipher.keyset.primary_id
        >>> token = cipher.encrypt("x", column="c", row_key=1)
        >>> _ = cipher.rotate()
        >>> cipher.drop(old_id)
        >>> old_id in cipher.keyset
        False
        """
        smaller = self._keyset.without(key_id)  # refuses the primary and unknown ids
        if self._on_drop is not None:
            self._on_drop(key_id=key_id)
        self._use(smaller)

    @property
    def keyset(self) -> FieldKeyset:
        """The current keyset (immutable; :meth:`rotate` replaces it)."""
        return self._keyset

    @property
    def dataset(self) -> str:
        """The dataset every token is bound to."""
        return self._dataset

    @property
    def deterministic(self) -> bool:
        """Whether this cipher uses AES-SIV (equal values give equal tokens)."""
        return self._deterministic

    def __repr__(self) -> str:
        mode = "deterministic" if self._deterministic else "randomized"
        return (
            f"FieldCipher(dataset={self._dataset!r}, mode={mode!r}, "
            f"primary=0x{self._keyset.primary_id:08x}, keys={len(self._keyset.key_ids)})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a FieldCipher holds secret keys and is not pickled; use to_bytes(wrap_key=...)"
        )

    # -- single values --------------------------------------------------------------------

    def encrypt(self, value: Value, *, column: str, row_key: RowKey | None = None) -> bytes:
        """Encrypt one value for the cell ``(dataset, column, row_key)``.

        ``row_key`` (a stable record id: str, bytes or int) is required unless the
        cipher is deterministic, which does not bind rows and ignores it.
        """
        return self._engine.seal_one(value, row_key, column)

    def decrypt(self, token: bytes, *, column: str, row_key: RowKey | None = None) -> Value:
        """Decrypt a token made for ``(dataset, column, row_key)``; its original value.

        Raises :class:`~privml.exceptions.DecryptionError` if the token was made for
        another cell, dataset or keyset, was modified or truncated, or its key was dropped.
        """
        check_column(column)
        rows = None
        if not self._deterministic:
            rows = [pack_row_key(row_key)]
        return self._engine.open([token], rows, column, single=True)[0]

    # -- pandas ---------------------------------------------------------------------------

    def encrypt_series(
        self, series: Iterable[Any], *, column: str, row_keys: Iterable[Any] | None = None
    ) -> pd.Series:
        """Encrypt every value of ``series``; return a Series of tokens with the same index.

        ``row_keys`` gives each value's row key, in order (a column of record ids or
        ``frame.index``); required unless the cipher is deterministic. Missing values
        (``None``, ``pd.NA``, a missing string or category) encrypt as ``None``; a NaN
        in a float column stays a float NaN.

        Examples
        --------
        >>> frame = pd.DataFrame({"id": ["a", "b"], "glucose": [5.4, float("nan")]})
        >>> cipher = FieldCipher.generate(dataset="visits")
        >>> tokens = cipher.encrypt_series(frame["glucose"], column="glucose", row_keys=frame["id"])
        >>> cipher.decrypt_series(tokens, column="glucose", row_keys=frame["id"]).tolist()
        [5.4, nan]
        """
        check_column(column)
        arrow = arrow_values(series)
        values = values_list(series) if arrow is None else arrow
        rows: list[Any] | pa.Array | None = None
        if not self._deterministic:
            rows = arrow_row_keys(row_keys, len(values))
            if rows is None:
                rows = row_keys_list(row_keys, len(values))
        tokens = self._engine.seal(
            values, rows, column, value_kind=uniform_kind(series), row_kind=uniform_kind(row_keys)
        )
        return _like(series, tokens)

    def decrypt_series(
        self, tokens: Iterable[Any], *, column: str, row_keys: Iterable[Any] | None = None
    ) -> pd.Series:
        """Decrypt a Series of tokens; return the values (object dtype) with the same index.

        Fails as a whole with :class:`~privml.exceptions.DecryptionError`, naming the
        position of the first token that does not authenticate.
        """
        check_column(column)
        items = tokens.tolist() if isinstance(tokens, pd.Series | pd.Index) else list(tokens)
        rows = None
        if not self._deterministic:
            keys = arrow_row_keys(row_keys, len(items))
            if keys is None:
                keys = row_keys_list(row_keys, len(items))
            rows = pack_row_keys(keys, prefix=b"", kind=uniform_kind(row_keys))
        return _like(tokens, self._engine.open(items, rows, column))


def _like(source: object, values: list[Any]) -> pd.Series:
    if isinstance(source, pd.Series):
        return pd.Series(values, index=source.index, name=source.name, dtype=object)
    return pd.Series(values, dtype=object)
