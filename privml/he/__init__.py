"""Encrypted inference: the server predicts on data it cannot read (CKKS, via TenSEAL).

A client (say, a hospital) holds the secret key and sends encrypted features;
the model owner computes scores on ciphertexts with only a public context, and
the client decrypts them and applies the link function::

    import privml.he

    model = privml.he.compile(trained_model, calibration=X_sample)   # server
    client = privml.he.HEClient.for_model(model.spec)                # client
    batch = client.encrypt(X)                                        # client
    result = model.predict_encrypted(batch, client.public_context()) # server
    proba = client.decrypt(result)                                   # client

Defaults are the safe and fast choice: 128-bit security, column packing
(thousands of samples per ciphertext, no rotations, no Galois keys), secret
key never serialized unless ``include_secret_key=True`` is written out.
What HE does not protect (decrypted results, a malicious server, repeated
queries) is set out in SECURITY.md.

TenSEAL is imported only when keys are made or ciphertexts touched;
``pip install 'privml[he]'`` provides it.
"""

from ._batch import EncryptedBatch, EncryptedResult
from ._client import HEClient
from ._compile import compile
from ._context import PublicContext
from ._model import HEModel
from ._params import HEParameters
from ._report import AccuracyReport
from ._spec import ModelSpec

__all__ = [
    "AccuracyReport",
    "EncryptedBatch",
    "EncryptedResult",
    "HEClient",
    "HEModel",
    "HEParameters",
    "ModelSpec",
    "PublicContext",
    "compile",
]
