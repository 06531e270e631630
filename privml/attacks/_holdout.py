"""Held-out rows: which rows of a dataset version a model trained on, and which it never saw.

A membership attack needs members and non-members of the *same* distribution.
``holdout=h`` on ``session.dp.fit`` / ``session.dp.train`` keeps a random
``floor(h · n)`` of the ``n`` rows the session reads out of training, drawn
from the operating system's randomness (never a caller's seed); the plan's N
and q count the training rows only, so the charge covers exactly the rows
trained on. Which positions of the version were read and which were held out
is recorded in the registered model's metadata as two zlib-compressed bitmaps
(:data:`MEMBERSHIP`): the registry row is authenticated under the vault key,
so someone editing the database without it cannot move a row between the sets
unnoticed, and the record names positions, not rows' values or the policy,
so it survives later policy changes.
"""

from __future__ import annotations

import base64
import math
import numbers
import secrets
import zlib
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError, IntegrityError

__all__ = [
    "MAX_HOLDOUT",
    "MAX_RECORDED_ROWS",
    "MEMBERSHIP",
    "Membership",
    "check_holdout",
    "held_out_count",
    "version_rows",
]

#: The registry metadata key holding a model's membership record.
MEMBERSHIP = "membership"
#: The largest share of the rows that may be held out.
MAX_HOLDOUT = 0.5
#: The most rows a dataset version may have for a membership record (each bitmap ≤ 2 MiB).
MAX_RECORDED_ROWS = 16_000_000


def check_holdout(value: Any) -> float:
    """``value`` as a float in [0, 0.5] (never a bool)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if not ok or not math.isfinite(float(value)) or not 0.0 <= float(value) <= MAX_HOLDOUT:
        raise ConfigurationError(
            f"holdout must be a fraction from 0 to {MAX_HOLDOUT} (0: train on every row), "
            + (f"got {value!r}" if ok else f"got a {type(value).__name__}")
        )
    return float(value)


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` readable rows are held out at ``fraction`` (fixed before any value)."""
    return math.floor(fraction * n)


def version_rows(read: int, positions: Any) -> int:
    """The rows a membership record spans: those read, up to the last position read."""
    if positions is None:
        return read
    return int(np.max(positions)) + 1 if len(positions) else 0


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.packbits(mask).tobytes(), 9)).decode("ascii")


def _unpack(text: Any, n: int) -> np.ndarray:
    if not isinstance(text, str):
        raise IntegrityError("the model's membership record is malformed")
    try:
        raw = zlib.decompressobj().decompress(base64.b64decode(text, validate=True), n // 8 + 2)
    except (ValueError, zlib.error):
        raise IntegrityError("the model's membership record is malformed") from None
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if len(bits) < n:
        raise IntegrityError("the model's membership record is shorter than its dataset version")
    return bits[:n].astype(bool)


class Membership:
    """The version's rows a model trained on (``members``) and held out (``held_out``).

    Examples
    --------
    >>> record = Membership.draw(rows=10, positions=None, fraction=0.3)
    >>> int(record.members.sum()), int(record.held_out.sum())
    (7, 3)
    >>> same = Membership.from_record(record.to_record())
    >>> bool((same.members == record.members).all())
    True
    """

    def __init__(self, rows: int, read: np.ndarray, held_out: np.ndarray, fraction: float) -> None:
        self.rows = rows
        self.fraction = fraction
        self.held_out = held_out & read
        self.members = read & ~held_out

    @classmethod
    def draw(cls, *, rows: int, positions: Any, fraction: float) -> Membership:
        """Hold out ``floor(fraction · n)`` of the ``n`` rows read, chosen with OS randomness.

        ``rows`` is the version's row count, ``positions`` the version positions of
        the rows read (None: all of them, in order).
        """
        if rows > MAX_RECORDED_ROWS:
            raise ConfigurationError(
                f"holdout= records membership for dataset versions of at most "
                f"{MAX_RECORDED_ROWS:,} rows; this one has {rows:,}: use holdout=0"
            )
        read = np.zeros(rows, dtype=bool)
        where = np.arange(rows) if positions is None else np.asarray(positions, dtype=np.int64)
        read[where] = True
        rng = np.random.default_rng(secrets.randbits(128))
        chosen = rng.choice(len(where), size=held_out_count(len(where), fraction), replace=False)
        held = np.zeros(rows, dtype=bool)
        held[where[chosen]] = True
        return cls(rows, read, held, fraction)

    def training_rows(self, positions: Any) -> np.ndarray:
        """For the rows read (at ``positions``), a mask of those trained on."""
        where = np.arange(self.rows) if positions is None else np.asarray(positions)
        out: np.ndarray = self.members[where]
        return out

    def to_record(self) -> dict[str, Any]:
        """JSON-ready: row count, fraction, counts and the two bitmaps."""
        return {
            "rows": self.rows,
            "fraction": self.fraction,
            "n_members": int(self.members.sum()),
            "n_held_out": int(self.held_out.sum()),
            "members": _pack(self.members),
            "held_out": _pack(self.held_out),
        }

    @classmethod
    def from_record(cls, record: Any) -> Membership:
        """Read a record back; a malformed or inconsistent one raises IntegrityError."""
        if not isinstance(record, dict) or not isinstance(record.get("rows"), int):
            raise IntegrityError("the model's membership record is malformed")
        rows = int(record["rows"])
        if not 0 <= rows <= MAX_RECORDED_ROWS:
            raise IntegrityError("the model's membership record is malformed")
        members = _unpack(record.get("members"), rows)
        held = _unpack(record.get("held_out"), rows)
        if (members & held).any() or record.get("n_members") != int(members.sum()):
            raise IntegrityError("the model's membership record is inconsistent")
        if record.get("n_held_out") != int(held.sum()):
            raise IntegrityError("the model's membership record is inconsistent")
        return cls(rows, members | held, held, float(record.get("fraction", 0.0)))
