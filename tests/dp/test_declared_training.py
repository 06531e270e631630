"""Declared DP-SGD runs: networks and runs as JSON, checked in full, weights without pickle."""

from __future__ import annotations

import contextlib
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from privml import Budget, ConfigurationError, Field, Schema, Vault

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from privml.dp.torch import (  # noqa: E402  (after the skips)
    TrainingRequest,
    build_module,
    load_weights,
    rebuild,
    train_declared,
    weights_to_bytes,
)
from privml.dp.torch._layers import KINDS, MAX_PARAMETERS, declare  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

CONV = {
    "layers": [
        {"type": "Unflatten", "dim": 1, "unflattened_size": [1, 8, 8]},
        {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "GroupNorm", "num_groups": 2, "num_channels": 4},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Flatten"},
        {"type": "Linear", "in_features": 64, "out_features": 10},
    ]
}


@pytest.fixture
def digits_vault(tmp_path, key):
    """400 digits (8×8 pixels, 64 features) as dataset "data"; "eng" trains on it for "ml"."""
    frame = load_digits(as_frame=True).frame.iloc[:400].reset_index(drop=True)
    features = [c for c in frame.columns if c != "target"]
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in features}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    vault = Vault.create(tmp_path / "digits.vault", key=key)
    vault.add_dataset("data", frame, schema=Schema(fields), budget=Budget(epsilon=10, delta=1e-5))
    vault.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
    vault.add_principal("eng", roles=["ml"])
    vault.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
    yield vault, frame, features
    vault.close()


def _request(columns, **changes):
    return {
        "module": CONV,
        "features": columns,
        "target": "target",
        "optimizer": {"type": "SGD", "lr": 0.5, "momentum": 0.5},
        "batch_size": 64,
        "epochs": 2,
        "max_grad_norm": 1.0,
        "noise_multiplier": 1.0,
        "seed": 0,
        "name": "digits-cnn",
        **changes,
    }


# --- every allowed layer -----------------------------------------------------------------------
ONE_OF_EACH = {
    "Linear": [{"type": "Linear", "in_features": 6, "out_features": 3, "bias": False}],
    "Conv1d": [
        {"type": "Unflatten", "unflattened_size": [2, 3]},
        {"type": "Conv1d", "in_channels": 2, "out_channels": 4, "kernel_size": 2, "stride": 1},
    ],
    "Conv2d": [
        {"type": "Unflatten", "unflattened_size": [1, 2, 3]},
        {"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [2, 2]},
    ],
    "LayerNorm": [{"type": "LayerNorm", "normalized_shape": 6, "eps": 1e-4}],
    "GroupNorm": [{"type": "GroupNorm", "num_groups": 3, "num_channels": 6}],
    "ReLU": [{"type": "ReLU"}],
    "LeakyReLU": [{"type": "LeakyReLU", "negative_slope": 0.1}],
    "GELU": [{"type": "GELU", "approximate": "tanh"}],
    "ELU": [{"type": "ELU", "alpha": 0.5}],
    "SiLU": [{"type": "SiLU"}],
    "Tanh": [{"type": "Tanh"}],
    "Sigmoid": [{"type": "Sigmoid"}],
    "Dropout": [{"type": "Dropout", "p": 0.2}],
    "Flatten": [{"type": "Unflatten", "unflattened_size": [2, 3]}, {"type": "Flatten"}],
    "Unflatten": [{"type": "Unflatten", "dim": 1, "unflattened_size": [3, 2]}],
    "MaxPool1d": [
        {"type": "Unflatten", "unflattened_size": [1, 6]},
        {"type": "MaxPool1d", "kernel_size": 2, "dilation": 1},
    ],
    "MaxPool2d": [
        {"type": "Unflatten", "unflattened_size": [1, 2, 3]},
        {"type": "MaxPool2d", "kernel_size": 2},
    ],
    "AvgPool1d": [
        {"type": "Unflatten", "unflattened_size": [1, 6]},
        {"type": "AvgPool1d", "kernel_size": 3, "stride": 3},
    ],
    "AvgPool2d": [
        {"type": "Unflatten", "unflattened_size": [1, 2, 3]},
        {"type": "AvgPool2d", "kernel_size": [2, 3]},
    ],
}


def test_every_allowed_kind_has_a_case():
    assert set(ONE_OF_EACH) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(ONE_OF_EACH))
