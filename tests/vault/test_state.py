"""One lifecycle: after ``vault.close()`` the vault and everything reached through it refuse."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import sqlalchemy as sa

import privml
from privml import PrivacyEvent, Vault
from privml.exceptions import VaultClosedError
from privml.storage.tables import audit_log, checkpoints, principals


def _public_members(obj: Any) -> list[str]:
    """Every public method and property of ``obj``'s class (and its bases)."""
    names = []
    for name in dir(type(obj)):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(type(obj), name)
        if isinstance(member, property) or inspect.isfunction(member):
            names.append(name)
    return names


def _reached(vault: Vault) -> dict[str, Any]:
    """Every service and handed-out object a caller can hold on to before the close."""
    session = vault.session("analyst", purpose="research")
    reservation = vault.ledger.reserve(
        "patients",
        event=PrivacyEvent.laplace(epsilon=0.01),
        principal="analyst",
        purpose="research",
    )
    return {
        "vault": vault,
        "vault.policy": vault.policy,
        "vault.models": vault.models,
        "vault.audit": vault.audit,
        "vault.ledger": vault.ledger,
        "session": session,
        "session.he": session.he,
        "session.dp": session.dp,
        "field_cipher": vault.field_cipher("patients"),
        "reservation": reservation,
    }


def test_every_public_method_of_everything_reached_refuses_after_close(demo_vault):
    held = _reached(demo_vault)
    demo_vault.close()
    called = 0
    for label, obj in held.items():
        members = _public_members(obj)
        assert members, label
        for name in members:
            if name == "close":
                continue
            member = inspect.getattr_static(type(obj), name)
            with pytest.raises(VaultClosedError, match="the vault is closed"):
                if isinstance(member, property):
                    getattr(obj, name)
                else:
                    # No arguments: the refusal comes before any argument is looked at.
                    getattr(obj, name)()
            called += 1
    assert called > 60  # the enumeration really covered the services


def test_closed_vault_writes_nothing_after_its_final_checkpoint(tmp_path, key, demo_vault):
    policy, session = demo_vault.policy, demo_vault.session("analyst", purpose="research")
    demo_vault.close()
    attempts = [
        lambda: policy.add_principal("mallory", roles=["admin"]),
        lambda: demo_vault.add_principal("mallory", roles=["admin"]),
        lambda: demo_vault.grant(
            principal="analyst", dataset="patients", purpose="research", mode="raw"
        ),
        lambda: session.read("patients"),
        lambda: session.dp.count("patients", epsilon=0.1),
        lambda: demo_vault.models.register("m", 1, trained_on=None, epsilon=None, delta=None),
    ]
    for attempt in attempts:
        with pytest.raises(VaultClosedError):
            attempt()
    engine = sa.create_engine(f"sqlite:///{demo_vault.path}/meta.db")
    try:
        with engine.connect() as conn:
            head = conn.execute(sa.select(sa.func.max(audit_log.c.seq))).scalar()
            signed = conn.execute(sa.select(sa.func.max(checkpoints.c.seq))).scalar()
            names = {r.name for r in conn.execute(sa.select(principals.c.name))}
    finally:
        engine.dispose()
    assert head == signed  # nothing after the final checkpoint
    assert "mallory" not in names
    with Vault.open(demo_vault.path, key=key) as reopened:
        assert reopened.audit.verify().ok


def test_close_drops_key_material(demo_vault):
    cipher = demo_vault.field_cipher("patients")
    demo_vault.close()
    keyring = demo_vault._keys._keyring
    assert demo_vault._state._key is None and demo_vault._state._engine is None
    assert not hasattr(keyring, "_vault_key") and not keyring._cache
    assert not hasattr(demo_vault.audit, "_mac_key")
    assert not hasattr(demo_vault.audit, "_signing_key")
    with pytest.raises(VaultClosedError):
        cipher.encrypt("P-1001", column="patient", row_key=1)


def test_internal_database_paths_refuse_too(demo_vault):
    """Even code that skips the public surface cannot reach the metadata after close."""
    store = demo_vault._store
    demo_vault.close()
    with pytest.raises(VaultClosedError):
        store.all_budgets()  # a method that never checked the state itself


def test_close_is_idempotent_and_repr_says_closed(demo_vault):
    demo_vault.close()
    demo_vault.close()
    assert "closed" in repr(demo_vault)
    assert isinstance(demo_vault, Vault)
    assert issubclass(VaultClosedError, privml.ConfigurationError)


def test_standalone_field_ciphers_are_not_tied_to_any_vault(demo_vault):
    from privml.crypto import FieldCipher

    standalone = FieldCipher.generate(dataset="patients")
    demo_vault.close()
    token = standalone.encrypt("x", column="c", row_key=1)
    assert standalone.decrypt(token, column="c", row_key=1) == "x"
