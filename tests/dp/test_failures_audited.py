"""Every request through a session is audited, and no request value reaches the log.

Written as two attackers: an analyst whose requests fail in every way a request
can fail (each must leave an audit entry), and someone with a copy of the vault
folder but not the key, who searches ``meta.db`` for the ``where=`` values of
those requests (a name, a birth date). A missing optional dependency is found
before any budget is spent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import privml
from privml import Budget, Field, Schema, Vault

NAME = "Ada Lovelace-Byron"
BORN = "1815-12-10"
SECRETS = [NAME, BORN, "Lovelace"]


@pytest.fixture
def vault(tmp_path, key):
    frame = pd.DataFrame(
        {
            "name": [NAME, "Charles Babbage", "Mary Somerville"],
            "born": pd.to_datetime([BORN, "1791-12-26", "1780-12-26"]).astype("datetime64[us]"),
            "age": [36, 79, 92],
            "site": ["A", "B", "A"],
        }
    )
    schema = Schema(
        {
            "name": Field.text(),
            "born": Field.datetime(),
            "age": Field.integer(bounds=(0, 120)),
            "site": Field.categorical(categories=["A", "B"]),
        }
    )
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("people", frame, schema=schema, budget=Budget(epsilon=1.0, delta=1e-6))
        v.add_purpose("p", description="Tests", lawful_basis="consent")
        v.add_principal("eve", roles=[])
        v.grant(principal="eve", dataset="people", purpose="p", mode="raw", columns=["age"])
        v.grant(principal="eve", dataset="people", purpose="p", mode="dp_aggregate")
        yield v, tmp_path / "v"


FAILING_READS = [
    [("age", ">", NAME)],  # a value its column cannot be compared with
    [("born", "<", NAME)],  # not a date
    [("name", "==", NAME)],  # a column read with less than raw
    [("nickname", "==", NAME)],  # an unknown column
    [("age", "~", NAME)],  # an unknown operator
    [("age", "in", NAME)],  # 'in' without a list
    [("age", "==", [NAME, BORN])],  # a list where a scalar belongs
    [("age", "==")],  # malformed
    [{"column": "age", "value": BORN}],  # no operator
]
FAILING_DP = [
    lambda dp, w: dp.count("people", epsilon=2.0, where=w),  # over budget
    lambda dp, w: dp.mean("people", "name", epsilon=0.1, where=w),
    lambda dp, w: dp.sum("people", "site", epsilon=0.1, where=w),
    lambda dp, w: dp.histogram("people", "site", epsilon=0.1, bins=3, where=w),
    lambda dp, w: dp.var("people", "age", epsilon=5.0, where=w),  # over budget
    lambda dp, w: dp.std("people", "born", epsilon=0.1, where=w),
]


def _folder_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_failed_requests_are_audited_without_their_values(vault):
    v, folder = vault
    session = v.session("eve", purpose="p")
    failures = 0
    for where in FAILING_READS:
        with pytest.raises(privml.PrivmlError) as caught:
            session.read("people", columns=["age"], where=where)
        assert not any(s in str(caught.value) for s in SECRETS), str(caught.value)
        failures += 1
    for call in FAILING_DP:
        for where in ([("born", "==", BORN), ("name", "==", NAME)], [("age", ">", NAME)]):
            with pytest.raises(privml.PrivmlError) as caught:
                call(session.dp, where)
            assert not any(s in str(caught.value) for s in SECRETS), str(caught.value)
            failures += 1
    with pytest.raises(privml.ConfigurationError):
        session.dp.quantile("people", "age", 1.5, epsilon=0.1)
    failures += 1
    entries = v.audit.entries(principal="eve")
    assert len(entries) >= failures
    assert set(entries["outcome"]) <= {"error", "denied", "refused"}
    assert v.budget("people").epsilon_spent == 0
    v.close()
    blob = _folder_bytes(folder)
    for secret in SECRETS:
        assert secret.encode() not in blob, f"{secret!r} is stored in the vault folder"


def test_a_bad_value_fails_before_any_charge(vault):
    v, _ = vault
    dp = v.session("eve", purpose="p").dp
    with pytest.raises(privml.ConfigurationError, match="needs a number"):
        dp.count("people", epsilon=0.1, where=[("age", ">", NAME)])
    with pytest.raises(privml.ConfigurationError, match="needs a timestamp"):
        dp.count("people", epsilon=0.1, where=[("born", ">", NAME)])
    assert v.budget("people").epsilon_spent == 0
    # A good date string works.
    dp.count("people", epsilon=0.1, where=[("born", ">", "1800-01-01")])
    assert v.budget("people").epsilon_spent > 0


def test_a_missing_optional_dependency_spends_nothing(vault, monkeypatch):
    v, _ = vault
    monkeypatch.setitem(sys.modules, "diffprivlib", None)  # import diffprivlib now fails
    dp = v.session("eve", purpose="p").dp
    for _ in range(2):
        with pytest.raises(privml.OptionalDependencyError, match=r"pip install 'privml\[dp\]'"):
            dp.count("people", epsilon=0.4)
    with pytest.raises(ImportError):
        dp.mean("people", "age", epsilon=0.4)
    assert v.budget("people").epsilon_spent == 0
    assert len(v.ledger.events("people")) == 0
    entries = v.audit.entries(principal="eve")
    assert list(entries["action"]) == ["dp.count", "dp.count", "dp.mean"]
    assert set(d["error"] for d in entries["details"]) == {"OptionalDependencyError"}


def test_successful_releases_record_no_where_values(vault):
    v, folder = vault
    dp = v.session("eve", purpose="p").dp
    result = dp.count("people", epsilon=0.1, where=[("name", "==", NAME)])
    assert np.isfinite(result.value)
    v.close()
    assert NAME.encode() not in _folder_bytes(folder)
