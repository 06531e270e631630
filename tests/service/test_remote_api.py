"""A remote session mirrors :class:`privml.Session`: same frames, same refusals, same figures.

For ana (DP and masked, for research) and kim (raw, for care), each call is
made in-process (a second ``Vault.open`` of the served folder) and through the
server; what comes back must agree: frames with their modes, exception types
with their attributes, DP results' ε, δ and mechanism, budgets, and the
decrypted scores of an encrypted-inference model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

import privml
from conftest import Setup, build
from privml import AccessDenied, BudgetExceededError, ConfigurationError, NotFoundError

TOKENS = {"ana": "research", "kim": "care"}
HE_MODEL = "risk-he"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The service vault, with an encrypted-inference model trained (DP) on age."""
    pytest.importorskip("tenseal")
    from diffprivlib.models import LogisticRegression

    import privml.he

    root = tmp_path_factory.mktemp("remote")
    made = build(root / "vault", root / "vault.key")
    with made.open() as vault:
        session = vault.session("ana", purpose="research")
        fitted = session.dp.fit(
            LogisticRegression(epsilon=0.5, data_norm=120.0), "patients",
            features=["age"], target="sex",
        )  # fmt: skip
        compiled = privml.he.compile(fitted, input_range=(0.0, 120.0))
        vault.models.register(HE_MODEL, compiled, trained_on="patients", epsilon=0.5, delta=0.0)
    return made


@pytest.fixture(scope="module")
def local(setup: Setup) -> Iterator[Callable[[str], privml.Session]]:
    vault = setup.open()
    yield lambda name: vault.session(name, purpose=TOKENS[name])
    vault.close()


@pytest.fixture
def both(as_: Any, local: Callable[[str], Any]) -> Callable[[str], tuple[Any, Any]]:
    """``both("ana")``: (in-process session, remote session) for the same principal and purpose."""
    return lambda name: (local(name), as_(name, TOKENS[name]))


def _attrs(err: BaseException) -> dict[str, Any]:
    return {k: v for k, v in vars(err).items() if not k.startswith("_")}


READS: list[tuple[str, dict[str, Any]]] = [
    ("ana", {}),
    ("ana", {"columns": ["note"]}),
    ("kim", {}),
    ("kim", {"columns": ["name", "glucose"], "where": [("age", ">", 60)]}),
    ("kim", {"version": 1, "where": [("sex", "==", "F")]}),
]


@pytest.mark.parametrize(("name", "kwargs"), READS)
def test_reads_give_the_same_frames(name: str, kwargs: dict[str, Any], both: Any) -> None:
    mine, theirs = both(name)
    here, there = mine.read("patients", **kwargs), theirs.read("patients", **kwargs)
    assert len(here) > 0
    pd.testing.assert_frame_equal(there, here)
    assert there.attrs["privml_modes"] == here.attrs["privml_modes"]
    assert there.attrs == here.attrs


REFUSALS: list[tuple[str, type[Exception], Callable[[Any], Any]]] = [
    ("ana", AccessDenied, lambda s: s.read("patients", columns=["glucose"])),
    ("ana", AccessDenied, lambda s: s.read("patients", where=[("age", ">", 1)])),
    ("ana", ConfigurationError, lambda s: s.dp.mean("patients", "name", epsilon=0.1)),
    ("ana", NotFoundError, lambda s: s.read("no_such_dataset")),
    ("ana", BudgetExceededError, lambda s: s.dp.mean("patients", "glucose", epsilon=40.0)),
    ("kim", BudgetExceededError, lambda s: s.dp.count("patients", epsilon=40.0)),
    ("kim", ConfigurationError, lambda s: s.read("patients", columns=["nope"])),
    ("kim", NotFoundError, lambda s: s.he.spec("no-such-model")),
]


