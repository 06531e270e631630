"""A read's metadata transactions: the version and the schema come from one, the audit
entry is written for allowed and denied reads alike, and a stale schema is never used."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import privml


@pytest.fixture
def begun(demo_vault: privml.Vault) -> Iterator[list[int]]:
    """A list that grows by one for every metadata transaction the vault begins."""
    seen: list[int] = []
    engine = demo_vault._state.engine

    def count(_conn: sa.Connection) -> None:
        seen.append(1)

    sa.event.listen(engine, "begin", count)
    yield seen
    sa.event.remove(engine, "begin", count)


def _entries(vault: privml.Vault) -> list[dict[str, Any]]:
    return vault.audit.entries(action="dataset.read").to_dict("records")


def test_an_allowed_read_opens_four_transactions_and_audits_itself(
    demo_vault: privml.Vault, begun: list[int]
) -> None:
    session = demo_vault.session("analyst", purpose="research")
    begun.clear()
    out = session.read("patients", columns=["age", "note"])
    # the schema, the policy, the version with its schema, the audit entry
    assert len(begun) == 4
    assert len(out) == 4
    [entry] = _entries(demo_vault)
    assert entry["outcome"] == "ok"


def test_a_denied_read_is_audited(demo_vault: privml.Vault, begun: list[int]) -> None:
    demo_vault.add_principal("guest", roles=[])
    session = demo_vault.session("guest", purpose="research")
    begun.clear()
    with pytest.raises(privml.AccessDenied):
        session.read("patients", columns=["age"])
    assert len(begun) == 3  # the schema, the policy, the audit entry: no file is read
    [entry] = _entries(demo_vault)
    assert entry["outcome"] == "denied"


def test_a_read_of_an_older_version_uses_the_dataset_schema(
    demo_vault: privml.Vault, patients: Any
) -> None:
    demo_vault.add_version("patients", patients.iloc[:2])
    session = demo_vault.session("analyst", purpose="research")
    old = session.read("patients", version=1, columns=["age", "sex"])
    new = session.read("patients", columns=["age", "sex"])
    assert len(old) == 4 and len(new) == 2
    assert list(old["sex"].cat.categories) == ["F", "M"]
    assert str(new["age"].dtype) == "int64"
