"""Empirical privacy measurement: attacks whose success gives a lower bound on ε.

The ledger states what a release *claims* (an upper bound on ε); an attack
measures what it *leaks*. If an attack proves an ε above the claim, the claim
is wrong (a bug, a mis-set parameter); if it proves much less, the claim may be
loose, or the attack weak — a lower bound never certifies privacy.

* :func:`loss_threshold_attack`, :func:`lira_offline_attack` — membership
  inference on a fitted model, given members and non-members;
* :func:`epsilon_lower_bound`, :func:`one_run_lower_bound`,
  :func:`clopper_pearson` — the arithmetic from attack counts to ε;
* :class:`PrivacyReport` — what ``vault.models.privacy_report`` measured on a
  registered model: the claimed ε beside the attacks' lower bounds;
* the one-run canary measurement of DP-SGD, asked for with
  ``session.dp.train(..., canaries=m)`` (:mod:`privml.attacks._canaries`).

These are measurements, not the vault's audit log (:mod:`privml.audit`).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._bounds import clopper_pearson, epsilon_lower_bound, one_run_lower_bound
    from ._membership import lira_offline_attack, loss_threshold_attack
    from ._report import PrivacyReport
    from ._result import MembershipResult
    from ._scores import scores

__all__ = [
    "MembershipResult",
    "PrivacyReport",
    "clopper_pearson",
    "epsilon_lower_bound",
    "lira_offline_attack",
    "loss_threshold_attack",
    "one_run_lower_bound",
    "scores",
]

#: Where each public name lives. The attacks need scikit-learn and SciPy, which
#: ``import privml`` does not load: the DP-SGD and registry code import only the
#: light modules here (holdout records, canary counts), so the names load lazily.
_HOME = {
    "clopper_pearson": "_bounds",
    "epsilon_lower_bound": "_bounds",
    "one_run_lower_bound": "_bounds",
    "lira_offline_attack": "_membership",
    "loss_threshold_attack": "_membership",
    "PrivacyReport": "_report",
    "MembershipResult": "_result",
    "scores": "_scores",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'privml.attacks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{home}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
