"""The ``dp_accounting`` side of privml's accounting, imported only when a figure is needed.

``dp_accounting`` pulls in SciPy (about half a second), so nothing here is
imported by ``import privml``; :mod:`privml.accounting.events` and
:mod:`privml.accounting.composition` import this module on first use.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import attr
from dp_accounting import dp_event
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld
from dp_accounting.rdp import RdpAccountant, compute_epsilon

__all__ = [
    "LIBRARY",
    "EpsilonDeltaDpEvent",
    "RdpAccountant",
    "compute_epsilon",
    "dp_event",
    "event_from_dict",
    "event_to_dict",
    "pld",
    "pld_common",
]

LIBRARY = f"dp_accounting {version('dp-accounting')}"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class EpsilonDeltaDpEvent(dp_event.DpEvent):  # type: ignore[misc]
    """A mechanism known only by its (ε, δ)-DP guarantee.

    ``dp_accounting`` has no event for this, so privml defines one as a
    ``DpEvent`` (it converts with ``to_named_tuple`` / ``from_named_tuple`` like
    the others). ``dp_accounting``'s own accountants report it unsupported,
    which is right for them; privml composes it with its worst case, the
    dominating pair of Kairouz, Oh and Viswanath (2015): privacy loss +ε with
    probability (1-δ)/(1+e^-ε), -ε with probability (1-δ)/(1+e^ε), ∞ with
    probability δ. Every (ε, δ)-DP mechanism is a post-processing of that pair,
    so any bound computed from it holds for the real mechanism.
    """

    epsilon: float
    delta: float


_CLASSES: dict[str, type[dp_event.DpEvent]] = {
    cls.__name__: cls
    for cls in (
        dp_event.GaussianDpEvent,
        dp_event.LaplaceDpEvent,
        dp_event.PoissonSampledDpEvent,
        dp_event.SelfComposedDpEvent,
        dp_event.ComposedDpEvent,
        EpsilonDeltaDpEvent,
    )
}


def event_to_dict(event: dp_event.DpEvent) -> dict[str, Any]:
    """A ``DpEvent`` as a JSON-ready dict: ``{"name": class name, field: value, ...}``."""
    name = type(event).__name__
    if _CLASSES.get(name) is not type(event):
        raise ValueError(f"internal: privml does not store {name}")
    out: dict[str, Any] = {"name": name}
    for field in attr.fields(type(event)):
        value = getattr(event, field.name)
        if isinstance(value, dp_event.DpEvent):
            value = event_to_dict(value)
        elif isinstance(value, list | tuple):
            value = [event_to_dict(v) for v in value]
        out[field.name] = value
    return out


def event_from_dict(data: dict[str, Any]) -> dp_event.DpEvent:
    """Inverse of :func:`event_to_dict`; only the event classes privml writes are accepted."""
    cls = _CLASSES.get(str(data.get("name")))
    if cls is None:
        raise ValueError(f"unknown DpEvent {data.get('name')!r}")
    values: dict[str, Any] = {}
    for field in attr.fields(cls):
        value = data[field.name]
        if isinstance(value, dict):
            value = event_from_dict(value)
        elif isinstance(value, list):
            value = [event_from_dict(v) for v in value]
        values[field.name] = value
    return cls(**values)
