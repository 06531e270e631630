"""The error tree's contracts: typed context on every refusal, pickling, and the right class.

Every refusal below is a real one (a real ledger on SQLite, a real Opacus run),
and its error must carry every attribute of :class:`BudgetExceededError` with
the values the refusing scope has.
"""

from __future__ import annotations

import ast
import copy
import inspect
import math
import pickle
import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import privml
from privml import Budget, Field, Schema, Vault
from privml.accounting import PrivacyEvent
from privml.exceptions import (
    BudgetExceededError,
    ConfigurationError,
    DecryptionError,
    IntegrityError,
    PrivmlError,
    StepLimitExceeded,
    UnknownColumnError,
)

LAP = PrivacyEvent.laplace
CONTEXT = ("dataset", "scope", "spent", "requested", "after", "remaining", "total", "delta")
FLOATS = ("spent", "requested", "after", "remaining", "total", "delta")


def carries_context(err: BudgetExceededError) -> None:
    """Every attribute present, of its type, and ``remaining`` consistent with the rest."""
    for name in (*CONTEXT, "method"):
        assert name in vars(err), name
    assert err.dataset is None or isinstance(err.dataset, str)
    assert isinstance(err.scope, str) and isinstance(err.method, str)
    assert all(type(getattr(err, name)) is float for name in FLOATS)
    assert err.remaining == pytest.approx(max(err.total - err.spent, 0.0))
    assert err.after > err.total * (1 + 1e-9)  # refused: the release would overspend
    assert isinstance(err, PrivmlError) and isinstance(err, ValueError)


def _vault(tmp_path: Path, key: bytes, *, epsilon: float, delta: float) -> Vault:
    vault = Vault.create(tmp_path / "v", key=key, actor="admin")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    schema = Schema({"x": Field.numeric(bounds=(0, 100))})
    vault.add_dataset("d", frame, schema=schema, budget=Budget(epsilon=epsilon, delta=delta))
    return vault


# -- the constructor ----------------------------------------------------------------------


def test_the_context_is_keyword_only_and_required():
    params = list(inspect.signature(BudgetExceededError).parameters.values())
    assert params[0].name == "message"
    rest = params[1:]
    assert {p.name for p in rest} == {*CONTEXT, "method"}
    assert all(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in rest)
    with pytest.raises(TypeError):
        BudgetExceededError("over budget")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        BudgetExceededError("over", "d", "dataset", 1.0, 0.5, 1.5, 0.0, 1.0, 0.0, "basic")  # type: ignore[misc]
    limit = inspect.signature(StepLimitExceeded).parameters
    assert {"steps_reserved", "steps_attempted", "request_id"} <= set(limit)
    assert "scope" not in limit and "method" not in limit  # fixed: "reservation"


_ERRORS = {"BudgetExceededError", "StepLimitExceeded"}


