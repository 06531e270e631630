"""One lifecycle (privml.vault._state): after ``vault.close()`` the vault and everything reached
through it refuse, and the key material is gone."""

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
        "session._door": session._door,
        "vault.policy": vault.policy,
        "vault.models": vault.models,
        "vault.audit": vault.audit,
        "vault.ledger": vault.ledger,
        "vault.tokens": vault.tokens,
        "vault._replies": vault._replies,
        "session": session,
        "session.he": session.he,
        "session.dp": session.dp,
        "field_cipher": vault.field_cipher("patients"),
        "reservation": reservation,
    }


class _Dummy:
    """An argument no method accepts: if a method looked at it, it would fail otherwise."""


def _dummy_arguments(method: Any) -> tuple[list[Any], dict[str, Any]]:
    """One dummy for every required parameter of ``method``, positional or keyword-only."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in inspect.signature(method).parameters.values():
        if param.default is not inspect.Parameter.empty:
            continue
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            args.append(_Dummy())
        elif param.kind is param.KEYWORD_ONLY:
            kwargs[param.name] = _Dummy()
    return args, kwargs


def test_every_public_method_of_everything_reached_refuses_after_close(demo_vault):
    held = _reached(demo_vault)
    demo_vault.close()
    called = set()
    for label, obj in held.items():
        members = _public_members(obj)
        assert members, label
        for name in members:
            if name == "close":
                continue
            member = inspect.getattr_static(type(obj), name)
            if isinstance(member, property):
                with pytest.raises(VaultClosedError, match="the vault is closed"):
                    getattr(obj, name)
            else:
                method = getattr(obj, name)
                args, kwargs = _dummy_arguments(method)
                # With well-formed dummies, and with none: the refusal comes before any
                # argument is looked at, so no TypeError or ValueError can come first.
                with pytest.raises(VaultClosedError, match="the vault is closed"):
                    method(*args, **kwargs)
                with pytest.raises(VaultClosedError, match="the vault is closed"):
                    method()
            called.add(f"{label}.{name}")
    # the enumeration really covered the services, the door's protocol included
    assert {"session._door.authorize", "session._door.release", "session.read"} <= called
    assert {"vault.ledger.charge", "vault.audit.verify", "reservation.settle"} <= called
    assert {"vault.tokens.authenticate", "vault.tokens.issue", "vault._replies.put"} <= called
    assert len(called) > 80


def test_a_method_added_later_is_refused_too(demo_vault, monkeypatch):
    """The refusal is not a list of names: a public method is guarded because it is public."""
    monkeypatch.setattr(privml.Session, "newly_added", lambda self, x: x, raising=False)
    session = demo_vault.session("analyst", purpose="research")
    assert session.newly_added(1) == 1
    demo_vault.close()
    with pytest.raises(VaultClosedError):
        session.newly_added(1)


def test_closed_vault_writes_nothing_after_its_final_checkpoint(tmp_path, key, demo_vault, vaults):
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
    engine = vaults.database(demo_vault.path)
    try:
        with engine.connect() as conn:
            head = conn.execute(sa.select(sa.func.max(audit_log.c.seq))).scalar()
            signed = conn.execute(sa.select(sa.func.max(checkpoints.c.seq))).scalar()
            names = {r.name for r in conn.execute(sa.select(principals.c.name))}
    finally:
        engine.dispose()
    assert head == signed  # nothing after the final checkpoint
    assert "mallory" not in names
    with vaults.open(demo_vault.path, key=key) as reopened:
        assert reopened.audit.verify().ok


class _Recording:
    """Delegates to pyarrow's CryptoFactory and records when its key cache is dropped."""

    def __init__(self, factory: Any) -> None:
        self._factory, self.dropped = factory, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)

    def remove_cache_entries_for_all_tokens(self) -> None:
        self.dropped += 1
        self._factory.remove_cache_entries_for_all_tokens()


def test_close_drops_key_material(demo_vault):
    cipher = demo_vault.field_cipher("patients")
    demo_vault.session("analyst", purpose="research").read("patients")  # unwraps data keys
    keyring, audit, crypto = demo_vault._keys._keyring, demo_vault.audit, demo_vault._store._crypto
    factory = crypto._factory = _Recording(crypto._factory)
    # what close() must drop is there before it
    assert demo_vault._state._key is not None and keyring._vault_key is not None
    assert keyring._cache and audit._mac_key and audit._signing_key
    tokens, replies = demo_vault.tokens, demo_vault._replies
    assert tokens._key and replies._aead is not None
    demo_vault.close()
    assert not hasattr(tokens, "_key") and replies._aead is None
    assert demo_vault._state._key is None and demo_vault._state._engine is None
    assert not hasattr(keyring, "_vault_key") and not keyring._cache
    assert not hasattr(audit, "_mac_key") and not hasattr(audit, "_signing_key")
    assert factory.dropped == 1
    with pytest.raises(VaultClosedError):
        cipher.encrypt("P-1001", column="patient", row_key=1)


def test_internal_database_paths_refuse_too(demo_vault):
    """Even code that skips the public surface cannot reach the metadata after close."""
    store = demo_vault._store
    demo_vault.close()
    with pytest.raises(VaultClosedError):
        store.all_budgets()  # a method that never checked the state itself


def _signed_checkpoints(vaults: Any, folder: Any) -> int:
    engine = vaults.database(folder)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(checkpoints)).scalar_one()
    finally:
        engine.dispose()


def test_close_is_idempotent_and_repr_says_closed(demo_vault, vaults):
    assert "open" in repr(demo_vault)
    demo_vault.close()
    signed = _signed_checkpoints(vaults, demo_vault.path)
    demo_vault.close()  # nothing: no error, no second final checkpoint
    assert _signed_checkpoints(vaults, demo_vault.path) == signed
    assert "closed" in repr(demo_vault)
    assert type(demo_vault).__name__ == "Vault" and isinstance(demo_vault, Vault)


def test_standalone_field_ciphers_are_not_tied_to_any_vault(demo_vault):
    from privml.crypto import FieldCipher

    standalone = FieldCipher.generate(dataset="patients")
    demo_vault.close()
    token = standalone.encrypt("x", column="c", row_key=1)
    assert standalone.decrypt(token, column="c", row_key=1) == "x"
