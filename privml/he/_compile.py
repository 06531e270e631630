"""``compile``: from a trained model to an :class:`HEModel` with parameters that fit it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from ._ir import lower
from ._model import HEModel
from ._output import OutputSpec
from ._params import derive, requirements
from ._sklearn import is_sklearn_model, lower_sklearn
from ._source import Source
from ._spec import ModelSpec
from ._torch import is_torch_model, lower_torch, torch_n_features

__all__ = ["compile"]

_CALIBRATION_MARGIN = 1.5  # accept inputs up to 1.5 times the largest calibration magnitude


def compile(
    model: Any,
    *,
    input_range: tuple[Any, Any] | None = None,
    calibration: Any = None,
    activation_degree: int = 2,
    link: str | None = None,
    tolerance: float = 1e-3,
) -> HEModel:
    """Compile a trained model for encrypted inference.

    Affine preprocessing (scalers) is folded into the weights, activations are
    replaced by polynomials, and the multiplicative depth and value sizes are
    worked out, so that parameters can be derived (``HEModel.parameters``);
    if no secure parameters fit, this fails here, before anything is encrypted.

    Parameters
    ----------
    model : estimator, Pipeline or torch.nn.Sequential
        A fitted scikit-learn linear model (LinearRegression, Ridge,
        LogisticRegression binary or multinomial, LinearSVC, diffprivlib or
        privml.dp models), optionally in a Pipeline after affine scalers; or a
        torch ``nn.Sequential`` of ``nn.Linear`` layers and elementwise
        activations.
    input_range : (low, high), optional
        Bounds of the raw input features (scalars, or one value per feature),
        e.g. the schema's declared bounds. Clients refuse values outside them.
    calibration : array-like of shape (n_samples, n_features), optional
        Representative inputs. They set the range over which non-polynomial
        activations are fitted and, without ``input_range``, the input range:
        ``[-r, r]`` per feature with ``r`` the power of two at or above 1.5 times
        the largest magnitude seen (a power of two, so the published spec says
        little about the calibration data).
    activation_degree : int, default 2
        Degree of the polynomial that replaces each activation. ``x**2`` is
        exact at degree 2; ReLU, tanh etc. are least-squares fits. A degree-d
        activation costs ceil(log2(d)) multiplicative levels.
    link : {"identity", "sigmoid", "softmax"}, optional
        For torch models, what the client applies to the decrypted outputs
        (default "identity"); scikit-learn models take it from the estimator.
    tolerance : float, default 1e-3
        Largest error in the scores that encryption noise may cause (estimated,
        with a wide margin); the scale is chosen large enough for it.

    Returns
    -------
    HEModel

    Raises
    ------
    ConfigurationError
        Unsupported model or layer, missing range information, or a model too
        deep for any secure parameters; the message says how to fix it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import privml.he
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [0.0, 2.0]])
    >>> model = privml.he.compile(LogisticRegression().fit(X, [0, 1, 1, 0]), calibration=X)
    >>> model.depth, model.parameters.poly_modulus_degree, model.parameters.coeff_mod_bit_sizes
    (1, 4096, (38, 33, 38))
    """
    if not isinstance(activation_degree, int) or not 1 <= activation_degree <= 16:
        raise ConfigurationError(
            f"activation_degree must be an integer in [1, 16], got {activation_degree!r}"
        )
    if not (isinstance(tolerance, int | float) and 0 < tolerance < float("inf")):
        raise ConfigurationError(f"tolerance must be a positive number, got {tolerance!r}")
    X_cal = None if calibration is None else _matrix(calibration, "calibration")
    if is_torch_model(model):
        _check_width(X_cal, torch_n_features(model))
        box = _box(input_range, X_cal, None, torch_n_features(model))
        bound = None if box is None else np.maximum(np.abs(box[0]), np.abs(box[1]))
        source = lower_torch(
            model, calibration=X_cal, input_bound=bound, degree=activation_degree, link=link
        )
    elif is_sklearn_model(model):
        source = lower_sklearn(model)
        if link is not None:
            source = _with_link(source, link)
        box = _box(input_range, X_cal, source.declared_range, source.n_features)
    else:
        raise ConfigurationError(
            f"privml.he cannot compile a {type(model).__name__}: pass a fitted scikit-learn "
            "linear model (or Pipeline of scalers and one), or a torch nn.Sequential"
        )
    if box is None:
        raise ConfigurationError(
            "privml.he needs to know how large the inputs can be to size the encryption "
            "parameters: pass input_range=(low, high) (e.g. the schema's bounds) or "
            "calibration=X_sample"
        )
    _check_width(X_cal, source.n_features)
    network = lower(source.ops, n_features=source.n_features)
    low, high = box
    typical = None
    if X_cal is not None:  # noise estimates at the sizes values really take (x1.5)
        X_seen = np.clip(X_cal, low, high)
        typical = [1.5 * np.abs(h).max(axis=0) for h in network.layer_inputs(X_seen)]
    req = requirements(
        network, np.maximum(np.abs(low), np.abs(high)), tolerance=tolerance, typical=typical
    )
    derive(req)  # fail now, not at encryption, if no secure parameters fit
    spec = ModelSpec.build(
        network_id=network.fingerprint(),
        n_features=network.n_features,
        n_outputs=network.n_outputs,
        low=low,
        high=high,
        clip_inputs=source.declared_range is not None and input_range is None,
        output=source.output,
        requirements=req,
        description=source.description,
    )
    return HEModel(network, spec, reference=source.reference)


def _check_width(X_cal: np.ndarray | None, n_features: int) -> None:
    if X_cal is not None and X_cal.shape[1] != n_features:
        raise ConfigurationError(
            f"calibration has {X_cal.shape[1]} features but the model takes {n_features}"
        )


def _matrix(X: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"{name} must be a numeric array: {err}") from err
    if array.ndim != 2 or array.shape[0] == 0 or not np.all(np.isfinite(array)):
        raise ConfigurationError(
            f"{name} must be a finite array of shape (n_samples, n_features), got {array.shape}"
        )
    return array


def _box(
    input_range: tuple[Any, Any] | None,
    X_cal: np.ndarray | None,
    declared: tuple[np.ndarray, np.ndarray] | None,
    n_features: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-feature (low, high) of the raw inputs."""
    if input_range is not None:
        try:
            low, high = (
                np.broadcast_to(np.asarray(v, dtype=float), n_features) for v in input_range
            )
        except (TypeError, ValueError) as err:
            raise ConfigurationError(
                f"input_range must be (low, high), scalars or {n_features} values each: {err}"
            ) from err
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
            raise ConfigurationError("input_range must be finite with low <= high")
        return low.copy(), high.copy()
    if declared is not None:
        return np.asarray(declared[0], dtype=float), np.asarray(declared[1], dtype=float)
    if X_cal is not None:
        top = _CALIBRATION_MARGIN * np.abs(X_cal).max(axis=0)
        radius = 2.0 ** np.ceil(np.log2(np.maximum(top, 2.0**-20)))
        return -radius, radius
    return None


def _with_link(source: Source, link: str) -> Source:
    output = OutputSpec(link, source.output.classes, source.output.squeeze)
    return Source(
        source.ops,
        source.n_features,
        output,
        source.description,
        source.reference,
        source.declared_range,
    )
