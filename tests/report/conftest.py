"""Fixtures of the report's tests: a vault with charges, refusals, a model and key events,
built once per module and backend and copied for each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

import privml
from privml.accounting import PrivacyEvent

#: A principal whose name is markup: the report must show it as text, never run it.
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def _patients() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient": ["P-1001", "P-1002", "P-1003", "P-1001"],
            "age": pd.Series([34, 71, 52, 35], dtype="int64"),
            "glucose": [5.4, 7.9, 6.1, 5.2],
            "note": pd.Series(["stable", "follow up", "stable", "new"], dtype="str"),
        }
    )


_SCHEMA = privml.Schema(
    {
        "patient": privml.Field.identifier(),
        "age": privml.Field.integer(bounds=(0, 120), tags="demographic"),
        "glucose": privml.Field.numeric(bounds=(0.0, 50.0), tags="health"),
        "note": privml.Field.text(tags="health"),
    }
)


@pytest.fixture
def hostile() -> str:
    """A principal's name that is markup (see ``HOSTILE``)."""
    return HOSTILE


@pytest.fixture
def busy_patients() -> pd.DataFrame:
    """The rows of the busy vault's dataset ``patients``."""
    return _patients()


@pytest.fixture(scope="module")
def _busy_pristine(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, bytes, str | None]]:
    """The closed busy vault of this module and backend: its folder, key and metadata URL."""
    folder = tmp_path_factory.mktemp("busy") / "v"
    key = privml.generate_key()
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    url = server.new_database() if server else None
    with privml.Vault.create(folder, key=key, metadata_url=url) as vault:
        _fill(vault)
    yield folder, key, url
    if server:
        server.drop(url)


def _fill(vault: privml.Vault) -> None:
    """Two charges, a reservation, three refusals (one by ``HOSTILE``), a model with a
    privacy report, and a key rotation of ``patients``."""
    vault.add_dataset(
        "patients", _patients(), schema=_SCHEMA, budget=privml.Budget(epsilon=1.0, delta=1e-6),
        privacy_unit="row",
    )  # fmt: skip
    vault.add_purpose("research", description="Tests", lawful_basis="consent")
    vault.add_purpose("studies", description="<b>Studies</b>", lawful_basis="GDPR 9(2)(j)")
    vault.add_principal("analyst", roles=[])
    vault.add_principal("ana", roles=["statistician"])
    vault.add_principal(HOSTILE, roles=[])
    vault.grant(principal="analyst", dataset="patients", purpose="research", mode="raw")
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
def busy_key(_busy_pristine: tuple[Path, bytes, str | None]) -> bytes:
    """The busy vault's key."""
    return _busy_pristine[1]


@pytest.fixture
def busy_vault(_busy_pristine, dba, tmp_path: Path) -> Iterator[privml.Vault]:
    """A copy of this module's busy vault (see ``_fill``), open; closed after the test."""
    folder, key, url = _busy_pristine
    copy = dba.copy(folder, url, tmp_path / "busy")
    vault = dba.vaults.open(copy, key=key)
    yield vault
    vault.close()


@pytest.fixture
def tampered(
    busy_vault: privml.Vault, dba, busy_key: bytes
) -> Iterator[Callable[[str], privml.Vault]]:
    """``tampered(sql)``: close ``busy_vault``, run ``sql`` on its metadata as a database
    admin without the key would, and reopen it."""
    folder = Path(busy_vault.path)  # type: ignore[arg-type]
    busy_vault.close()
    opened: list[privml.Vault] = []

    def edit(sql: str) -> privml.Vault:
        with dba.edit(folder) as conn:
            conn.execute(sa.text(sql))
        opened.append(dba.vaults.open(folder, key=busy_key))
        return opened[-1]

    yield edit
    for vault in opened:
        vault.close()
