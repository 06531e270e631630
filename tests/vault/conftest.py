"""Fixtures of the vault's tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from privml import Budget, Field, Schema


@pytest.fixture
def subjects(tmp_path, key, allow, vaults):
    """A vault with 300 rows of 100 subjects (raw identifiers) and a minimized view of them."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "sid": [f"SUBJ-{i % 100:04d}-QX" for i in range(n)],
            "age": rng.integers(18, 90, n).astype("int64"),
            "income": np.round(rng.uniform(10_000, 90_000, n), 2),
            "risk": pd.Categorical(rng.choice(["low", "high"], n), categories=["low", "high"]),
        }
    )
    # the subject has the largest income: the minimizer's observed range ends at it
    frame.loc[frame["sid"] == "SUBJ-0042-QX", "income"] = 95555.55
    schema = Schema(
        {
            "sid": Field.identifier(pseudonymize=False),
            "age": Field.integer(bounds=(0, 120)),
            "income": Field.numeric(bounds=(0, 1e6)),
            "risk": Field.categorical(categories=["low", "high"], target=True),
        }
    )
    vault = vaults.create(tmp_path / "v", key=key)
    vault.add_dataset(
        "people", frame, schema=schema, budget=Budget(epsilon=5, delta=1e-6), privacy_unit="row"
    )
    allow(vault, "people")
    tree = DecisionTreeClassifier(max_depth=3, random_state=0)
    tree.fit(frame[["age", "income"]], frame["risk"].astype(str))
    features = {"features": ["age", "income"]}
    vault.models.register(
        "risk", tree, trained_on="people", epsilon=None, delta=None, extra=features
    )
    yield vault, frame
    vault.close()
