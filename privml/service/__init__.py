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

__all__ = ["ServiceError"]
