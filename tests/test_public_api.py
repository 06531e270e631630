from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import privml
import privml.exceptions

PUBLIC = {
    "AccessDenied",
    "AuthenticationError",
    "Budget",
    "BudgetExceededError",
    "BudgetStatus",
    "Charge",
    "ConfigurationError",
    "DatasetInfo",
    "DatasetVersion",
    "DecryptionError",
    "DpoReport",
    "Field",
    "InsecureKeyFileWarning",
    "IntegrityError",
    "InvalidKeyError",
    "MissingKeyError",
    "NotFoundError",
    "OptionalDependencyError",
    "PrivacyAuditFailure",
    "PrivacyEvent",
    "PrivmlError",
    "Reservation",
    "Schema",
    "SchemaError",
    "SchemaViolation",
    "Session",
    "Vault",
    "VaultExistsError",
    "VerifyReport",
    "__version__",
    "connect",
    "generate_key",
    "serve",
}


#: Where each public name is defined: privml re-exports them, it defines none itself.
HOMES = {
    "Session": "privml.vault._session",
    "Vault": "privml.vault._vault",
    "Budget": "privml.accounting.budget",
    "PrivacyEvent": "privml.accounting.events",
    "Reservation": "privml.accounting.ledger",
    "Schema": "privml.schema",
    "AccessDenied": "privml.exceptions",
    "DpoReport": "privml.report._report",
}


def test_all_is_exactly_the_public_surface():
    assert set(privml.__all__) == PUBLIC
    assert isinstance(privml.__version__, str) and privml.__version__[0].isdigit()
    for name, home in HOMES.items():
        # the name is the object its defining module holds, not a copy or a stand-in
        assert getattr(privml, name) is getattr(importlib.import_module(home), name), name
    for name in PUBLIC - {"__version__", "generate_key", "connect", "serve"}:
        value = getattr(privml, name)
        assert isinstance(value, type) and value.__module__.startswith("privml."), name
    assert privml.generate_key.__module__ == "privml.crypto.keys"
    # the service's entry points load their dependencies (httpx, fastapi) only when called
    assert callable(privml.connect) and callable(privml.serve)


def test_every_error_is_a_privml_error_and_a_builtin_where_it_fits():
    for name in privml.exceptions.__all__:
        cls = getattr(privml.exceptions, name)
        if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, Warning):
            assert issubclass(cls, privml.PrivmlError)
    assert issubclass(privml.SchemaError, ValueError)
    assert issubclass(privml.BudgetExceededError, ValueError)
    assert issubclass(privml.AccessDenied, PermissionError)
    assert issubclass(privml.NotFoundError, LookupError)
    assert issubclass(privml.OptionalDependencyError, ImportError)


def test_import_is_light():
    """``import privml`` must not pull in torch, opacus, tenseal or diffprivlib."""
    code = (
        "import sys, privml; "
        "print(sorted(m for m in ('torch', 'opacus', 'tenseal', 'diffprivlib', 'sklearn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_leaves_warning_filters_alone():
    # numpy and pandas add filters of their own at import; privml must add none.
    code = (
        "import warnings, numpy, pandas, pyarrow, pyarrow.parquet, sqlalchemy; "
        "before = list(warnings.filters); import privml; "
        "print(before == list(warnings.filters))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


DOCUMENTED = [
    "privml",
    "privml.accounting",
    "privml.attacks",
    "privml.audit",
    "privml.crypto",
    "privml.datasets",
    "privml.dp",
    "privml.dp.torch",
    "privml.exceptions",
    "privml.federated",
    "privml.he",
    "privml.masks",
    "privml.minimization",
    "privml.policy",
    "privml.report",
    "privml.schema",
    "privml.service",
    "privml.vault",
]


# Modules whose namespace also holds what they import (or that load names on first use):
# their ``__all__`` is checked name by name instead of against ``vars(module)``.
WITH_IMPORTS = ["privml.attacks", "privml.audit", "privml.masks", "privml.schema", "privml.service"]


@pytest.mark.parametrize("name", [m for m in DOCUMENTED if m not in WITH_IMPORTS])
def test_exported_members_are_exactly_all(name):
    """``__all__`` against ``vars(module)``, both ways: a public name that is not exported is a
    leak (an import that users would start to rely on), an exported one that is missing is
    a broken promise. Submodules are reached as modules, so they are not members."""
    module = importlib.import_module(name)
    public = {
        member
        for member, value in vars(module).items()
        if (not member.startswith("_") or member == "__version__")
        and member != "annotations"  # from __future__ import annotations
        and not isinstance(value, types.ModuleType)
    }
    assert sorted(public) == sorted(module.__all__)


@pytest.mark.parametrize("name", WITH_IMPORTS)
def test_modules_export_their_own_names(name):
    """Each exported name resolves, is privml's own, and appears once."""
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__)
    for member in module.__all__:
        value = getattr(module, member)
        owner = getattr(value, "__module__", None) or name  # constants
        if owner == "typing":  # a type alias defined here, e.g. Literal[...]
            owner = name
        assert owner.startswith("privml"), f"{name}.{member} comes from {owner}"
