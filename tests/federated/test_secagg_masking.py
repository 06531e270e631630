"""What the server receives under SecAgg+: masked vectors independent of each update, whose
sum unmasks to the sum of the updates (to quantization).

Built from the exact steps of Flower's ``secaggplus_mod`` and ``SecAggPlusWorkflow`` (its
own quantization, mask generator and modular arithmetic) for three sites with real
elliptic-curve key agreement (Flower's own key pairs), so a change in Flower that broke
either property fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    generate_shared_key,
)
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import generate_key_pairs

CLIP, TARGET, MODULUS = 8.0, 1 << 22, 1 << 32
D = 20_000  # coordinates of each update


def _masked(updates: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Each site's masked vector, as secaggplus_mod makes it (weight 1, max_weight 1)."""
    keys = [generate_key_pairs() for _ in updates]  # (secret, public), as the mod's
    masked = []
    for i, update in enumerate(updates):
        q = quantize([update], CLIP, TARGET)
        private_seed = rng.bytes(32)
        vector = parameters_addition(q, pseudo_rand_gen(private_seed, MODULUS, [(D,)]))
        for j in range(len(updates)):
            if j == i:
                continue
            shared = generate_shared_key(keys[i][0], keys[j][1])
            pairwise = pseudo_rand_gen(shared, MODULUS, [(D,)])
            op = parameters_addition if i > j else parameters_subtraction
            vector = op(vector, pairwise)
        masked.append((parameters_mod(vector, MODULUS)[0], private_seed))
    return masked


def test_the_server_sees_vectors_uncorrelated_with_updates_and_their_sum_is_exact():
    rng = np.random.default_rng(20261202)  # seeded: the same updates and seeds every run
    updates = [rng.normal(0.0, 1.0, D) for _ in range(3)]
    masked = _masked(updates, rng)
    for update, (vector, _) in zip(updates, masked, strict=True):
        # Under independence Pearson's r over D coordinates is ~N(0, 1/D): |r| > 6/sqrt(D)
        # has probability < 2e-9. The quantized update itself is correlated almost perfectly.
        r = np.corrcoef(update, vector.astype(np.float64))[0, 1]
        assert abs(r) < 6 / np.sqrt(D)
        plain = quantize([update], CLIP, TARGET)[0].astype(np.float64)
        assert np.corrcoef(update, plain)[0, 1] > 0.99
    # The server: the sum of the masked vectors, minus the private masks (reconstructed from
    # the sites' shares in the protocol); the pairwise masks cancel.
    total = [sum(v.astype(np.int64) for v, _ in masked)]
    for _, seed in masked:
        total = parameters_subtraction(total, pseudo_rand_gen(seed, MODULUS, [(D,)]))
    total = parameters_mod(total, MODULUS)
    summed = dequantize(total, CLIP, TARGET)[0] - (len(updates) - 1) * CLIP
    step = 2 * CLIP / TARGET  # stochastic rounding: each site's error is below one step
    assert np.abs(summed - sum(updates)).max() <= len(updates) * step
