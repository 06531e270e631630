"""Keys and encryption for the vault.

The safe defaults sit at this level: :func:`generate_key` for a new vault key, and
:class:`FieldCipher` for per-value authenticated encryption of records, exports and
online features (randomized AES-256-GCM bound to dataset, column and row;
deterministic AES-SIV only when asked for), with its :class:`FieldKeyset`.
Key wrapping, pseudonyms and the Parquet key-management adapter are internal
to the vault and reached only through it.
"""

from ._field_keyset import FieldKeyset
from .field import FieldCipher
from .keys import generate_key

__all__ = ["FieldCipher", "FieldKeyset", "generate_key"]
