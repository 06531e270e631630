"""The one guard for optional dependencies: import one, or say which extra installs it.

Entry points call :func:`require` before anything irreversible happens (a
ledger charge, a reservation, an audit entry of success), so a missing extra
costs no privacy budget and names its fix.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .exceptions import OptionalDependencyError

__all__ = ["EXTRAS", "require"]

#: The extra of ``pyproject.toml`` that installs each optional top-level module.
EXTRAS = {
    "diffprivlib": "dp",
    "opendp": "dp",
    "torch": "torch",
    "opacus": "torch",
    "tqdm": "torch",
    "tenseal": "he",
    "psycopg": "postgres",
    "httpx": "client",
    "fastapi": "server",
    "uvicorn": "server",
    "flwr": "federated",
}


def require(module: str, *, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`~privml.OptionalDependencyError` naming the extra.

    Parameters
    ----------
    module : str
        The module to import (e.g. ``"diffprivlib"``).
    feature : str
        What needs it, in words, for the error message (e.g. ``"session.dp.count"``).
    extra : str, optional
        The privml extra that installs it; by default looked up in :data:`EXTRAS`.

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    OptionalDependencyError
        Also an :class:`ImportError`: the module (or one it needs) cannot be
        imported. The message says ``pip install 'privml[extra]'``.

    Examples
    --------
    >>> require("json", feature="this example").__name__
    'json'
    >>> require("no_such_module_xyz", feature="this example", extra="dp")
    Traceback (most recent call last):
    ...
    privml.exceptions.OptionalDependencyError: this example needs no_such_module_xyz, ...
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        name = extra if extra is not None else EXTRAS.get(module.partition(".")[0])
        fix = f"pip install 'privml[{name}]'" if name else f"pip install {module}"
        missing = err.name or module
        raise OptionalDependencyError(
            f"{feature} needs {module}, which cannot be imported ({missing} is missing): {fix}",
            name=missing,
        ) from err