def test_each_allowed_layer_builds_and_runs_with_the_traced_shape(kind):
    # a leading Linear gives every case parameters and fixes the input width
    spec = {"layers": [{"type": "Linear", "in_features": 6, "out_features": 6}, *ONE_OF_EACH[kind]]}
    declared = declare(spec)
    width, out, _ = declared.trace()
    net = build_module(spec)
    assert type(net[-1]).__name__ == kind
    assert sum(p.numel() for p in net.parameters()) == declared.parameters
    with torch.no_grad():
        result = net(torch.zeros(5, 6))
    assert width == 6
    assert out is not None and tuple(result.shape) == (5, *out)


def test_layer_parameters_reach_torch():
    net = build_module(
        {
            "layers": [
                {"type": "Unflatten", "unflattened_size": [2, 4, 4]},
                {
                    "type": "Conv2d",
                    "in_channels": 2,
                    "out_channels": 4,
                    "kernel_size": [3, 1],
                    "stride": 2,
                    "padding": [1, 0],
                    "dilation": 1,
                    "groups": 2,
                    "bias": False,
                },
            ]
        }
    )
    conv = net[1]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups) == ((3, 1), (2, 2), (1, 0), 2)
    assert conv.bias is None


# --- refused descriptions ----------------------------------------------------------------------
REFUSED = [
    ({"layers": [{"type": "__import__"}]}, "layers[0].type"),
    ({"layers": [{"type": "torch.nn.Linear", "in_features": 2}]}, "layers[0].type"),
    ({"layers": [{"type": "os.system", "command": "true"}]}, "layers[0].type"),
    ({"layers": [{"type": "Linear", "in_features": 2, "out_features": True}]}, "out_features"),
    ({"layers": [{"type": "Linear", "in_features": 2.0, "out_features": 2}]}, "in_features"),
    ({"layers": [{"type": "Linear", "in_features": 2, "out_features": 2, "x": 1}]}, "unknown key"),
    ({"layers": [{"type": "Linear", "in_features": 2}]}, "needs out_features"),
    ({"layers": [{"type": "LeakyReLU", "negative_slope": float("nan")}]}, "negative_slope"),
    ({"layers": [{"type": "Dropout", "p": float("inf")}]}, "layers[0].p"),
    ({"layers": [{"type": "Linear", "in_features": 10**100, "out_features": 2}]}, "in_features"),
    (
        {"layers": [{"type": "Linear", "in_features": 65536, "out_features": 65536}]},
        f"more than {MAX_PARAMETERS} parameters",
    ),
    ({"layers": [{"type": "ReLU"}] * 65}, "layers: must be a list of 1 to 64"),
    ({"layers": []}, "layers: must be a list of 1 to 64"),
    ({"layers": [{"type": "ReLU"}]}, "no trainable parameters"),
    (
        {"layers": [{"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3}]},
        "Unflatten",
    ),
    (
        {
            "layers": [
                {"type": "Linear", "in_features": 4, "out_features": 3},
                {"type": "Linear", "in_features": 4, "out_features": 3},
            ]
        },
        "layers[1]: in_features is 4 but its input has 3",
    ),
    (
        {
            "layers": [
                {"type": "Unflatten", "unflattened_size": [1, 2, 2]},
                {"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3},
            ]
        },
        "kernel is larger",
    ),
    ({"layers": [{"type": "GroupNorm", "num_groups": 4, "num_channels": 6}]}, "num_groups"),
    ({"layers": "Linear"}, "layers: must be a list"),
    ({"layers": [{"type": "Flatten", "end_dim": -1.0}]}, "layers[0].end_dim"),
    (["Linear"], "the request: must be an object"),
    ({"layers": [{"type": "Linear", "in_features": 2, "out_features": 2}], "code": "x"}, "code"),
    ({"layers": [["Linear", 2, 2]]}, "layers[0]: must be an object"),
    ({"layers": [{"type": {"nested": ["junk"]}}]}, "layers[0].type"),
]


@pytest.mark.parametrize(("spec", "says"), REFUSED)
def test_bad_descriptions_are_refused_naming_the_path(spec, says):
    with pytest.raises(ConfigurationError) as caught:
        build_module(spec)
    assert says in str(caught.value)


def test_an_unknown_key_is_named_shortened_and_a_value_is_never_quoted():
    secret = "s3cr3t-" * 100
    with pytest.raises(ConfigurationError) as caught:
        build_module({"layers": [{"type": "Linear", secret: 1}]})
    assert len(str(caught.value)) < 400
    with pytest.raises(ConfigurationError) as caught:
        build_module({"layers": [{"type": "Linear", "in_features": secret, "out_features": 2}]})
    assert "s3cr3t" not in str(caught.value)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _layerish(draw_params):
    names = sorted({p for kind in KINDS.values() for p in kind.params} | {"bogus"})
    return st.builds(
        lambda kind, params: {"type": kind, **params},
        st.sampled_from([*KINDS, "Embedding", "BatchNorm1d"]),
        st.dictionaries(st.sampled_from(names), draw_params, max_size=5),
    )


SMALL = st.integers(min_value=-2, max_value=70) | st.lists(st.integers(0, 9), max_size=4) | JSONISH


@settings(max_examples=300)
@given(spec=JSONISH | st.fixed_dictionaries({"layers": JSONISH}))
def test_arbitrary_json_builds_or_is_refused(spec):
    with contextlib.suppress(ConfigurationError):
        build_module(spec)


@settings(max_examples=400)
@given(layers=st.lists(_layerish(SMALL), min_size=1, max_size=5))
def test_arbitrary_layer_stacks_build_and_run_or_are_refused(layers):
    try:
        declared = declare({"layers": layers})
    except ConfigurationError:
        return
    width, out, _ = declared.trace()
    net = declared.build()
    width = width or 3
    with torch.no_grad():
        result = net(torch.zeros(2, width))
    assert out is None or tuple(result.shape) == (2, *out)


@settings(max_examples=200)
@given(
    request=JSONISH
    | st.fixed_dictionaries(
        {},
        optional={
            k: JSONISH
            for k in (
                "module",
                "features",
                "target",
                "optimizer",
                "batch_size",
                "epochs",
                "max_grad_norm",
                "noise_multiplier",
                "target_epsilon",
                "seed",
                "loss",
                "name",
                "grad_sample_mode",
            )
        },
    )
)
def test_arbitrary_training_requests_parse_or_are_refused(request):
    with contextlib.suppress(ConfigurationError):
        TrainingRequest.parse(request)


# --- training through the session --------------------------------------------------------------
def test_a_declared_conv_net_trains_through_the_session_and_rebuilds_exactly(
    digits_vault, seeded_entropy
):
    vault, frame, features = digits_vault
    dp = vault.session("eng", purpose="ml").dp
    request = TrainingRequest.parse(json.loads(json.dumps(_request(features))))
    result = train_declared(dp, "data", request)

    assert result.model_name == "digits-cnn" and result.model_version == 1
    assert [row["epoch"] for row in result.history] == [1, 2]
    json.dumps(result.history)  # JSON-able
    info = vault.models.info("digits-cnn")
    assert info.epsilon == result.epsilon
    assert result.epsilon == result.history[-1]["epsilon"]
    assert result.epsilon == pytest.approx(vault.budget("data").epsilon_fixed_sequence, rel=1e-9)
    assert result.delta == 1e-5
    assert result.classes == list(range(10))

    served = vault.models.load("digits-cnn")
    client = rebuild(CONV, result.weights)
    assert not client.training
    scaled = torch.as_tensor(served.scaler.transform(frame[features]), dtype=torch.float32)
    with torch.no_grad():
        mine = client(scaled).numpy()
    assert np.array_equal(mine, served.outputs(frame))
    labels = np.asarray(result.classes)[mine.argmax(axis=1)]
    assert np.array_equal(labels, served.predict(frame))


def test_the_seed_fixes_the_initial_weights(digits_vault):
    from privml.dp.torch._declared import _seeded

    declared = declare(CONV)
    with _seeded(7):
        first = weights_to_bytes(declared.build())
    with _seeded(7):
        second = weights_to_bytes(declared.build())
    assert first == second
    state = torch.random.get_rng_state()
    with _seeded(8):
        declared.build()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream untouched


def test_adam_and_mse_regression_train(tmp_path, key, seeded_entropy):
    rng = np.random.default_rng(0)
    import pandas as pd

    frame = pd.DataFrame({"x": rng.uniform(0, 1, 200), "y": rng.uniform(0, 10, 200)})
    schema = Schema({"x": Field.numeric(bounds=(0.0, 1.0)), "y": Field.numeric(bounds=(0.0, 10.0))})
    with Vault.create(tmp_path / "r", key=key) as vault:
        vault.add_dataset("r", frame, schema=schema, budget=Budget(epsilon=5, delta=1e-5))
        vault.add_purpose("ml", description="Model training", lawful_basis="consent")
        vault.add_principal("eng", roles=[])
        vault.grant(principal="eng", dataset="r", purpose="ml", mode="dp_training")
        request = TrainingRequest.parse(
            {
                "module": {"layers": [{"type": "Linear", "in_features": 1, "out_features": 1}]},
                "features": ["x"],
                "target": "y",
                "optimizer": {"type": "Adam", "lr": 0.01, "betas": [0.9, 0.99]},
                "batch_size": 50,
                "epochs": 1,
                "max_grad_norm": 1.0,
                "target_epsilon": 1.0,
                "loss": "mse",
                "grad_sample_mode": "bk",
            }
        )
        result = train_declared(vault.session("eng", purpose="ml").dp, "r", request)
        assert result.target_bounds == [0.0, 10.0] and result.classes is None
        assert result.model_name == "r-dpsgd"
        assert result.epsilon <= 1.0


# --- refusals spend nothing and read nothing ---------------------------------------------------
def _nothing_happened(vault):
    assert vault.budget("data").epsilon_spent == 0
    assert len(vault.audit.entries(action="dp.train.batches")) == 0
    assert "digits-cnn" not in set(vault.models.list()["name"])


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"module": {"layers": [{"type": "Transformer"}]}}, "module.layers[0].type"),
        (
            {"module": {"layers": [{"type": "Linear", "in_features": 64, "out_features": 400000}]}},
            "module.layers[0].out_features",
        ),
        (
            {
                "module": {
                    "layers": [
                        {"type": "Linear", "in_features": 64, "out_features": 5000},
                        {"type": "Linear", "in_features": 5000, "out_features": 5000},
                        {"type": "Linear", "in_features": 5000, "out_features": 10},
                    ]
                }
            },
            "more than 20000000 parameters",
        ),
        ({"target_epsilon": 1.0}, "exactly one of target_epsilon and noise_multiplier"),
        ({"noise_multiplier": None}, "exactly one of target_epsilon and noise_multiplier"),
        ({"optimizer": {"type": "SGD", "lr": -0.1}}, "optimizer.lr"),
        ({"optimizer": {"type": "torch.optim.SGD", "lr": 0.1}}, "optimizer.type"),
        ({"optimizer": {"type": "SGD", "lr": 0.1, "nesterov": True}}, "optimizer.nesterov"),
        ({"optimizer": {"type": "Adam", "lr": 0.1, "betas": [0.9]}}, "optimizer.betas"),
        ({"module": {"layers": [{"type": "__import__", "name": "os"}]}}, "module.layers[0].type"),
        ({"module": "torch.nn.Linear"}, "module: must be an object"),
        ({"criterion": "os.system"}, "unknown key 'criterion'"),
        ({"delta": 1e-3}, "delta: not taken"),
        ({"batch_size": True}, "batch_size"),
        ({"epochs": 10**9}, "epochs"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
        ({"grad_sample_mode": "fast"}, "grad_sample_mode"),
        ({"name": "../../etc/passwd"}, "name"),
        ({"features": []}, "features"),
        ({"features": ["0", "0"]}, "features"),
        ({"seed": -1}, "seed"),
        ({"loss": "nll"}, "loss"),
    ],
)
def test_refused_requests_spend_nothing_and_read_nothing(digits_vault, changes, says):
    vault, _, features = digits_vault
    with pytest.raises(ConfigurationError) as caught:
        TrainingRequest.parse(_request(features, **changes))
    assert says in str(caught.value)
    _nothing_happened(vault)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        (
            {"module": {"layers": [{"type": "Linear", "in_features": 63, "out_features": 10}]}},
            "module: its input width is not the features' encoded width",
        ),
        (
            {"module": {"layers": [{"type": "Linear", "in_features": 64, "out_features": 9}]}},
            "module: its output per sample must be [10] (10 classes)",
        ),
        ({"loss": "mse"}, "loss: mse does not fit a classification target"),
        ({"target": "pixel_0_0"}, "module: its output per sample must be [1] (one value)"),
        ({"target": "nope"}, "no target column 'nope'"),
        ({"features": ["nope"]}, "nope"),
        ({"batch_size": 65536}, "batch_size: a batch's activations"),
    ],
)
def test_requests_that_do_not_fit_the_schema_are_refused_before_reserving(
    digits_vault, changes, says
):
    vault, _, features = digits_vault
    request = TrainingRequest.parse(_request(features, **changes))
    if changes.get("batch_size"):  # a wide network, so a batch's activations are large
        request = TrainingRequest.parse(
            _request(
                features,
                batch_size=65536,
                module={
                    "layers": [
                        {"type": "Linear", "in_features": 64, "out_features": 8192},
                        {"type": "Linear", "in_features": 8192, "out_features": 10},
                    ]
                },
            )
        )
    with pytest.raises(ConfigurationError) as caught:
        train_declared(vault.session("eng", purpose="ml").dp, "data", request)
    assert says in str(caught.value)
    _nothing_happened(vault)
    assert len(vault.audit.entries(action="dp.train")) >= 1  # the refusal is audited


