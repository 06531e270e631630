"""Byte encodings for :class:`~privml.crypto.FieldCipher`: values, row keys, contexts, nonces.

Every encoding here is unambiguous (fixed-size fields or length prefixes, and a
type tag in front of every value), so two different inputs never share bytes:

- a **value** becomes ``tag ‖ payload`` (see :data:`VALUE_TAGS`);
- a **row key** becomes ``tag ‖ payload`` and is always the *last* field of the
  associated data, so its length is implied;
- a **context** (associated data prefix, key-derivation info) is
  ``label ‖ format ‖ key id ‖ len ‖ dataset ‖ len ‖ column`` with 4-byte
  big-endian lengths.
"""

from __future__ import annotations

import math
import operator
import os
import struct
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import ConfigurationError, IntegrityError

__all__ = [
    "FORMAT_DETERMINISTIC",
    "FORMAT_RANDOMIZED",
    "KEY_ID_BYTES",
    "NONCE_BYTES",
    "RowKey",
    "VALUE_TAGS",
    "Value",
    "ad_prefix",
    "derivation_info",
    "join_prefixed",
    "pack_row_key",
    "pack_row_keys",
    "pack_value",
    "pack_values",
    "random_nonce",
    "random_nonce_block",
    "random_nonces",
    "split_nonces",
    "unpack_value",
    "unpack_values",
]

Value = str | bytes | int | float | bool | None
RowKey = str | bytes | int

FORMAT_RANDOMIZED: Final = 0x01  # AES-256-GCM, random nonce, bound to the row
FORMAT_DETERMINISTIC: Final = 0x02  # AES-256-SIV, no nonce, not bound to the row
KEY_ID_BYTES: Final = 4
NONCE_BYTES: Final = 12

_AD_LABEL = b"privml/field/ad\x00"
_KDF_LABEL = b"privml/field/key\x00"

_NONE, _BOOL, _INT, _FLOAT, _STR, _BYTES = b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
VALUE_TAGS: Final = {"None": 0, "bool": 1, "int": 2, "float": 3, "str": 4, "bytes": 5}
_DOUBLE = struct.Struct(">d")


