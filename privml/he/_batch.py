"""Encrypted requests and responses, as they travel between client and server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..exceptions import IntegrityError
from . import _wire
from ._params import HEParameters

__all__ = ["EncryptedBatch", "EncryptedResult"]

PACKINGS = ("columns", "rows")


@dataclass(frozen=True, eq=False)
class _Encrypted:
    """Fields shared by batches and results; ``ciphertexts`` are TenSEAL CKKS vectors."""

    _kind: ClassVar[str]

    batch_id: str
    key_id: str
    model_id: str
    packing: str
    n_samples: int
    width: int
    chunk_sizes: tuple[int, ...]
    parameters: HEParameters
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.packing not in PACKINGS:
            raise IntegrityError(f"unknown packing {self.packing!r} in {self._kind}")
        if sum(self.chunk_sizes) != self.n_samples or min(self.chunk_sizes, default=1) < 1:
            raise IntegrityError(f"{self._kind}: chunk sizes do not add up to n_samples")
        if len(self.ciphertexts) != len(self.chunk_sizes) * self.per_chunk:
            raise IntegrityError(
                f"{self._kind}: {len(self.ciphertexts)} ciphertexts for "
                f"{len(self.chunk_sizes)} chunk(s) of {self.per_chunk}"
            )

    @property
    def per_chunk(self) -> int:
        """Ciphertexts per chunk of samples."""
        return self.width

    @property
    def nbytes(self) -> int:
        """Total size of the ciphertexts."""
        return sum(len(c) for c in self.ciphertexts)

    def chunks(self) -> list[tuple[int, tuple[bytes, ...]]]:
        """``(samples in chunk, its ciphertexts)`` for each chunk."""
        k = self.per_chunk
        return [
            (size, self.ciphertexts[i * k : (i + 1) * k]) for i, size in enumerate(self.chunk_sizes)
        ]

    def to_bytes(self) -> bytes:
        """Serialize (versioned header, checksum)."""
        header = {
            "batch_id": self.batch_id,
            "key_id": self.key_id,
            "model_id": self.model_id,
            "packing": self.packing,
            "n_samples": self.n_samples,
            "width": self.width,
            "chunk_sizes": list(self.chunk_sizes),
            "parameters": self.parameters.to_json(),
        }
        return _wire.pack(self._kind, header, self.ciphertexts)

    @classmethod
    def _load(cls, data: bytes) -> dict[str, Any]:
        header, blobs = _wire.unpack(data, cls._kind)
        try:
            return {
                "batch_id": str(header["batch_id"]),
                "key_id": str(header["key_id"]),
                "model_id": str(header["model_id"]),
                "packing": str(header["packing"]),
                "n_samples": int(header["n_samples"]),
                "width": int(header["width"]),
                "chunk_sizes": tuple(int(n) for n in header["chunk_sizes"]),
                "parameters": HEParameters.from_json(header["parameters"]),
                "ciphertexts": tuple(blobs),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise IntegrityError(f"malformed {cls._kind} header: {err!r}") from err


@dataclass(frozen=True, eq=False)
class EncryptedBatch(_Encrypted):
    """Samples encrypted by a client for one model: the request the server receives.

    With ``packing="columns"`` each chunk of up to N/2 samples is one
    ciphertext per feature (feature ``j`` of every sample in the chunk); with
    ``packing="rows"`` each chunk is one ciphertext holding whole samples.
    ``width`` is the number of features; ``batch_id`` is echoed in the result.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import privml.he
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> model = privml.he.compile(LinearRegression().fit(X, [1.0, 2.0, 5.0]), calibration=X)
    >>> batch = privml.he.HEClient.for_model(model.spec).encrypt(X)
    >>> again = EncryptedBatch.from_bytes(batch.to_bytes())
    >>> again.n_samples, again.packing, len(again.ciphertexts)
    (3, 'columns', 2)
    """

    _kind: ClassVar[str] = "batch"

    @property
    def per_chunk(self) -> int:
        return self.width if self.packing == "columns" else 1

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedBatch:
        """Load a batch written by ``to_bytes()``."""
        return cls(**cls._load(data))


@dataclass(frozen=True, eq=False)
class EncryptedResult(_Encrypted):
    """Scores computed by the server, still encrypted under the client's key.

    One ciphertext per output per chunk; ``width`` is the number of outputs.
    Only :meth:`HEClient.decrypt` can read it; there is no decrypt here.
    """

    _kind: ClassVar[str] = "result"

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedResult:
        """Load a result written by ``to_bytes()``."""
        return cls(**cls._load(data))
