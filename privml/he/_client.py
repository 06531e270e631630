"""The client: holds the secret key, encrypts features, decrypts scores."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError, DecryptionError, IntegrityError
from . import _wire
from ._batch import PACKINGS, EncryptedBatch, EncryptedResult
from ._context import PublicContext, new_secret_context
from ._output import Output
from ._params import HEParameters
from ._seal import SeededEncryptor
from ._spec import ModelSpec
from ._tenseal import tenseal

__all__ = ["HEClient"]


class HEClient:
    """The data owner's side: the only holder of the secret key.

    Build one with :meth:`for_model`, send :meth:`public_context` and
    :meth:`encrypt`'s batch to the server, and :meth:`decrypt` what comes back.
    Decrypted results must stay with the client: CKKS decryptions leak
    information about the secret key to whoever sees them.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import privml.he
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [0.0, 2.0]])
    >>> model = privml.he.compile(LogisticRegression().fit(X, [0, 1, 1, 0]), calibration=X)
    >>> client = HEClient.for_model(model.spec)                 # hospital
    >>> batch = client.encrypt(X)
    >>> result = model.predict_encrypted(batch, client.public_context())  # model owner
    >>> client.decrypt(result, output="labels")                  # hospital
    array([0, 1, 1, 0])
    """

    def __init__(
        self, tenseal_context: Any, *, spec: ModelSpec, parameters: HEParameters, key_id: str
    ) -> None:
        if not tenseal_context.is_private():
            raise ConfigurationError("an HEClient needs a context holding the secret key")
        self._ctx = tenseal_context
        self.spec = spec
        self.parameters = parameters
        self.key_id = key_id
        self._public: dict[bool, bytes] = {}
        self._sealer: SeededEncryptor | None = None

    @classmethod
    def for_model(cls, model: object, *, security_bits: int = 128) -> HEClient:
        """New keys sized for ``model`` (an ``HEModel``, its ``ModelSpec``, or the spec's bytes).

        Parameters
        ----------
        model : HEModel, ModelSpec or bytes
            What the server published.
        security_bits : {128, 192, 256}
            Security level of the keys; parameters are the smallest that fit the
            model at this level.
        """
        spec = _as_spec(model)
        parameters = spec.parameters(security_bits=security_bits)
        return cls(
            new_secret_context(parameters),
            spec=spec,
            parameters=parameters,
            key_id=secrets.token_hex(16),
        )

    def public_context(self, *, packing: str = "columns") -> bytes:
        """The bytes to send the server: public key and evaluation keys, never the secret key.

        Galois keys (large: tens of MB) are included only for ``packing="rows"``,
        which needs rotations; relinearization keys only if the model squares.
        """
        rotations = _check_packing(packing) == "rows"
        if rotations not in self._public:
            if rotations and not self._ctx.has_galois_keys():
                self._ctx.generate_galois_keys()
            blob = self._ctx.serialize(
                save_public_key=True,
                save_secret_key=False,
                save_galois_keys=rotations,
                save_relin_keys=self.spec.requirements.needs_relin,
            )
            ctx = tenseal().context_from(blob)
            self._public[rotations] = PublicContext(
                ctx, key_id=self.key_id, parameters=self.parameters
            ).to_bytes()
        return self._public[rotations]

    def encrypt(self, X: Any, *, packing: str = "columns") -> EncryptedBatch:
        """Encrypt samples (rows of ``X``) for the server.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Raw feature values, in the model's input range.
        packing : {"columns", "rows"}
            ``"columns"`` (default): one ciphertext per feature for each N/2
            samples, no rotations, highest throughput. ``"rows"``: whole samples
            in one ciphertext, for small requests; needs Galois keys.
        """
        packing = _check_packing(packing)
        X = self._validate(X)
        if self._sealer is None:
            self._sealer = SeededEncryptor(self._ctx)
        seal = self._sealer.encrypt
        n, d = X.shape
        slots = self.parameters.slots
        blobs: list[bytes] = []
        sizes: list[int] = []
        if packing == "columns":
            for start in range(0, n, slots):
                chunk = X[start : start + slots]
                sizes.append(len(chunk))
                blobs += [seal(chunk[:, j].tolist()) for j in range(d)]
        else:
            padded = 1 << max(d - 1, 0).bit_length()
            if padded > slots:
                raise ConfigurationError(
                    f"rows packing needs {padded} slots per sample but a ciphertext has "
                    f"{slots}; use packing='columns'"
                )
            rows = slots // padded
            for start in range(0, n, rows):
                chunk = X[start : start + rows]
                sizes.append(len(chunk))
                block = np.zeros((rows, padded))
                block[: len(chunk), :d] = chunk
                # column-major: slot j * rows + i holds feature j of sample i
                blobs.append(seal(block.T.ravel().tolist()))
        return EncryptedBatch(
            batch_id=secrets.token_hex(8),
            key_id=self.key_id,
            model_id=self.spec.model_id,
            packing=packing,
            n_samples=n,
            width=d,
            chunk_sizes=tuple(sizes),
            parameters=self.parameters,
            ciphertexts=tuple(blobs),
        )

    def decrypt(
        self, encrypted_result: EncryptedResult | bytes, *, output: Output = "auto"
    ) -> np.ndarray:
        """Decrypt the server's result and apply the link function in plaintext.

        Parameters
        ----------
        encrypted_result : EncryptedResult or bytes
            What ``HEModel.predict_encrypted`` returned.
        output : {"auto", "scores", "proba", "labels"}
            ``"scores"``: raw outputs (logits, decision values, regression
            predictions), shaped like the source model's; ``"proba"``: sigmoid or
            softmax of them, like ``predict_proba``; ``"labels"``: predicted
            classes; ``"auto"``: probabilities if the model has a probabilistic
            link, else scores.
        """
        return self.spec.output.apply(self.decrypt_scores(encrypted_result), output)

    def decrypt_scores(self, encrypted_result: EncryptedResult | bytes) -> np.ndarray:
        """Raw decrypted scores, shape (n_samples, n_outputs)."""
        result = (
            encrypted_result
            if isinstance(encrypted_result, EncryptedResult)
            else EncryptedResult.from_bytes(encrypted_result)
        )
        if result.key_id != self.key_id:
            raise DecryptionError(
                f"this result is encrypted under key {result.key_id}, not this client's key "
                f"{self.key_id}: only the client that encrypted the batch can decrypt it"
            )
        if result.model_id != self.spec.model_id or result.width != self.spec.n_outputs:
            raise ConfigurationError(
                f"this result comes from model {result.model_id}, but this client was built "
                f"for model {self.spec.model_id}"
            )
        ts = tenseal()
        parts = []
        for size, blobs in result.chunks():
            columns = []
            for blob in blobs:
                try:
                    values = np.asarray(ts.ckks_vector_from(self._ctx, blob).decrypt())
                except (ValueError, RuntimeError, TypeError) as err:
                    raise DecryptionError(
                        f"a result ciphertext does not decrypt under this client's key: {err}"
                    ) from err
                if values.size < size:
                    raise IntegrityError("a result ciphertext holds fewer values than its chunk")
                columns.append(values[:size])
            parts.append(np.stack(columns, axis=1))
        return np.concatenate(parts, axis=0)

    def to_bytes(self, *, include_secret_key: bool) -> bytes:
        """Serialize the client WITH its secret key, for the client's own storage.

        ``include_secret_key=True`` must be written out: these bytes decrypt
        everything encrypted for this client. Store them encrypted (e.g. in the
        vault) and never send them to the server; the server gets
        :meth:`public_context`.
        """
        if include_secret_key is not True:
            raise ConfigurationError(
                "a client without its secret key cannot decrypt; pass include_secret_key=True "
                "to save the client for yourself, or send public_context() to the server"
            )
        blob = self._ctx.serialize(
            save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=True
        )
        header = {
            "key_id": self.key_id,
            "spec": self.spec.to_json(),
            "parameters": self.parameters.to_json(),
        }
        return _wire.pack("client", header, [blob])

    @classmethod
    def from_bytes(cls, data: bytes) -> HEClient:
        """Load a client saved with ``to_bytes(include_secret_key=True)``."""
        header, blobs = _wire.unpack(data, "client")
        try:
            ctx = tenseal().context_from(blobs[0])
            spec = ModelSpec.from_json(header["spec"])
            parameters = HEParameters.from_json(header["parameters"])
            key_id = str(header["key_id"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            if isinstance(err, ConfigurationError):
                raise
            raise IntegrityError(f"malformed client key file: {err!r}") from err
        return cls(ctx, spec=spec, parameters=parameters, key_id=key_id)

    def _validate(self, data: Any) -> np.ndarray:
        try:
            X: np.ndarray = np.asarray(data, dtype=float)
        except (TypeError, ValueError) as err:
            raise ConfigurationError(f"X must be a numeric array: {err}") from err
        if X.ndim != 2 or X.shape[0] == 0:
            raise ConfigurationError(
                f"X must have shape (n_samples, n_features) with n_samples >= 1, got {X.shape}"
            )
        self.spec.check_features(X.shape[1], "X")
        if not np.all(np.isfinite(X)):
            raise ConfigurationError("X holds NaN or infinite values; impute them first")
        low, high = np.asarray(self.spec.input_low), np.asarray(self.spec.input_high)
        if self.spec.clip_inputs:
            clipped: np.ndarray = np.clip(X, low, high)
            return clipped
        outside = (low > X) | (high < X)
        if outside.any():
            row, col = np.argwhere(outside)[0]
            raise ConfigurationError(
                f"{int(outside.sum())} value(s) lie outside the input range the encryption "
                f"parameters were sized for, e.g. feature {col} of row {row} is {X[row, col]:g}, "
                f"outside [{low[col]:g}, {high[col]:g}]; clip them, or recompile the model "
                "with a wider input_range (or calibration data covering such values)"
            )
        return X


def _as_spec(model: object) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, bytes | bytearray | memoryview):
        return ModelSpec.from_bytes(bytes(model))
    spec = getattr(model, "spec", None)
    if isinstance(spec, ModelSpec):
        return spec
    raise TypeError(
        f"HEClient.for_model takes an HEModel, a ModelSpec or its bytes, got {type(model).__name__}"
    )


def _check_packing(packing: str) -> str:
    if packing not in PACKINGS:
        raise ConfigurationError(f"packing must be 'columns' or 'rows', got {packing!r}")
    return packing
