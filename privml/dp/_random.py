"""Randomness for DP releases: nothing a caller can seed, replay or predict.

Two sources, both drawn fresh from the operating system for every release:

- :func:`system_random` (``secrets.SystemRandom``, the OS CSPRNG) for privml's
  own mechanisms and for diffprivlib's mechanisms, which accept it;
- :func:`fresh_random_state` for diffprivlib estimators and tools, which only
  take a ``numpy.random.RandomState``: a Philox generator keyed with 128 bits
  from ``secrets``. ``np.random.seed`` does not touch it, no two releases share
  it, and it is dropped from the fitted estimator after use (a kept generator
  could be rewound to replay the noise).

Never the global NumPy generator (``np.random.seed`` replays it), never a
``random_state`` the caller chose. Every seed and every coin privml draws itself
(these keys, DP-SGD's Poisson coins and noise seeds) comes through
:func:`entropy`, the one place the operating system is asked. Large draws (a
coin per row for every DP-SGD batch) come from :func:`keystream`: AES-256 in
counter mode under a key of 32 bytes from :func:`entropy`, used for that one
draw and dropped. That is a deterministic random bit generator of the kind
NIST SP 800-90A's CTR_DRBG builds on, and the same assumption (AES-256 is a
pseudorandom permutation) the vault's encryption rests on; for large draws it
costs a tenth of asking the operating system for every byte. Draws up to 32 KiB
are the operating system's bytes themselves: between training steps, setting up
the cipher (cold in the caches) costs about 150 µs, more than the kernel takes
for 32 KiB.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "entropy",
    "fresh_generator",
    "fresh_random_state",
    "keystream",
    "seed_bits",
    "system_random",
]

#: Draws up to this many bytes are the operating system's own (see the module's docstring).
DIRECT = 1 << 15

# Counter mode encrypts zeros into the keystream, this many bytes per call.
_ZEROS = memoryview(bytes(1 << 16))


def system_random() -> secrets.SystemRandom:
    """The operating system's CSPRNG, as diffprivlib's mechanisms take it."""
    return secrets.SystemRandom()


def entropy(nbytes: int) -> bytes:
    """``nbytes`` bytes from the operating system's CSPRNG (``os.urandom``)."""
    return os.urandom(nbytes)


def keystream(nbytes: int) -> memoryview:
    """``nbytes`` pseudorandom bytes: AES-256-CTR under a fresh key from :func:`entropy`.

    Up to :data:`DIRECT` bytes, :func:`entropy`'s bytes themselves.

    Examples
    --------
    >>> len(keystream(1000))
    1000
    >>> keystream(32) == keystream(32)  # a fresh key every call
    False
    """
    if nbytes <= DIRECT:
        return memoryview(entropy(nbytes))
    # update_into wants room for a block beyond what it writes; counter mode writes
    # exactly what it reads, so the pieces below fill ``out`` end to end.
    out = bytearray(nbytes + 15)
    view = memoryview(out)
    encryptor = Cipher(algorithms.AES(entropy(32)), modes.CTR(bytes(16))).encryptor()
    for start in range(0, nbytes, len(_ZEROS)):
        size = min(len(_ZEROS), nbytes - start)
        encryptor.update_into(_ZEROS[:size], view[start : start + size + 15])
    return view[:nbytes]


def seed_bits(bits: int) -> int:
    """A ``bits``-bit integer from :func:`entropy`, to key or seed a generator."""
    return int.from_bytes(entropy((bits + 7) // 8), "big") >> (-bits % 8)


def _key() -> int:
    return seed_bits(128)


def fresh_random_state() -> np.random.RandomState:
    """A ``RandomState`` over a Philox generator keyed from ``secrets`` (one per release)."""
    return np.random.RandomState(np.random.Philox(key=_key()))


def fresh_generator() -> np.random.Generator:
    """A ``Generator`` keyed from ``secrets``, for simulations on released values."""
    return np.random.Generator(np.random.Philox(key=_key()))
