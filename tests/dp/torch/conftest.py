"""Real data for the DP-SGD tests: digits and breast_cancer in vaults, and small networks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from privml import Budget, Field, Schema, Vault

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

# torch warns when a hooked first layer's input needs no gradient (every data batch, with
# Opacus's "hooks" mode); harmless and not ours to fix.
FIRST_LAYER_HOOK = "ignore:Full backward hook is firing:UserWarning"


def _digits() -> tuple[pd.DataFrame, Schema, list[str]]:
    data = load_digits(as_frame=True)
    frame = data.frame
    features = [c for c in frame.columns if c != "target"]
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in features}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    return frame, Schema(fields), features


def _cancer() -> tuple[pd.DataFrame, Schema, list[str]]:
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    features = [c for c in frame.columns if c != "target"]
    fields = {}
    for c in features:
        lo, hi = float(frame[c].min()), float(frame[c].max())
        pad = 0.1 * (hi - lo)  # domain bounds: a little wider than observed
        fields[c] = Field.numeric(bounds=(lo - pad, hi + pad))
    fields["target"] = Field.categorical(categories=[0, 1], target=True)
    return frame, Schema(fields), features


DATA = {"digits": _digits(), "cancer": _cancer()}


@pytest.fixture
def make_vault(tmp_path: Path, key: bytes) -> Iterator[Callable[..., Vault]]:
    """``make_vault("digits", epsilon=10.0)``: a vault whose dataset ``"data"`` holds it.

    Principal ``"eng"`` (role ``ml``) may use it in ``dp_training`` for purpose ``"ml"``.
    """
    opened: list[Vault] = []

    def make(which: str = "digits", *, epsilon: float = 10.0, delta: float = 1e-5) -> Vault:
        frame, schema, _ = DATA[which]
        vault = Vault.create(tmp_path / f"v{len(opened)}", key=key)
        opened.append(vault)
        vault.add_dataset("data", frame, schema=schema, budget=Budget(epsilon=epsilon, delta=delta))
        vault.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
        vault.add_principal("eng", roles=["ml"])
        vault.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
        return vault

    yield make
    for vault in opened:
        vault.close()


@pytest.fixture
def digits() -> tuple[pd.DataFrame, list[str]]:
    frame, _, features = DATA["digits"]
    return frame, features


@pytest.fixture
def cancer() -> tuple[pd.DataFrame, list[str]]:
    frame, _, features = DATA["cancer"]
    return frame, features


def mlp(inputs: int = 64, hidden: int = 32, outputs: int = 10, *, seed: int = 1) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, outputs)
    )


@pytest.fixture
def make_mlp() -> Callable[..., Any]:
    """``make_mlp(inputs, hidden, outputs, seed=1)``: the same weights for the same seed."""
    return mlp


def loop(run: Any, *, epochs: int | None = None, stop_after: int | None = None) -> None:
    """The plain training loop a user writes; ``stop_after`` steps, then break (early stop)."""
    for _ in range(epochs if epochs is not None else run.epochs):
        for X, y in run.data_loader:
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
            if stop_after is not None and run.steps_taken >= stop_after:
                return


@pytest.fixture
def train_loop() -> Callable[..., None]:
    return loop
