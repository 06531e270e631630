"""Everything round-trips through bytes; bad bytes and mismatched inputs give typed errors."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import privml.he as he
from privml.exceptions import ConfigurationError, IntegrityError
from privml.he import _wire

headers = st.dictionaries(
    st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.booleans()), max_size=4
)
blob_lists = st.lists(st.binary(max_size=64), max_size=4)


@given(header=headers, blobs=blob_lists)
def test_wire_round_trip(header, blobs):
    assert _wire.unpack(_wire.pack("batch", header, blobs), "batch") == (header, blobs)


@given(header=headers, blobs=blob_lists, data=st.data())
def test_any_corrupted_byte_is_detected(header, blobs, data):
    raw = bytearray(_wire.pack("result", header, blobs))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(IntegrityError):
        _wire.unpack(bytes(raw), "result")


def test_truncated_and_foreign_bytes(tiny):
    model, client, X = tiny
    batch = client.encrypt(X).to_bytes()
    for bad in (batch[:-1], batch[: len(batch) // 2], b"", b"not privml" * 10):
        with pytest.raises(IntegrityError):
            he.EncryptedBatch.from_bytes(bad)
    with pytest.raises(IntegrityError, match="checksum"):
        model.predict_encrypted(batch[:-40] + bytes(40), client.public_context())
    with pytest.raises(TypeError):
        he.EncryptedBatch.from_bytes("text")  # type: ignore[arg-type]


def test_wrong_kind_and_newer_version_are_configuration_errors(tiny):
    model, client, X = tiny
    result = model.predict_encrypted(client.encrypt(X), client.public_context())
    with pytest.raises(
        ConfigurationError, match=r"expected an encrypted batch .*, got an encrypted result"
    ):
        he.EncryptedBatch.from_bytes(result.to_bytes())
    with pytest.raises(ConfigurationError, match="expected a public context"):
        he.PublicContext.from_bytes(model.spec.to_bytes())
    body = bytearray(model.spec.to_bytes()[:-32])
    struct.pack_into(">H", body, 8, _wire.FORMAT_VERSION + 1)
    newer = bytes(body) + hashlib.sha256(body).digest()
    with pytest.raises(ConfigurationError, match="upgrade privml"):
        he.ModelSpec.from_bytes(newer)


def test_everything_round_trips(tiny):
    model, client, X = tiny
    spec = he.ModelSpec.from_bytes(model.spec.to_bytes())
    assert spec.to_json() == model.spec.to_json()
    server = he.HEModel.from_bytes(model.to_bytes())
    np.testing.assert_array_equal(server.plaintext_scores(X), model.plaintext_scores(X))
    batch = he.EncryptedBatch.from_bytes(client.encrypt(X).to_bytes())
    result = he.EncryptedResult.from_bytes(
        server.predict_encrypted(batch.to_bytes(), client.public_context()).to_bytes()
    )
    assert result.batch_id == batch.batch_id and result.n_samples == len(X)
    np.testing.assert_allclose(
        client.decrypt(result, output="scores"), model.plaintext_scores(X)[:, 0], atol=1e-3
    )
    context = he.PublicContext.from_bytes(client.public_context())
    assert he.PublicContext.from_bytes(context.to_bytes()).key_id == client.key_id


def test_tampered_model_weights_are_detected(tiny):
    model, _, _ = tiny
    header, blobs = _wire.unpack(model.to_bytes(), "model")
    weights = np.frombuffer(blobs[0], dtype="<f8").copy()
    weights[0] += 1.0
    forged = _wire.pack("model", header, [weights.tobytes(), *blobs[1:]])
    with pytest.raises(IntegrityError, match="fingerprint"):
        he.HEModel.from_bytes(forged)


@settings(max_examples=15, deadline=None)
@given(
    X=st.lists(st.lists(st.floats(-8.0, 8.0), min_size=3, max_size=3), min_size=1, max_size=6).map(
        np.array
    ),
    packing=st.sampled_from(["columns", "rows"]),
)
def test_decrypt_of_encrypted_prediction_is_the_prediction(tiny, X, packing):
    model, client, _ = tiny
    result = model.predict_encrypted(
        client.encrypt(X, packing=packing), client.public_context(packing=packing)
    )
    np.testing.assert_allclose(client.decrypt_scores(result), model.plaintext_scores(X), atol=1e-3)


def test_wrong_shapes_and_values_are_refused(tiny, cancer_compiled, cancer_clients):
    model, client, X = tiny
    with pytest.raises(ConfigurationError, match=r"has 2 feature.*takes 3"):
        client.encrypt(X[:, :2])
    with pytest.raises(ConfigurationError, match="shape"):
        client.encrypt(X[0])
    with pytest.raises(ConfigurationError, match="NaN"):
        client.encrypt(np.where(X > 0, np.nan, X))
    with pytest.raises(ConfigurationError, match="outside the input range"):
        client.encrypt(X * 100)
    with pytest.raises(ConfigurationError, match="packing"):
        client.encrypt(X, packing="diagonal")
    other_model = cancer_compiled["default C"]
    with pytest.raises(ConfigurationError, match="takes 30"):
        other_model.predict_encrypted(client.encrypt(X), client.public_context())
    cancer_client = cancer_clients["strong regularization"]
    batch = cancer_client.encrypt(np.zeros((2, 30)))
    with pytest.raises(ConfigurationError, match="encrypted for model"):
        other_model.predict_encrypted(batch, cancer_client.public_context())
    result = model.predict_encrypted(client.encrypt(X), client.public_context())
    with pytest.raises(ConfigurationError, match="comes from model"):
        he.HEClient.from_bytes(client.to_bytes(include_secret_key=True)).decrypt(
            he.EncryptedResult(**{**result.__dict__, "model_id": "0" * 32})
        )
