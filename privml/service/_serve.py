"""Running the curator server: ``privml serve`` and :func:`privml.serve`.

The key comes from a key file, ``PRIVML_VAULT_KEY`` or a passphrase, never from
the command line, and is never logged. A non-loopback address needs TLS (or an
explicit ``allow_insecure=True``, for a server behind a TLS-terminating proxy on
the same host). Several workers (and several servers on one PostgreSQL
database) serve one vault: budgets, tokens and stored answers live in its
database, so every worker sees the same.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .._optional import require
from ..exceptions import ConfigurationError
from ._limits import Limits

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["serve", "worker_app"]

#: Environment variables a server hands its worker processes (never the command line).
_CONFIG_ENV = "PRIVML_SERVE_CONFIG"
_PASSPHRASE_ENV = "PRIVML_SERVE_PASSPHRASE"
_KEY_ENV = "PRIVML_VAULT_KEY"


def serve(
    vault: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8750,
    workers: int = 1,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    passphrase: str | None = None,
    metadata_url: str | None = None,
    storage: str | None = None,
    anchor_path: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
    allow_insecure: bool = False,
    log_level: str = "info",
) -> None:
    """Serve ``vault`` over HTTP(S) until interrupted.

    Parameters
    ----------
    vault : path, optional
        The vault folder (None for a folder-less vault: ``metadata_url`` and ``storage``).
    host, port : str, int
        Where to listen (loopback by default).
    workers : int
        Server processes; they share the vault's database.
    certfile, keyfile : path, optional
        The TLS certificate and its private key (PEM). Both or neither.
    key_file, passphrase : optional
        The vault key's source; without either, ``PRIVML_VAULT_KEY``.
    metadata_url, storage, anchor_path : optional
        As for :meth:`privml.Vault.open`.
    limits : Limits, optional
        Sizes, rates and times (:class:`privml.service.Limits`).
    allow_insecure : bool
        Serve plain HTTP on a non-loopback address (behind a TLS proxy on the same host).
    log_level : str
        uvicorn's log level. Request lines are logged without bodies or headers.

    Raises
    ------
    ConfigurationError
        A non-loopback host without TLS, a certificate without its key, ``workers < 1``.
    InvalidKeyError
        The key does not open the vault (checked before listening).
    """
    uvicorn = require("uvicorn", feature="privml serve", extra="server")
    require("fastapi", feature="privml serve", extra="server")
    from ._protocol import NoDelayH11Protocol

    check_bind(host, tls=certfile is not None, allow_insecure=allow_insecure)
    if (certfile is None) != (keyfile is None):
        raise ConfigurationError("TLS needs both certfile= and keyfile=")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError("workers= must be a positive integer")
    config = {
        "vault": None if vault is None else os.fspath(vault),
        "key_file": None if key_file is None else os.fspath(key_file),
        "metadata_url": metadata_url,
        "storage": storage,
        "anchor_path": None if anchor_path is None else os.fspath(anchor_path),
        "limits": asdict(limits or Limits()),
    }
    tls = {} if certfile is None else {"ssl_certfile": os.fspath(certfile), "ssl_keyfile": keyfile}
    common: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        # the client's address is what the socket says: X-Forwarded-For is believed only from
        # a TLS proxy on this host (allow_insecure), else any local client could forge it
        proxy_headers=allow_insecure,
        forwarded_allow_ips="127.0.0.1,::1",
        http=NoDelayH11Protocol,
        **tls,
    )
    if workers == 1:
        app = _app(config, passphrase)
        uvicorn.run(app, **common)
        return
    _open(config, passphrase).close()  # a wrong key fails here, before any worker starts
    os.environ[_CONFIG_ENV] = json.dumps(config)
    if passphrase is not None:
        os.environ[_PASSPHRASE_ENV] = passphrase
    uvicorn.run("privml.service._serve:worker_app", factory=True, workers=workers, **common)


def worker_app() -> FastAPI:
    """The application of one worker process (``uvicorn --factory``), configured by its parent."""
    config = json.loads(os.environ[_CONFIG_ENV])
    passphrase = os.environ.pop(_PASSPHRASE_ENV, None)
    return _app(config, passphrase)


def check_bind(host: str, *, tls: bool, allow_insecure: bool) -> None:
    """Refuse plain HTTP on an address other machines can reach.

    Examples
    --------
    >>> check_bind("127.0.0.1", tls=False, allow_insecure=False)
    >>> check_bind("0.0.0.0", tls=False, allow_insecure=False)
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: serving on '0.0.0.0' without TLS ...
    """
    if tls or allow_insecure or _loopback(host):
        return
    raise ConfigurationError(
        f"serving on {host!r} without TLS would send tokens and answers in clear: give "
        "certfile= and keyfile= (--tls-cert/--tls-key), or bind 127.0.0.1 behind a TLS proxy "
        "(allow_insecure=True / --insecure only for a proxy on the same host)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _open(config: Mapping[str, Any], passphrase: str | None) -> Any:
    from ..vault import Vault

    return Vault.open(
        config["vault"],
        key_file=config["key_file"],
        passphrase=passphrase,
        metadata_url=config["metadata_url"],
        storage=config["storage"],
        anchor_path=config["anchor_path"],
    )


def _app(config: Mapping[str, Any], passphrase: str | None) -> FastAPI:
    from ._app import create_app

    vault = _open(config, passphrase)
    return create_app(vault, limits=Limits(**config["limits"]))
