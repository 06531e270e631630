"""Fixtures for the ledger tests: small vaults with a chosen budget."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

import privml

if TYPE_CHECKING:
    from conftest import Vaults

SCHEMA = privml.Schema({"x": privml.Field.numeric(bounds=(0, 100))})


def add_small_dataset(vault: privml.Vault, name: str, *, epsilon: float, delta: float) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    vault.add_dataset(
        name, frame, schema=SCHEMA, budget=privml.Budget(epsilon=epsilon, delta=delta)
    )


@pytest.fixture
def make_vault(tmp_path: Path, key: bytes, vaults: Vaults) -> Iterator[Callable[..., privml.Vault]]:
    """``make_vault(epsilon=, delta=)``: an open vault with dataset ``"d"`` of that budget,
    its metadata on the test's backend."""
    opened: list[privml.Vault] = []

    def make(*, epsilon: float = 1.0, delta: float = 1e-5) -> privml.Vault:
        folder = tmp_path / f"v{len(opened)}"
        vault = vaults.create(folder, key=key, actor="admin")
        add_small_dataset(vault, "d", epsilon=epsilon, delta=delta)
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        vault.close()


@pytest.fixture
def pg_url(pg_database_url: str) -> str:
    """A fresh database on the shared PostgreSQL server (see the root conftest)."""
    return pg_database_url