def _length_prefixed(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


def _context(label: bytes, fmt: int, key_id: bytes, dataset: str, column: str) -> bytes:
    return label + bytes([fmt]) + key_id + _length_prefixed(dataset) + _length_prefixed(column)


def ad_prefix(fmt: int, key_id: bytes, dataset: str, column: str) -> bytes:
    """Associated data of one (format, key, dataset, column); the row key is appended per value.

    Examples
    --------
    >>> ad_prefix(FORMAT_RANDOMIZED, bytes(4), "visits", "age")
    b'privml/field/ad\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x06visits\\x00\\x00\\x00\\x03age'
    """
    return _context(_AD_LABEL, fmt, key_id, dataset, column)


def derivation_info(fmt: int, dataset: str, column: str) -> bytes:
    """HKDF ``info`` for the subkey of one (format, dataset, column)."""
    return _context(_KDF_LABEL, fmt, b"", dataset, column)


# -- values -------------------------------------------------------------------------------


def _pack_str(value: str) -> bytes:
    # surrogatepass: every Python str round-trips, lone surrogates included.
    return _STR + value.encode("utf-8", "surrogatepass")


def _pack_bytes(value: bytes) -> bytes:
    return _BYTES + value


def _pack_int(value: int) -> bytes:
    # Two's complement, big-endian, the fewest whole bytes that hold the sign: any size.
    return _INT + value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


def _pack_float(value: float) -> bytes:
    return _FLOAT + _DOUBLE.pack(value)


def _pack_bool(value: bool) -> bytes:
    return _BOOL + (b"\x01" if value else b"\x00")


def _pack_none(value: object) -> bytes:
    return _NONE


_PACKERS: dict[type, Callable[[object], bytes]] = {
    str: _pack_str,  # type: ignore[dict-item]
    bytes: _pack_bytes,  # type: ignore[dict-item]
    int: _pack_int,  # type: ignore[dict-item]
    float: _pack_float,  # type: ignore[dict-item]
    bool: _pack_bool,  # type: ignore[dict-item]
    type(None): _pack_none,
}


def _pack_other(value: object) -> bytes:
    """Subclasses and numpy scalars: mapped to the Python type they stand for."""
    if isinstance(value, bool | np.bool_):
        return _pack_bool(bool(value))
    if isinstance(value, int | np.integer):
        return _pack_int(int(value))
    if isinstance(value, float | np.floating):
        return _pack_float(float(value))
    if isinstance(value, str):
        return _pack_str(str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return _pack_bytes(bytes(value))
    raise ConfigurationError(
        f"FieldCipher encrypts str, bytes, int, float, bool and None, not "
        f"{type(value).__name__}; convert it first (for example str(value) or "
        "value.isoformat() for a date)"
    )


def pack_value(value: object) -> bytes:
    """Encode a value as ``tag ‖ payload`` so that it decrypts to the same type.

    Examples
    --------
    >>> [pack_value(v).hex() for v in (None, True, -1, 300, "é", b"\\x00")]
    ['00', '0101', '02ff', '02012c', '04c3a9', '0500']
    """
    packer = _PACKERS.get(type(value))
    return packer(value) if packer is not None else _pack_other(value)


def pack_values(values: list[Any] | pa.Array, *, kind: type | None = None) -> list[bytes]:
    """:func:`pack_value` of each value; ``kind`` says every value has that exact type.

    An Arrow array of strings without nulls (``kind`` is then ``str``) is packed in C.

    Examples
    --------
    >>> pack_values(["a", 1]) == pack_values(["a"], kind=str) + pack_values([1], kind=int)
    True
    >>> pack_values(pa.array(["a", "é"]), kind=str) == pack_values(["a", "é"])
    True
    """
    if isinstance(values, pa.Array):
        return join_prefixed(_STR, values)
    if kind is str:
        return [_STR + v.encode("utf-8", "surrogatepass") for v in values]
    if kind is float:
        pack = _DOUBLE.pack
        return [_FLOAT + pack(v) for v in values]
    get = _PACKERS.get
    return [get(type(v), _pack_other)(v) for v in values]


_BINARY = pa.large_binary()
_NOTHING = pa.scalar(b"", _BINARY)


def join_prefixed(prefix: bytes, array: pa.Array) -> list[bytes]:
    """``prefix + item`` for each item of an Arrow array of str, bytes or int, made in C.

    The bytes equal the Python encoders' (UTF-8 for str, ``b"%d"`` for int), with
    no Python-level step per item: the encoders' one cost on a big column. The array
    must hold no nulls.

    Examples
    --------
    >>> join_prefixed(b"i", pa.array([-7, 300])), join_prefixed(b"\\x04", pa.array(["é"]))
    ([b'i-7', b'i300'], [b'\\x04\\xc3\\xa9'])
    """
    if pa.types.is_integer(array.type):
        array = array.cast(pa.large_string())
    items = pc.binary_join_element_wise(pa.scalar(prefix, _BINARY), array.cast(_BINARY), _NOTHING)
    joined: list[bytes] = items.to_numpy(zero_copy_only=False).tolist()
    return joined


def _malformed() -> IntegrityError:
    return IntegrityError(
        "an authenticated value has an unknown encoding: it was made by a newer privml "
        "or by other software using the same key"
    )


def _unpack_none(plaintext: bytes) -> Value:
    if len(plaintext) != 1:
        raise _malformed()
    return None


def _unpack_bool(plaintext: bytes) -> Value:
    if plaintext not in (b"\x01\x00", b"\x01\x01"):
        raise _malformed()
    return plaintext[1] == 1


def _unpack_int(plaintext: bytes) -> Value:
    if len(plaintext) < 2:
        raise _malformed()
    return int.from_bytes(plaintext[1:], "big", signed=True)


def _unpack_float(plaintext: bytes) -> Value:
    if len(plaintext) != 9:
        raise _malformed()
    return float(_DOUBLE.unpack_from(plaintext, 1)[0])


def _unpack_str(plaintext: bytes) -> Value:
    try:
        return plaintext[1:].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise _malformed() from None


def _unpack_bytes(plaintext: bytes) -> Value:
    return plaintext[1:]


_UNPACKERS: tuple[Callable[[bytes], Value], ...] = (
    _unpack_none,
    _unpack_bool,
    _unpack_int,
    _unpack_float,
    _unpack_str,
    _unpack_bytes,
)


def unpack_value(plaintext: bytes) -> Value:
    """Inverse of :func:`pack_value`.

    Examples
    --------
    >>> unpack_value(pack_value(2**100)) == 2**100, unpack_value(pack_value(-0.0))
    (True, -0.0)
    """
    try:
        unpacker = _UNPACKERS[plaintext[0]]
    except IndexError:
        raise _malformed() from None
    return unpacker(plaintext)


def unpack_values(plaintexts: list[bytes]) -> list[Value]:
    """:func:`unpack_value` of each plaintext."""
    try:
        return [_UNPACKERS[p[0]](p) for p in plaintexts]
    except IndexError:
        raise _malformed() from None


# -- row keys -----------------------------------------------------------------------------


def _row_str(key: str) -> bytes:
    return b"s" + key.encode("utf-8", "surrogatepass")


def _row_bytes(key: bytes) -> bytes:
    return b"b" + key


def _row_int(key: int) -> bytes:
    return b"i" + b"%d" % key


_ROW_PACKERS: dict[type, Callable[[object], bytes]] = {
    str: _row_str,  # type: ignore[dict-item]
    int: _row_int,  # type: ignore[dict-item]
    bytes: _row_bytes,  # type: ignore[dict-item]
}


def _row_other(key: object) -> bytes:
    if isinstance(key, str):
        return _row_str(str(key))
    if isinstance(key, bytes | bytearray | memoryview):
        return _row_bytes(bytes(key))
    if isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_):
        return _row_int(operator.index(key))
    if key is None or (isinstance(key, float) and math.isnan(key)):
        raise ConfigurationError(
            "a row key is missing: randomized encryption binds every value to its row, so "
            "pass row_key= (a stable record id: str, bytes or int) for each value, or use a "
            "cipher made with deterministic=True"
        )
    raise ConfigurationError(
        f"a row key must be str, bytes or int (a stable record id), not {type(key).__name__}"
    )


def pack_row_key(key: object) -> bytes:
    """Encode a row key as ``tag ‖ payload`` (``"7"``, ``b"7"`` and ``7`` all differ).

    Examples
    --------
    >>> pack_row_key("P-7"), pack_row_key(b"P-7"), pack_row_key(-7)
    (b'sP-7', b'bP-7', b'i-7')
    """
    packer = _ROW_PACKERS.get(type(key))
    return packer(key) if packer is not None else _row_other(key)


def pack_row_keys(
    keys: list[Any] | pa.Array, *, prefix: bytes, kind: type | None = None
) -> list[bytes]:
    """``prefix + pack_row_key(key)`` for each key; ``kind`` says every key has that type.

    An Arrow array of integers or strings without nulls is packed in C.

    Examples
    --------
    >>> pack_row_keys([1, "1"], prefix=b"ad|")
    [b'ad|i1', b'ad|s1']
    >>> pack_row_keys([1, 2], prefix=b"ad|", kind=int)
    [b'ad|i1', b'ad|i2']
    >>> pack_row_keys(pa.array([-1, 2]), prefix=b"ad|") == pack_row_keys([-1, 2], prefix=b"ad|")
    True
    """
    if isinstance(keys, pa.Array):
        tag = b"i" if pa.types.is_integer(keys.type) else b"s"
        return join_prefixed(prefix + tag, keys)
    if kind is int:
        tagged = prefix + b"i"
        return [tagged + b"%d" % k for k in keys]
    if kind is str:
        tagged = prefix + b"s"
        return [tagged + k.encode("utf-8", "surrogatepass") for k in keys]
    get = _ROW_PACKERS.get
    return [prefix + get(type(k), _row_other)(k) for k in keys]


# -- nonces -------------------------------------------------------------------------------


def random_nonce() -> bytes:
    """One fresh 96-bit nonce from the operating system's CSPRNG."""
    return os.urandom(NONCE_BYTES)


def random_nonce_block(count: int) -> bytes:
    """``count`` fresh 96-bit nonces, end to end, from one read of the OS's CSPRNG."""
    return os.urandom(NONCE_BYTES * count)


def split_nonces(block: bytes, header: bytes) -> tuple[list[bytes], list[bytes]]:
    """The nonces of ``block``, each alone and each behind ``header`` (a token's start).

    Both lists are cut in C from one copy of the block, so a sealed value costs one
    concatenation (``header ‖ nonce`` and the ciphertext), not three.

    Examples
    --------
    >>> headed, nonces = split_nonces(bytes(range(24)), b"H")
    >>> headed[1] == b"H" + nonces[1] == b"H" + bytes(range(12, 24))
    True
    """
    count = len(block) // NONCE_BYTES
    nonces = np.frombuffer(block, dtype=np.uint8).reshape(count, NONCE_BYTES)
    headed = np.empty((count, len(header) + NONCE_BYTES), dtype=np.uint8)
    headed[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    headed[:, len(header) :] = nonces
    return _fixed(headed), _fixed(nonces)


def _fixed(rows: np.ndarray) -> list[bytes]:
    """Each row of a 2-d uint8 array as one bytes object (trailing zero bytes kept)."""
    count, width = rows.shape
    data = pa.py_buffer(np.ascontiguousarray(rows))
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), count, [None, data])
    cut: list[bytes] = array.to_numpy(zero_copy_only=False).tolist()
    return cut


def random_nonces(count: int) -> list[bytes]:
    """``count`` fresh 96-bit nonces from one read of the operating system's CSPRNG.

    One read instead of ``count`` reads makes bulk encryption about twice as fast; each
    nonce is still 96 independent uniformly random bits.

    Examples
    --------
    >>> nonces = random_nonces(3)
    >>> [len(n) for n in nonces], len(set(nonces))
    ([12, 12, 12], 3)
    """
    block = os.urandom(NONCE_BYTES * count)
    return [block[i : i + NONCE_BYTES] for i in range(0, len(block), NONCE_BYTES)]
