"""The local link between a site's Flower ClientApp processes and the site process.

Flower's deployment engine starts a fresh ClientApp process for every message, so
the state of a DP-SGD run (its open ledger reservation, its step guard, its Poisson
loader) cannot live there. It lives in the site process (:class:`~privml.federated.Site`),
the one holder of the vault key; each ClientApp process asks it for one round over
this link: a :mod:`multiprocessing.connection` socket on 127.0.0.1 whose peers prove
knowledge of a random 32-byte key (HMAC challenge) before anything is exchanged.

Only bytes cross the link: a JSON header and arrays in NumPy's ``.npy`` format read
with ``allow_pickle=False`` (no pickle either way; :mod:`._wire`). The address and the
key are written to a file readable by its owner only; the SuperNode is given its path.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from . import _wire

__all__ = ["LinkAddress", "call", "decode", "encode", "listen", "wake"]


@dataclass(frozen=True)
class LinkAddress:
    """Where a site process listens, and the key that proves a peer is of the same site."""

    host: str
    port: int
    key: bytes

    def write(self, path: Path) -> None:
        """Write the address to ``path``, readable and writable by its owner only."""
        data = json.dumps({"host": self.host, "port": self.port, "key": self.key.hex()})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(data)

    @classmethod
    def read(cls, path: str | Path) -> LinkAddress:
        """The address written by :meth:`write`."""
        try:
            return cls(*_wire.read_address(path))
        except (OSError, ValueError, KeyError) as error:
            raise ConfigurationError(
                f"cannot read the site link file {str(path)!r} ({type(error).__name__}); "
                "start the site with `privml federated site` and give its SuperNode "
                "--node-config \"privml-link='<the file it wrote>'\""
            ) from error


def listen() -> tuple[Listener, LinkAddress]:
    """A listener on a free loopback port, with a fresh key."""
    key = secrets.token_bytes(32)
    listener = Listener(("127.0.0.1", 0), authkey=key)
    host, port = listener.address
    return listener, LinkAddress(str(host), int(port), key)


def encode(header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> bytes:
    """A JSON header and arrays as one message (see :mod:`._wire`)."""
    return _wire.encode(header, arrays)


def decode(message: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and arrays of :func:`encode`; arrays are read without pickle."""
    try:
        return _wire.decode(message)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None


def call(
    address: LinkAddress, header: dict[str, Any], arrays: Sequence[np.ndarray] = ()
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Send one request to the site process and return its reply."""
    return _wire.call(address.host, address.port, address.key, header, arrays)


def wake(address: LinkAddress, *, timeout: float = 2.0) -> None:
    """Connect once and hang up, so a listener blocked in ``accept`` sees that it should stop.

    A bare TCP connection, without the key's handshake: it returns at once whether or not
    anyone still accepts (a handshake would wait for ever on a listener nobody serves).
    """
    with contextlib.suppress(OSError):
        socket.create_connection((address.host, address.port), timeout=timeout).close()
