"""TenSEAL contexts: creating the client's, and the public half the server receives."""

from __future__ import annotations

from typing import Any

from ..exceptions import ConfigurationError, IntegrityError
from . import _wire
from ._evaluate import Chain
from ._params import HEParameters
from ._tenseal import tenseal

__all__ = ["PublicContext", "chain_of", "new_secret_context", "refuse_private"]

_REFUSAL = (
    "refusing a private context: it holds the client's secret key, and the server must "
    "never hold a key that can decrypt the client's data. Send client.public_context() "
    "(bytes without the secret key) instead"
)


def new_secret_context(params: HEParameters) -> Any:
    """A fresh CKKS context with a new secret key (and relinearization keys)."""
    ts = tenseal()
    try:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
    except (ValueError, RuntimeError) as err:
        raise ConfigurationError(
            f"could not build CKKS keys for {params}: {err}; derive parameters with "
            "ModelSpec.parameters() rather than by hand"
        ) from err
    ctx.global_scale = 2.0**params.scale_bits
    return ctx


def chain_of(ctx: Any) -> tuple[int, Chain]:
    """``(N, data primes and scale)`` of a TenSEAL context."""
    import tenseal.sealapi  # noqa: F401  (registers SEAL's Modulus type for the call below)

    parms = ctx.seal_context().data.first_context_data().parms()
    primes = tuple(int(q.value()) for q in parms.coeff_modulus())
    return int(parms.poly_modulus_degree()), Chain(primes, float(ctx.global_scale))


def refuse_private(obj: object) -> None:
    """Raise if ``obj`` is, or holds, a context with a secret key."""
    if type(obj).__name__ == "HEClient":
        raise ConfigurationError(_REFUSAL)
    is_private = getattr(obj, "is_private", None)
    if callable(is_private) and is_private():
        raise ConfigurationError(_REFUSAL)


class PublicContext:
    """The public half of a client's keys: what the server computes with.

    It holds the public key, the relinearization keys (when the model multiplies
    ciphertexts) and the Galois keys (only for rows packing, which rotates);
    never the secret key. Constructing one from a private context raises.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import privml.he
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> model = privml.he.compile(LinearRegression().fit(X, [1.0, 2.0, 5.0]), calibration=X)
    >>> client = privml.he.HEClient.for_model(model.spec)
    >>> public = PublicContext.from_bytes(client.public_context())
    >>> public.is_private(), public.has_galois_keys, public.key_id == client.key_id
    (False, False, True)
    """

    def __init__(self, tenseal_context: Any, *, key_id: str, parameters: HEParameters) -> None:
        if tenseal_context.is_private() or tenseal_context.has_secret_key():
            raise ConfigurationError(_REFUSAL)
        self._ctx = tenseal_context
        self.key_id = key_id
        self.parameters = parameters

    @property
    def tenseal_context(self) -> Any:
        """The underlying public ``tenseal.Context``."""
        return self._ctx

    @property
    def has_galois_keys(self) -> bool:
        """Whether rotations (rows packing) are possible."""
        return bool(self._ctx.has_galois_keys())

    def is_private(self) -> bool:
        """Always False: a PublicContext cannot hold a secret key."""
        return bool(self._ctx.is_private())

    def to_bytes(self) -> bytes:
        """Serialize (versioned, checksummed); contains no secret key."""
        blob = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=self.has_galois_keys,
            save_relin_keys=bool(self._ctx.has_relin_keys()),
        )
        header = {"key_id": self.key_id, "parameters": self.parameters.to_json()}
        return _wire.pack("public_context", header, [blob])

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicContext:
        """Load bytes from :meth:`HEClient.public_context`; refuse a secret key."""
        if _wire.peek_kind(data) == "client":
            raise ConfigurationError(_REFUSAL)
        header, blobs = _wire.unpack(data, "public_context")
        if len(blobs) != 1:
            raise IntegrityError("malformed public context: expected one TenSEAL context")
        ts = tenseal()
        try:
            ctx = ts.context_from(blobs[0])
        except (ValueError, RuntimeError) as err:
            raise IntegrityError(f"malformed public context: {err}") from err
        try:
            parameters = HEParameters.from_json(header["parameters"])
            key_id = str(header["key_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise IntegrityError(f"malformed public context header: {err!r}") from err
        return cls(ctx, key_id=key_id, parameters=parameters)

    @classmethod
    def coerce(cls, value: object) -> PublicContext:
        """A PublicContext from itself or its bytes; refuse anything holding a secret key."""
        if isinstance(value, PublicContext):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return cls.from_bytes(bytes(value))
        refuse_private(value)
        raise TypeError(
            f"expected the bytes of client.public_context() or a PublicContext, "
            f"got {type(value).__name__}"
        )
