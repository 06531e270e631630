"""Lazy import of TenSEAL, so that ``import privml`` and ``import privml.he`` stay light."""

from __future__ import annotations

from typing import Any

from ..exceptions import OptionalDependencyError

__all__ = ["tenseal"]


def tenseal() -> Any:
    """Return the ``tenseal`` module, or say how to install it."""
    try:
        import tenseal as ts
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise OptionalDependencyError(
            "encrypted inference needs TenSEAL: pip install 'privml[he]'"
        ) from err
    return ts
