"""Keys and encryption for the vault.

The safe defaults sit at this level: :func:`generate_key` for a new vault key.
Key wrapping, pseudonyms and the Parquet key-management adapter are internal
to the vault and reached only through it.
"""

from .keys import generate_key

__all__ = ["generate_key"]
