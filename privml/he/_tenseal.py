"""Lazy import of TenSEAL, so that ``import privml`` and ``import privml.he`` stay light."""

from __future__ import annotations

from typing import Any

from .._optional import require

__all__ = ["tenseal"]


def tenseal() -> Any:
    """Return the ``tenseal`` module, or say how to install it."""
    return require("tenseal", feature="encrypted inference")
