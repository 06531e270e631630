"""Helpers for the FieldCipher tests (imported by name: tests/crypto is on sys.path)."""

from __future__ import annotations

import math
import struct

from hypothesis import strategies as st

# Every supported type, with the edges: empty str/bytes, lone surrogates and other
# unicode, NaN, ±inf, -0.0, subnormals, and ints far beyond 64 bits.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**4096), max_value=2**4096),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324]),
    st.text(st.characters(exclude_categories=())),
    st.binary(),
)
ROW_KEYS = st.one_of(st.text(), st.binary(), st.integers())


def same(a: object, b: object) -> bool:
    """Equal value and equal type; floats compared bit for bit (NaN, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)  # type: ignore[arg-type]
    return a == b
