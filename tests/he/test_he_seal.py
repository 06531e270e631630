"""SEAL-level helpers: saving without a path of our own, and the TenSEAL vector framing."""

from __future__ import annotations

import os

import numpy as np
import pytest

from privml.he import _seal

ts = pytest.importorskip("tenseal")


@pytest.fixture(scope="module")
def ctx():
    context = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[38, 30, 38]
    )
    context.global_scale = 2.0**30
    return context


def test_seeded_ciphertexts_decrypt_through_tenseal(ctx):
    values = np.linspace(-2.0, 2.0, 100)
    blob = _seal.SeededEncryptor(ctx).encrypt(values.tolist())
    vector = ts.ckks_vector_from(ctx, blob)
    assert vector.size() == 100
    np.testing.assert_allclose(vector.decrypt(), values, atol=1e-5)
    assert len(blob) < 0.6 * len(ts.ckks_vector(ctx, values.tolist()).serialize())


def test_save_without_memfd_uses_a_private_folder(ctx, monkeypatch):
    ct = ts.ckks_vector(ctx, [1.0, 2.0]).ciphertext()[0]
    in_memory = _seal.save(ct)
    monkeypatch.delattr(os, "memfd_create", raising=False)
    assert _seal.save(ct) == in_memory


def test_vector_framing_round_trips_sizes_above_one_byte(ctx):
    ct = ts.ckks_vector(ctx, [0.5] * 300).ciphertext()[0]
    vector = ts.ckks_vector_from(ctx, _seal.vector_bytes(_seal.save(ct), size=300, scale=2.0**30))
    assert vector.size() == 300
    np.testing.assert_allclose(vector.decrypt(), [0.5] * 300, atol=1e-5)
