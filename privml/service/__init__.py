"""Service mode: a curator server holds the vault key; analysts connect with a token.

The data-protection officer runs ``privml serve VAULT`` (or :func:`serve`) on
the machine that holds the key; an analyst calls :func:`privml.connect` and
gets a :class:`RemoteSession` with the methods of :class:`privml.Session`. Each
request passes the same door in the server's process: the policy decides, the
ledger charges before any value is read, and the audit log records it, with the
client's address and the token's id. The analyst never holds the key.

The client needs only ``httpx`` and ``pyarrow`` (``pip install 'privml[client]'``);
the server needs ``fastapi`` and ``uvicorn`` too (``pip install 'privml[server]'``).
"""

from __future__ import annotations

from ._errors import ServiceError
from ._limits import Limits

__all__ = ["Limits", "RemoteSession", "ServiceError", "connect", "create_app", "serve"]


def __getattr__(name: str) -> object:
    # The client needs httpx, the server fastapi and uvicorn: each loads when first asked for.
    if name in ("connect", "RemoteSession"):
        from . import _client

        return getattr(_client, name)
    if name == "create_app":
        from ._app import create_app

        return create_app
    if name == "serve":
        from ._serve import serve

        return serve
    raise AttributeError(f"module 'privml.service' has no attribute {name!r}")
