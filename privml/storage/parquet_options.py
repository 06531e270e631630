"""How the vault encodes a Parquet file: no column statistics, floats stored plain.

Column statistics (each page's and row group's min and max) would be stored in
plaintext for the non-sensitive columns, and even for encrypted columns they add
bytes to every page for a reader that never filters on them: the vault reads
whole columns, then applies policy. They are not written.

Floating-point values barely compress (their low mantissa bits are noise), so
Snappy spends time on them for a few bytes; their columns are stored
uncompressed; and a float column whose first values are nearly all distinct
(measurements, amounts) is not dictionary-encoded either: the encoder would hash
values until its dictionary page overflows, then fall back to plain encoding
anyway. Floats that repeat keep their dictionary, and every other column keeps
dictionary encoding and Snappy (pyarrow's defaults). Reading depends on none of
these choices: files written with statistics, compressed floats or dictionaries
read the same.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["encode", "leaf_paths", "mostly_distinct", "write_options"]

_DEFAULT = "SNAPPY"
_FLOATS = "NONE"
#: How many leading values of a float column are looked at to choose its encoding.
SAMPLE = 4096


#: Room reserved for an encoded file: this many times the table's Arrow size, plus
#: :data:`SLACK` bytes (only the pages written are touched).
ROOM = 2
SLACK = 4 << 20


def encode(table: pa.Table, **options: Any) -> pa.Buffer:
    """``table`` as the bytes of one Parquet file (:func:`write_options`, unless
    ``options`` say otherwise), encoded into memory reserved up front.

    An output stream that grows would copy the file at every doubling; the room
    reserved (:data:`ROOM`, :data:`SLACK`) is never touched beyond what is written.
    A file that would not fit (or room that cannot be had) is encoded again into a
    growing stream.

    Examples
    --------
    >>> import pyarrow as pa
    >>> import pyarrow.parquet as pq
    >>> data = encode(pa.table({"age": [30, 41]}))
    >>> pq.read_table(pa.BufferReader(data)).column("age").to_pylist()
    [30, 41]
    """
    chosen = {**write_options(table), **options}
    try:
        room = pa.allocate_buffer(ROOM * table.nbytes + SLACK)
        sink = pa.FixedSizeBufferWriter(room)
        pq.write_table(table, sink, **chosen)
    except (OSError, MemoryError):  # no room (any other failure repeats below, and is raised)
        growing = pa.BufferOutputStream()
        pq.write_table(table, growing, **chosen)
        return growing.getvalue()
    return room.slice(0, sink.tell())


def write_options(table: pa.Table) -> dict[str, Any]:
    """The ``pyarrow.parquet`` writer options for ``table`` (or for a file whose first
    row group it is).

    Examples
    --------
    >>> import pyarrow as pa
    >>> table = pa.table({"age": [30, 41, 30], "income": [0.5, 1.25, 2.0]})
    >>> write_options(table)  # doctest: +NORMALIZE_WHITESPACE
    {'write_statistics': False, 'compression': {'age': 'SNAPPY', 'income': 'NONE'},
     'use_dictionary': ['age']}
    """
    options: dict[str, Any] = {"write_statistics": False, "compression": _DEFAULT}
    leaves = leaf_paths(table.schema)
    if leaves is None:
        return options
    options["compression"] = {path: _FLOATS if floating else _DEFAULT for path, floating in leaves}
    plain = {
        name
        for name, column in zip(table.column_names, table.columns, strict=True)
        if pa.types.is_floating(column.type) and mostly_distinct(column)
    }
    if plain:
        options["use_dictionary"] = [path for path, _ in leaves if path not in plain]
    return options


def mostly_distinct(column: pa.ChunkedArray | pa.Array) -> bool:
    """Whether more than half of the first :data:`SAMPLE` values present are distinct."""
    sample = column.slice(0, SAMPLE)
    present = len(sample) - int(sample.null_count)
    return present > 0 and int(pc.count_distinct(sample).as_py()) > present // 2


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
