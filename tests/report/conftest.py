"""Fixtures of the report's tests: a vault with charges, refusals, a model and key events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import privml
from privml.accounting import PrivacyEvent

#: A principal whose name is markup: the report must show it as text, never run it.
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture
def hostile() -> str:
    """A principal's name that is markup (see ``HOSTILE``)."""
    return HOSTILE


@pytest.fixture
def busy_vault(demo_vault: privml.Vault) -> privml.Vault:
    """``demo_vault`` with two charges, a reservation, three refusals (one by ``HOSTILE``), a
    model with a privacy report, and a key rotation of ``patients``."""
    vault = demo_vault
    vault.add_purpose("studies", description="<b>Studies</b>", lawful_basis="GDPR 9(2)(j)")
    vault.add_principal("ana", roles=["statistician"])
    vault.add_principal(HOSTILE, roles=[])
    vault.grant(
        role="statistician", dataset="patients", purpose="studies", mode="dp_aggregate",
        tags=["health"],
    )  # fmt: skip
    vault.ledger.charge(
        "patients", event=PrivacyEvent.laplace(epsilon=0.25), principal="ana", purpose="studies"
    )
    vault.ledger.charge(
        "patients",
        event=PrivacyEvent.gaussian(noise_multiplier=8.0, sensitivity=1.0),
        principal="analyst",
        purpose="research",
    )
    vault.ledger.reserve(
        "patients", event=PrivacyEvent.laplace(epsilon=0.1), principal="ana", purpose="studies"
    )
    session = vault.session("ana", purpose="studies")
    with pytest.raises(privml.AccessDenied):
        session.read("patients")
    with pytest.raises(privml.BudgetExceededError):
        session.dp.mean("patients", "glucose", epsilon=0.95)
    with pytest.raises(privml.AccessDenied):
        vault.session(HOSTILE, purpose="research").read("patients")
    _model(vault)
    vault.rotate_data_keys("patients")
    return vault


def _model(vault: privml.Vault) -> None:
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    data = pd.DataFrame({"x": rng.normal(size=200), "y": rng.integers(0, 2, 200)})
    tree = DecisionTreeClassifier(random_state=0).fit(data[:100][["x"]], data[:100]["y"])
    vault.models.register(
        "tree", tree, trained_on=None, epsilon=None, delta=None,
        extra={"features": ["x"], "target": "y"},
    )  # fmt: skip
    vault.models.privacy_report(
        "tree", attacks=("loss-threshold",), members=data[:100], non_members=data[100:]
    )


@pytest.fixture
def tampered(
    busy_vault: privml.Vault, vaults, dba, key: bytes
) -> Iterator[Callable[[str], privml.Vault]]:
    """``tampered(sql)``: close ``busy_vault``, run ``sql`` on its metadata as a database
    admin without the key would, and reopen it."""
    folder = Path(busy_vault.path)  # type: ignore[arg-type]
    busy_vault.close()
    opened: list[privml.Vault] = []

    def edit(sql: str) -> privml.Vault:
        import sqlalchemy as sa

        with dba.edit(folder) as conn:
            conn.execute(sa.text(sql))
        opened.append(vaults.open(folder, key=key))
        return opened[-1]

    yield edit
    for vault in opened:
        vault.close()
