"""Raw SEAL ciphertexts under a TenSEAL context: loading, checking, saving, evaluating.

The server computes on SEAL ciphertexts directly (``tenseal.sealapi``) rather
than through TenSEAL's ``CKKSVector``, which rescales after every
multiplication and relabels the result with the nominal scale. Here a sum of
plaintext-weighted terms is accumulated at the un-rescaled level and rescaled
once, and every ciphertext carries its true scale (see :meth:`Kit.product`).

On the wire, a ciphertext stays a TenSEAL ``CKKSVectorProto`` (one SEAL
ciphertext, its slot count and scale), so TenSEAL loads what this module
writes and older batches still load. SEAL's Python binding saves only to a
path; :func:`save` points it at an anonymous in-memory file (``memfd``), or at a
private temporary directory where there is none. Only ciphertexts go there.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from ..exceptions import ConfigurationError
from ._tenseal import tenseal

__all__ = ["Kit", "SeededEncryptor", "load_fresh", "save", "vector_bytes"]

Cipher = Any  # tenseal.sealapi.Ciphertext
ParmsId = list[int]


def sealapi() -> Any:
    """The ``tenseal.sealapi`` module (SEAL's own classes)."""
    tenseal()  # the install hint, if TenSEAL is missing
    import tenseal.sealapi as api

    return api


def save(obj: Any) -> bytes:
    """SEAL's serialization of ``obj``: compressed, and seeded if from ``encrypt_symmetric``."""
    return _save_through(obj.save)


def _save_through(write: Callable[[str], None]) -> bytes:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("privml-he")  # close-on-exec
        try:
            write(f"/proc/self/fd/{fd}")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="privml-he-") as folder:  # mode 0700
        path = os.path.join(folder, "ct")
        write(path)
        with open(path, "rb") as file:
            return file.read()


