"""Bearer tokens (privml.vault._tokens): issued, checked, revoked; attacked from outside (a
guesser), and by someone with the metadata database but not the key."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

import privml
from privml import AuthenticationError, ConfigurationError, IntegrityError, NotFoundError
from privml.storage.tables import tokens
from privml.vault import IssuedToken, TokenInfo

SECRET = re.compile(r"pml_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
MESSAGE = "invalid or expired token: ask the vault owner for a new one"
CLIENT = "203.0.113.7:51234"


@pytest.fixture
def vault(demo_vault):
    """``demo_vault`` with a second principal and purpose."""
    demo_vault.add_purpose("studies", description="Studies", lawful_basis="GDPR 9(2)(j)")
    demo_vault.add_principal("ana", roles=["statistician"])
    return demo_vault


def _denials(vault):
    return vault.audit.entries(action="token.use").to_dict("records")


def _refused(vault, secret, client=CLIENT):
    with pytest.raises(AuthenticationError) as raised:
        vault.tokens.authenticate(secret, client=client)
    assert str(raised.value) == MESSAGE  # never which reason
    return _denials(vault)[-1]


# --- issuing ---------------------------------------------------------------------------------
def test_an_issued_token_authenticates_as_its_principal_and_purposes(vault):
    issued = vault.tokens.issue("ana", purposes=["studies", "research", "studies"], dpo=True)
    assert isinstance(issued, IssuedToken) and SECRET.fullmatch(issued.secret)
    assert issued.id == "tok_" + issued.secret[4:20]
    assert issued.purposes == ("studies", "research") and issued.dpo
    assert issued.expires is not None and issued.expires.tzinfo is not None
    assert issued.secret not in repr(issued) and issued.secret not in str(issued)
    info = vault.tokens.authenticate(issued.secret, client=CLIENT)
    assert isinstance(info, TokenInfo) and info.active
    assert (info.id, info.principal, info.purposes, info.dpo) == (
        issued.id, "ana", ("studies", "research"), True,
    )  # fmt: skip
    assert info.expires == issued.expires and info.revoked is None
    assert _denials(vault) == []  # success writes nothing


def test_the_issue_is_audited_without_the_secret(vault, vaults):
    issued = vault.tokens.issue("ana", purposes=["studies"], expires=None)
    [entry] = vault.audit.entries(action="token.issue").to_dict("records")
    assert entry["principal"] == vault._state.actor and entry["purpose"] == "administration"
    assert entry["details"] == {
        "token": issued.id, "principal": "ana", "purposes": ["studies"], "dpo": False,
        "expires": None,
    }  # fmt: skip
    random_part = issued.secret.split("_", 2)[2]
    vault.close()
    stored = vaults.stored(vault.path)
    assert random_part.encode() not in stored  # neither in the row nor in the audit log
    assert hashlib.sha256(issued.secret.encode()).hexdigest().encode() not in stored


def test_expiry_is_a_duration_a_time_or_never_when_asked(vault):
    now = datetime.now(UTC)
    default = vault.tokens.issue("ana", purposes=["studies"])
    assert default.expires is not None
    assert timedelta(days=29) < default.expires - now < timedelta(days=31)
    at = datetime(2999, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert vault.tokens.issue("ana", purposes=["studies"], expires=at).expires == at
    assert vault.tokens.issue("ana", purposes=["studies"], expires=None).expires is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"purposes": "studies"}, "list of purpose names"),
        ({"purposes": []}, "between 1 and"),
        ({"purposes": ["studies"] * 65}, "between 1 and"),
        ({"purposes": [""]}, "purpose"),
        ({"purposes": ["studies"], "expires": timedelta(0)}, "not positive"),
        ({"purposes": ["studies"], "expires": datetime(2999, 1, 1)}, "naive"),
        ({"purposes": ["studies"], "expires": datetime(2000, 1, 1, tzinfo=UTC)}, "past"),
        ({"purposes": ["studies"], "expires": timedelta.max}, "9999"),
        ({"purposes": ["studies"], "expires": 30}, "got a int"),
        ({"purposes": ["studies"], "dpo": "yes"}, "dpo= takes True or False"),
    ],
)
def test_a_malformed_issue_is_refused_and_nothing_stored(vault, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        vault.tokens.issue("ana", **kwargs)
    assert vault.tokens.list(include_inactive=True) == []


def test_unknown_principals_and_purposes_are_refused(vault):
    with pytest.raises(NotFoundError, match="no principal 'bob'"):
        vault.tokens.issue("bob", purposes=["studies"])
    with pytest.raises(NotFoundError, match=r"\['marketing'\] are not registered"):
        vault.tokens.issue("ana", purposes=["studies", "marketing"])
    assert vault.tokens.list(include_inactive=True) == []
    assert len(vault.audit.entries(action="token.issue")) == 0


# --- listing and revoking --------------------------------------------------------------------
def test_list_filters_by_principal_and_activity(vault):
    first = vault.tokens.issue("ana", purposes=["studies"])
    second = vault.tokens.issue("analyst", purposes=["research"])
    third = vault.tokens.issue("ana", purposes=["studies"])
    vault.tokens.revoke(third.id)
    assert [t.id for t in vault.tokens.list()] == [first.id, second.id]
    assert [t.id for t in vault.tokens.list(principal="ana")] == [first.id]
    every = vault.tokens.list(principal="ana", include_inactive=True)
    assert [(t.id, t.active) for t in every] == [(first.id, True), (third.id, False)]
    assert every[1].revoked is not None
    assert vault.tokens.list(principal="nobody") == []


def test_revoking_is_audited_once_and_a_second_revoke_changes_nothing(vault):
    issued = vault.tokens.issue("ana", purposes=["studies"])
    vault.tokens.revoke(issued.id)
    [revoked] = vault.tokens.list(include_inactive=True)
    vault.tokens.revoke(issued.id)
    assert vault.tokens.list(include_inactive=True) == [revoked]
    entries = vault.audit.entries(action="token.revoke").to_dict("records")
    assert [e["details"] for e in entries] == [{"token": issued.id, "principal": "ana"}]


def test_revoking_an_unknown_or_malformed_id_is_refused_without_echoing_a_secret(vault):
    issued = vault.tokens.issue("ana", purposes=["studies"])
    with pytest.raises(NotFoundError, match="no token 'tok_0000000000000000'"):
        vault.tokens.revoke("tok_0000000000000000")
    with pytest.raises(ConfigurationError, match="secret, not its id") as raised:
        vault.tokens.revoke(issued.secret)
    assert issued.secret not in str(raised.value)
    with pytest.raises(ConfigurationError, match="16 hex digits"):
        vault.tokens.revoke("tok_1")
    assert vault.tokens.authenticate(issued.secret, client=CLIENT).active


def test_a_revoke_by_another_handle_counts_at_the_next_request(vault, vaults, key):
    """Nothing is cached: a revoke made by another process refuses the very next request."""
    issued = vault.tokens.issue("ana", purposes=["studies"])
    assert vault.tokens.authenticate(issued.secret, client=CLIENT).active
    with vaults.open(vault.path, key=key) as other:
        other.tokens.revoke(issued.id)
    assert _refused(vault, issued.secret)["details"]["reason"] == "revoked"


def test_tokens_survive_a_vault_key_rotation(vault, vaults):
    issued = vault.tokens.issue("ana", purposes=["studies"])
    new = privml.generate_key()
    vault.rotate_vault_key(new)
    vault.close()
    with vaults.open(vault.path, key=new) as reopened:
        assert reopened.tokens.authenticate(issued.secret, client=CLIENT).principal == "ana"


# --- a guesser -------------------------------------------------------------------------------
def test_every_refusal_is_one_message_and_audited_with_its_reason(vault):
    good = vault.tokens.issue("ana", purposes=["studies"])
    revoked = vault.tokens.issue("ana", purposes=["studies"])
    vault.tokens.revoke(revoked.id)
    expired = vault.tokens.issue("ana", purposes=["studies"], expires=timedelta(microseconds=1))
    other_id = "pml_" + "0" * 16 + good.secret[20:]
    wrong = good.secret[:-1] + ("A" if good.secret[-1] != "A" else "B")
    cases = [
        (wrong, "mismatch", good.id),
        (other_id, "unknown", "tok_" + "0" * 16),
        (revoked.secret, "revoked", revoked.id),
        (expired.secret, "expired", expired.id),
    ]
    for secret, reason, token_id in cases:
        entry = _refused(vault, secret)
        assert (entry["principal"], entry["purpose"], entry["outcome"]) == (
            "unauthenticated", "authentication", "denied",
        )  # fmt: skip
        assert entry["details"]["reason"] == reason
        assert entry["details"]["token"] == token_id
        assert entry["details"]["client"] == CLIENT
    text = vault.audit.entries().to_json(date_format="iso")
    for secret, _, _ in cases:
        assert secret.split("_", 2)[2] not in text
    assert vault.tokens.authenticate(good.secret, client=CLIENT).active
    assert vault.audit.verify().ok


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "Bearer pml_0123456789abcdef_" + "A" * 43,
        "pml_0123456789ABCDEF_" + "A" * 43,  # upper-case hex
        "pml_0123456789abcdef_" + "A" * 42 + "=",
        "pml_0123456789abcdef_" + "A" * 42 + "é",
        "pml_0123456789abcdef_" + "A" * 10_000,
        "x" * 1_000_000,
        None,
        b"pml_0123456789abcdef_" + b"A" * 43,
        "pml_0123456789abcdef_" + "A" * 42 + "\n",
    ],
)
def test_a_malformed_secret_is_refused_before_any_lookup(vault, secret):
    entry = _refused(vault, secret)
    assert entry["details"] == {"client": CLIENT, "reason": "malformed"}


def test_the_client_address_is_recorded_printable_and_bounded(vault):
    entry = _refused(vault, "nope", client="evil\n" + "é" * 1000)
    recorded = entry["details"]["client"]
    assert recorded.startswith("evil\\x0a\\xe9") and len(recorded) <= 256
    assert recorded.isascii() and recorded.isprintable()
    with pytest.raises(ConfigurationError, match="client= takes"):
        vault.tokens.authenticate("nope", client=None)


def test_a_copy_of_the_database_cannot_check_a_guess(vault, vaults):
    """The stored digest is keyed: no hash of the secret alone, and it differs per vault."""
    issued = vault.tokens.issue("ana", purposes=["studies"])
    engine = vaults.database(vault.path)
    try:
        with engine.connect() as conn:
            digest = conn.execute(sa.select(tokens.c.digest)).scalar_one()
    finally:
        engine.dispose()
    plain = issued.secret.encode()
    assert digest not in {hashlib.sha256(plain).hexdigest(), hashlib.sha512(plain).hexdigest()}
    assert digest != vault.tokens._digest(issued.secret + "x")


# --- someone with the database but not the key -----------------------------------------------
@pytest.fixture
def issued(vault):
    """Tokens of a closed vault: ana's active one, an expired one and a revoked one."""
    out = {
        "active": vault.tokens.issue("ana", purposes=["studies"]),
        "expired": vault.tokens.issue(
            "ana", purposes=["studies"], expires=timedelta(microseconds=1)
        ),
        "revoked": vault.tokens.issue("analyst", purposes=["research"]),
    }
    vault.tokens.revoke(out["revoked"].id)
    vault.close()
    return out


