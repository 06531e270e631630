"""Choosing the noise multiplier σ so a planned run fits the target ε and the remaining budget.

Both conditions are the ledger's own figures, so the calibration and the
charge agree: the run's ε on its own is :func:`~privml.accounting.composition.
epsilon_alone` (what a charge reports as "requested": the smaller of RDP and
PLD), and whether it fits the dataset's budget (and any allocation of the
principal or purpose) is :meth:`~privml.accounting.Ledger.what_if`, the very
check a reservation makes. Both fall as σ grows, so the smallest σ meeting
each is found by SciPy's Brent method (:func:`scipy.optimize.brentq`) in log σ
on log(figure / cap), for at most :data:`_MAXITER` probes after the bracket;
the answer is the smallest σ probed that fits (the upper end of the final
bracket), so it is always a σ known to fit, never Brent's estimate of the
root, which may lie a hair on the side that does not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scipy.optimize import brentq

from ...accounting.composition import epsilon_alone, rdp_curve, rdp_epsilon
from ...accounting.events import PrivacyEvent
from ...exceptions import BudgetExceededError, ConfigurationError

if TYPE_CHECKING:
    from ..._gate import Gate

__all__ = ["Calibration", "calibrate"]

log = logging.getLogger("privml.dp.torch")

SIGMA_MAX = 1e4  # beyond this a run learns nothing; refuse instead
_RTOL = 1e-3  # stop when the bracket is this narrow (relative), or ε is this close under the cap
_MAXITER = 60  # Brent iterations (one probe each) once the bracket is found

# A probe of σ: (fits, log(figure / cap)), the latter None when there is no usable figure.
Probe = Callable[[float], tuple[bool, float | None]]


@dataclass(frozen=True)
class Calibration:
    """The chosen σ and what bound it."""

    noise_multiplier: float
    binding: str
    note: str


def calibrate(
    gate: Gate,
    dataset: str,
    event_for: Callable[[float], PrivacyEvent],
    *,
    delta: float,
    target_epsilon: float,
) -> Calibration:
    """The smallest σ whose run has ε <= ``target_epsilon`` and fits the budget now."""
    if not (isinstance(target_epsilon, int | float) and 0 < target_epsilon < math.inf):
        raise ConfigurationError(f"target_epsilon must be finite and > 0, got {target_epsilon!r}")
    if delta <= 0:
        raise ConfigurationError(
            f"dataset {dataset!r} has a pure-DP budget (δ = 0); DP-SGD (Gaussian noise) "
            "needs a budget with δ > 0"
        )

    def by(figure: Callable[[float], float]) -> Probe:
        def probe(sigma: float) -> tuple[bool, float | None]:
            eps = figure(sigma)
            ratio = math.log(eps / target_epsilon) if 0 < eps < math.inf else None
            return eps <= target_epsilon, ratio

        return probe

    # RDP alone is quick and never below the ledger's figure: it brackets the real search.
    try:
        rdp_sigma, _ = _smallest(by(lambda s: rdp_epsilon(rdp_curve(event_for(s)), delta)))
    except _NoFit:
        raise ConfigurationError(
            f"target_epsilon={target_epsilon:g} is out of reach: this run would need a noise "
            f"multiplier above {SIGMA_MAX:g}, at which it learns nothing; raise target_epsilon "
            "or plan fewer steps (fewer epochs or a smaller batch_size)"
        ) from None
    sigma, _ = _smallest(by(lambda s: epsilon_alone(event_for(s), delta)), hi=rdp_sigma)
    check = gate.what_if(dataset, event_for(sigma))
    if check.allowed:
        note = (
            f"σ={sigma:.4g} from target_epsilon={target_epsilon:g}: the target binds (the "
            f"dataset's budget has ε={check.epsilon_total - check.epsilon_spent:.4g} left)"
        )
        log.info(note)
        return Calibration(sigma, "target", note)
    refused_by = {sigma: check.refused_by}

    def fits(s: float) -> tuple[bool, float | None]:
        w = gate.what_if(dataset, event_for(s))
        refused_by[s] = w.refused_by
        ratio = (
            math.log(w.epsilon_after / w.epsilon_total)
            if w.refused_by in (None, "dataset") and 0 < w.epsilon_after < math.inf
            else None
        )
        return w.allowed, ratio

    try:
        sigma, below = _smallest(fits, lo=sigma)
    except _NoFit:
        err = _no_fit(gate, dataset, event_for(sigma))
        if err is None:  # budget was freed meanwhile (a reservation released): search again
            return calibrate(gate, dataset, event_for, delta=delta, target_epsilon=target_epsilon)
        raise err from None
    binding = _scope(refused_by[below])  # what refuses just under the chosen σ
    note = (
        f"σ={sigma:.4g}: the {binding} binds, not target_epsilon={target_epsilon:g} "
        f"(spent ε={check.epsilon_spent:.4g} of ε={check.epsilon_total:.4g}), so the run "
        "will spend less than the target"
    )
    log.info(note)
    return Calibration(sigma, binding, note)


class _NoFit(Exception):
    pass


def _no_fit(gate: Gate, dataset: str, event: PrivacyEvent) -> BudgetExceededError | None:
    """The ledger's refusal of the run at the σ its target asks for, restated: no σ up to
    :data:`SIGMA_MAX` fits. None if that run fits now after all."""
    err = gate.refusal(dataset, event)
    if err is None:
        return None
    binding = _scope(err.scope)
    return BudgetExceededError(
        f"no noise multiplier up to {SIGMA_MAX:g} lets this run fit the {binding} of dataset "
        f"{dataset!r}: spent ε={err.spent:.4g} of ε={err.total:.4g} at δ={err.delta:g}. Nothing "
        f"was charged or trained; see vault.budget({dataset!r}).",
        dataset=err.dataset,
        scope=err.scope,
        spent=err.spent,
        requested=err.requested,
        after=err.after,
        remaining=err.remaining,
        total=err.total,
        delta=err.delta,
        method=err.method,
    )


def _scope(refused_by: str | None) -> str:
    return "budget" if refused_by in (None, "dataset") else refused_by


def _smallest(
    probe: Probe, *, lo: float | None = None, hi: float | None = None
) -> tuple[float, float]:
    """The smallest σ (to :data:`_RTOL`) that ``probe`` accepts, and a σ below it that fails.

    ``lo`` is known to fail, ``hi`` to fit.
    """
    seen: dict[float, tuple[bool, float | None]] = {}

    def look(sigma: float) -> tuple[bool, float | None]:
        if sigma not in seen:
            seen[sigma] = probe(sigma)
        return seen[sigma]

    if hi is None:
        hi = max(2 * lo, 1.0) if lo is not None else 1.0
        while not look(hi)[0]:
            lo, hi = hi, hi * 2
            if hi > SIGMA_MAX:
                raise _NoFit
    if lo is None:
        lo = hi
        while True:
            lo *= 0.8
            if lo < 1e-3:  # fits even with almost no noise
                return hi, lo
            if not look(lo)[0]:
                break
            hi = lo
    value_hi = look(hi)[1]
    if (hi - lo) / hi < _RTOL or (value_hi is not None and value_hi > -_RTOL):
        return hi, lo

    ends = {math.log(lo): lo, math.log(hi): hi}  # probe the ends themselves, not e^(log σ)

    def signed(x: float) -> float:
        """log(figure / cap) at σ = e^x: > 0 where σ fails, <= 0 where it fits (0: close under)."""
        ok, value = look(ends.get(x, math.exp(x)))
        if not ok:
            return value if value is not None and value > 0 else 1.0
        if value is None or value > 0:
            return -1.0  # fits, without a usable figure: the sign alone
        return 0.0 if value > -_RTOL else value  # 0.0 ends Brent's search there

    x_lo, x_hi = ends
    brentq(
        signed,
        x_lo,
        x_hi,
        xtol=-math.log1p(-_RTOL),  # a bracket this narrow in log σ is _RTOL wide relative to hi
        maxiter=_MAXITER,
        full_output=True,
        disp=False,
    )
    # Every point Brent evaluated was probed: the final bracket is the largest σ that fails
    # and the smallest probed σ above it that fits. Return that one, never Brent's estimate.
    lo = max(s for s, (ok, _) in seen.items() if not ok)
    hi = min(s for s, (ok, _) in seen.items() if ok and s > lo)
    return hi, lo
