"""The one-run canary measurement of DP-SGD: refusals, the charge, validity, power, provenance."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.datasets import load_digits

from privml import Budget, ConfigurationError, Field, Schema, Vault

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
dp_accounting = pytest.importorskip("dp_accounting")

from torch import nn  # noqa: E402  (after the skips)

from privml.attacks._canaries import (  # noqa: E402
    CANARIES_MAX,
    Canaries,
    tally_guesses,
)

ROWS = 800
FEATURES = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]


def pure_epsilon_lower_bound(guesses: int, correct: int, *, confidence: float = 0.95) -> float:
    """Brute force: the largest ε at which ``correct`` of ``guesses`` is still implausible.

    Under ε-DP the correct guesses are dominated by Binomial(guesses, e^ε/(1+e^ε))
    (Steinke, Nasr & Jagielski 2023, Theorem 3.1); this ignores δ, so it is never
    smaller than the (ε, δ) bound: a stricter check of validity.
    """

    def tail(eps: float) -> float:
        p = 1.0 / (1.0 + math.exp(-eps))
        return float(binom.sf(correct - 1, guesses, p))

    if tail(0.0) >= 1 - confidence:
        return 0.0
    lo, hi = 0.0, 60.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) < 1 - confidence else (lo, mid)
    return lo


@pytest.fixture
def vault(tmp_path, key):
    """800 digits as dataset "data"; "eng" may train on it for "ml"."""
    frame = load_digits(as_frame=True).frame.iloc[:ROWS].reset_index(drop=True)
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in FEATURES}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    v = Vault.create(tmp_path / "v", key=key)
    v.add_dataset("data", frame, schema=Schema(fields), budget=Budget(epsilon=1e5, delta=1e-5))
    v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
    v.add_principal("eng", roles=["ml"])
    v.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
    yield v
    v.close()


def _train(v, *, sigma, epochs, canaries, lr=1.0, batch_size=100, name="digits-mlp"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return v.session("eng", purpose="ml").dp.train(
        "data",
        features=FEATURES,
        target="target",
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9),
        batch_size=batch_size,
        epochs=epochs,
        max_grad_norm=1.0,
        noise_multiplier=sigma,
        grad_sample_mode="bk",
        canaries=canaries,
        name=name,
    )


# --- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [-1, True, 1.5, "10", CANARIES_MAX + 1, ROWS + 1])
def test_a_bad_canary_count_is_refused_before_any_budget_is_spent(vault, m):
    before = vault.budget("data").epsilon_spent
    with pytest.raises(ConfigurationError, match="canaries"):
        _train(vault, sigma=1.0, epochs=1, canaries=m)
    assert vault.budget("data").epsilon_spent == before == 0
    assert len(vault.models.list()) == 0


# --- scoring -----------------------------------------------------------------------------------
def test_guesses_are_the_top_and_bottom_tenth_and_count_both_kinds_of_correct():
    included = np.array([True, False] * 50)
    scores = np.where(included, 1.0, 0.0) + np.linspace(0, 0.5, 100)
    assert tally_guesses(scores, included) == (20, 20)
    assert tally_guesses(-scores, included) == (20, 0)


def test_canaries_lie_within_the_schema_and_are_coin_flipped():
    fields = {"a": Field.numeric(bounds=(-2.0, 3.0)), "c": Field.categorical(categories=["x", "y"])}
    fields["t"] = Field.categorical(categories=[0, 1, 2], target=True)
    from privml.dp.torch._data import scaler_for

    schema = Schema(fields)
    rng = np.random.default_rng(7)
    c = Canaries.draw(schema, ["a", "c"], "t", scaler_for(schema, ["a", "c"]), 2000, rng=rng)
    assert c.X.shape == (2000, 3) and float(c.X.min()) >= 0.0 and float(c.X.max()) <= 1.0
    assert set(c.y.tolist()) == {0, 1, 2}
    assert 900 < int(c.included.sum()) < 1100  # a fair coin each (seeded: fixed outcome)
    X_in, _ = c.joined()
    assert len(X_in) == int(c.included.sum())


# --- the charge, validity and provenance ---------------------------------------------------------
def test_the_charge_is_the_real_rows_event_and_the_bound_stays_below_it(vault, seeded_entropy):
    _, history = _train(vault, sigma=1.0, epochs=3, canaries=400)
    found = history.attrs["canary_measurement"]["black_box"]
    charged = vault.models.info("digits-mlp").epsilon
    # the ledger's event is q = batch_size / N for the REAL rows, the steps taken
    q, steps = 100 / ROWS, int(history["steps"].iloc[-1])
    assert history.attrs["sample_rate"] == q and steps == 3 * int(ROWS / 100)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(1.0)), steps
    )
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(event)
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(event)
    independent = min(rdp.get_epsilon(1e-5), pld.get_epsilon(1e-5))
    assert charged == pytest.approx(independent, rel=0.02)
    assert found["epsilon_claimed"] == pytest.approx(charged)
    assert found["delta"] == 1e-5 and found["m"] == 400 and found["guesses"] == 80
    assert vault.budget("data").epsilon_spent >= charged  # the filter's figure, nothing less
    # validity: even the δ-free bound (never smaller than the (ε, δ) one) stays below the claim
    assert pure_epsilon_lower_bound(found["guesses"], found["correct"]) <= charged
    assert 0 <= found["epsilon_lower_bound"] <= charged
    _nothing_of_the_canaries_is_registered(vault)


def _nothing_of_the_canaries_is_registered(v):
    info = v.models.info("digits-mlp")
    assert info.trained_on == ("data", 1)
    [dataset] = v.datasets()  # no dataset or version holds a canary
    assert dataset.name == "data" and [x.rows for x in dataset.versions] == [ROWS]
    both = info.metadata["canary_measurement"]
    assert set(both) == {"black_box", "white_box"}
    for measured in both.values():
        _counts_only(measured)
    loaded = v.models.load("digits-mlp")
    assert not any(isinstance(x, Canaries) for x in vars(loaded).values())
    assert b"Canaries" not in pickle.dumps(loaded)


def _counts_only(measured):
    assert set(measured) == {
        "m",
        "guesses",
        "correct",
        "threat_model",
        "confidence",
        "epsilon_lower_bound",
        "epsilon_claimed",
        "delta",
    }
    assert all(isinstance(x, str | int | float | type(None)) for x in measured.values())


def test_an_under_noised_run_gives_a_lower_bound_clearly_above_zero(vault, seeded_entropy):
    _, history = _train(vault, sigma=0.1, epochs=10, canaries=ROWS)
    found = history.attrs["canary_measurement"]["black_box"]
    assert found["guesses"] == 160 and found["correct"] >= 120
    bound = pure_epsilon_lower_bound(found["guesses"], found["correct"])
    assert 0.5 < bound <= found["epsilon_claimed"]
    # the paper's (ε, δ) bound, computed with the run's own δ, is no larger and still above 0
    assert 0 < found["epsilon_lower_bound"] <= bound
