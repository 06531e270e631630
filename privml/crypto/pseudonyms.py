"""Keyed pseudonyms for identifier columns.

Why this is safe: a pseudonym is HMAC-SHA256 under a random per-dataset key,
truncated to 128 bits. Without the key, equal pseudonyms reveal only that two
records share an identifier; guessing an identifier and checking it needs the
key, unlike a plain hash, which a dictionary of all patient numbers inverts.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["pseudonymize"]

_TAG = b"privml/pseudonym/v1\x00"


def pseudonymize(values: Iterable[str | None], key: bytes) -> list[str | None]:
    """Return the hex pseudonym of each value (``None`` stays ``None``).

    Examples
    --------
    >>> key = bytes(32)
    >>> a, b, c = pseudonymize(["P-001", "P-002", "P-001"], key)
    >>> a == c, a == b, len(a)
    (True, False, 32)
    """
    inner = hmac.new(key, _TAG, hashlib.sha256)
    out: list[str | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        h = inner.copy()
        h.update(value.encode("utf-8"))
        out.append(h.hexdigest()[:32])
    return out
