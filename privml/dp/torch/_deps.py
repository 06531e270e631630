"""torch and opacus, or an error that says how to install them (or which opacus is needed)."""

from __future__ import annotations

from ..._optional import require

torch = require("torch", feature="DP-SGD")
opacus = require("opacus", feature="DP-SGD")

__all__ = ["OPACUS_VERSION", "TORCH_VERSION"]

OPACUS_VERSION = str(opacus.__version__)
TORCH_VERSION = str(torch.__version__)

from ._opacus import check  # noqa: E402  (only once opacus is known to import)

check(OPACUS_VERSION)
