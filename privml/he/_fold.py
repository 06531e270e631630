"""Folding the last layer into the square before it: one rescale instead of two.

A layer after a quadratic activation computes, per output ``m``::

    y_m = b_m + sum_j (u_mj * a_j + w_mj * a_j**2)

(``u`` and ``w`` are the layer's weights times the activation's linear and
quadratic coefficients; its constant is in ``b``). Unfolded, each ``a_j**2``
is relinearized and rescaled (one level), then multiplied by ``w_mj`` and
rescaled again (a second level). Folded:

1. ``a_j**2`` is the bare product ``a_j ⊗ a_j`` (three polynomials, scale
   ``σ²`` for ``a_j`` at scale ``σ``): no relinearization, no rescale.
2. ``w_mj`` is encoded at scale ``T / σ²`` so that every quadratic term
   lands at scale ``T = Δ² · P`` (``P = 2**fold_bits``, ``Δ`` the context's
   scale), and ``u_mj`` at scale ``T / σ`` so that the linear terms land there
   too; the bias is encoded at ``T``. All terms are added at that scale.
3. Each output is relinearized once and rescaled once, by the wide prime ``r``
   that follows the base ``q0`` in the chain (see :mod:`privml.he._params`): the output
   has scale ``T / r``, which SEAL records, so decryption divides it out exactly.

Depth goes from ``d + 1`` to ``d`` and relinearizations from one per hidden unit
to one per output. Precision: ``w_mj`` is rounded to a multiple of ``1/P``;
``fold_bits`` is sized (``_params._fold_bits``) so that the error this adds,
``sum_j (rounding of w_mj) * a_j**2``, stays well within the tolerance. Values
must fit: the accumulated sum at scale ``T`` in ``q0 * r``, and the output at
scale ``T / r`` in ``q0`` (the base: one prime, or several where one cannot hold it);
the requirements record both.
"""

from __future__ import annotations

import numpy as np

from ._seal import Cipher, Kit

__all__ = ["fold_layer"]


def fold_layer(
    kit: Kit,
    inputs: list[Cipher],
    level: int,
    coef: np.ndarray,
    bias: np.ndarray,
    *,
    fold_bits: int,
) -> list[Cipher]:
    """Outputs of the folded layer, one ciphertext each, at ``level + 1``.

    ``inputs`` are the activation's inputs ``a_j``, all at ``level``;
    ``coef[m, j, 0]`` multiplies ``a_j`` and ``coef[m, j, 1]`` multiplies ``a_j**2``.
    """
    target = kit.scale * kit.scale * 2.0**fold_bits
    squares: dict[int, Cipher] = {}
    for j in np.flatnonzero(np.any(coef[:, :, 1] != 0.0, axis=0)):
        sq = kit.api.Ciphertext()
        kit.evaluator.square(inputs[j], sq)
        squares[int(j)] = sq
    out = []
    for m in range(coef.shape[0]):
        terms = [
            (squares[int(j)] if k else inputs[j], float(coef[m, j, k]))
            for j, k in zip(*np.nonzero(coef[m]), strict=True)
        ]
        out.append(kit.neuron(terms, level, target, float(bias[m])))
    return out
