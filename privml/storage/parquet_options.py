"""How the vault encodes a Parquet file: no column statistics, no compression of floats.

Column statistics (each page's and row group's min and max) would be stored in
plaintext for the non-sensitive columns, and even for encrypted columns they add
bytes to every page for a reader that never filters on them: the vault reads
whole columns, then applies policy. They are not written.

Floating-point values barely compress (their low mantissa bits are noise), so
Snappy spends time on them for a few bytes; their columns are stored
uncompressed. Every other column keeps Snappy (pyarrow's default). Reading does
not depend on either choice: files written with statistics and compressed floats
read the same.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["leaf_paths", "write_options"]

_DEFAULT = "SNAPPY"
_FLOATS = "NONE"


def write_options(schema: pa.Schema) -> dict[str, Any]:
    """The ``pyarrow.parquet`` writer options for a table of ``schema``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> write_options(pa.schema([("age", pa.int64()), ("income", pa.float64())]))
    {'write_statistics': False, 'compression': {'age': 'SNAPPY', 'income': 'NONE'}}
    """
    compression: dict[str, str] | str = _DEFAULT
    leaves = leaf_paths(schema)
    if leaves is not None:
        compression = {path: _FLOATS if floating else _DEFAULT for path, floating in leaves}
    return {"write_statistics": False, "compression": compression}


def leaf_paths(schema: pa.Schema) -> list[tuple[str, bool]] | None:
    """Each Parquet leaf column of ``schema`` as (dotted path, holds floats); None when a
    type's leaf paths are not known here (then every column is compressed alike)."""
    out: list[tuple[str, bool]] = []
    for field in schema:
        if not _leaves(field.name, field.type, out):
            return None
    return out


def _leaves(path: str, kind: pa.DataType, out: list[tuple[str, bool]]) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        # pyarrow writes Parquet's compliant nested type: <name>.list.element
        return _leaves(f"{path}.list.element", kind.value_type, out)
    if pa.types.is_struct(kind):
        return all(_leaves(f"{path}.{child.name}", child.type, out) for child in kind.fields)
    if pa.types.is_nested(kind):  # maps, unions, list views: not stored by the vault
        return False
    out.append((path, pa.types.is_floating(kind)))
    return True
