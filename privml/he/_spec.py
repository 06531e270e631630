"""The public description of a compiled model: what the client needs, without the weights."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError, IntegrityError
from . import _wire
from ._output import OutputSpec
from ._params import HEParameters, Requirements, derive

__all__ = ["ModelSpec"]


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """What a client must know to encrypt for a model and read its results.

    The server publishes ``model.spec.to_bytes()``; the client builds its keys
    with ``HEClient.for_model(spec)``. A spec holds no weights: only shapes, the
    input range the encryption parameters were sized for, how outputs become
    predictions, and the model's multiplicative depth and value sizes.

    Attributes
    ----------
    model_id : str
        Changes whenever the weights, activations, ranges or outputs do.
    n_features, n_outputs : int
        Inputs per sample, scores per sample.
    input_low, input_high : tuple of float
        Per-feature range; the client refuses values outside it (or clips them
        when ``clip_inputs``, as the source pipeline itself would).
    clip_inputs : bool
        Whether the source pipeline clips its inputs to that range.
    output : OutputSpec
        Link function and classes.
    requirements : Requirements
        Depth and value sizes, from which parameters are derived.
    description : str
        The source model, in words.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import privml.he
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> model = privml.he.compile(LinearRegression().fit(X, [1.0, 2.0, 5.0]), calibration=X)
    >>> spec = ModelSpec.from_bytes(model.spec.to_bytes())  # what the server publishes
    >>> spec.n_features, spec.requirements.depth, spec.parameters().poly_modulus_degree
    (2, 1, 4096)
    """

    model_id: str
    n_features: int
    n_outputs: int
    input_low: tuple[float, ...]
    input_high: tuple[float, ...]
    clip_inputs: bool
    output: OutputSpec
    requirements: Requirements
    description: str

    @classmethod
    def build(
        cls,
        *,
        network_id: str,
        n_features: int,
        n_outputs: int,
        low: np.ndarray,
        high: np.ndarray,
        clip_inputs: bool,
        output: OutputSpec,
        requirements: Requirements,
        description: str,
    ) -> ModelSpec:
        """A spec for a network of fingerprint ``network_id``, its id derived from every field."""
        low_t = tuple(float(v) for v in low)
        high_t = tuple(float(v) for v in high)
        return cls(
            _model_id(network_id, low_t, high_t, clip_inputs, output),
            n_features,
            n_outputs,
            low_t,
            high_t,
            clip_inputs,
            output,
            requirements,
            description,
        )

    def expected_id(self, network_id: str) -> str:
        """The model id these fields give with a network of fingerprint ``network_id``."""
        return _model_id(network_id, self.input_low, self.input_high, self.clip_inputs, self.output)

    def parameters(self, *, security_bits: int = 128) -> HEParameters:
        """The smallest CKKS parameters that run this model at ``security_bits``."""
        return derive(self.requirements, security_bits=security_bits)

    def to_json(self) -> dict[str, Any]:
        """This spec as a JSON-ready dict (as published to clients); ``from_json`` reads it."""
        return {
            "model_id": self.model_id,
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "input_low": list(self.input_low),
            "input_high": list(self.input_high),
            "clip_inputs": self.clip_inputs,
            "output": self.output.to_json(),
            "requirements": self.requirements.to_json(),
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        """The spec ``to_json`` wrote; a malformed one is an ``IntegrityError``."""
        try:
            spec = cls(
                str(data["model_id"]),
                int(data["n_features"]),
                int(data["n_outputs"]),
                tuple(float(v) for v in data["input_low"]),
                tuple(float(v) for v in data["input_high"]),
                bool(data["clip_inputs"]),
                OutputSpec.from_json(data["output"]),
                Requirements.from_json(data["requirements"]),
                str(data["description"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ConfigurationError):
                raise
            raise IntegrityError(f"malformed model spec: {err!r}") from err
        if len(spec.input_low) != spec.n_features or len(spec.input_high) != spec.n_features:
            raise IntegrityError("malformed model spec: input range does not match n_features")
        return spec

    def to_bytes(self) -> bytes:
        """Serialize (versioned, checksummed); safe to publish."""
        return _wire.pack("spec", self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelSpec:
        """Load a spec written by :meth:`to_bytes`."""
        header, _ = _wire.unpack(data, "spec")
        return cls.from_json(header)

    def check_features(self, n_features: int, what: str) -> None:
        """Refuse ``n_features`` (of ``what``) unless the model takes exactly that many."""
        if n_features != self.n_features:
            raise ConfigurationError(
                f"{what} has {n_features} feature(s) but this model takes {self.n_features}; "
                "pass the same columns, in the same order, as the model was trained on"
            )


def _model_id(
    network_id: str,
    low: tuple[float, ...],
    high: tuple[float, ...],
    clip: bool,
    output: OutputSpec,
) -> str:
    body = {
        "network": network_id,
        "low": list(low),
        "high": list(high),
        "clip": clip,
        "output": output.to_json(),
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]