def _constructions() -> list[tuple[str, int, str, set[str]]]:
    found = []
    for path in sorted(Path(privml.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if called in _ERRORS:
                    kws = {k.arg for k in node.keywords if k.arg is not None}
                    found.append((path.name, node.lineno, called, kws))
    return found


def test_every_raise_site_in_privml_passes_every_attribute_by_name():
    """Statically, so that a site no test reaches cannot build the error with a subset."""
    sites = _constructions()
    assert {site[0] for site in sites} >= {"_check.py", "_calibrate.py", "_guard.py"}
    for name, line, called, kws in sites:
        needed = set(inspect.signature(getattr(privml.exceptions, called)).parameters)
        assert kws == needed - {"message"}, f"{name}:{line} builds {called} with {sorted(kws)}"


# -- the ledger's refusals ----------------------------------------------------------------


def test_a_charge_over_the_dataset_budget_carries_its_figures(tmp_path, key):
    with _vault(tmp_path, key, epsilon=1.0, delta=0.0) as vault:
        vault.ledger.charge("d", event=LAP(epsilon=0.6), principal="ana", purpose="stats")
        with pytest.raises(BudgetExceededError) as info:
            vault.ledger.charge("d", event=LAP(epsilon=0.5), principal="bob", purpose="stats")
    err = info.value
    carries_context(err)
    assert (err.dataset, err.scope, err.method, err.delta) == ("d", "dataset", "basic", 0.0)
    assert (err.spent, err.requested, err.total) == (0.6, 0.5, 1.0)
    assert err.after == pytest.approx(1.1) and err.remaining == pytest.approx(0.4)
    assert "spent ε=0.6" in str(err) and "remaining ε=0.4" in str(err)


def test_a_charge_over_an_allocation_names_the_allocation_and_its_figures(tmp_path, key):
    with _vault(tmp_path, key, epsilon=2.0, delta=0.0) as vault:
        vault.allocate("d", principal="ana", epsilon=0.3)
        vault.allocate("d", purpose="ads", epsilon=0.2)
        vault.ledger.charge("d", event=LAP(epsilon=0.25), principal="ana", purpose="stats")
        with pytest.raises(BudgetExceededError) as by_principal:
            vault.ledger.charge("d", event=LAP(epsilon=0.1), principal="ana", purpose="stats")
        with pytest.raises(BudgetExceededError) as by_purpose:
            vault.ledger.charge("d", event=LAP(epsilon=0.3), principal="bob", purpose="ads")
    principal, purpose = by_principal.value, by_purpose.value
    for err in (principal, purpose):
        carries_context(err)
        assert (err.dataset, err.method, err.delta) == ("d", "basic", 0.0)
    assert (principal.scope, principal.total, principal.spent) == ("principal:ana", 0.3, 0.25)
    assert principal.requested == 0.1 and principal.remaining == pytest.approx(0.05)
    assert principal.after == pytest.approx(0.35)
    assert (purpose.scope, purpose.total, purpose.spent, purpose.requested) == (
        "purpose:ads", 0.2, 0.0, 0.3,
    )  # fmt: skip
    assert purpose.remaining == 0.2 and purpose.after == pytest.approx(0.3)


def test_a_refusal_at_positive_delta_is_stated_by_the_rdp_filter(tmp_path, key):
    sgd = PrivacyEvent.dp_sgd(noise_multiplier=1.1, sample_rate=256 / 60000, steps=2344)
    with (
        _vault(tmp_path, key, epsilon=1.0, delta=1e-5) as vault,
        pytest.raises(BudgetExceededError) as info,
    ):
        vault.ledger.charge("d", event=sgd, principal="ml", purpose="train")
    err = info.value
    carries_context(err)
    assert (err.scope, err.method, err.delta, err.spent, err.total) == (
        "dataset", "rdp", 1e-5, 0.0, 1.0,
    )  # fmt: skip
    assert 1.0 < err.requested <= err.after  # the filter's figure is no tighter than ε alone


# -- pickling and copying -----------------------------------------------------------------


def _same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b) and str(a) == str(b) and a.args == b.args
    assert vars(a) == vars(b)


def test_errors_with_context_survive_pickle_and_copy(tmp_path, key):
    with _vault(tmp_path, key, epsilon=1.0, delta=0.0) as vault:
        with pytest.raises(BudgetExceededError) as info:
            vault.ledger.charge("d", event=LAP(epsilon=2.0), principal="ana", purpose="stats")
        with pytest.raises(UnknownColumnError) as missing:
            vault.dataset("d").schema["nope"]
    limit = StepLimitExceeded(
        "step 3 would exceed the 2 DP-SGD steps reserved", dataset="d", spent=0.5,
        requested=0.3, after=0.7, remaining=0.0, total=0.5, delta=1e-5, steps_reserved=2,
        steps_attempted=3, request_id="dp.train-1",
    )  # fmt: skip
    for err in (info.value, limit, missing.value):
        for again in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
            _same(err, again)
    assert pickle.loads(pickle.dumps(limit)).steps_attempted == 3
    assert pickle.loads(pickle.dumps(missing.value)).known == ("x",)


# -- the step guard and the calibration (a real Opacus run) ---------------------------------


@pytest.fixture
def training_vault(tmp_path: Path, key: bytes):
    """Dataset ``"data"``: 300 seeded rows, 4 features, a binary target; ``"eng"`` may train."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.uniform(0, 1, size=(300, 4)), columns=["a", "b", "c", "e"])
    frame["target"] = (frame["a"] > 0.5).astype(int)
    fields = {c: Field.numeric(bounds=(0.0, 1.0)) for c in "abce"}
    fields["target"] = Field.categorical(categories=[0, 1], target=True)
    with Vault.create(tmp_path / "t", key=key) as vault:
        vault.add_dataset(
            "data", frame, schema=Schema(fields), budget=Budget(epsilon=1.0, delta=1e-5)
        )
        vault.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
        vault.add_principal("eng", roles=["ml"])
        vault.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
        yield vault


def _training(vault: Vault, **settings):
    torch = pytest.importorskip("torch")
    pytest.importorskip("opacus")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    plan = {"batch_size": 100, "epochs": 1, "max_grad_norm": 1.0, **settings}
    return vault.session("eng", purpose="ml").dp.private_training(
        "data",
        features=["a", "b", "c", "e"],
        target="target",
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        grad_sample_mode="hooks",
        **plan,
    )


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_a_step_past_the_reservation_is_a_step_limit_with_the_runs_figures(training_vault):
    with _training(training_vault, noise_multiplier=4.0) as run:
        planned = run.steps_planned
        for X, y in run.data_loader:
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
        with pytest.raises(StepLimitExceeded) as info:
            next(iter(run.data_loader))
    err = info.value
    carries_context(err)
    assert isinstance(err, BudgetExceededError)
    assert (err.scope, err.method, err.dataset, err.request_id) == (
        "reservation", "reservation", "data", run.request_id,
    )  # fmt: skip
    assert (err.steps_reserved, err.steps_attempted) == (planned, planned + 1)
    assert err.delta == run.delta == 1e-5
    assert err.total == pytest.approx(run.epsilon_planned)
    assert err.spent == pytest.approx(run.epsilon_at(planned)) and err.remaining == 0.0
    assert err.requested == pytest.approx(run.epsilon_at(1))
    assert err.after == pytest.approx(run.epsilon_at(planned + 1))
    assert run.charge.status == "committed" and run.charge.event.params["steps"] == planned


def test_a_calibration_that_cannot_fit_states_the_binding_allocation(training_vault):
    vault = training_vault
    vault.allocate("data", principal="eng", epsilon=0.3)
    vault.ledger.charge("data", event=LAP(epsilon=0.3), principal="eng", purpose="ml")
    with (
        pytest.raises(BudgetExceededError, match="no noise multiplier") as info,
        _training(vault, target_epsilon=0.5),
    ):
        pytest.fail("the block must not run")
    err = info.value
    carries_context(err)
    assert (err.dataset, err.scope, err.delta, err.method) == ("data", "principal:eng", 1e-5, "rdp")
    assert (err.spent, err.total, err.remaining) == (0.3, 0.3, 0.0)
    assert 0.5 * 0.99 <= err.requested < math.inf  # the run calibrated to its target (RDP)
    assert "principal:eng" in str(err) and "spent ε=0.3 of ε=0.3" in str(err)
    assert list(vault.ledger.events("data")["kind"]) == ["laplace"]


def test_a_calibration_against_an_exhausted_budget_states_the_dataset(training_vault):
    vault = training_vault
    vault.ledger.charge("data", event=LAP(epsilon=1.0), principal="x", purpose="y")
    with (
        pytest.raises(BudgetExceededError, match="no noise multiplier") as info,
        _training(vault, target_epsilon=1.0),
    ):
        pytest.fail("the block must not run")
    err = info.value
    carries_context(err)
    assert (err.dataset, err.scope, err.spent, err.total, err.remaining) == (
        "data", "dataset", 1.0, 1.0, 0.0,
    )  # fmt: skip
    assert math.isfinite(err.requested)


# -- schema lookups -----------------------------------------------------------------------


def test_an_unknown_column_is_a_key_error_and_a_configuration_error():
    schema = Schema({"age": Field.integer(bounds=(0, 120)), "sex": Field.text()})
    with pytest.raises(KeyError) as info:
        schema["agee"]
    err = info.value
    assert isinstance(err, UnknownColumnError) and isinstance(err, ConfigurationError)
    assert isinstance(err, LookupError) and isinstance(err, ValueError)
    assert str(err) == "no column 'agee' in the schema; columns are ['age', 'sex']"
    assert (err.column, err.known) == ("agee", ("age", "sex"))


# -- decrypted, but not what was stored: IntegrityError, not DecryptionError -----------------


def test_a_model_whose_metadata_names_a_class_outside_privml_is_an_integrity_error():
    from privml.vault._model_bytes import deserialize as _deserialize

    with pytest.raises(IntegrityError, match="outside privml") as info:
        _deserialize("bytes", b"", "os.path.join")
    assert not isinstance(info.value, DecryptionError)


def test_an_authentic_field_token_with_an_unknown_encoding_is_an_integrity_error():
    from privml.crypto import FieldCipher

    cipher = FieldCipher(FieldCipher.generate(dataset="d").keyset, dataset="d", deterministic=True)
    siv, ad, header = cipher._engine._seal_state("c")
    forged = header + siv.encrypt(b"\x00\x01", ad)  # tag "None" followed by a stray byte
    with pytest.raises(IntegrityError, match="unknown encoding") as info:
        cipher.decrypt(forged, column="c")
    assert not isinstance(info.value, DecryptionError)
    with pytest.raises(DecryptionError):  # a modified token still fails authentication
        cipher.decrypt(forged[:-1] + bytes([forged[-1] ^ 1]), column="c")


def test_an_authentic_keyset_with_an_unknown_layout_is_an_integrity_error():
    from privml.crypto import FieldCipher
    from privml.crypto._field_keyset import _MAGIC, _wrapping_key

    wrap_key = secrets.token_bytes(32)
    aead, kcv = _wrapping_key(wrap_key)
    nonce = secrets.token_bytes(12)
    forged = _MAGIC + kcv + nonce + aead.encrypt(nonce, b"\x07 not a keyset", _MAGIC + kcv)
    with pytest.raises(IntegrityError, match="unknown layout") as info:
        FieldCipher.from_bytes(forged, wrap_key=wrap_key)
    assert not isinstance(info.value, DecryptionError)
    with pytest.raises(DecryptionError, match="modified"):
        FieldCipher.from_bytes(forged[:-1] + bytes([forged[-1] ^ 1]), wrap_key=wrap_key)
