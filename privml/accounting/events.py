"""Privacy events: what one DP release costs, as a ``dp_accounting`` DpEvent plus its provenance.

Every charge to the ledger is a :class:`PrivacyEvent`. Each one maps to a
``dp_accounting`` ``DpEvent`` (the thing accountants compose) and keeps the raw
parameters it was built from (σ, sensitivity or clip norm, sampling rate as
batch_size / N, steps), the library that produced the release, its version and
the ε that library reported itself. It round-trips through canonical JSON,
which is how the ledger stores it.

The neighbouring relation throughout is add/remove one privacy unit of the dataset
charged (:mod:`privml.accounting._unit`): one row, or all rows of one person, each
person contributing at most the dataset's ``max_rows_per_unit`` rows. A mechanism
builds its event at that unit (e.g. a Laplace release calibrated to the bounded
person's sensitivity), so an event's ε is always the unit's ε.

Parameters are validated when an event is built, each against an accepted
range (see :mod:`privml.accounting._params`): ε in [1e-9, 1e6], σ/Δ in
[1e-3, 1e9], δ = 0 or in [1e-30, 1), sample rates in [1e-9, 1], at most 1e8
steps. Anything else is refused there with a ConfigurationError that names the
range, so no accountant, JSON encoder or audit entry ever sees it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._canonical import canonical_json
from ..exceptions import ConfigurationError, IntegrityError
from ._params import (
    EPSILON_RANGE,
    NOISE_MULTIPLIER_RANGE,
    SAMPLE_RATE_MIN,
    SCALE_RANGE,
    STEPS_MAX,
)
from ._params import count as _count
from ._params import delta as _delta
from ._params import in_range as _in_range
from ._params import one_of as _one_of
from ._params import positive as _positive
from ._params import same_params as _same_params

if TYPE_CHECKING:
    from dp_accounting.dp_event import DpEvent

__all__ = ["EventKind", "PrivacyEvent"]

EventKind = Literal["laplace", "gaussian", "dp_sgd", "generic"]
_FORMAT = 1


@dataclass(frozen=True)
class PrivacyEvent:
    """The privacy cost of one DP release. Build it with a constructor, never directly.

    Constructors: :meth:`laplace`, :meth:`gaussian`, :meth:`dp_sgd`,
    :meth:`generic`. Each records who produced the release (``library``,
    ``library_version``) and, optionally, the ε that library reported
    (``reported_epsilon``); the ledger composes the event itself and never
    trusts the reported figure.

    Attributes
    ----------
    kind : {"laplace", "gaussian", "dp_sgd", "generic"}
    params : dict
        The raw parameters, as given and derived (e.g. ``epsilon``, ``scale``
        and ``sensitivity`` for Laplace).
    library, library_version : str
        What produced the release.
    reported_epsilon : float or None
        The ε the producing library reported, kept for comparison only.

    Examples
    --------
    >>> from privml.accounting import PrivacyEvent
    >>> sgd = PrivacyEvent.dp_sgd(noise_multiplier=1.1, batch_size=256, n=60000, steps=2344)
    >>> sgd.params["sample_rate"]
    0.004266666666666667
    >>> sgd.dp_event
    SelfComposedDpEvent(event=PoissonSampledDpEvent(sampling_probability=0.004266666666666667, \
event=GaussianDpEvent(noise_multiplier=1.1)), count=2344)
    >>> PrivacyEvent.from_json(sgd.to_json()) == sgd
    True
    >>> PrivacyEvent.laplace(epsilon=0.1).is_pure, PrivacyEvent.gaussian(sigma=10).is_pure
    (True, False)
    """

    kind: EventKind
    params: dict[str, Any]
    library: str = "privml"
    library_version: str | None = None
    reported_epsilon: float | None = None
    _dp_event: Any = field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return hash(self.to_json())

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def laplace(
        cls,
        *,
        epsilon: float | None = None,
        scale: float | None = None,
        sensitivity: float = 1.0,
        library: str = "privml",
        library_version: str | None = None,
        reported_epsilon: float | None = None,
    ) -> PrivacyEvent:
        """The Laplace mechanism: noise of ``scale`` on an L1 ``sensitivity`` (ε = Δ/scale).

        Give ``epsilon=`` or ``scale=``. Pure ε-DP.

        Examples
        --------
        >>> PrivacyEvent.laplace(scale=20.0, sensitivity=2.0).params["epsilon"]
        0.1
        """
        _one_of("epsilon", epsilon, "scale", scale)
        sens = _in_range("sensitivity", sensitivity, SCALE_RANGE)
        if epsilon is not None:
            eps = _in_range("epsilon", epsilon, EPSILON_RANGE)
            b = sens / eps
        else:
            b = _in_range("scale", scale, SCALE_RANGE)
            eps = _in_range("epsilon (sensitivity / scale)", sens / b, EPSILON_RANGE)
        params = {"epsilon": eps, "scale": b, "sensitivity": sens}
        return cls._make("laplace", params, library, library_version, reported_epsilon)

    @classmethod
    def gaussian(
        cls,
        *,
        noise_multiplier: float | None = None,
        sigma: float | None = None,
        sensitivity: float = 1.0,
        library: str = "privml",
        library_version: str | None = None,
        reported_epsilon: float | None = None,
    ) -> PrivacyEvent:
        """The Gaussian mechanism: noise of standard deviation ``sigma`` on an L2 ``sensitivity``.

        Give ``noise_multiplier=`` (σ / sensitivity) or ``sigma=``.

        Examples
        --------
        >>> PrivacyEvent.gaussian(sigma=10.0).dp_event
        GaussianDpEvent(noise_multiplier=10.0)
        """
        _one_of("noise_multiplier", noise_multiplier, "sigma", sigma)
        sens = _in_range("sensitivity", sensitivity, SCALE_RANGE)
        if sigma is not None:
            s = _in_range("sigma", sigma, SCALE_RANGE)
            nm = _in_range("sigma / sensitivity", s / sens, NOISE_MULTIPLIER_RANGE)
        else:
            nm = _in_range("noise_multiplier", noise_multiplier, NOISE_MULTIPLIER_RANGE)
            s = nm * sens
        params = {"noise_multiplier": nm, "sigma": s, "sensitivity": sens}
        return cls._make("gaussian", params, library, library_version, reported_epsilon)

    @classmethod
    def dp_sgd(
        cls,
        *,
        noise_multiplier: float,
        steps: int,
        sample_rate: float | None = None,
        batch_size: int | None = None,
        n: int | None = None,
        max_grad_norm: float | None = None,
        library: str = "privml",
        library_version: str | None = None,
        reported_epsilon: float | None = None,
    ) -> PrivacyEvent:
        """DP-SGD: ``steps`` Poisson-sampled Gaussian steps, self-composed.

        Give ``sample_rate=`` or ``batch_size=`` and ``n=`` (the expected batch
        size and the number of records; sample_rate = batch_size / n).
        ``noise_multiplier`` is σ / ``max_grad_norm`` (the clip norm, recorded).

        Examples
        --------
        >>> PrivacyEvent.dp_sgd(noise_multiplier=1.0, sample_rate=0.01, steps=100).params
        {'noise_multiplier': 1.0, 'sample_rate': 0.01, 'steps': 100}
        """
        nm = _in_range("noise_multiplier", noise_multiplier, NOISE_MULTIPLIER_RANGE)
        count = _count("steps", steps, STEPS_MAX)
        params: dict[str, Any] = {"noise_multiplier": nm}
        if batch_size is not None or n is not None:
            if batch_size is None or n is None:
                raise ConfigurationError("give both batch_size= and n= (or sample_rate=)")
            b, size = _count("batch_size", batch_size), _count("n", n)
            if b > size:
                raise ConfigurationError(f"batch_size ({b}) cannot exceed n ({size})")
            rate = b / size
            if sample_rate is not None and not math.isclose(sample_rate, rate, rel_tol=1e-12):
                raise ConfigurationError(
                    f"sample_rate={sample_rate} disagrees with batch_size/n = {rate}; give one"
                )
            params.update(batch_size=b, n=size)
        elif sample_rate is None:
            raise ConfigurationError("give sample_rate= or batch_size= and n=")
        else:
            rate = _positive("sample_rate", sample_rate)
        if rate > 1:
            raise ConfigurationError(f"sample_rate must be in (0, 1], got {rate}")
        rate = _in_range("sample_rate", rate, (SAMPLE_RATE_MIN, 1.0))
        params.update(sample_rate=rate, steps=count)
        if max_grad_norm is not None:
            params["max_grad_norm"] = _in_range("max_grad_norm", max_grad_norm, SCALE_RANGE)
        return cls._make("dp_sgd", params, library, library_version, reported_epsilon)

    @classmethod
    def generic(
        cls,
        *,
        epsilon: float,
        delta: float = 0.0,
        library: str = "privml",
        library_version: str | None = None,
        reported_epsilon: float | None = None,
    ) -> PrivacyEvent:
        """Any (ε, δ)-DP mechanism without a more specific event (e.g. a diffprivlib model).

        It is accounted as the worst (ε, δ)-DP mechanism, so prefer a specific
        constructor when one fits: it composes more tightly.

        Examples
        --------
        >>> PrivacyEvent.generic(epsilon=0.5, delta=1e-7, library="diffprivlib").is_pure
        False
        """
        eps = _in_range("epsilon", epsilon, EPSILON_RANGE)
        params = {"epsilon": eps, "delta": _delta("delta", delta)}
        return cls._make("generic", params, library, library_version, reported_epsilon)

    @classmethod
    def _make(
        cls,
        kind: EventKind,
        params: dict[str, Any],
        library: str,
        library_version: str | None,
        reported: float | None,
    ) -> PrivacyEvent:
        if not isinstance(library, str) or not library:
            raise ConfigurationError("library= must be a non-empty string")
        if library_version is not None and not isinstance(library_version, str):
            raise ConfigurationError("library_version= must be a string")
        if reported is not None:
            reported = _positive("reported_epsilon", reported)
        return cls(kind, params, library, library_version, reported)

    # -- derived ----------------------------------------------------------------------
    @property
    def is_pure(self) -> bool:
        """True for pure ε-DP events (Laplace, generic with δ = 0)."""
        return self.kind == "laplace" or (self.kind == "generic" and self.params["delta"] == 0)

    @property
    def pure_epsilon(self) -> float | None:
        """The ε of a pure ε-DP event, else None."""
        return float(self.params["epsilon"]) if self.is_pure else None

    @property
    def dp_event(self) -> DpEvent:
        """The ``dp_accounting`` DpEvent this event is accounted as."""
        if self._dp_event is None:
            object.__setattr__(self, "_dp_event", self._build_dp_event())
        event: DpEvent = self._dp_event
        return event

    def _build_dp_event(self) -> DpEvent:
        from . import _dp

        de, p = _dp.dp_event, self.params
        if self.kind == "laplace":
            return de.LaplaceDpEvent(noise_multiplier=p["scale"] / p["sensitivity"])
        if self.kind == "gaussian":
            return de.GaussianDpEvent(noise_multiplier=p["noise_multiplier"])
        if self.kind == "dp_sgd":
            step = de.PoissonSampledDpEvent(
                sampling_probability=p["sample_rate"],
                event=de.GaussianDpEvent(noise_multiplier=p["noise_multiplier"]),
            )
            return de.SelfComposedDpEvent(event=step, count=p["steps"])
        return _dp.EpsilonDeltaDpEvent(epsilon=p["epsilon"], delta=p["delta"])

    def with_steps(self, steps: int) -> PrivacyEvent:
        """The same DP-SGD run with another number of steps (to settle a reservation).

        Examples
        --------
        >>> PrivacyEvent.dp_sgd(noise_multiplier=1.0, sample_rate=0.01, steps=100).with_steps(
        ...     40
        ... ).params["steps"]
        40
        """
        if self.kind != "dp_sgd":
            raise ConfigurationError(f"with_steps() applies to dp_sgd events, not {self.kind}")
        params = {**self.params, "steps": _count("steps", steps, STEPS_MAX)}
        return PrivacyEvent._make(
            "dp_sgd", params, self.library, self.library_version, self.reported_epsilon
        )

    # -- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, including the DpEvent (as stored by the ledger)."""
        from . import _dp

        return {
            "format": _FORMAT,
            "kind": self.kind,
            "params": dict(self.params),
            "library": self.library,
            "library_version": self.library_version,
            "reported_epsilon": self.reported_epsilon,
            "dp_event": _dp.event_to_dict(self.dp_event),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the form the ledger stores and hashes."""
        return canonical_json(self.to_dict()).decode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyEvent:
        """Rebuild an event from :meth:`to_dict`; the stored DpEvent must match the parameters."""
        from . import _dp

        try:
            kind, params = data["kind"], dict(data["params"])
            rebuilt = cls._rebuild(kind, params)
            event = cls._make(
                kind, params, data["library"], data["library_version"], data["reported_epsilon"]
            )
            stored = _dp.event_from_dict(data["dp_event"])
        except (KeyError, TypeError, ValueError) as err:
            raise IntegrityError(f"stored privacy event is malformed: {err!r}") from err
        if not _same_params(rebuilt.params, params):
            raise IntegrityError(f"stored privacy event parameters are inconsistent: {params}")
        if stored != event.dp_event:
            raise IntegrityError(
                f"stored DpEvent {stored} does not match its parameters {params} (modified?)"
            )
        return event

    @classmethod
    def _rebuild(cls, kind: str, p: dict[str, Any]) -> PrivacyEvent:
        if kind == "laplace":
            return cls.laplace(scale=p["scale"], sensitivity=p["sensitivity"])
        if kind == "gaussian":
            return cls.gaussian(
                noise_multiplier=p["noise_multiplier"], sensitivity=p["sensitivity"]
            )
        if kind == "dp_sgd":
            return cls.dp_sgd(
                noise_multiplier=p["noise_multiplier"],
                steps=p["steps"],
                sample_rate=p["sample_rate"],
                batch_size=p.get("batch_size"),
                n=p.get("n"),
                max_grad_norm=p.get("max_grad_norm"),
            )
        if kind == "generic":
            return cls.generic(epsilon=p["epsilon"], delta=p["delta"])
        raise ValueError(f"unknown kind {kind!r}")

    @classmethod
    def from_json(cls, text: str | bytes) -> PrivacyEvent:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise IntegrityError(f"stored privacy event is not JSON: {err}") from err
        return cls.from_dict(data)

    def describe(self) -> str:
        """A short human-readable description, e.g. ``"laplace ε=0.1"``.

        Examples
        --------
        >>> PrivacyEvent.gaussian(sigma=10.0).describe()
        'gaussian σ/Δ=10'
        """
        p = self.params
        if self.kind == "laplace":
            return f"laplace ε={p['epsilon']:g}"
        if self.kind == "gaussian":
            return f"gaussian σ/Δ={p['noise_multiplier']:g}"
        if self.kind == "dp_sgd":
            return (
                f"dp_sgd σ/C={p['noise_multiplier']:g} q={p['sample_rate']:.4g} steps={p['steps']}"
            )
        return f"generic ε={p['epsilon']:g} δ={p['delta']:g}"
