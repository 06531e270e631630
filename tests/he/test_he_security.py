"""The server never holds a key that decrypts; secret keys leave the client only on request."""

from __future__ import annotations

import numpy as np
import pytest

import privml.he as he
from privml.exceptions import ConfigurationError, DecryptionError
from privml.he import _wire

ts = pytest.importorskip("tenseal")


def _tenseal_context(public_bytes: bytes, kind: str = "public_context"):
    _, blobs = _wire.unpack(public_bytes, kind)
    return ts.context_from(blobs[0])


def test_public_context_holds_no_secret_key_and_no_galois_keys_for_columns(tiny):
    _, client, _ = tiny
    public = client.public_context()
    ctx = _tenseal_context(public)
    assert not ctx.is_private() and not ctx.has_secret_key()
    assert not ctx.has_galois_keys()
    assert not ctx.has_relin_keys()  # a linear model never multiplies ciphertexts
    loaded = he.PublicContext.from_bytes(public)
    assert loaded.is_private() is False and loaded.has_galois_keys is False


def test_rows_packing_context_adds_galois_keys_only(digits_client):
    columns = digits_client.public_context()
    rows = digits_client.public_context(packing="rows")
    assert _tenseal_context(columns).has_relin_keys()  # x**2 needs relinearization
    assert not _tenseal_context(columns).has_galois_keys()
    assert _tenseal_context(rows).has_galois_keys()
    assert not _tenseal_context(rows).is_private()
    assert len(rows) > 5 * len(columns)


def test_server_refuses_a_private_context(tiny):
    model, client, X = tiny
    batch = client.encrypt(X)
    secret = client.to_bytes(include_secret_key=True)
    private_ctx = ts.context_from(_wire.unpack(secret, "client")[1][0])
    assert private_ctx.is_private()
    forged = _wire.pack(
        "public_context",
        {"key_id": client.key_id, "parameters": client.parameters.to_json()},
        [private_ctx.serialize(save_secret_key=True)],
    )
    for leaked in (secret, client, private_ctx, forged):
        with pytest.raises(ValueError, match="refusing a private context"):
            model.predict_encrypted(batch, leaked)


def test_public_context_cannot_wrap_a_secret_key(tiny):
    _, client, _ = tiny
    private_ctx = ts.context_from(
        _wire.unpack(client.to_bytes(include_secret_key=True), "client")[1][0]
    )
    with pytest.raises(ConfigurationError, match="secret key"):
        he.PublicContext(private_ctx, key_id=client.key_id, parameters=client.parameters)


def test_no_decrypt_path_on_the_server_side(tiny):
    model, client, X = tiny
    result = model.predict_encrypted(client.encrypt(X), client.public_context())
    assert not any(hasattr(obj, "decrypt") for obj in (model, result, he.PublicContext))
    server_ctx = he.PublicContext.from_bytes(client.public_context()).tenseal_context
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(server_ctx, result.ciphertexts[0]).decrypt()


def test_another_clients_result_does_not_decrypt(tiny):
    model, client, X = tiny
    result = model.predict_encrypted(client.encrypt(X), client.public_context())
    other = he.HEClient.for_model(model.spec)
    with pytest.raises(DecryptionError, match="not this client's key"):
        other.decrypt(result)


def test_batch_and_context_from_different_clients_are_refused(tiny):
    model, client, X = tiny
    other = he.HEClient.for_model(model.spec)
    with pytest.raises(ConfigurationError, match="public context of the client that encrypted"):
        model.predict_encrypted(client.encrypt(X), other.public_context())


def test_rows_batch_needs_galois_keys(tiny):
    model, client, X = tiny
    with pytest.raises(ConfigurationError, match="Galois"):
        model.predict_encrypted(client.encrypt(X, packing="rows"), client.public_context())


