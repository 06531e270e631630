"""The result of a DP statistic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DPResult"]


@dataclass(frozen=True)
class DPResult:
    """A differentially private release and what it cost.

    Attributes
    ----------
    value : float or pandas.Series
        The noisy statistic (a Series of noisy counts for a histogram).
    epsilon, delta : float
        The privacy cost charged to the ledger.
    mechanism : str
        How the noise was made (e.g. ``"laplace"``).
    noise_scale : float or None
        The scale of the noise (Laplace ``b``); for ratios, an estimate of the
        noise's standard deviation computed from the noisy values only.
    interval : tuple of float, or None
        The central 95% interval of the noise, as offsets: the noiseless
        (clipped) statistic lies in ``[value - interval[1], value - interval[0]]``
        with 95% probability (for a symmetric noise, ``value ± interval[1]``).
        Computed from released values only (post-processing, no extra cost).
        ``None`` where no such interval exists (the exponential mechanism).
    request_id : str
        The ledger charge of this release.
    privacy_unit : str
        What ε protects: ``"row"``, or the identifier column whose every row of one
        value (one person) is one unit.
    max_rows_per_unit : int
        The most rows of one unit the release used (1 for ``"row"``); the noise
        is calibrated to a person contributing that many rows.
    """

    value: Any
    epsilon: float
    delta: float
    mechanism: str
    noise_scale: float | None
    interval: tuple[float, float] | None
    request_id: str
    privacy_unit: str = "row"
    max_rows_per_unit: int = 1

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        shown = self.value if not hasattr(self.value, "round") else self.value.round(4)
        ci = (
            ""
            if self.interval is None
            else (f", 95% noise [{self.interval[0]:+.4g}, {self.interval[1]:+.4g}]")
        )
        return f"DPResult({shown!r}, ε={self.epsilon:g}, δ={self.delta:g}, {self.mechanism}{ci})"
