"""A vault with a policy and tokens, and real servers on it (see ``_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _server import Server, server

import privml
from privml.service._client import RemoteSession, connect

ROWS = 400


def patients(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "name": [f"Patient {i:04d}" for i in range(rows)],
            "age": rng.integers(18, 90, rows),
            "sex": rng.choice(["F", "M"], rows),
            "glucose": np.round(rng.normal(5.5, 1.0, rows).clip(2, 12), 2),
            "note": [f"seen for review {i}" for i in range(rows)],
        }
    )


SCHEMA = privml.Schema(
    {
        "name": privml.Field.text(tags=["identifier"]),
        "age": privml.Field.integer(bounds=(0, 120), tags=["demographic"]),
        "sex": privml.Field.categorical(categories=["F", "M"], tags=["demographic"]),
        "glucose": privml.Field.numeric(bounds=(2, 12), tags=["health"]),
        "note": privml.Field.text(tags=["health"]),
    }
)


#: A server-side DP-SGD run of a second or more of steps on the test vault: long enough
#: to be seen holding its reservation, or to outlive a short deadline.
SLOW_RUN = {
    "module": {"layers": [{"type": "Linear", "in_features": 1, "out_features": 2}]},
    "features": ["age"],
    "target": "sex",
    "optimizer": {"type": "SGD", "lr": 0.1},
    "batch_size": 16,
    "epochs": 3,
    "noise_multiplier": 2.0,
    "max_grad_norm": 1.0,
}


@dataclass
class Setup:
    """A vault folder, its key file, and a token (secret) per name."""

    folder: Path
    key_file: Path
    metadata_url: str | None
    tokens: dict[str, str]
    token_ids: dict[str, str]

    def open(self) -> privml.Vault:
        return privml.Vault.open(
            self.folder, key_file=self.key_file, metadata_url=self.metadata_url
        )


def build(folder: Path, key_file: Path, metadata_url: str | None = None) -> Setup:
    """The test vault: ana (analyst, research), kim (clinician, care), dora (DPO), eve (none)."""
    key = privml.generate_key()
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    with privml.Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset(
            "patients", patients(), schema=SCHEMA, budget=privml.Budget(epsilon=5.0, delta=1e-5)
        )
        for purpose in ("research", "care", "oversight"):
            vault.add_purpose(purpose, description=purpose, lawful_basis="GDPR 9(2)(j)")
        vault.add_principal("ana", roles=["analyst"])
        vault.add_principal("kim", roles=["clinician"])
        vault.add_principal("dora", roles=["dpo"])
        vault.add_principal("eve", roles=["visitor"])
        common = {"dataset": "patients", "purpose": "research"}
        vault.grant(role="analyst", mode="dp_aggregate", tags=["health"], **common)
        vault.grant(role="analyst", mode="dp_training", tags=["demographic"], **common)
        vault.grant(role="analyst", mode="masked", columns=["note", "name"], **common)
        vault.grant(role="clinician", dataset="patients", purpose="care", mode="raw")
        issued = {
            "ana": vault.tokens.issue("ana", purposes=["research"]),
            "kim": vault.tokens.issue("kim", purposes=["care"]),
            "dora": vault.tokens.issue("dora", purposes=["oversight"], dpo=True),
            "eve": vault.tokens.issue("eve", purposes=["research"]),
            "revoked": vault.tokens.issue("ana", purposes=["research"]),
            "short": vault.tokens.issue("ana", purposes=["research"], expires=timedelta(seconds=2)),
        }
        vault.tokens.revoke(issued["revoked"].id)
    return Setup(
        folder,
        key_file,
        metadata_url,
        {name: t.secret for name, t in issued.items()},
        {name: t.id for name, t in issued.items()},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("service")
    return build(root / "vault", root / "vault.key")


@pytest.fixture(scope="module")
def live(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server on the module's vault, with a high rate limit (tests make many requests)."""
    log = tmp_path_factory.mktemp("log") / "server.log"
    srv = server(setup.folder, setup.key_file, log, args=["--rate", "100000"]).start()
    yield srv
    srv.stop()


@pytest.fixture
def as_(live: Server, setup: Setup) -> Iterator[object]:
    """``as_("ana", "research")``: a remote session for that token and purpose."""
    opened: list[RemoteSession] = []

    def make(name: str, purpose: str) -> RemoteSession:
        session = connect(live.url, token=setup.tokens[name], purpose=purpose, retries=0)
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.close()


class AuditWatch:
    """The audit entries a server wrote since the last look (read with a second open)."""

    def __init__(self, vault: privml.Vault) -> None:
        self.vault = vault
        self.seq = self._head()

    def _head(self) -> int:
        frame = self.vault.audit.entries(since=getattr(self, "seq", 0))
        return int(frame["seq"].max()) if len(frame) else getattr(self, "seq", 0)

    def new(self) -> list[dict[str, object]]:
        """The entries written since the previous call, oldest first."""
        frame = self.vault.audit.entries(since=self.seq + 1)
        if len(frame):
            self.seq = int(frame["seq"].max())
        return list(frame.to_dict(orient="records"))


def entry_client(entry: dict[str, object]) -> object:
    """The client address an audit entry names (a served request's route, or a token refusal)."""
    details = entry["details"]
    assert isinstance(details, dict)
    via = details.get("via")
    return via.get("client") if isinstance(via, dict) else details.get("client")


@pytest.fixture(scope="module")
def watch(setup: Setup) -> Iterator[AuditWatch]:
    """The module's vault opened a second time, to read what the servers wrote."""
    vault = setup.open()
    yield AuditWatch(vault)
    vault.close()
