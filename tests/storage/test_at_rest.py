"""Nothing sensitive is readable from the vault folder without the key."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd

from privml import Budget, Field, Schema, Vault

MARKERS = ["ZEBRA-ANNA-8371", "QUOKKA-BORIS-9052", "hypertension-XJ42"]
NUMBERS = [123456.789, 98765.4321]
INTEGERS = [73915, 84026]


def _secret_frame(rows: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    names = [MARKERS[i % 2] for i in range(rows)]
    return pd.DataFrame(
        {
            "name": pd.Series(names, dtype="str"),
            "ssn": [f"ID-{MARKERS[i % 2]}" for i in range(rows)],
            "diagnosis": pd.Categorical([MARKERS[2]] * rows, categories=[MARKERS[2], "healthy"]),
            "income": [NUMBERS[i % 2] for i in range(rows)],
            "zip": [INTEGERS[i % 2] for i in range(rows)],
            "noise": rng.normal(size=rows),
        }
    )


SCHEMA = Schema(
    {
        "name": Field.text(),
        "ssn": Field.identifier(),
        # the category list is schema (public); the column's values are not
        "diagnosis": Field.categorical(categories=[MARKERS[2], "healthy"]),
        "income": Field.numeric(bounds=(0, 1e6)),
        "zip": Field.integer(bounds=(0, 99999)),
        "noise": Field.numeric(bounds=(-10, 10)),
    }
)


def _needles() -> list[bytes]:
    out = [m.encode() for m in MARKERS[:2]] + [f"ID-{m}".encode() for m in MARKERS[:2]]
    for x in NUMBERS:
        out += [struct.pack("<d", x), repr(x).encode()]
    for n in INTEGERS:
        out += [struct.pack("<q", n), struct.pack("<i", n), str(n).encode()]
    return out


def _scan(folder: Path, needles: list[bytes]) -> list[tuple[str, bytes]]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            hits += [(str(path.relative_to(folder)), n) for n in needles if n in blob]
    return hits


def test_no_plaintext_of_sensitive_columns_on_disk(tmp_path, key, allow):
    folder = tmp_path / "v"
    with Vault.create(folder, key=key) as vault:
        vault.add_dataset(
            "people", _secret_frame(), schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row"
        )
        vault.add_version("people", _secret_frame())
        allow(vault, "people")
        back = vault.session("analyst", purpose="research").read("people")
        assert back["name"].iloc[0] == MARKERS[0]  # readable through a session
    assert _scan(folder, _needles()) == []


def test_scan_would_find_plaintext(tmp_path):
    # The same table as plain Parquet holds every needle: the scan above can fail.
    _secret_frame().to_parquet(tmp_path / "plain.parquet")
    found = {n for _, n in _scan(tmp_path, _needles())}
    assert {m.encode() for m in MARKERS[:2]} <= found
    assert struct.pack("<d", NUMBERS[0]) in found