def test_a_caller_without_a_grant_is_denied_before_the_network_is_compared(digits_vault):
    from privml import AccessDenied

    vault, _, features = digits_vault
    vault.add_principal("eve", roles=[])
    wrong = {"layers": [{"type": "Linear", "in_features": 63, "out_features": 3}]}
    request = TrainingRequest.parse(_request(features, module=wrong))
    with pytest.raises(AccessDenied):
        train_declared(vault.session("eve", purpose="ml").dp, "data", request)
    _nothing_happened(vault)


# --- weights -----------------------------------------------------------------------------------
def test_weights_round_trip_exactly():
    torch.manual_seed(0)
    net = build_module(CONV)
    other = build_module(CONV)
    load_weights(other, weights_to_bytes(net))
    for (name, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


class _Boom:
    def __reduce__(self):
        return (print, ("pickle ran",))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data[:-1],
        lambda data: data + b"\x00",
        lambda data: data[:20],
        lambda data: b"",
        lambda data: pickle.dumps(_Boom()),
        lambda data: pickle.dumps({"0.weight": np.zeros(3)}),
        lambda data: data[:8] + (2**63).to_bytes(8, "little") + data[16:],
        lambda data: data[:16] + b"}" + data[17:],
        lambda data: data.replace(b"1.weight", b"9.weight", 1),
        lambda data: data.replace(b"[4,1,3,3]", b"[4,1,3,4]", 1),
        lambda data: data.replace(b'"float32"', b'"float64"', 1),
        lambda data: data[:8] + (5).to_bytes(8, "little") + b"[[[[[" + data[21:],
    ],
)
def test_tampered_or_foreign_weights_are_refused_and_never_unpickled(tamper, capsys):
    net = build_module(CONV)
    data = weights_to_bytes(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ConfigurationError):
        load_weights(net, tamper(data))
    assert capsys.readouterr().out == ""
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_weights_for_another_network_are_refused():
    data = weights_to_bytes(build_module(CONV))
    other = {"layers": [{"type": "Linear", "in_features": 64, "out_features": 10}]}
    with pytest.raises(ConfigurationError, match="do not fit this network"):
        rebuild(other, data)
    with pytest.raises(ConfigurationError, match="must be bytes"):
        load_weights(build_module(CONV), "not bytes")  # type: ignore[arg-type]
