"""FieldCipher nonces: fresh and unique, drawn by the code path that encryption uses."""

from __future__ import annotations

import itertools

import pandas as pd

from privml.crypto import _field_encoding, _field_engine
from privml.crypto.field import FieldCipher


def test_a_million_nonces_are_unique():
    nonces = _field_encoding.random_nonces(1_000_000)
    assert len(nonces) == 1_000_000
    assert all(len(n) == 12 for n in nonces[:1000])
    assert len(set(nonces)) == 1_000_000
    # Single values take the other entry point; both read the OS CSPRNG.
    singles = {_field_encoding.random_nonce() for _ in range(10_000)}
    assert len(singles) == 10_000 and singles.isdisjoint(nonces)


def test_encryption_takes_its_nonces_from_those_functions(monkeypatch):
    counter = itertools.count()

    def numbered(count: int) -> bytes:
        return b"".join(next(counter).to_bytes(12, "big") for _ in range(count))

    monkeypatch.setattr(_field_engine, "random_nonce_block", numbered)
    monkeypatch.setattr(_field_engine, "random_nonce", lambda: numbered(1))
    cipher = FieldCipher.generate(dataset="d")
    tokens = cipher.encrypt_series(pd.Series(["a"] * 3), column="c", row_keys=[1, 2, 3])
    tokens = [*tokens, cipher.encrypt("a", column="c", row_key=4)]
    assert [int.from_bytes(t[5:17], "big") for t in tokens] == [0, 1, 2, 3]


def test_a_million_encryptions_carry_distinct_nonces():
    """One million real encryptions (about 3 s): every token has its own nonce."""
    cipher = FieldCipher.generate(dataset="d")
    count = 1_000_000
    tokens = cipher.encrypt_series(
        pd.Series([""] * count), column="c", row_keys=pd.RangeIndex(count)
    )
    nonces = {t[5:17] for t in tokens}
    nonces.update(cipher.encrypt("", column="c", row_key=0)[5:17] for _ in range(1000))
    assert len(nonces) == count + 1000
