"""Pseudonymized text read from the file's dictionary: the tokens a per-row HMAC gives,
nulls kept, and only the values of the rows returned among the result's categories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from privml import Budget, Field, Schema, Vault
from privml.crypto.pseudonyms import pseudonymize
from privml.vault._fetch import tokenized

SCHEMA = Schema(
    {
        "city": Field.text(nullable=True),
        "badge": Field.identifier(pseudonymize=False),
        "kind": Field.categorical(categories=["a", "b", "c"]),
        "hours": Field.integer(bounds=(0, 100), sensitive=False),
    }
)


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cities = np.array([f"city-{i}" for i in range(37)], dtype=object)
    city = cities[rng.integers(0, 37, rows)]
    city[rng.random(rows) < 0.1] = None
    return pd.DataFrame(
        {
            "city": pd.Series(city, dtype="str"),
            "badge": pd.Series([f"B-{i}" for i in rng.integers(0, 50, rows)], dtype="str"),
            "kind": pd.Categorical(rng.choice(["a", "b"], rows), categories=["a", "b", "c"]),
            "hours": rng.integers(0, 101, rows),
        }
    )


def _per_row(vault: Vault, column: str, values: pd.Series) -> list[str | None]:
    """Every row's token computed on its own, the way a row-by-row renderer would."""
    keys = vault._store._keyring
    with vault._state.engine.connect() as conn:
        key = keys.get(keys.active(conn, dataset="d")[(None, "pseudonym")])
    texts = [None if pd.isna(v) else f"{column}\x00{v}" for v in values]
    return pseudonymize(texts, key)


@pytest.fixture
def vault(tmp_path: Path, key: bytes) -> Any:
    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_purpose("p", description="Tests", lawful_basis="consent")
        vault.add_principal("who", roles=[])
        yield vault


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dictionary_tokens_are_the_per_row_tokens(vault: Vault, seed: int) -> None:
    frame = _frame(3000, seed)
    vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    vault.grant(principal="who", dataset="d", purpose="p", mode="pseudonymized",
                columns=["city", "badge", "kind"])  # fmt: skip
    out = vault.session("who", purpose="p").read("d", columns=["city", "badge", "kind"])
    for column in ["city", "badge", "kind"]:
        got = [None if pd.isna(v) else v for v in out[column]]
        assert got == _per_row(vault, column, frame[column]), column
    assert out["city"].isna().sum() == frame["city"].isna().sum() > 0
    # the declared categories of a categorical field are all tokenized, in declared order
    assert len(out["kind"].cat.categories) == 3


def test_dictionary_tokens_equal_those_of_the_text_read(vault: Vault) -> None:
    frame = _frame(2000, 5)
    vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    store = vault._store
    as_text, _, _ = store.load("d", ["city", "badge"], None)
    as_codes, _, _ = store.load("d", ["city", "badge"], None, dictionary=["city", "badge"])
    assert isinstance(as_codes["city"].dtype, pd.CategoricalDtype)
    assert str(as_text["city"].dtype) == "str"
    for column in ["city", "badge"]:
        pd.testing.assert_series_equal(
            store.tokens("d", column, as_codes[column]), store.tokens("d", column, as_text[column])
        )


def test_rows_withheld_leave_no_token_among_the_categories(vault: Vault) -> None:
    frame = _frame(500, 9)
    frame.loc[frame["hours"] < 50, "city"] = "only-in-withheld-rows"
    vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    vault.grant(principal="who", dataset="d", purpose="p", mode="pseudonymized",
                columns=["city"], row_filter=[("hours", ">=", 50)])  # fmt: skip
    out = vault.session("who", purpose="p").read("d", columns=["city"])
    kept = frame.loc[frame["hours"] >= 50, "city"].reset_index(drop=True)
    assert [None if pd.isna(v) else v for v in out["city"]] == _per_row(vault, "city", kept)
    [hidden] = _per_row(vault, "city", pd.Series(["only-in-withheld-rows"]))
    assert hidden not in set(out["city"].cat.categories)
    present = {v for v in out["city"] if not pd.isna(v)}
    assert set(out["city"].cat.categories) == present


def test_a_pseudonymized_column_a_row_filter_uses_is_read_as_text(vault: Vault) -> None:
    frame = _frame(400, 4)
    vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    vault.grant(principal="who", dataset="d", purpose="p", mode="pseudonymized",
                columns=["city", "badge"], row_filter=[("badge", "==", "B-7")])  # fmt: skip
    out = vault.session("who", purpose="p").read("d", columns=["city", "badge"])
    kept = frame.loc[frame["badge"] == "B-7"].reset_index(drop=True)
    assert len(out) == len(kept) > 0
    assert [None if pd.isna(v) else v for v in out["badge"]] == _per_row(
        vault, "badge", kept["badge"]
    )


def test_only_pseudonymized_text_not_stored_as_pseudonyms_is_read_as_codes() -> None:
    schema = Schema(
        {
            "a": Field.text(),
            "b": Field.identifier(),
            "c": Field.identifier(pseudonymize=False),
            "d": Field.categorical(categories=["x", "y"]),
            "e": Field.text(),
        }
    )

    class Decided:
        def __init__(self, mode: str) -> None:
            self.mode = mode

    modes = {"a": "pseudonymized", "b": "pseudonymized", "c": "pseudonymized",
             "d": "pseudonymized", "e": "raw"}  # fmt: skip
    decisions: Any = {c: Decided(m) for c, m in modes.items()}
    assert tokenized(schema, decisions, list(modes)) == ["a", "c"]
