"""Three site vaults from one real dataset, and the processes of a federated run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

import privml
from privml import Budget, Field, Schema, Vault

#: The features the sites train on (the first eight of breast_cancer's thirty).
FEATURES = [
    "mean_radius",
    "mean_texture",
    "mean_perimeter",
    "mean_area",
    "mean_smoothness",
    "mean_compactness",
    "mean_concavity",
    "mean_concave_points",
]


def _cancer() -> tuple[pd.DataFrame, Schema]:
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    fields = {
        c: Field.numeric(bounds=(float(frame[c].min()), float(frame[c].max()))) for c in FEATURES
    }
    fields["target"] = Field.categorical(categories=[0, 1], target=True)
    return frame[[*FEATURES, "target"]], Schema(fields)


#: The sites' budgets: two ample, one that covers a single round (σ = 1, q = 16/142 and 8
#: steps: one round costs ε ≈ 4.43 under the ledger's filter, two ≈ 5.32), one ample.
BUDGETS = (10.0, 10.0, 5.0, 10.0)


@pytest.fixture
def site_vaults(tmp_path: Path) -> list[tuple[Path, Path]]:
    """Four vaults (folder, key file), each a quarter of breast_cancer, ε of :data:`BUDGETS`.

    Principal ``eng`` holds ``dp_training`` on ``data`` for purpose ``ml``.
    """
    frame, schema = _cancer()
    made = []
    for i, epsilon in enumerate(BUDGETS):
        key = privml.generate_key()
        key_file = tmp_path / f"key{i}"
        key_file.write_bytes(key)
        key_file.chmod(0o600)
        vault = Vault.create(tmp_path / f"site{i}", key=key)
        part = frame.iloc[i :: len(BUDGETS)].reset_index(drop=True)
        budget = Budget(epsilon=epsilon, delta=1e-5)
        vault.add_dataset("data", part, schema=schema, budget=budget)
        vault.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
        vault.add_principal("eng", roles=["ml"])
        vault.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
        vault.close()
        made.append((tmp_path / f"site{i}", key_file))
    return made


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start privml commands as processes; every one (and its group) is ended afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "privml", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
