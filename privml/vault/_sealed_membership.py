"""A model's membership record, stored encrypted in its registry row.

Which version rows a model trained on and which it held out are positions, not
values, but under a row-filtered grant the positions read are exactly the rows
that pass the filter: a per-row fact about the data (say, ``diagnosis == X``).
So the record is sealed (AES-256-GCM) under the model version's own data key,
bound to the model's slot, and only its counts stay readable; the row MAC
covers the ciphertext. Someone with the database but not the key learns the
counts only, and so does anyone handed the model's :class:`ModelInfo`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .._canonical import canonical_json
from ..attacks._holdout import MEMBERSHIP, Membership
from ..exceptions import ConfigurationError, DecryptionError, IntegrityError
from ._model_bytes import seal, unseal

__all__ = ["open_membership", "seal_membership"]

_SUFFIX = "|membership"


def seal_membership(key: bytes, slot: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The registry form of ``metadata[MEMBERSHIP]``: its counts, and the record sealed."""
    record = metadata[MEMBERSHIP]
    try:
        Membership.from_record(record)
    except (IntegrityError, TypeError, ValueError):
        raise ConfigurationError(
            f"extra[{MEMBERSHIP!r}] is not a membership record (privml.attacks._holdout)"
        ) from None
    blob = seal(key, slot + _SUFFIX, canonical_json(record))
    return {
        "rows": record["rows"],
        "n_members": record["n_members"],
        "n_held_out": record["n_held_out"],
        "sealed": base64.b64encode(blob).decode("ascii"),
    }


def open_membership(key: bytes, slot: str, stored: Any) -> dict[str, Any]:
    """The record :func:`seal_membership` sealed; IntegrityError if it was altered or moved."""
    text = stored.get("sealed") if isinstance(stored, dict) else None
    if not isinstance(text, str):
        raise IntegrityError("the model's membership record is malformed")
    try:
        blob = base64.b64decode(text, validate=True)
        record = json.loads(unseal(key, slot + _SUFFIX, blob, what="membership record"))
    except (binascii.Error, ValueError, DecryptionError):
        raise IntegrityError("the model's membership record failed authentication") from None
    if not isinstance(record, dict):
        raise IntegrityError("the model's membership record is malformed")
    return record
