"""The server's HTTP protocol: uvicorn's h11 protocol, each answer sent at once.

With ``workers > 1`` uvicorn shares one listening socket made without a protocol
number, and asyncio then leaves Nagle's algorithm on for the connections it
accepts: each keep-alive answer waited for the client's delayed ACK (about 40 ms).
Setting ``TCP_NODELAY`` on every accepted connection makes one worker and several
answer alike.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import suppress

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["NoDelayH11Protocol"]


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``TCP_NODELAY`` set on each connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
