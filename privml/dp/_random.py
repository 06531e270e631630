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
:func:`entropy`, the one place the operating system is asked.
"""

from __future__ import annotations

import os
import secrets

import numpy as np

__all__ = ["entropy", "fresh_generator", "fresh_random_state", "seed_bits", "system_random"]


def system_random() -> secrets.SystemRandom:
    """The operating system's CSPRNG, as diffprivlib's mechanisms take it."""
    return secrets.SystemRandom()


def entropy(nbytes: int) -> bytes:
    """``nbytes`` bytes from the operating system's CSPRNG (``os.urandom``)."""
    return os.urandom(nbytes)


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