@pytest.mark.parametrize(("name", "kind", "call"), REFUSALS)
def test_refusals_have_the_same_type_and_attributes(
    name: str, kind: type[Exception], call: Callable[[Any], Any], both: Any
) -> None:
    mine, theirs = both(name)
    with pytest.raises(kind) as remote:
        call(theirs)
    with pytest.raises(kind) as local:  # the same state: the remote refusal charged nothing
        call(mine)
    assert type(remote.value) is type(local.value)
    assert _attrs(remote.value) == _attrs(local.value)
    assert str(remote.value) == str(local.value)


def test_budget_exceeded_figures_match(both: Any) -> None:
    mine, theirs = both("ana")
    with pytest.raises(BudgetExceededError) as remote:
        theirs.dp.var("patients", "glucose", epsilon=30.0)
    with pytest.raises(BudgetExceededError) as local:
        mine.dp.var("patients", "glucose", epsilon=30.0)
    for field in ("remaining", "spent", "total", "requested", "delta", "method", "scope"):
        assert getattr(remote.value, field) == getattr(local.value, field), field
    assert 0 < remote.value.remaining < remote.value.total


#: The statistics whose noise scale depends on the query alone (the others' on noisy parts).
FIXED_SCALE = ("count", "histogram", "sum")
STATISTICS: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("ana", "mean", lambda dp: dp.mean("patients", "glucose", epsilon=0.1)),
    ("ana", "count", lambda dp: dp.count("patients", epsilon=0.1)),
    ("ana", "histogram", lambda dp: dp.histogram("patients", "sex", epsilon=0.1)),
    ("ana", "quantile", lambda dp: dp.quantile("patients", "glucose", 0.5, epsilon=0.1)),
    ("kim", "sum", lambda dp: dp.sum("patients", "age", epsilon=0.1, where=[("sex", "==", "M")])),
    ("kim", "std", lambda dp: dp.std("patients", "glucose", epsilon=0.1)),
]


@pytest.mark.parametrize(("name", "what", "call"), STATISTICS)
def test_dp_results_carry_the_same_accounting(
    name: str, what: str, call: Callable[[Any], Any], both: Any
) -> None:
    mine, theirs = both(name)
    here, there = call(mine.dp), call(theirs.dp)
    assert (there.epsilon, there.delta, there.mechanism) == (
        here.epsilon,
        here.delta,
        here.mechanism,
    )
    if what in FIXED_SCALE:
        assert there.noise_scale == pytest.approx(here.noise_scale)
    assert type(there.value) is type(here.value) or isinstance(here.value, float | int)
    if isinstance(here.value, pd.Series):
        assert list(there.value.index) == list(here.value.index)
    assert there.request_id != here.request_id  # two releases, two charges


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_budget_and_explain_match(name: str, both: Any) -> None:
    mine, theirs = both(name)
    assert theirs.budget("patients") == mine.budget("patients")
    here, there = mine.explain("patients"), theirs.explain("patients")
    assert there.to_dict(orient="records") == _plain(here.to_dict(orient="records"))


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as JSON gives them back (tuples as lists)."""
    import json

    return list(json.loads(json.dumps(rows, default=list)))


def test_he_predict_round_trip_gives_the_same_scores(both: Any) -> None:
    import privml.he

    mine, theirs = both("kim")
    spec = theirs.he.spec(HE_MODEL)
    assert spec == mine.he.spec(HE_MODEL)
    client = privml.he.HEClient.for_model(spec)  # the secret key stays here
    ages = np.array([[23.0], [41.0], [67.0], [88.0]])
    batch, context = client.encrypt(ages).to_bytes(), client.public_context()
    remote = theirs.he.predict(HE_MODEL, batch, public_context=context)
    local = mine.he.predict(HE_MODEL, batch, public_context=context)
    decrypt = privml.he.EncryptedResult.from_bytes
    there = client.decrypt(decrypt(remote), output="scores")
    here = client.decrypt(decrypt(local), output="scores")
    np.testing.assert_allclose(there, here, rtol=0, atol=1e-6)
    assert np.shape(there)[0] == len(ages)
