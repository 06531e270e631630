"""torch and opacus, or an error that says how to install them."""

from __future__ import annotations

from ...exceptions import OptionalDependencyError

try:
    import opacus
    import torch
except ImportError as err:  # pragma: no cover - depends on the environment
    raise OptionalDependencyError(
        f"DP-SGD needs torch and opacus ({err.name} is missing): pip install 'privml[torch]'"
    ) from err

__all__ = ["OPACUS_VERSION", "TORCH_VERSION"]

OPACUS_VERSION = str(opacus.__version__)
TORCH_VERSION = str(torch.__version__)