def vector_bytes(ciphertext: bytes, *, size: int, scale: float) -> bytes:
    """A TenSEAL ``CKKSVectorProto`` holding one SEAL ciphertext of ``size`` slots."""
    sizes = _varint(size)
    return b"".join(
        [
            b"\x0a" + _varint(len(sizes)) + sizes,  # field 1: repeated uint32 sizes (packed)
            b"\x12" + _varint(len(ciphertext)) + ciphertext,  # field 2: repeated bytes
            b"\x19" + struct.pack("<d", scale),  # field 3: double scale
        ]
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


class SeededEncryptor:
    """Encrypts with the secret key of a client's context, writing seeded ciphertexts.

    Symmetric (secret-key) CKKS encryption is as secure as public-key
    encryption, and SEAL can then store the uniformly random half of each
    ciphertext as the seed it was expanded from, which halves the bytes sent.
    """

    def __init__(self, ctx: Any) -> None:
        api = sealapi()
        seal_ctx = ctx.seal_context().data
        self._plain = api.Plaintext
        self._encoder = api.CKKSEncoder(seal_ctx)
        self._encryptor = api.Encryptor(seal_ctx, ctx.secret_key().data)
        self._scale = float(ctx.global_scale)

    def encrypt(self, values: Sequence[float]) -> bytes:
        """``values`` (one per slot, from the first) as TenSEAL vector bytes."""
        plain = self._plain()
        self._encoder.encode(list(values), self._scale, plain)
        seeded = self._encryptor.encrypt_symmetric(plain)
        return vector_bytes(save(seeded), size=len(values), scale=self._scale)


def load_fresh(ctx: Any, blob: bytes, *, size: int) -> tuple[Any, Cipher]:
    """The TenSEAL vector in a batch's ``blob`` and its SEAL ciphertext, refused unless fresh.

    Fresh means: one ciphertext of two polynomials (not a product awaiting
    relinearization), at the top of the modulus chain (never rescaled), in NTT
    form, at the context's scale, holding at least ``size`` samples.

    Raises
    ------
    ConfigurationError
        The bytes do not load under ``ctx``, or the ciphertext is not fresh.
    """
    ts = tenseal()
    try:
        vector = ts.ckks_vector_from(ctx, blob)
        parts = vector.ciphertext()
        slots = int(vector.size())
    except (ValueError, RuntimeError, TypeError) as err:
        raise ConfigurationError(
            f"the batch's ciphertexts do not load under this public context ({err}); "
            "send the public context of the client that encrypted the batch"
        ) from err
    seal_ctx = ctx.seal_context().data
    scale = float(ctx.global_scale)
    ct = parts[0] if len(parts) == 1 else None
    if (
        ct is None
        or ct.size() != 2
        or list(ct.parms_id()) != list(seal_ctx.first_parms_id())
        or not ct.is_ntt_form()
        or abs(ct.scale - scale) > 1e-9 * scale
        or slots < size
    ):
        raise ConfigurationError(
            "the batch holds a ciphertext that is not freshly encrypted for this model's "
            "parameters (rescaled, multiplied, at another scale, or split): the server only "
            "evaluates what HEClient.encrypt produced; encrypt the data again"
        )
    return vector, ct


class Kit:
    """SEAL's evaluator and encoder for one public context, with its primes and scale.

    Levels count rescales: at level ``l`` a ciphertext has lost the last ``l``
    data primes, and its next rescale divides by :meth:`prime`\\ ``(l)``.
    """

    def __init__(self, ctx: Any) -> None:
        api = sealapi()
        self.api = api
        self.context = ctx.seal_context().data
        self.evaluator = api.Evaluator(self.context)
        self.encoder = api.CKKSEncoder(self.context)
        self.relin_keys = ctx.relin_keys().data if ctx.has_relin_keys() else None
        self._encryptor = api.Encryptor(self.context, ctx.public_key().data)
        self.scale = float(ctx.global_scale)
        parms = self.context.first_context_data().parms()
        self.primes = tuple(int(q.value()) for q in parms.coeff_modulus())
        self._parms: list[ParmsId] = []
        data = self.context.first_context_data()
        while data is not None:
            self._parms.append(list(data.parms_id()))
            data = data.next_context_data()

    def prime(self, level: int) -> int:
        """The prime the rescale after ``level`` earlier rescales divides by."""
        return self.primes[len(self.primes) - 1 - level]

    def plain(self, value: float, level: int, scale: float) -> Any:
        """``value`` in every slot, encoded at ``scale`` for a ciphertext at ``level``."""
        out = self.api.Plaintext()
        self.encoder.encode(float(value), self._parms[level], scale, out)
        return out

    def product(self, ct: Cipher, level: int, value: float, scale: float) -> Cipher | None:
        """``ct * value``, labelled with the exact ``scale`` it is meant to have.

        ``value`` is encoded at ``scale / ct.scale``, so the product's true scale
        is ``scale`` up to double rounding (a relative 1e-16): labelling it so
        lets products of different origins be added without SEAL's scale check
        tripping on the last bit. None when ``value`` rounds to zero at that
        scale (a term below the precision kept, which SEAL would refuse).
        """
        plain = self.plain(value, level, scale / ct.scale)
        if plain.is_zero():
            return None
        out = self.api.Ciphertext()
        self.evaluator.multiply_plain(ct, plain, out)
        out.scale = scale
        return out

    def constant(self, value: float, level: int) -> Cipher:
        """``value`` in every slot, encrypted with the public key at ``level`` and scale Δ."""
        out = self.api.Ciphertext()
        self._encryptor.encrypt(self.plain(value, 0, self.scale), out)
        self.evaluator.mod_switch_to_inplace(out, self._parms[level])
        return out

    def to_level(self, ct: Cipher, level: int) -> Cipher:
        """``ct`` with primes dropped (no rescale, same scale) down to ``level``."""
        out = self.api.Ciphertext()
        self.evaluator.mod_switch_to(ct, self._parms[level], out)
        return out

    def relinearize(self, ct: Cipher) -> None:
        """Bring a product of ciphertexts back to two polynomials, in place."""
        if ct.size() > 2:
            if self.relin_keys is None:
                raise ConfigurationError(
                    "this model multiplies ciphertexts, which needs relinearization keys; "
                    "send client.public_context() of a client made with HEClient.for_model"
                )
            self.evaluator.relinearize_inplace(ct, self.relin_keys)

    def neuron(
        self, terms: list[tuple[Cipher, float]], level: int, target: float, bias: float
    ) -> Cipher:
        """``bias + Σ value · ct`` over ``terms``, each product at scale ``target``,
        rescaled once to ``level + 1`` (:meth:`finish`); the bias alone if every
        product rounds to zero."""
        acc = None
        for ct, value in terms:
            term = self.product(ct, level, value, target)
            if term is None:
                continue
            if acc is None:
                acc = term
            else:
                self.evaluator.add_inplace(acc, term)
        if acc is None:  # an output that ignores its inputs is its bias
            return self.constant(bias, level + 1)
        return self.finish(acc, level, bias)

    def finish(self, acc: Cipher, level: int, bias: float) -> Cipher:
        """Add ``bias``, relinearize, and rescale once: the end of one output neuron."""
        if bias:
            self.evaluator.add_plain_inplace(acc, self.plain(bias, level, acc.scale))
        self.relinearize(acc)
        self.evaluator.rescale_to_next_inplace(acc)
        return acc

    def to_bytes(self, ct: Cipher, *, size: int) -> bytes:
        """A result ciphertext as TenSEAL vector bytes (``size`` samples)."""
        return vector_bytes(save(ct), size=size, scale=self.scale)
