"""The server's computation on ciphertexts.

Why the server cannot decrypt: it receives a public context, which holds the
public key and evaluation keys (relinearization, and Galois for rows packing)
but no secret key; CKKS decryption needs the secret key, TenSEAL refuses to
decrypt without one, and ``PublicContext`` refuses to wrap a context that has
one. Every value below is a ciphertext under the client's key, and so is the
result. Only additions and multiplications by plaintext weights happen here;
the link function is left to the client.

Evaluation runs on SEAL ciphertexts (:mod:`privml.he._seal`). Each output
neuron is a plaintext-weighted sum accumulated at the un-rescaled level and
rescaled once; a last layer after a quadratic activation is folded into it
when the model's requirements say so (:mod:`privml.he._fold`).

Scale drift: after a rescale by the prime ``q``, a ciphertext's true scale is
``scale * scale' / q`` rather than the nominal ``Δ`` (about 1e-4 off for a
28-bit prime). SEAL keeps the true scale with each ciphertext, and every
plaintext weight is encoded at ``target / (the ciphertext's true scale)``, so
products land exactly at the target and results carry no drift. TenSEAL's
rows-packing first layer labels its output with ``Δ``; the true scale, known
from the public primes (:meth:`Chain.drift`), is put back on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._fold import fold_layer
from ._ir import Network
from ._seal import Cipher, Kit

__all__ = ["Chain", "evaluate_chunk"]


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


def evaluate_chunk(
    network: Network,
    inputs: list[Any],
    kit: Kit,
    chain: Chain,
    *,
    packing: str,
    rows: int,
    fold_bits: int = 0,
) -> list[Cipher]:
    """Scores for one chunk: one SEAL ciphertext per output, slot ``i`` holding sample ``i``.

    ``inputs``: one fresh SEAL ciphertext per feature (columns packing), or one
    TenSEAL vector holding ``rows`` samples column-major (rows packing).
    ``fold_bits`` > 0 folds the last layer into the quadratic activation before it.
    """
    coef, bias = network.terms(0)
    if packing == "columns":
        state = _affine(kit, [{1: _Value(ct, 0)} for ct in inputs], coef, bias)
    else:
        state = _first_layer_rows(kit, inputs[0], network.layers[0].weight, bias, rows, chain)
    last = len(network.layers) - 1
    for i in range(1, len(network.layers)):
        coef, bias = network.terms(i)
        if fold_bits and i == last and coef.shape[2] == 2:
            level = max(v.level for v in state)
            inputs_at = [_at(kit, value, level) for value in state]
            return fold_layer(kit, inputs_at, level, coef, bias, fold_bits=fold_bits)
        powers = [_powers(kit, value, coef.shape[2]) for value in state]
        state = _affine(kit, powers, coef, bias)
    return [value.cipher for value in state]


def _first_layer_rows(
    kit: Kit, packed: Any, weight: np.ndarray, bias: np.ndarray, rows: int, chain: Chain
) -> list[_Value]:
    # Each output is a plaintext-weighted sum of the feature blocks, added up by
    # log2(padded features) rotations (TenSEAL); the result sits in slots
    # 0..rows-1, aligned across outputs so later layers work slot-wise as in
    # columns packing. TenSEAL labels it with Δ; its true scale is Δ * drift(0).
    out = []
    for m in range(weight.shape[0]):
        (ct,) = packed.enc_matmul_plain(weight[m].tolist(), rows).ciphertext()
        ct.scale = chain.scale * chain.drift(0)
        if bias[m]:
            kit.evaluator.add_plain_inplace(ct, kit.plain(float(bias[m]), 1, ct.scale))
        out.append(_Value(ct, 1))
    return out


def _powers(kit: Kit, x: _Value, degree: int) -> dict[int, _Value]:
    """``{k: x**k}`` for k = 1..degree, each at depth ceil(log2(k)) above ``x``."""
    powers = {1: x}
    for k in range(2, degree + 1):
        high = 1 << (k.bit_length() - 1)
        a, b = (powers[k // 2], powers[k // 2]) if high == k else (powers[high], powers[k - high])
        level = max(a.level, b.level)
        out = kit.api.Ciphertext()
        if a is b:
            kit.evaluator.square(a.cipher, out)
        else:
            kit.evaluator.multiply(_at(kit, a, level), _at(kit, b, level), out)
        kit.relinearize(out)
        kit.evaluator.rescale_to_next_inplace(out)
        powers[k] = _Value(out, level + 1)
    return powers


def _at(kit: Kit, value: _Value, level: int) -> Cipher:
    return value.cipher if value.level == level else kit.to_level(value.cipher, level)


def _affine(
    kit: Kit, powers: list[dict[int, _Value]], coef: np.ndarray, bias: np.ndarray
) -> list[_Value]:
    """``out[m] = bias[m] + sum_jk coef[m, j, k-1] * powers[j][k]``, one rescale per output.

    Every term is brought to the deepest level among the terms used and
    multiplied at scale ``Δ * q`` (``q`` the prime the rescale divides by), so
    the sum rescales to exactly ``Δ``.
    """
    used = [(int(j), int(k)) for j, k in zip(*np.nonzero(np.any(coef != 0.0, axis=0)), strict=True)]
    level = max((powers[j][k + 1].level for j, k in used), default=powers[0][1].level)
    target = kit.scale * kit.prime(level)
    at_level = {(j, k): _at(kit, powers[j][k + 1], level) for j, k in used}
    out = []
    for m in range(coef.shape[0]):
        terms = [
            (at_level[int(j), int(k)], float(coef[m, j, k]))
            for j, k in zip(*np.nonzero(coef[m]), strict=True)
        ]
        out.append(_Value(kit.neuron(terms, level, target, float(bias[m])), level + 1))
    return out
