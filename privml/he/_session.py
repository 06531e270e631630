"""``session.he``: serving registered models on encrypted inputs.

Serving is a policy decision like any read (see :mod:`privml.vault._model_access`):
the spec and every prediction need, for the session's principal and purpose,
``dp_aggregate`` or more on the model's training columns for a DP model, ``raw``
for one that is not DP; an explicit deny wins, and refusals are audited as
``he.spec`` / ``he.predict``.

No privacy budget is charged: the server sees only ciphertexts under the
client's key and learns nothing about the inputs, and the model's training
data is covered by the model's own DP guarantee, charged when it was trained.
Each spec and prediction is audited (principal, purpose, model version, the
deciding grants, batch size and ids — never ciphertext bytes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from .._gate import Gate, ModelUse

__all__ = ["HESession"]


class HESession:
    """Encrypted inference for one session. Reach it as ``session.he``."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def spec(self, model_name: str, *, version: int | None = None) -> bytes:
        """The public spec clients need to make keys for ``model_name`` (no weights).

        A client calls ``privml.he.HEClient.for_model(spec_bytes)``. Refused with
        :class:`~privml.AccessDenied` (and audited) unless the policy lets this
        session use the model.
        """
        model, use = self._model(model_name, version, action="he.spec")
        spec = bytes(model.spec.to_bytes())
        self._audit("he.spec", "ok", use, use.details)
        return spec

    def predict(
        self,
        model_name: str,
        encrypted_batch: bytes,
        *,
        public_context: bytes,
        version: int | None = None,
    ) -> bytes:
        """Score an encrypted batch with a registered HE model; return the encrypted result.

        Refused with :class:`~privml.AccessDenied` (and audited) unless the policy
        lets this session use the model. The public context must not hold a secret
        key (refused with ``ValueError``); the result can only be decrypted by the
        client that encrypted the batch.
        """
        from . import EncryptedBatch

        model, use = self._model(model_name, version, action="he.predict")
        batch = EncryptedBatch.from_bytes(encrypted_batch)
        details = {
            **use.details,
            "samples": batch.n_samples,
            "packing": batch.packing,
            "batch_id": batch.batch_id,
            "client_key_id": batch.key_id,
        }
        try:
            result = model.predict_encrypted(batch, public_context)
        except Exception as err:
            self._audit("he.predict", "error", use, {**details, "error": type(err).__name__})
            raise
        self._audit("he.predict", "ok", use, details)
        return bytes(result.to_bytes())

    def _model(self, model_name: str, version: int | None, *, action: str) -> tuple[Any, ModelUse]:
        from . import HEModel

        model, use = self._gate.use_model(model_name, version, action=action)
        if not isinstance(model, HEModel):
            raise ConfigurationError(
                f"model {model_name!r} is a {type(model).__name__}, not an encrypted-inference "
                "model: compile it with privml.he.compile(model, input_range=...) and register "
                "the result with vault.models.register(...)"
            )
        return model, use

    def _audit(self, action: str, outcome: str, use: ModelUse, details: dict[str, Any]) -> None:
        dataset, version = use.info.trained_on or (None, None)
        self._gate.record(action, outcome, dataset, version, details)
