"""FieldCipher against per-cell Fernet and a bare AES-GCM loop, in the same run.

Encrypts 1,000,000 cells of 16-character strings with:

- ``FieldCipher`` randomized (``encrypt_series``: AES-256-GCM, row-bound associated data),
- ``FieldCipher`` deterministic (``encrypt_series``: AES-256-SIV),
- ``cryptography``'s ``Fernet``, one ``encrypt`` per cell (the common hand-rolled choice),
- a bare ``AESGCM.encrypt`` loop: a fresh ``os.urandom(12)`` nonce per cell, as the
  ``cryptography`` documentation shows, kept in front of the ciphertext, no
  associated data (the reference for privml's own overhead),

plus, for context, a bare AES-GCM loop with nonces drawn in bulk (the floor for any
AES-GCM in Python), a bare ``AESSIV.encrypt`` loop (the reference for the
deterministic mode) and ``FieldCipher.encrypt`` called once per value. The baselines get
ready-made bytes; FieldCipher gets the str column and row keys and does its own
encoding. Rounds are interleaved and each figure is the best of ``--repeat``, so
that load from other processes hits every contender alike. Prints cells/s and
ratios.

    .venv/bin/python benchmarks/bench_field_cipher.py [--cells 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Callable

import pandas as pd
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

from privml.crypto import FieldCipher

Run = Callable[[], object]


def contenders(cells: int) -> tuple[dict[str, Run], dict[str, Run]]:
    values = pd.Series([secrets.token_hex(8) for _ in range(cells)], dtype="str")
    raw = [v.encode() for v in values]
    row_keys = pd.RangeIndex(cells)
    randomized = FieldCipher.generate(dataset="bench")
    deterministic = FieldCipher.generate(dataset="bench", deterministic=True)
    fernet = Fernet(Fernet.generate_key())
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    siv = AESSIV(AESSIV.generate_key(bit_length=512))

    def bare_gcm() -> list[bytes]:
        out = []
        for cell in raw:
            nonce = os.urandom(12)
            out.append(nonce + aead.encrypt(nonce, cell, None))
        return out

    def bare_gcm_bulk_nonces() -> list[bytes]:
        block = os.urandom(12 * cells)
        nonces = [block[i : i + 12] for i in range(0, len(block), 12)]
        return [n + aead.encrypt(n, cell, None) for n, cell in zip(nonces, raw, strict=True)]

    def per_value() -> list[bytes]:
        encrypt = randomized.encrypt
        return [
            encrypt(v, column="code", row_key=k)
            for v, k in zip(values.tolist(), range(cells), strict=True)
        ]

    encrypt: dict[str, Run] = {
        "FieldCipher randomized": lambda: randomized.encrypt_series(
            values, column="code", row_keys=row_keys
        ),
        "FieldCipher deterministic": lambda: deterministic.encrypt_series(values, column="code"),
        "Fernet per cell": lambda: [fernet.encrypt(cell) for cell in raw],
        "AESGCM bare loop": bare_gcm,
        "AESGCM bare, bulk nonces": bare_gcm_bulk_nonces,
        "AESSIV bare loop": lambda: [siv.encrypt(cell, None) for cell in raw],
        "FieldCipher.encrypt per value": per_value,
    }

    rand_tokens = randomized.encrypt_series(values, column="code", row_keys=row_keys)
    det_tokens = deterministic.encrypt_series(values, column="code")
    gcm_tokens = bare_gcm()
    assert randomized.decrypt_series(rand_tokens, column="code", row_keys=row_keys).equals(
        values.astype(object)
    )
    decrypt: dict[str, Run] = {
        "FieldCipher randomized": lambda: randomized.decrypt_series(
            rand_tokens, column="code", row_keys=row_keys
        ),
        "FieldCipher deterministic": lambda: deterministic.decrypt_series(
            det_tokens, column="code"
        ),
        "AESGCM bare loop": lambda: [aead.decrypt(t[:12], t[12:], None) for t in gcm_tokens],
    }
    return encrypt, decrypt


def best_rates(runs: dict[str, Run], cells: int, repeat: int) -> dict[str, float]:
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            result = run()
            best[name] = min(best[name], time.perf_counter() - start)
            del result
    return {name: cells / seconds for name, seconds in best.items()}


def show(title: str, rates: dict[str, float]) -> None:
    print(f"\n{title}")
    for name, rate in rates.items():
        print(f"  {name:<32} {rate:>12,.0f} cells/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    encrypt, decrypt = contenders(args.cells)
    print(f"{args.cells:,} cells of 16 characters, best of {args.repeat} interleaved rounds")
    enc = best_rates(encrypt, args.cells, args.repeat)
    show("encrypt", enc)
    dec = best_rates(decrypt, args.cells, args.repeat)
    show("decrypt", dec)

    fernet, bare = enc["Fernet per cell"], enc["AESGCM bare loop"]
    references = {
        "FieldCipher randomized": ("AESGCM bare, bulk nonces", "bulk-nonce AESGCM"),
        "FieldCipher deterministic": ("AESSIV bare loop", "bare AESSIV"),
    }
    print("\nratios (same run)")
    for name, (reference, label) in references.items():
        print(
            f"  {name:<26} {enc[name] / fernet:5.2f}x Fernet   "
            f"{enc[name] / bare:6.1%} of bare AESGCM   {enc[name] / enc[reference]:6.1%} of {label}"
        )
    randomized = enc["FieldCipher randomized"]
    print(
        f"\ntarget: randomized >= 4x Fernet: {'met' if randomized >= 4 * fernet else 'MISSED'}; "
        f">= 80% of bare AESGCM: {'met' if randomized >= 0.8 * bare else 'MISSED'}"
    )
    print(
        f"decrypt: randomized {dec['FieldCipher randomized'] / dec['AESGCM bare loop']:.1%} of "
        "bare AESGCM decrypt"
    )


if __name__ == "__main__":
    main()
