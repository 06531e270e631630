"""The compiled model: what the server stores, serves, and checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError, IntegrityError
from . import _wire
from ._batch import EncryptedBatch, EncryptedResult
from ._client import HEClient
from ._context import PublicContext, chain_of
from ._evaluate import Chain, evaluate_chunk
from ._ir import Affine, Network, Polynomial
from ._params import HEParameters, chain_problem
from ._report import AccuracyReport, build_report
from ._seal import Kit, load_fresh
from ._spec import ModelSpec

__all__ = ["HEModel"]


class HEModel:
    """A model compiled for encrypted inference (made by :func:`privml.he.compile`).

    The server keeps it (``to_bytes`` stores weights as plain arrays, no
    pickle), publishes ``spec`` to clients, and answers encrypted batches
    with :meth:`predict_encrypted`. It has no way to decrypt.

    Attributes
    ----------
    spec : ModelSpec
        The public description clients build their keys from.
    network : Network
        Affine layers and polynomial activations, in plaintext.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import privml.he
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> model = privml.he.compile(LinearRegression().fit(X, [1.0, 2.0, 5.0]), calibration=X)
    >>> stored = model.to_bytes()                       # e.g. kept encrypted in the vault
    >>> server = HEModel.from_bytes(stored)
    >>> client = privml.he.HEClient.for_model(server.spec)
    >>> result = server.predict_encrypted(client.encrypt(X), client.public_context())
    >>> np.round(client.decrypt(result), 3)
    array([1., 2., 5.])
    """

    def __init__(
        self,
        network: Network,
        spec: ModelSpec,
        *,
        reference: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.network = network
        self.spec = spec
        self._reference = reference

    @property
    def depth(self) -> int:
        """Multiplicative depth (rescales) of the encrypted computation."""
        return self.spec.requirements.depth

    @property
    def parameters(self) -> HEParameters:
        """The parameters a client gets at the default 128-bit security."""
        return self.spec.parameters()

    def plaintext_scores(self, X: Any) -> np.ndarray:
        """Scores of the polynomial model on plaintext ``X``, shape (n, n_outputs)."""
        X = np.asarray(X, dtype=float)
        if self.spec.clip_inputs:
            X = np.clip(X, self.spec.input_low, self.spec.input_high)
        return self.network.forward(X)

    def predict_encrypted(
        self, encrypted_batch: EncryptedBatch | bytes, public_context: PublicContext | bytes
    ) -> EncryptedResult:
        """Compute scores on ciphertexts; the result stays encrypted under the client's key.

        Parameters
        ----------
        encrypted_batch : EncryptedBatch or bytes
            From ``HEClient.encrypt``.
        public_context : PublicContext or bytes
            From ``HEClient.public_context`` (the same client). A context that
            holds a secret key is refused.

        Raises
        ------
        ConfigurationError
            (a ``ValueError``) for a private context, or a batch that does not
            fit this model or this context.
        IntegrityError
            Corrupted bytes.
        """
        public = PublicContext.coerce(public_context)
        batch = (
            encrypted_batch
            if isinstance(encrypted_batch, EncryptedBatch)
            else EncryptedBatch.from_bytes(encrypted_batch)
        )
        chain = self._check(batch, public)
        ctx = public.tenseal_context
        kit = Kit(ctx)
        rows = public.parameters.slots // (1 << max(batch.width - 1, 0).bit_length())
        out: list[bytes] = []
        for size, blobs in batch.chunks():
            loaded = [load_fresh(ctx, blob, size=size) for blob in blobs]
            inputs = [ct for _, ct in loaded] if batch.packing == "columns" else [loaded[0][0]]
            try:
                scores = evaluate_chunk(
                    self.network,
                    inputs,
                    kit,
                    chain,
                    packing=batch.packing,
                    rows=rows,
                    fold_bits=self.spec.requirements.fold_bits,
                )
            except ConfigurationError:
                raise
            except (ValueError, RuntimeError) as err:
                raise ConfigurationError(
                    "encrypted evaluation failed: the ciphertexts do not match the parameters "
                    "this model needs; the client must encrypt fresh data with keys from "
                    "HEClient.for_model(model.spec)"
                ) from err
            out += [kit.to_bytes(ct, size=size) for ct in scores]
        return EncryptedResult(
            batch_id=batch.batch_id,
            key_id=batch.key_id,
            model_id=self.spec.model_id,
            packing=batch.packing,
            n_samples=batch.n_samples,
            width=self.spec.n_outputs,
            chunk_sizes=batch.chunk_sizes,
            parameters=public.parameters,
            ciphertexts=tuple(out),
        )

    def _check(self, batch: EncryptedBatch, public: PublicContext) -> Chain:
        spec = self.spec
        spec.check_features(batch.width, "the encrypted batch")
        if batch.model_id != spec.model_id:
            raise ConfigurationError(
                f"the batch was encrypted for model {batch.model_id}, but this is model "
                f"{spec.model_id}; the client must build its keys with "
                "HEClient.for_model(model.spec) for this model"
            )
        if batch.key_id != public.key_id:
            raise ConfigurationError(
                f"the batch was encrypted under key {batch.key_id} but the public context is "
                f"for key {public.key_id}; send the public context of the client that "
                "encrypted the batch"
            )
        if batch.parameters != public.parameters:
            raise ConfigurationError("the batch and the public context use different parameters")
        if batch.packing == "rows" and not public.has_galois_keys:
            raise ConfigurationError(
                "rows packing needs Galois keys, which this public context lacks; send "
                "client.public_context(packing='rows')"
            )
        ctx = public.tenseal_context
        if not ctx.has_public_key():
            raise ConfigurationError(
                "the public context lacks the client's public key; send "
                "client.public_context(), which holds it"
            )
        if spec.requirements.needs_relin and not ctx.has_relin_keys():
            raise ConfigurationError(
                "this model multiplies ciphertexts, which needs relinearization keys, and the "
                "public context has none; send client.public_context() of a client made with "
                "HEClient.for_model(model.spec)"
            )
        n, chain = chain_of(ctx)
        if n != public.parameters.poly_modulus_degree:
            raise IntegrityError("the public context's ring size does not match its header")
        problem = chain_problem(
            spec.requirements,
            prime_bits=[q.bit_length() for q in chain.primes],
            scale_bits=math.log2(chain.scale),
        )
        if problem:
            raise ConfigurationError(problem)
        return chain

    def check(self, X: Any, client: HEClient, *, packing: str = "columns") -> AccuracyReport:
        """Encrypt ``X`` with ``client``, predict, decrypt, and compare with plaintext.

        Runs both sides locally, so only use it with data the model owner may see
        (a validation set). The report separates the polynomial approximation of
        activations from CKKS noise.
        """
        X = np.asarray(X, dtype=float)
        result = self.predict_encrypted(
            client.encrypt(X, packing=packing), client.public_context(packing=packing)
        )
        encrypted = client.decrypt_scores(result)
        polynomial = self.plaintext_scores(X)
        reference = None
        if self._reference is not None:
            reference = np.asarray(self._reference(X), dtype=float).reshape(encrypted.shape)
        elif self.network.exact:
            reference = polynomial  # no approximation: the polynomial model is the model
        return build_report(
            encrypted=encrypted,
            polynomial=polynomial,
            reference=reference,
            output=self.spec.output,
            packing=packing,
            parameters=client.parameters,
        )

    def to_bytes(self) -> bytes:
        """Serialize weights (float64 arrays), activations and spec; no pickle."""
        layers = [list(layer.weight.shape) for layer in self.network.layers]
        activations = [
            {
                "coeffs": list(a.coeffs),
                "name": a.name,
                "fit_range": None if a.fit_range is None else list(a.fit_range),
                "max_fit_error": a.max_fit_error,
            }
            for a in self.network.activations
        ]
        header = {
            "spec": self.spec.to_json(),
            "network_id": self.network.fingerprint(),
            "layers": layers,
            "activations": activations,
        }
        blobs = []
        for layer in self.network.layers:
            blobs += [_array_bytes(layer.weight), _array_bytes(layer.bias)]
        return _wire.pack("model", header, blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> HEModel:
        """Load a model written by :meth:`to_bytes` (no code is unpickled)."""
        header, blobs = _wire.unpack(data, "model")
        try:
            shapes = [(int(o), int(i)) for o, i in header["layers"]]
            if len(blobs) != 2 * len(shapes):
                raise ValueError("weight arrays missing")
            layers = tuple(
                Affine(_array(blobs[2 * n], shape), _array(blobs[2 * n + 1], (shape[0],)))
                for n, shape in enumerate(shapes)
            )
            activations = tuple(
                Polynomial(
                    tuple(float(c) for c in a["coeffs"]),
                    str(a["name"]),
                    None if a["fit_range"] is None else (a["fit_range"][0], a["fit_range"][1]),
                    float(a["max_fit_error"]),
                )
                for a in header["activations"]
            )
            network = Network(layers, activations)
            spec = ModelSpec.from_json(header["spec"])
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ConfigurationError | IntegrityError):
                raise
            raise IntegrityError(f"malformed model: {err!r}") from err
        network_id = network.fingerprint()
        if network_id != header.get("network_id") or spec.model_id != spec.expected_id(network_id):
            raise IntegrityError("model weights do not match the fingerprint in their header")
        return cls(network, spec)


def _array_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f8").tobytes()


def _array(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    if len(blob) != 8 * int(np.prod(shape)):
        raise ValueError(f"array of {len(blob)} bytes does not have shape {shape}")
    return np.frombuffer(blob, dtype="<f8").reshape(shape).astype(float)
