"""How close encrypted predictions are to the plaintext model, and why they differ."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._output import OutputSpec
from ._params import HEParameters

__all__ = ["AccuracyReport", "build_report"]


@dataclass(frozen=True)
class AccuracyReport:
    """Agreement of encrypted inference with the plaintext model, error split by cause.

    Attributes
    ----------
    n_samples : int
        Samples checked.
    packing : str
        Packing used for the check.
    parameters : HEParameters
        Encryption parameters of the client used.
    reference : str
        What the encrypted scores are compared with: ``"source model"`` (the
        model given to ``compile``) or ``"polynomial model"`` (when the source
        is no longer available, e.g. after ``HEModel.from_bytes``).
    agreement : float or None
        Fraction of samples whose encrypted label equals the reference label
        (None for models without classes).
    approximation_agreement : float or None
        The same for the plaintext polynomial model (no encryption), showing
        what the activation approximation alone costs.
    max_logit_error : float
        Largest absolute difference between encrypted and reference scores.
    max_approximation_error : float
        Largest difference between the plaintext polynomial model and the
        reference (0 when every activation is exact).
    max_he_noise : float
        Largest difference between encrypted scores and the plaintext
        polynomial model: CKKS noise and rounding alone.
    """

    n_samples: int
    packing: str
    parameters: HEParameters
    reference: str
    agreement: float | None
    approximation_agreement: float | None
    max_logit_error: float
    max_approximation_error: float
    max_he_noise: float

    def __str__(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}%"

        p = self.parameters
        return "\n".join(
            [
                f"privml.he accuracy on {self.n_samples} samples ({self.packing} packing, "
                f"N={p.poly_modulus_degree}, chain {list(p.coeff_mod_bit_sizes)}, "
                f"scale 2^{p.scale_bits}), against the {self.reference}:",
                f"  label agreement, encrypted:            {pct(self.agreement)}",
                f"  label agreement, polynomial plaintext: {pct(self.approximation_agreement)}",
                f"  max score error, encrypted:            {self.max_logit_error:.3g}",
                f"    of which activation approximation:   {self.max_approximation_error:.3g}",
                f"    of which HE noise:                   {self.max_he_noise:.3g}",
            ]
        )


def build_report(
    *,
    encrypted: np.ndarray,
    polynomial: np.ndarray,
    reference: np.ndarray | None,
    output: OutputSpec,
    packing: str,
    parameters: HEParameters,
) -> AccuracyReport:
    """Compare (n, k) score matrices."""
    ref = polynomial if reference is None else reference

    def agree(scores: np.ndarray) -> float | None:
        if output.classes is None:
            return None
        return float(np.mean(output.apply(scores, "labels") == output.apply(ref, "labels")))

    return AccuracyReport(
        n_samples=int(encrypted.shape[0]),
        packing=packing,
        parameters=parameters,
        reference="polynomial model" if reference is None else "source model",
        agreement=agree(encrypted),
        approximation_agreement=agree(polynomial),
        max_logit_error=float(np.max(np.abs(encrypted - ref))),
        max_approximation_error=float(np.max(np.abs(polynomial - ref))),
        max_he_noise=float(np.max(np.abs(encrypted - polynomial))),
    )
