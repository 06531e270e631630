"""Parameters come from the model's depth and value sizes, within the 128-bit bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import privml.he as he
from privml.exceptions import ConfigurationError
from privml.he._params import MAX_MODULUS_BITS, Requirements, chain_problem, derive

requirements = st.builds(
    lambda depth, bits, gain: Requirements(depth, depth > 1, ((depth, bits),), gain, 0.0, 1e-3),
    st.integers(1, 8),
    st.floats(0.0, 20.0),
    st.floats(1.0, 1e4),
)


@given(req=requirements, security=st.sampled_from([128, 192, 256]))
def test_derived_parameters_are_secure_and_smallest(req, security):
    try:
        params = derive(req, security_bits=security)
    except ConfigurationError as err:
        assert "scale out of bounds" not in str(err) and "Fix:" in str(err)
        return
    chain = params.coeff_mod_bit_sizes
    s = params.scale_bits
    bound = MAX_MODULUS_BITS[security]
    base = chain[: len(chain) - 1 - req.depth]  # the primes no rescale divides by
    assert sum(chain) <= bound[params.poly_modulus_degree]
    assert list(chain[len(base) : -1]) == [s] * req.depth and chain[-1] == max(chain) <= 60
    assert sum(base) - s >= req.headroom(s)
    assert chain_problem(req, prime_bits=chain[:-1], scale_bits=s) is None
    assert s >= req.min_scale_bits(params.poly_modulus_degree)

    def fits(n: int, s: int, one_prime: bool) -> bool:  # the fewest base primes at scale s
        held = s + req.headroom(s)
        primes = 1 if one_prime else math.ceil(held / 60)
        top = math.ceil(held / primes)
        return top <= 60 and primes * top + req.depth * s + max(top, s) <= bound[n]

    one_prime = len(base) == 1
    if not one_prime:  # a one-prime base fits no ring at any scale
        for n in bound:
            assert not any(fits(n, s, True) for s in range(req.min_scale_bits(n), 51))
    for n in [n for n in bound if n < params.poly_modulus_degree]:  # no smaller ring fits
        s_min = req.min_scale_bits(n)
        assert not any(fits(n, s, one_prime) for s in range(s_min, 51))
    if s < 50:  # leftover bits went to the scale
        assert not fits(params.poly_modulus_degree, s + 1, one_prime)


folded = st.builds(
    lambda depth, out_bits, square_bits, fold_bits, gain: Requirements(
        depth,
        True,
        (
            (0, 1.0),
            (depth - 1, square_bits / 2),
            (depth, square_bits - fold_bits),
            (depth, out_bits),
        ),
        gain,
        0.0,
        1e-3,
        fold_bits=fold_bits,
    ),
    st.integers(2, 6),
    st.floats(0.0, 20.0),
    st.floats(0.0, 30.0),
    st.integers(20, 30),
    st.floats(1.0, 1e4),
)


@given(req=folded, security=st.sampled_from([128, 192, 256]))
def test_folded_parameters_are_secure_and_hold_every_value(req, security):
    try:
        params = derive(req, security_bits=security)
    except ConfigurationError as err:
        assert "Fix:" in str(err)
        return
    chain = params.coeff_mod_bit_sizes
    s = params.scale_bits
    assert sum(chain) <= MAX_MODULUS_BITS[security][params.poly_modulus_degree]
    assert max(chain) <= 60 and chain[-1] == max(chain)  # the special prime is the largest
    base = len(chain) - 1 - req.depth  # [q0, ..., r, s, ..., s, special]
    assert list(chain[base + 1 : -1]) == [s] * (req.depth - 1)
    assert s <= chain[base] <= s + req.fold_bits  # outputs keep at least the fresh scale
    assert s >= req.min_scale_bits(params.poly_modulus_degree)
    assert chain_problem(req, prime_bits=chain[:-1], scale_bits=s) is None


def _square_net(layers: int, width: int = 4):
    torch = pytest.importorskip("torch")
    from _he_helpers import square_module

    torch.manual_seed(0)
    mods = [torch.nn.Linear(width, width)]
    for _ in range(layers - 1):
        mods += [square_module(), torch.nn.Linear(width, width)]
    return torch.nn.Sequential(*mods)


def test_depth_decides_the_ring_size():
    sizes = {}
    for layers in (1, 2, 3, 4):
        model = he.compile(_square_net(layers), input_range=(-1.0, 1.0))
        sizes[model.depth] = model.parameters.poly_modulus_degree
    # depth: one per layer, one more per square that is not folded into the last layer
    assert sizes == {1: 4096, 2: 8192, 4: 16384, 6: 16384}


def test_too_deep_fails_at_compile_with_the_fix():
    with pytest.raises(ConfigurationError) as err:
        he.compile(_square_net(9), input_range=(-1.0, 1.0))
    message = str(err.value)
    assert "no secure CKKS parameters" in message and "fewer layers" in message
    assert "scale out of bounds" not in message


def test_higher_degree_activation_costs_log2_levels(digits):
    torch = pytest.importorskip("torch")
    X = digits[0][:200]
    net = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    depths = {d: he.compile(net, calibration=X, activation_degree=d).depth for d in (2, 3, 4)}
    assert depths == {2: 2, 3: 4, 4: 4}  # a quadratic is folded into the layer after it


def test_values_at_the_edge_of_the_input_range_do_not_overflow(tiny):
    model, client, _ = tiny
    corners = np.array([[8.0, -8.0, 8.0], [-8.0, 8.0, -8.0], [8.0, 8.0, 8.0]])
    result = model.predict_encrypted(client.encrypt(corners), client.public_context())
    np.testing.assert_allclose(
        client.decrypt_scores(result), model.plaintext_scores(corners), atol=1e-3
    )


def test_tolerance_buys_precision(cancer, cancer_models):
    model = cancer_models["strong regularization"]
    loose = he.compile(model, calibration=cancer[0], tolerance=1e-1).parameters
    tight = he.compile(model, calibration=cancer[0], tolerance=1e-6).parameters
    assert tight.poly_modulus_degree > loose.poly_modulus_degree
    with pytest.raises(ConfigurationError, match="tolerance"):
        he.compile(model, calibration=cancer[0], tolerance=0)


def test_large_outputs_with_a_tight_tolerance_name_the_fix():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 400, (200, 9))
    model = LinearRegression().fit(X, X @ rng.uniform(50, 100, 9))
    with pytest.raises(ConfigurationError, match="larger tolerance") as caught:
        he.compile(model, input_range=(0.0, 400.0), tolerance=1e-9)
    assert "scale out of bounds" not in str(caught.value) and "-bit scale" in str(caught.value)
    he.compile(model, input_range=(0.0, 400.0), tolerance=1e-6)  # the fix works


def test_outputs_too_large_for_one_prime_get_a_base_of_several_and_keep_the_tolerance():
    """A regression whose scores need more than 60 bits at their scale (a noisy DP fit on
    unnormalized features can give such weights) keeps them in several base primes."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 400, (64, 9))
    model = LinearRegression().fit(X, X @ rng.uniform(-3e5, 3e5, 9) + 1e6)
    compiled = he.compile(model, input_range=(0.0, 400.0), tolerance=1.0)
    chain = compiled.parameters.coeff_mod_bit_sizes
    assert len(chain) > compiled.depth + 2 and max(chain) <= 60
    client = he.HEClient.for_model(compiled.spec)
    corners = np.where(np.sign(model.coef_) > 0, 400.0, 0.0)  # the largest score and its mirror
    rows = np.vstack([X[:6], corners, 400.0 - corners])
    for packing in ("columns", "rows"):
        result = compiled.predict_encrypted(
            client.encrypt(rows, packing=packing), client.public_context(packing=packing)
        )
        scores = client.decrypt_scores(result)
        assert np.abs(scores - compiled.plaintext_scores(rows)).max() <= 1.0
    s, req = compiled.parameters.scale_bits, compiled.spec.requirements
    assert s + req.headroom(s) > 60  # the scores at their scale need more than one prime