def test_secret_key_is_serialized_only_when_asked(tiny):
    model, client, X = tiny
    with pytest.raises(TypeError):
        client.to_bytes()  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="include_secret_key=True"):
        client.to_bytes(include_secret_key=False)
    restored = he.HEClient.from_bytes(client.to_bytes(include_secret_key=True))
    assert restored.key_id == client.key_id
    result = model.predict_encrypted(client.encrypt(X), client.public_context())
    np.testing.assert_allclose(restored.decrypt(result), client.decrypt(result))


def test_security_level_choice(tiny):
    model, _, _ = tiny
    for bits, n in ((128, 4096), (192, 8192), (256, 8192)):
        params = he.HEClient.for_model(model.spec, security_bits=bits).parameters
        assert params.poly_modulus_degree == n and params.security_bits == bits
    with pytest.raises(ConfigurationError, match="128-bit"):
        he.HEClient.for_model(model.spec, security_bits=80)


def _public_bytes(client, **keys):
    """A public context of ``client`` serialized with the given keys left out."""
    private = ts.context_from(
        _wire.unpack(client.to_bytes(include_secret_key=True), "client")[1][0]
    )
    blob = private.serialize(
        save_public_key=keys.get("public", True),
        save_secret_key=False,
        save_galois_keys=False,
        save_relin_keys=keys.get("relin", True),
    )
    header = {"key_id": client.key_id, "parameters": client.parameters.to_json()}
    return _wire.pack("public_context", header, [blob])


def test_contexts_missing_the_public_or_relinearization_keys_are_refused(
    tiny, digits, digits_compiled, digits_client
):
    batch = digits_client.encrypt(digits[1][:4])
    with pytest.raises(ConfigurationError, match="relinearization keys"):
        digits_compiled.predict_encrypted(batch, _public_bytes(digits_client, relin=False))
    model, client, X = tiny
    with pytest.raises(ConfigurationError, match="public key"):
        model.predict_encrypted(client.encrypt(X), _public_bytes(client, public=False))


def _with_blob(batch, index, blob):
    blobs = list(batch.ciphertexts)
    blobs[index] = blob
    return he.EncryptedBatch(**{**vars(batch), "ciphertexts": tuple(blobs)})


def test_ciphertexts_that_are_not_fresh_are_refused(digits, digits_compiled, digits_client):
    X = digits[1][:4]
    batch = digits_client.encrypt(X)
    ctx = he.PublicContext.from_bytes(digits_client.public_context()).tenseal_context
    fresh = ts.ckks_vector_from(ctx, batch.ciphertexts[0])
    rescaled = fresh * 0.5  # one level down
    ctx.auto_relin = False
    unrelinearized = fresh * fresh  # three polynomials
    for stale in (rescaled.serialize(), unrelinearized.serialize()):
        with pytest.raises(ConfigurationError, match="not freshly encrypted"):
            digits_compiled.predict_encrypted(
                _with_blob(batch, 0, stale), digits_client.public_context()
            )
    short = he.EncryptedBatch(**{**vars(batch), "n_samples": 4, "chunk_sizes": (4,)})
    assert digits_compiled.predict_encrypted(short, digits_client.public_context())


def test_requests_are_seeded_and_public_key_ciphertexts_still_evaluate(tiny):
    model, client, X = tiny
    private = ts.context_from(
        _wire.unpack(client.to_bytes(include_secret_key=True), "client")[1][0]
    )
    batch = client.encrypt(X)
    old = [ts.ckks_vector(private, X[:, j].tolist()).serialize() for j in range(X.shape[1])]
    assert all(len(new) < 0.6 * len(o) for new, o in zip(batch.ciphertexts, old, strict=True))
    legacy = he.EncryptedBatch(**{**vars(batch), "ciphertexts": tuple(old)})
    result = model.predict_encrypted(legacy, client.public_context())
    np.testing.assert_allclose(
        client.decrypt(result),
        client.decrypt(model.predict_encrypted(batch, client.public_context())),
        atol=1e-4,
    )
