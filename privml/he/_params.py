"""Choosing CKKS parameters from a model's multiplicative depth and value sizes.

The modulus chain is ``[q0, s, ..., s, special]``: one ``s``-bit prime per
rescale (the scale is ``2**s``), a first prime ``q0 = s + h`` whose ``h`` extra
bits hold the largest value left at the end, and a special prime for key
switching as large as the largest other prime. Where ``s + h`` exceeds the
60 bits one prime may have (large outputs such as unnormalized regression
scores, at a tight tolerance), the base is several primes that no rescale
divides by, ``[q0, q0', ..., s, ..., s, special]``, used only where a one-prime
base fits no ring (so every model that fits with one prime keeps its parameters).
The total must stay within the HomomorphicEncryption.org standard's bound for
the ring size at the requested security, which is what makes the parameters
secure; within it, privml picks the smallest ring that fits and then the
largest scale (leftover bits go to precision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from ._ir import Network

__all__ = ["HEParameters", "Requirements", "derive", "requirements"]

#: Largest total coefficient-modulus bits per ring size N (HE standard, ternary secret).
MAX_MODULUS_BITS: dict[int, dict[int, int]] = {
    128: {4096: 109, 8192: 218, 16384: 438},
    192: {4096: 75, 8192: 152, 16384: 305},
    256: {4096: 58, 8192: 118, 16384: 237},
}
MIN_SCALE_BITS = 25  # below this CKKS noise swamps the result and primes run short
MAX_SCALE_BITS = 50  # beyond this double-precision encoding gains nothing
MAX_PRIME_BITS = 60  # SEAL's limit for one prime
MARGIN_BITS = 2  # sign bit plus room for noise above the bound
#: Encryption noise per slot, standard deviation in units of 1/scale, is about
#: 0.17 * N for SEAL's CKKS (measured at N = 4096 and 8192); 0.2 * N is used.
FRESH_NOISE_PER_N = 0.2
#: Rows packing adds key-switching noise with each rotation: about 14 * N per
#: rotation on average (measured, same units). That noise is set by the Galois keys,
#: so all of one key's errors share it and the spread is across keys, not samples:
#: one key's largest error reached 8x another's (breast_cancer, 12 keys), and at 15 * N
#: a strongly regularized logistic regression got N = 4096 and a 30-bit scale, whose
#: errors reached 1.08e-3 against a tolerance of 1e-3. 30 * N (one more bit) is used.
ROTATION_NOISE_PER_N = 30.0
MIN_FOLD_BITS = 20  # folded weights keep at least this many bits below the point
TAIL = 5.0  # the largest of many (~1e5) errors stays below TAIL standard deviations


@dataclass(frozen=True)
class Requirements:
    """What a model needs from the encryption parameters.

    ``magnitudes`` lists ``(level, bits)``: after ``level`` rescales, values may
    reach ``2**bits`` in absolute value. ``input_noise_gain``,
    ``rotation_noise_gain`` and ``rounding_noise`` estimate the standard
    deviation of the output error, in units of 1/scale, per unit of noise in
    the inputs, per unit of noise after the first layer (where rows packing
    rotates ``rotations`` times) and from rounding the weights; ``tolerance`` is
    the largest output error the scale must keep to. The estimate covers both
    packings, since one set of keys serves both.
    """

    depth: int
    needs_relin: bool
    magnitudes: tuple[tuple[int, float], ...]
    input_noise_gain: float = 1.0
    rounding_noise: float = 0.0
    tolerance: float = 1e-3
    rotation_noise_gain: float = 1.0
    rotations: int = 0
    fold_bits: int = 0

    @property
    def folded(self) -> bool:
        """Whether the last layer is folded into the square before it (one rescale fewer)."""
        return self.fold_bits > 0

    def min_scale_bits(self, poly_modulus_degree: int) -> int:
        """Smallest scale (in bits) that keeps the estimated output error within tolerance."""
        fresh = FRESH_NOISE_PER_N * poly_modulus_degree * self.input_noise_gain
        rotated = (
            ROTATION_NOISE_PER_N
            * poly_modulus_degree
            * math.sqrt(self.rotations)
            * self.rotation_noise_gain
        )
        std = math.sqrt(fresh**2 + rotated**2 + self.rounding_noise**2)
        return max(MIN_SCALE_BITS, math.ceil(math.log2(TAIL * std / self.tolerance)))

    def headroom(self, scale_bits: int) -> int:
        """Bits that ``q0`` needs above the scale so that no value overflows."""
        need = [
            bits + MARGIN_BITS - (self.depth - level) * scale_bits
            for level, bits in self.magnitudes
        ]
        return max(MARGIN_BITS, math.ceil(max(need, default=0.0)))

    def to_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "needs_relin": self.needs_relin,
            "magnitudes": [[lvl, bits] for lvl, bits in self.magnitudes],
            "input_noise_gain": self.input_noise_gain,
            "rounding_noise": self.rounding_noise,
            "tolerance": self.tolerance,
            "rotation_noise_gain": self.rotation_noise_gain,
            "rotations": self.rotations,
            "fold_bits": self.fold_bits,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Requirements:
        return cls(
            int(data["depth"]),
            bool(data["needs_relin"]),
            tuple((int(lvl), float(bits)) for lvl, bits in data["magnitudes"]),
            float(data["input_noise_gain"]),
            float(data["rounding_noise"]),
            float(data["tolerance"]),
            float(data["rotation_noise_gain"]),
            int(data["rotations"]),
            int(data.get("fold_bits", 0)),  # absent: written before folding existed
        )


@dataclass(frozen=True)
class HEParameters:
    """CKKS parameters: ring size, modulus chain (bits per prime) and scale.

    Attributes
    ----------
    poly_modulus_degree : int
        Ring size N; one ciphertext holds ``N // 2`` values.
    coeff_mod_bit_sizes : tuple of int
        Bits of each prime, first to special.
    scale_bits : int
        The scale is ``2 ** scale_bits``.
    security_bits : int
        Security level the chain was sized for (128, 192 or 256).
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    security_bits: int

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Rescales available (primes between the first and the special one)."""
        return len(self.coeff_mod_bit_sizes) - 2

    def to_json(self) -> dict[str, Any]:
        """These parameters as a JSON-ready dict, which ``from_json`` reads back."""
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "security_bits": self.security_bits,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HEParameters:
        """The parameters ``to_json`` wrote."""
        return cls(
            int(data["poly_modulus_degree"]),
            tuple(int(b) for b in data["coeff_mod_bit_sizes"]),
            int(data["scale_bits"]),
            int(data["security_bits"]),
        )


def requirements(
    network: Network,
    input_bound: np.ndarray,
    *,
    tolerance: float,
    typical: list[np.ndarray] | None = None,
    fold: bool = True,
) -> Requirements:
    """Depth, value sizes and noise growth of ``network`` for inputs ``|x[j]| <= input_bound[j]``.

    With ``fold`` (the default), a last layer that follows a quadratic
    activation is folded into it (:mod:`privml.he._fold`); ``fold=False`` gives
    the requirements older privml wrote.

    The value bounds are rigorous (interval arithmetic on absolute values), so
    they also cover the partial sums that rows packing leaves in unused slots.
    Noise is propagated as independent errors through first-order (derivative)
    bounds, taken at ``typical[i]`` (the magnitude of layer ``i``'s inputs on
    calibration data) where given, else at the rigorous bounds.
    """
    bound = np.asarray(input_bound, dtype=float)
    level = 0
    nodes: list[tuple[int, float]] = [(0, _bits(bound))]
    gain = np.ones_like(bound)  # output-error std per unit of input-error std
    rounding = np.zeros_like(bound)  # error std from rounding plaintext weights
    hidden = np.zeros(0)  # output-error std per unit of error after the first layer
    fold_bits = 0
    last = len(network.layers) - 1
    for i in range(len(network.layers)):
        coef, bias = network.terms(i)
        degree = coef.shape[2]
        ks = np.arange(1, degree + 1)
        powers = bound[:, None] ** ks[None, :]  # (in, degree)
        size = bound if typical is None else np.minimum(bound, typical[i])
        if fold and i == last and i and degree == 2:
            # squares stay at scale Δ², un-rescaled, until the one rescale of each output
            fold_bits = _fold_bits(size, tolerance)
            level += 1
            nodes.append((level, _bits(powers[:, 1]) - fold_bits))
        else:
            power_level = [level + math.ceil(math.log2(k)) for k in ks]
            if i:
                nodes += [(lvl, _bits(powers[:, k])) for k, lvl in enumerate(power_level)]
            used = [k for k in range(degree) if np.any(coef[:, :, k] != 0.0)] or [0]
            level = max(power_level[k] for k in used) + 1
        slope = np.einsum("mjk,jk->mj", np.abs(coef), ks * size[:, None] ** (ks - 1))
        gain = np.sqrt(slope**2 @ gain**2)
        hidden = np.ones(len(bias)) if i == 0 else np.sqrt(slope**2 @ hidden**2)
        rounding = np.sqrt(slope**2 @ rounding**2 + 0.3**2 * (size[:, None] ** (2 * ks)).sum())
        bound = np.abs(bias) + np.einsum("mjk,jk->m", np.abs(coef), powers)
        nodes.append((level, _bits(bound)))
    needs_relin = any(a.degree >= 2 for a in network.activations)
    return Requirements(
        level,
        needs_relin,
        tuple(nodes),
        input_noise_gain=float(gain.max(initial=0.0)),
        rounding_noise=float(rounding.max(initial=0.0)),
        tolerance=tolerance,
        rotation_noise_gain=float(hidden.max(initial=0.0)),
        rotations=(network.n_features - 1).bit_length(),
        fold_bits=fold_bits,
    )


def _fold_bits(size: np.ndarray, tolerance: float) -> int:
    """Bits of precision for the folded weights of a layer whose inputs reach ``size``.

    A folded weight is rounded to a multiple of ``2**-p``: an error of standard
    deviation ``0.3 * 2**-p`` that multiplies a square ``a_j**2``. Half the error
    variance the tolerance allows goes to it (the other half to everything else).
    """
    std = 0.3 * math.sqrt(float(np.sum(size.astype(float) ** 4)))
    needed = math.ceil(math.log2(max(TAIL * math.sqrt(2.0) * std / tolerance, 1.0)))
    return max(MIN_FOLD_BITS, needed)


def _bits(values: np.ndarray) -> float:
    top = float(np.max(values, initial=0.0))
    if not math.isfinite(top):
        raise ConfigurationError(
            "the model's values are unbounded on its input range (weights or bounds not "
            "finite); check the model and the input_range/calibration passed to compile"
        )
    return math.log2(top) if top > 1.0 else 0.0


def check_security(security_bits: int) -> int:
    if security_bits not in MAX_MODULUS_BITS:
        raise ConfigurationError(
            f"security_bits must be one of {sorted(MAX_MODULUS_BITS)}, got {security_bits!r}; "
            "privml never builds keys below 128-bit security"
        )
    return security_bits


def derive(req: Requirements, *, security_bits: int = 128) -> HEParameters:
    """The smallest secure parameters for ``req``, with leftover bits spent on the scale."""
    bounds = MAX_MODULUS_BITS[check_security(security_bits)]
    for split in (False, True):  # a base of several primes only where one prime fits no ring
        for n, budget in sorted(bounds.items()):
            for s in range(MAX_SCALE_BITS, req.min_scale_bits(n) - 1, -1):
                chain = _folded_chain(req, s, split) if req.folded else _chain(req, s, split)
                if chain is not None and sum(chain) <= budget:
                    return HEParameters(n, chain, s, security_bits)
    raise _too_deep(req, security_bits)


_MOST_BITS = max(bits for bounds in MAX_MODULUS_BITS.values() for bits in bounds.values())


def _base(bits: float, split: bool) -> tuple[int, ...] | None:
    """Primes that together hold ``bits`` bits: the modulus left after the last rescale.

    One prime where it fits in ``MAX_PRIME_BITS``; else, with ``split``, the fewest
    primes of equal size that do (None without, and None beyond what any ring allows:
    a spec read from elsewhere may ask for any number of bits).
    """
    if bits > _MOST_BITS:
        return None
    count = math.ceil(bits / MAX_PRIME_BITS)
    if count > 1 and not split:
        return None
    return (math.ceil(bits / count),) * count


def _chain(req: Requirements, s: int, split: bool) -> tuple[int, ...] | None:
    base = _base(s + req.headroom(s), split)
    return None if base is None else (*base, *([s] * req.depth), max(*base, s))


def _folded_chain(req: Requirements, s: int, split: bool) -> tuple[int, ...] | None:
    """The shortest ``[q0, r, s, ..., s, special]`` for a folded model at scale ``2**s``.

    The last layer accumulates at scale ``2**(2s + p)`` (squares at ``2**2s``
    times weights at ``2**p``, ``p = fold_bits``) and divides by the ``r``-bit
    prime, leaving outputs at scale below ``2**(2s + p - r + 1)``; ``q0`` (one
    prime or, with ``split``, several) holds them. ``r`` is chosen to make the
    total smallest.
    """
    best: tuple[int, ...] | None = None
    for r in range(s, min(MAX_PRIME_BITS, s + req.fold_bits) + 1):
        base = _base(_q0_bits(req, [r, *([s] * (req.depth - 1))], s), split)
        if base is None:
            continue
        chain = (*base, r, *([s] * (req.depth - 1)), max(*base, r))
        if best is None or sum(chain) < sum(best):
            best = chain
    return best


def _q0_bits(req: Requirements, middle: Sequence[float], s: float) -> float:
    """Bits ``q0`` needs for ``req`` given the other data primes' bits (first to last).

    After ``level`` rescales, a value of ``2**bits`` at scale ``2**scale`` needs
    ``bits + scale + MARGIN_BITS`` bits of modulus: ``q0`` and the primes left.
    """
    need = s + MARGIN_BITS
    for level, bits in req.magnitudes:
        left = sum(middle[: len(middle) - level])
        need = max(need, bits + MARGIN_BITS + _scale_at(req, level, middle, s) - left)
    return need


def _scale_at(req: Requirements, level: int, middle: Sequence[float], s: float) -> float:
    """Bits of the scale (an upper bound) values have after ``level`` rescales."""
    if req.folded and level == req.depth:
        dropped = middle[len(middle) - req.depth]  # the prime the folded layer divides by
        return 2 * s + req.fold_bits - (dropped - 1)
    return s


def _too_deep(req: Requirements, security_bits: int) -> ConfigurationError:
    bounds = MAX_MODULUS_BITS[security_bits]
    rings = [n for n in bounds if req.min_scale_bits(n) <= MAX_SCALE_BITS]
    if not rings:  # the noise alone rules out every ring
        smallest = min(bounds)
        return ConfigurationError(
            f"no secure CKKS parameters fit this model: keeping encryption noise below "
            f"tolerance={req.tolerance:g} would need a {req.min_scale_bits(smallest)}-bit scale "
            f"even at N={smallest}, more than the {MAX_SCALE_BITS} bits a scale can usefully "
            "have (double precision gains nothing beyond). Fix: a larger tolerance (an absolute "
            "error on the scores; large-valued outputs such as regression targets rarely need "
            "1e-3), or a narrower input_range/calibration so that errors grow less"
        )
    n = max(rings)  # the largest ring whose noise a scale can keep within tolerance
    budget, s = bounds[n], req.min_scale_bits(n)
    chain = _folded_chain(req, s, True) if req.folded else _chain(req, s, True)
    needed = f"at least {sum(chain)}" if chain is not None else f"more than {budget}"
    return ConfigurationError(
        f"no secure CKKS parameters fit this model: it needs multiplicative depth "
        f"{req.depth}, a {s}-bit scale to keep encryption noise below tolerance="
        f"{req.tolerance:g}, and room for its largest values, i.e. {needed} "
        f"modulus bits, but N={n} allows only {budget} bits at {security_bits}-bit security. "
        "Fix: use fewer layers or a lower activation_degree (a degree-d activation costs "
        "ceil(log2(d)) levels), a narrower input_range/calibration so that values need fewer "
        "bits, or a larger tolerance (an absolute error on the scores; large-valued outputs "
        "such as regression targets rarely need 1e-3)"
    )


def chain_problem(req: Requirements, *, prime_bits: Sequence[int], scale_bits: float) -> str | None:
    """Why a context with these data primes and scale cannot run the model (None if it can)."""
    available = len(prime_bits) - 1
    if available < req.depth:
        return (
            f"the context allows {available} rescale(s) but this model needs {req.depth}; "
            "the client must build its keys with HEClient.for_model(model.spec)"
        )
    for level, bits in req.magnitudes:
        modulus_bits = sum(prime_bits[: len(prime_bits) - level])
        scale = _scale_at(req, level, prime_bits[1:], scale_bits)
        if bits + MARGIN_BITS + scale > modulus_bits:
            return (
                f"values of up to 2**{bits:.1f} after {level} rescale(s) would overflow the "
                f"context's {modulus_bits}-bit modulus at that level; the client must build its "
                "keys with HEClient.for_model(model.spec)"
            )
    return None
