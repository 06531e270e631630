"""The server's computation on ciphertexts.

Why the server cannot decrypt: it receives a public context, which holds the
public key and evaluation keys (relinearization, and Galois for rows packing)
but no secret key; CKKS decryption needs the secret key, TenSEAL refuses to
decrypt without one, and ``PublicContext`` refuses to wrap a context that has
one. Every value below is a ciphertext under the client's key, and so is the
result. Only additions and multiplications by plaintext weights happen here;
the link function is left to the client.

Scale drift: after each rescale TenSEAL labels the ciphertext with the nominal
scale Δ although the true scale is Δ²/q for the prime q just dropped, which
multiplies the value by Δ/q (about 1e-4 off for a 28-bit prime). The drift is
known from the public primes, so it is tracked here and divided out of the
plaintext coefficients of the next multiplication: results carry no drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._ir import Network

__all__ = ["Chain", "evaluate_chunk"]

Cipher = Any  # tenseal.CKKSVector


@dataclass(frozen=True)
class Chain:
    """The data primes (first to last) and nominal scale of a context."""

    primes: tuple[int, ...]
    scale: float

    def drift(self, level: int) -> float:
        """Factor the rescale after ``level`` earlier rescales multiplies values by."""
        return self.scale / self.primes[len(self.primes) - 1 - level]


@dataclass(frozen=True)
class _Value:
    cipher: Cipher
    level: int  # rescales so far
    drift: float  # decrypts to true value * drift


def evaluate_chunk(
    network: Network, inputs: list[Cipher], chain: Chain, *, packing: str, rows: int
) -> list[Cipher]:
    """Scores for one chunk: one ciphertext per output, slot ``i`` holding sample ``i``.

    ``inputs``: one ciphertext per feature (columns packing), or one holding
    ``rows`` samples column-major (rows packing).
    """
    coef, bias = network.terms(0)
    if packing == "columns":
        state = _affine([{1: _Value(ct, 0, 1.0)} for ct in inputs], coef, bias, chain)
    else:
        state = _first_layer_rows(inputs[0], network.layers[0].weight, bias, rows, chain)
    for i in range(1, len(network.layers)):
        coef, bias = network.terms(i)
        powers = [_powers(value, coef.shape[2], chain) for value in state]
        state = _affine(powers, coef, bias, chain)
    return [value.cipher for value in state]


def _first_layer_rows(
    packed: Cipher, weight: np.ndarray, bias: np.ndarray, rows: int, chain: Chain
) -> list[_Value]:
    # Each output is a plaintext-weighted sum of the feature blocks, added up by
    # log2(padded features) rotations; the result sits in slots 0..rows-1, aligned
    # across outputs so later layers work slot-wise as in columns packing.
    out = []
    for m in range(weight.shape[0]):
        acc = packed.enc_matmul_plain((weight[m] / chain.drift(0)).tolist(), rows)
        acc.add_(float(bias[m]))
        out.append(_Value(acc, 1, 1.0))
    return out


def _powers(x: _Value, degree: int, chain: Chain) -> dict[int, _Value]:
    """``{k: x**k}`` for k = 1..degree, each at depth ceil(log2(k)) above ``x``."""
    powers = {1: x}
    for k in range(2, degree + 1):
        high = 1 << (k.bit_length() - 1)
        a, b = (powers[k // 2], powers[k // 2]) if high == k else (powers[high], powers[k - high])
        level = max(a.level, b.level)
        cipher = a.cipher.square() if a is b else a.cipher.mul(b.cipher)
        powers[k] = _Value(cipher, level + 1, a.drift * b.drift * chain.drift(level))
    return powers


def _affine(
    powers: list[dict[int, _Value]], coef: np.ndarray, bias: np.ndarray, chain: Chain
) -> list[_Value]:
    """``out[m] = bias[m] + sum_jk coef[m, j, k-1] * powers[j][k]``, one rescale per product."""
    out = []
    for m in range(coef.shape[0]):
        acc = None
        level = 0
        for j, k in zip(*np.nonzero(coef[m]), strict=True):
            value = powers[j][k + 1]
            c = float(coef[m, j, k]) / (value.drift * chain.drift(value.level))
            term = value.cipher.mul(c)
            level = max(level, value.level + 1)
            if acc is None:
                acc = term
            else:
                acc.add_(term)
        if acc is None:  # an output that ignores its inputs is its bias
            acc = powers[0][1].cipher.mul(0.0)
            level = powers[0][1].level + 1
        acc.add_(float(bias[m]))
        out.append(_Value(acc, level, 1.0))
    return out
