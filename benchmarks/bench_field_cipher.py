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
encoding. Every round times each contender once, in a rotated order (after one
warm-up round); the figures quoted are the median of the *per-round* ratio of rates
to the bare AES-GCM loop, with its quartiles, extremes and the rounds taken.

    .venv/bin/python benchmarks/bench_field_cipher.py [--cells 500000] [--rounds 7] [--all]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Timings, interleave, pin_threads, verdict

pin_threads()

import pandas as pd  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV  # noqa: E402

from privml.crypto import FieldCipher  # noqa: E402

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


def show(title: str, times: Timings, cells: int, reference: str) -> None:
    print(f"\n{title}: cells/s per round, median [q1 .. q3] (min, max); rate / {reference}")
    for name in times.seconds:
        rate = times.rate(name, cells, "cells")
        line = f"  {name:<30} {rate}"
        if name != reference:
            share = times.ratio(reference, name)  # rate(name) / rate(reference)
            line += f"\n  {'':<30} = {share.median:6.1%} of {reference} {_spread(share)}"
        print(line)


def _timed(runs: dict[str, Run]) -> dict[str, Callable[[], None]]:
    """Each run's whole call is timed; its result is dropped outside the clock's next start."""

    def whole(run: Run) -> Callable[[], None]:
        def call() -> None:
            run()

        return call

    return {name: whole(run) for name, run in runs.items()}


def _spread(ratio: object) -> str:
    text = str(ratio)
    return text[text.index("[") :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--all", action="store_true", help="also FieldCipher.encrypt per value")
    args = parser.parse_args()
    encrypt, decrypt = contenders(args.cells)
    if not args.all:
        del encrypt["FieldCipher.encrypt per value"]
    print(f"{args.cells:,} cells of 16 characters, {args.rounds} interleaved rounds, 1 thread")
    enc = interleave(_timed(encrypt), rounds=args.rounds)
    show("encrypt", enc, args.cells, "AESGCM bare loop")
    dec = interleave(_timed(decrypt), rounds=args.rounds)
    show("decrypt", dec, args.cells, "AESGCM bare loop")

    share = enc.ratio("AESGCM bare loop", "FieldCipher randomized").median
    fernet = enc.ratio("Fernet per cell", "FieldCipher randomized").median
    siv = enc.ratio("AESSIV bare loop", "FieldCipher deterministic").median
    print("\nquoted figures (median of the per-round ratio of rates):")
    print(f"  FieldCipher randomized / bare AESGCM loop : {share:6.1%}  "
          f"{verdict(100 * share, at_least=80, unit='%')}")  # fmt: skip
    print(f"  FieldCipher randomized / Fernet per cell  : {fernet:6.2f}x  "
          f"{verdict(fernet, at_least=4)}")  # fmt: skip
    print(f"  FieldCipher deterministic / bare AESSIV   : {siv:6.1%}")
    opened = dec.ratio("AESGCM bare loop", "FieldCipher randomized").median
    print(f"  decrypt: FieldCipher randomized / bare AESGCM loop : {opened:6.1%}")


if __name__ == "__main__":
    main()
