"""A model as bytes at rest: serialized, then sealed with AES-256-GCM under its own key.

The associated data binds the model's name and version (the *slot*), so a file
copied over another version fails to decrypt. ``pickle`` runs code when it
loads, so only load models from a vault you trust: the encryption guarantees the
bytes were written by someone holding the vault key, not that they are harmless.
"""

from __future__ import annotations

import importlib
import pickle
import secrets
import sys
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import ConfigurationError, DecryptionError, IntegrityError

__all__ = ["deserialize", "libraries_in_use", "seal", "serialize", "unseal"]

#: The libraries whose versions a registered model records.
_LIBRARIES = ("numpy", "sklearn", "diffprivlib", "torch", "opacus", "tenseal")


def seal(key: bytes, slot: str, payload: bytes) -> bytes:
    """``payload`` encrypted under ``key``, bound to ``slot``: nonce || ciphertext || tag."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, payload, slot.encode())


def unseal(key: bytes, slot: str, blob: bytes, *, what: str) -> bytes:
    """The payload :func:`seal` sealed; :class:`DecryptionError` naming ``what`` if it fails."""
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], slot.encode())
    except InvalidTag:
        raise DecryptionError(f"{what} failed authentication") from None


def serialize(model: Any) -> tuple[str, bytes]:
    module = type(model).__module__
    if module.split(".")[0] == "privml" and hasattr(model, "to_bytes"):
        return "bytes", model.to_bytes()
    try:
        return "pickle", pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise ConfigurationError(f"cannot store a {type(model).__name__}: {err}") from None


def deserialize(kind: str, payload: bytes, class_path: str) -> Any:
    if kind == "bytes":
        module, _, qualname = class_path.rpartition(".")
        if module.split(".")[0] != "privml":
            raise IntegrityError(
                f"refusing to load {class_path!r}: the model decrypted, but its metadata names "
                "a class outside privml for a privml payload; the registry was modified"
            )
        return getattr(importlib.import_module(module), qualname).from_bytes(payload)
    return pickle.loads(payload)  # authenticated with the vault key (see the module doc)


def libraries_in_use() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            out[name] = str(module.__version__)
    from .. import __version__

    out["privml"] = __version__
    return out
