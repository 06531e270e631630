"""session.minimize: a minimized view registered in the vault, linked to its model."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest
from diffprivlib import models
from sklearn.tree import DecisionTreeClassifier

import privml
from privml import Budget, Field, Schema, Vault
from privml.datasets import load_adult
from privml.minimization import Minimizer

FEATURES = ["age", "hours-per-week", "education-num", "sex"]


@pytest.fixture
def vault(tmp_path, key):
    adult = load_adult(n_rows=3000)
    frame = adult[[*FEATURES, "income"]].copy()
    schema = Schema(
        {
            "age": Field.integer(bounds=(17, 100), tags="demographic"),
            "hours-per-week": Field.integer(bounds=(0, 100), tags="employment"),
            "education-num": Field.integer(bounds=(1, 16), tags="demographic"),
            "sex": Field.categorical(categories=["Female", "Male"], tags="demographic"),
            "income": Field.categorical(categories=["<=50K", ">50K"], target=True),
        }
    )
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("census", frame, schema=schema, budget=Budget(epsilon=5, delta=1e-6))
        v.add_purpose("hr", description="Income model", lawful_basis="GDPR 6(1)(f)")
        v.add_principal("ml", roles=["ml"])
        v.add_principal("clerk", roles=["clerk"])
        # pseudonymized also allows DP training (modes include the less revealing ones)
        v.grant(role="ml", dataset="census", purpose="hr", mode="pseudonymized")
        session = v.session("ml", purpose="hr")
        session.dp.fit(
            models.LogisticRegression(epsilon=2.0),
            "census",
            features=FEATURES,
            target="income",
            name="income-model",
        )
        yield v, session, frame


def test_minimize_registers_a_view_and_its_minimizer(vault):
    v, session, frame = vault
    version = session.minimize("census", "income-model", target_accuracy=0.95, name="census-min")
    assert version.rows == len(frame)
    assert v.dataset("census-min").schema.names == tuple(FEATURES)
    v.grant(role="clerk", dataset="census-min", purpose="hr", mode="raw")
    view = v.session("clerk", purpose="hr").read("census-min")
    info = v.models.info("income-model.minimizer")
    minimizer = v.models.load("income-model.minimizer")
    assert isinstance(minimizer, Minimizer)
    assert info.metadata["for_model"] == ["income-model", 1]
    assert info.metadata["view"] == "census-min"
    # the view is exactly what the stored minimizer releases
    np.testing.assert_array_equal(
        minimizer.transform(frame[FEATURES]).to_numpy(), view[FEATURES].to_numpy()
    )
    # coarser than the source, and the model still agrees at the target on held-out rows
    assert view[FEATURES].drop_duplicates().shape[0] < frame[FEATURES].drop_duplicates().shape[0]
    assert minimizer.accuracy_ >= 0.95 and 0 <= minimizer.ncp_ <= 1
    [entry] = v.audit.entries(action="dataset.minimize").to_dict("records")
    details = entry["details"]
    assert set(details["generalizations"]) == set(FEATURES)
    assert "representative" not in str(details)
    # scores and the fitted state are derived from records: only in the encrypted model
    assert not {"accuracy", "ncp", "minimization"} & (set(details) | set(info.metadata))


def test_views_carry_no_budget_of_their_own(vault):
    v, session, _ = vault
    session.minimize("census", "income-model", target_accuracy=0.9, name="census-min")
    v.grant(role="ml", dataset="census-min", purpose="hr", mode="dp_aggregate")
    with pytest.raises(privml.ConfigurationError, match="run DP releases on 'census'"):
        session.dp.mean("census-min", "age", epsilon=0.1)


def test_minimize_needs_access_to_the_features(vault):
    v, _, _ = vault
    with pytest.raises(privml.AccessDenied):
        v.session("clerk", purpose="hr").minimize(
            "census", "income-model", target_accuracy=0.9, name="x"
        )
    assert "x" not in {d.name for d in v.datasets()}


def _leaves(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _leaves(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _leaves(value)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield obj


def _encodings(value) -> set[bytes]:
    out = set()
    for number in {value, float(value)}:
        out |= {repr(number).encode(), str(number).encode()}
        if isinstance(number, float):
            out |= {struct.pack("<d", number), struct.pack(">d", number)}
        else:
            out |= {struct.pack("<q", number), struct.pack(">q", number)}
    return out


def test_no_value_derived_from_records_is_stored_in_the_clear(tmp_path, key):
    """Someone with the folder but not the key scans meta.db (and its WAL) for record values.

    Values are drawn so that every encoding is distinctive: floats in [1000, 10000) with
    six random decimals, integers near 10**12; a chance match of a 13-digit or
    10-character decimal string or of an 8-byte double in a file of a few MB is below 1e-9.
    """
    rng = np.random.default_rng(1)
    n = 400
    x1 = np.round(rng.uniform(1000, 9999, n), 6)
    x2 = (10**12 + rng.integers(0, 10**6, n)).astype("int64")
    label = np.where((x1 > 5000) ^ (x2 % 2 == 0), "yes", "no")
    frame = pd.DataFrame({"x1": x1, "x2": x2, "y": label})
    schema = Schema(
        {
            "x1": Field.numeric(bounds=(0, 1e5)),
            "x2": Field.integer(bounds=(0, 2 * 10**12)),
            "y": Field.categorical(categories=["no", "yes"], target=True),
        }
    )
    folder = tmp_path / "v"
    vault = Vault.create(folder, key=key)
    vault.add_dataset("d", frame, schema=schema, budget=Budget(epsilon=5, delta=1e-6))
    vault.add_purpose("p", description="Tests", lawful_basis="consent")
    vault.add_principal("ml", roles=[])
    vault.grant(principal="ml", dataset="d", purpose="p", mode="raw")  # a non-DP model is used: raw
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(frame[["x1", "x2"]], label)
    vault.models.register(
        "tree", tree, trained_on="d", epsilon=None, delta=None, extra={"features": ["x1", "x2"]}
    )
    session = vault.session("ml", purpose="p")
    session.dp.fit(
        models.LogisticRegression(epsilon=1.0, data_norm=2e12),
        "d",
        features=["x1", "x2"],
        target="y",
        name="dp-model",
    )
    session.minimize("d", "tree", target_accuracy=0.9, name="d-min")
    state = vault.models.load("tree.minimizer").to_dict()
    needles = {e for v in [*x1.tolist(), *x2.tolist()] for e in _encodings(v)}
    needles |= {e for v in _leaves(state) if abs(v) >= 1000 for e in _encodings(v)}
    # the fitted state holds observed bounds and real values: the scan can find them
    assert {e for v in _leaves(state) for e in _encodings(v)} & needles

    def scan() -> list[tuple[str, bytes]]:
        found = []
        for path in folder.iterdir():
            if path.is_file():
                blob = path.read_bytes()
                found += [(path.name, n) for n in needles if n in blob]
        return found

    assert (folder / "meta.db").exists()
    assert scan() == []  # while the vault is open (meta.db, -wal, -shm)
    vault.close()
    assert scan() == []
