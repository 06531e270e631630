"""Contribution bounding: at most ``k`` rows per privacy unit, by a keyed random sample.

A person-level release is private for the person only if one person's rows can
move it by a bounded amount. Before any mechanism runs, the door keeps at most
``max_rows`` rows of each unit (each value of the unit column); every mechanism
is then calibrated to a person who contributes ``max_rows`` rows.

Which rows are kept is decided by a **keyed random ranking**: row ``i`` gets the
``i``-th 64-bit word of the AES-256-CTR keystream under the release's key (a
pseudorandom function of the position, computed for every row at once), and each
unit keeps its ``max_rows`` lowest-ranked rows. So the sample is

* unpredictable to the analyst (the key derives from the vault's key material);
* fresh for every release (the key derives from the release's request id), so
  repeated releases do not always drop the same rows, and never "the first k";
* deterministic for one release (same key, same rows), so a release can be
  computed again, e.g. after a crash, and gives the same bounded data.

Why bounding preserves person-level privacy: with a fresh secret key the ranks
are, to anyone without the key, independent uniform draws, so each person's
kept rows are a uniformly random subset of their own rows, independent of
every other person. Adding or removing one person leaves the distribution of
everyone else's kept rows unchanged and changes the bounded data by at most
``max_rows`` rows; a mechanism that is ε-DP for ``max_rows`` rows changed is
then ε-DP for one person changed.

Pure functions of arrays: reused by any mechanism that bounds contributions
(statistics, group-by, training) on data the door hands it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["bound_rows", "keyed_ranks"]

#: AES-CTR's initial counter block: zero, since every key is used for one ranking only.
_NONCE = bytes(16)


def keyed_ranks(key: bytes, rows: int, start: int = 0) -> np.ndarray:
    """One pseudorandom 64-bit rank per row position, from a 32-byte key (AES-256-CTR).

    ``start`` gives the ranks of positions ``start .. start + rows - 1``, the same
    words as a whole ranking would give them (CTR mode seeks to any block), so a
    version read in chunks is ranked exactly as it is read whole.

    Examples
    --------
    >>> a = keyed_ranks(bytes(32), 4)
    >>> a.dtype, len(a), bool((a == keyed_ranks(bytes(32), 4)).all())
    (dtype('uint64'), 4, True)
    >>> bool((keyed_ranks(bytes(32), 3, start=1) == a[1:]).all())
    True
    """
    if len(key) != 32:
        raise ValueError("internal: a bounding key has 32 bytes")
    if start < 0:
        raise ValueError("internal: a rank position is not negative")
    block, skip = divmod(start, 2)  # two 64-bit words per 16-byte AES block
    counter = (int.from_bytes(_NONCE, "big") + block).to_bytes(16, "big")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    stream = encryptor.update(bytes(8 * (rows + skip))) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8")[skip:]


def bound_rows(units: pd.Series | np.ndarray, max_rows: int, key: bytes) -> np.ndarray:
    """The positions of the rows kept: at most ``max_rows`` per unit value, keyed at random.

    Parameters
    ----------
    units : Series or array
        Each row's unit (e.g. a patient's pseudonym); nulls are not allowed.
    max_rows : int
        The most rows one unit keeps (at least 1).
    key : bytes
        32 bytes, secret and fresh per release: see the module docstring.

    Returns
    -------
    numpy.ndarray
        The kept row positions, in increasing order (so the kept rows keep their order).

    Examples
    --------
    >>> kept = bound_rows(pd.Series(["a"] * 5 + ["b"]), 2, bytes(32))
    >>> len(kept), 5 in kept
    (3, True)
    """
    if max_rows < 1:
        raise ValueError("internal: max_rows is at least 1")
    codes, _ = pd.factorize(pd.Series(units), use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError("internal: a privacy unit column holds no nulls")
    rows = len(codes)
    ranks = keyed_ranks(key, rows)
    # Sort by unit, then by rank: each unit's rows in its random order, then keep a prefix.
    order = np.lexsort((ranks, codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, rows]))
    within = np.arange(rows) - first
    return np.sort(order[within < max_rows])