def _edit(dba, vault, sql, **params):
    with dba.edit(vault.path) as conn:
        conn.execute(sa.text(sql), params)


EDITS = {
    "expiry extended": (
        "expired",
        "UPDATE tokens SET expires = '2999-01-01T00:00:00.000000+00:00' WHERE id = :id",
    ),
    "revocation cleared": ("revoked", "UPDATE tokens SET revoked = NULL WHERE id = :id"),
    "principal changed": ("active", "UPDATE tokens SET principal = 'analyst' WHERE id = :id"),
    "purposes widened": (
        "active",
        """UPDATE tokens SET purposes = '["research","studies"]' WHERE id = :id""",
    ),
    "made a dpo token": ("active", "UPDATE tokens SET dpo = :yes WHERE id = :id"),
    "digest copied from another row": (
        "revoked",
        "UPDATE tokens SET digest = (SELECT t.digest FROM tokens t WHERE t.id = :other) "
        "WHERE id = :id",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_token_row_is_refused(issued, vault, vaults, dba, key, edit):
    which, sql = EDITS[edit]
    target = issued[which]
    _edit(dba, vault, sql, id=target.id, other=issued["active"].id, yes=True)
    with vaults.open(vault.path, key=key) as reopened:
        with pytest.raises(IntegrityError, match="tokens"):
            reopened.tokens.authenticate(target.secret, client=CLIENT)
        assert _denials(reopened)[-1]["details"]["reason"] == "tampered"
        with pytest.raises(IntegrityError):
            reopened.tokens.list(include_inactive=True)
        assert not reopened.audit.verify().ok


def test_a_row_copied_under_another_id_is_refused(issued, vault, vaults, dba, key):
    """A forged row for a secret the attacker picked, carrying a real row's MAC and digest."""
    forged = "pml_" + "f" * 16 + "_" + "A" * 43
    _edit(
        dba,
        vault,
        "INSERT INTO tokens (id, principal, purposes, dpo, created, expires, revoked, digest, "
        "mac) SELECT :new, principal, purposes, dpo, created, expires, revoked, digest, mac "
        "FROM tokens WHERE id = :id",
        new="tok_" + "f" * 16,
        id=issued["active"].id,
    )
    with (
        vaults.open(vault.path, key=key) as reopened,
        pytest.raises(IntegrityError, match="tokens"),
    ):
        reopened.tokens.authenticate(forged, client=CLIENT)


def test_a_revocation_rolled_back_from_an_older_copy_is_refused(vault, vaults, dba, key):
    issued = vault.tokens.issue("ana", purposes=["studies"])
    vault.close()
    older = vaults.database(vault.path)  # a copy of the row, kept for later
    try:
        with older.connect() as conn:
            row = conn.execute(sa.select(tokens)).one()._asdict()
    finally:
        older.dispose()
    with vaults.open(vault.path, key=key) as reopened:
        reopened.tokens.revoke(issued.id)
    with dba.edit(vault.path) as conn:  # the row as it was before the revoke, its MAC valid
        conn.execute(tokens.delete().where(tokens.c.id == issued.id))
        conn.execute(tokens.insert().values(**row))
    with (
        vaults.open(vault.path, key=key) as reopened,
        pytest.raises(IntegrityError, match="tokens"),
    ):
        reopened.tokens.authenticate(issued.secret, client=CLIENT)


def test_a_token_row_deleted_without_the_key_is_caught(issued, vault, vaults, dba, key):
    """Deleting a row only denies its token, but it is still seen: by list, use and verify."""
    _edit(dba, vault, "DELETE FROM tokens WHERE id = :id", id=issued["revoked"].id)
    with vaults.open(vault.path, key=key) as reopened:
        with pytest.raises(IntegrityError, match="tokens"):
            reopened.tokens.list()
        with pytest.raises(IntegrityError, match="tokens"):
            reopened.tokens.authenticate(issued["revoked"].secret, client=CLIENT)
        assert reopened.tokens.list(principal="ana", include_inactive=True)  # others still work
        assert not reopened.audit.verify().ok
