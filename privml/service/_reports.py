"""Privacy reports on the wire: a report's figures and verdict, never its ROC curves.

The server sends :meth:`privml.attacks.PrivacyReport.to_dict` (the figures the
audit log holds) and the dataset it names; the client gets a
:class:`RemotePrivacyReport`, a :class:`~privml.attacks.PrivacyReport` with the
same figures, verdict, table and text, whose ``plot`` says why it cannot draw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from ..attacks._report import PrivacyReport
from ..exceptions import ConfigurationError
from ._wire import plain_from_json, plain_json

__all__ = ["RemotePrivacyReport", "report_from_json", "report_to_json"]


@dataclasses.dataclass(frozen=True, eq=False)
class RemotePrivacyReport(PrivacyReport):
    """A privacy report made by a curator server: its figures and verdict, without ROC curves.

    ``to_dict()`` and ``verdict`` are the server's own; ``to_frame()`` and ``str()``
    read the same figures. Each attack's ``fpr`` and ``tpr`` are empty: the server
    does not send ROC points (see :meth:`plot`).
    """

    served: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def verdict(self) -> str:
        """The server's verdict."""
        return str(self.served.get("verdict", ""))

    def to_dict(self) -> dict[str, Any]:
        """The figures the server sent (as ``PrivacyReport.to_dict`` wrote them there)."""
        return {k: v for k, v in self.served.items() if k not in ("dataset", "dataset_version")}

    def plot(self, ax: Any = None) -> Any:
        """Not available: a curator server sends a report's figures, not its ROC curves."""
        raise ConfigurationError(
            "this privacy report came from a curator server, which sends its figures "
            "(AUC, TPR at low FPR, ε lower bounds) but not the ROC curves: plot() needs the "
            "report made where the vault is open (vault.models.privacy_report or "
            "session.privacy_report); use to_frame() for the figures"
        )


def report_to_json(report: PrivacyReport) -> dict[str, Any]:
    """The report's figures and verdict as JSON (non-finite numbers as strings)."""
    where = {"dataset": report.dataset, "dataset_version": report.dataset_version}
    body = {**report.to_dict(), **where}
    out: dict[str, Any] = plain_json(body)
    return out


def report_from_json(body: Any) -> RemotePrivacyReport:
    """The :class:`RemotePrivacyReport` of what :func:`report_to_json` wrote."""
    import numpy as np

    from ..attacks._result import MembershipResult

    if not isinstance(body, Mapping):
        raise ConfigurationError("the server sent a privacy report that is not an object")
    served = plain_from_json(dict(body))
    try:
        delta, confidence = float(served["delta"]), float(served["confidence"])
        results = tuple(
            MembershipResult(
                attack=str(a["attack"]),
                n_members=int(a["n_members"]),
                n_non_members=int(a["n_non_members"]),
                auc=float(a["auc"]),
                tpr_at={float(f): float(t) for f, t in dict(a["tpr_at"]).items()},
                fpr=np.empty(0),
                tpr=np.empty(0),
                epsilon_lower_bound=float(a["epsilon_lower_bound"]),
                delta=delta,
                confidence=confidence,
                threshold=math.nan,
            )
            for a in served["attacks"]
        )
        return RemotePrivacyReport(
            model=str(served["model"]),
            model_version=int(served["model_version"]),
            dataset=_optional(served.get("dataset"), str),
            dataset_version=_optional(served.get("dataset_version"), int),
            epsilon_claimed=_optional(served["epsilon_claimed"], float),
            delta_claimed=_optional(served["delta_claimed"], float),
            delta=delta,
            confidence=confidence,
            metric=str(served["metric"]),
            score_members=_score(served["score_members"]),
            score_held_out=_score(served["score_held_out"]),
            results=results,
            canaries={str(k): dict(v) for k, v in dict(served.get("canaries") or {}).items()},
            notes=tuple(str(n) for n in served.get("notes") or ()),
            served=served,
        )
    except (KeyError, TypeError, ValueError):
        raise ConfigurationError(
            "the server sent a privacy report this client cannot read"
        ) from None


def _optional(value: Any, kind: type[Any]) -> Any:
    return None if value is None else kind(value)


def _score(value: Any) -> float:
    """A score the server sent (None: it was not finite, e.g. R² on one row)."""
    return math.nan if value is None else float(value)