def test_a_folded_model_with_outputs_too_large_for_one_prime_keeps_the_tolerance():
    torch = pytest.importorskip("torch")
    from _he_helpers import square_module

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), square_module(), torch.nn.Linear(6, 2))
    with torch.no_grad():  # scores in the millions, wanted to within 1
        net[2].weight.mul_(1e6)
        net[2].bias.mul_(1e6)
    compiled = he.compile(net, input_range=(-4.0, 4.0), tolerance=1.0)
    assert compiled.spec.requirements.folded
    chain = compiled.parameters.coeff_mod_bit_sizes
    assert len(chain) == compiled.depth + 3 and max(chain) <= 60  # [q0, q0', r, s, special]
    client = he.HEClient.for_model(compiled.spec)
    rows = np.vstack([np.random.default_rng(0).uniform(-4, 4, (16, 4)), np.full((1, 4), 4.0)])
    for packing in ("columns", "rows"):
        result = compiled.predict_encrypted(
            client.encrypt(rows, packing=packing), client.public_context(packing=packing)
        )
        scores = client.decrypt_scores(result)
        assert np.abs(scores - compiled.plaintext_scores(rows)).max() <= 1.0
    assert np.abs(compiled.plaintext_scores(rows)).max() > 1e6


@pytest.mark.parametrize("bits", [500.0, 1e12, 1e300])
def test_absurd_value_sizes_in_a_spec_are_refused_at_once(bits):
    """A spec read from elsewhere may claim any value size: refused, never a huge chain."""
    req = Requirements(1, False, ((1, bits),), 1.0, 0.0, 1e-3)
    with pytest.raises(ConfigurationError, match="more than 438 modulus bits"):
        derive(req)
