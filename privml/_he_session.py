"""``session.he``: serving registered models on encrypted inputs.

No privacy budget is charged: the server sees only ciphertexts under the
client's key and learns nothing about the inputs, and the model's training
data is covered by the model's own DP guarantee, charged when it was trained.
Each prediction is audited (principal, purpose, model version, batch size and
ids — never ciphertext bytes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError
from .storage.engine import transaction

if TYPE_CHECKING:
    from .session import Session

__all__ = ["HESession"]


class HESession:
    """Encrypted inference for one session. Reach it as ``session.he``."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def spec(self, model_name: str, *, version: int | None = None) -> bytes:
        """The public spec clients need to make keys for ``model_name`` (no weights).

        A client calls ``privml.he.HEClient.for_model(spec_bytes)``.
        """
        return bytes(self._model(model_name, version).spec.to_bytes())

    def predict(
        self,
        model_name: str,
        encrypted_batch: bytes,
        *,
        public_context: bytes,
        version: int | None = None,
    ) -> bytes:
        """Score an encrypted batch with a registered HE model; return the encrypted result.

        The public context must not hold a secret key (refused with ``ValueError``);
        the result can only be decrypted by the client that encrypted the batch.
        """
        from .he import EncryptedBatch

        model = self._model(model_name, version)
        batch = EncryptedBatch.from_bytes(encrypted_batch)
        info = self._session._models.info(model_name, version)
        details = {
            "model": model_name,
            "model_version": info.version,
            "samples": batch.n_samples,
            "packing": batch.packing,
            "batch_id": batch.batch_id,
            "client_key_id": batch.key_id,
        }
        try:
            result = model.predict_encrypted(batch, public_context)
        except Exception as err:
            self._audit("error", info, {**details, "error": type(err).__name__})
            raise
        self._audit("ok", info, details)
        return bytes(result.to_bytes())

    def _model(self, model_name: str, version: int | None) -> Any:
        from .he import HEModel

        model = self._session._models._load(
            model_name,
            version,
            principal=self._session.principal,
            purpose=self._session.purpose,
            audit=False,
        )
        if not isinstance(model, HEModel):
            raise ConfigurationError(
                f"model {model_name!r} is a {type(model).__name__}, not an encrypted-inference "
                "model: compile it with privml.he.compile(model, input_range=...) and register "
                "the result with vault.models.register(...)"
            )
        return model

    def _audit(self, outcome: str, info: Any, details: dict[str, Any]) -> None:
        session = self._session
        dataset, version = info.trained_on or (None, None)
        with transaction(session._engine) as tx:
            session._audit.append(
                tx,
                principal=session.principal,
                purpose=session.purpose,
                action="he.predict",
                outcome=outcome,
                dataset=dataset,
                version=version,
                details=details,
            )
