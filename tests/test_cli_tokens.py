"""``privml token issue | list | revoke``: the key holder's commands for analysts' tokens."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

import privml
from privml.cli import main

SECRET = re.compile(r"pml_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def folder(tmp_path, vaults, monkeypatch):
    """A vault with principals ``ana`` and ``bo`` and purposes ``studies`` and ``care``; its key
    in a file and, on PostgreSQL, its metadata in PRIVML_METADATA_URL, as an operator has them."""
    key = privml.generate_key()
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    with vaults.create(tmp_path / "v", key=key) as vault:
        vault.add_purpose("studies", description="Studies", lawful_basis="GDPR 9(2)(j)")
        vault.add_purpose("care", description="Care", lawful_basis="GDPR 9(2)(h)")
        vault.add_principal("ana")
        vault.add_principal("bo")
    if vaults.metadata_url(tmp_path / "v"):
        monkeypatch.setenv("PRIVML_METADATA_URL", vaults.metadata_url(tmp_path / "v"))
    monkeypatch.setenv("PRIVML_VAULT_KEY", key.decode())  # the other key source
    return tmp_path / "v"


def _run(capsys, *argv):
    status = main(["token", argv[0], *argv[1:]])
    out, err = capsys.readouterr()
    return status, out, err


def _issue(capsys, folder, *extra):
    status, out, err = _run(capsys, "issue", str(folder), "--principal", "ana", *extra)
    assert status == 0 and err == "", err
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line[:9])
    return {k.strip(): v.strip() for k, v in fields.items()}, out


def test_issue_prints_the_secret_once_and_it_authenticates(capsys, folder, vaults):
    fields, out = _issue(capsys, folder, "--purpose", "studies", "--purpose", "care")
    assert SECRET.fullmatch(fields["secret"]) and fields["token"].startswith("tok_")
    assert fields["for"] == "ana (studies, care)" and fields["dpo"] == "no"
    expires = datetime.fromisoformat(fields["expires"])
    assert timedelta(days=29) < expires - datetime.now(UTC) < timedelta(days=31)
    assert "shown only now" in out
    with vaults.open(folder) as vault:
        info = vault.tokens.authenticate(fields["secret"], client="cli-test")
        assert (info.id, info.purposes, info.dpo) == (fields["token"], ("studies", "care"), False)
    # the secret is printed by issue only
    assert _run(capsys, "list", str(folder), "--all", "--json")[0] == 0
    _, out, _ = _run(capsys, "list", str(folder), "--all")
    assert fields["secret"][21:] not in out


def test_issue_takes_a_lifetime_or_never_and_the_dpo_flag(capsys, folder):
    fields, _ = _issue(capsys, folder, "--purpose", "studies", "--expires-in", "0.5", "--dpo")
    expires = datetime.fromisoformat(fields["expires"])
    assert timedelta(hours=11) < expires - datetime.now(UTC) < timedelta(hours=13)
    assert fields["dpo"] == "yes"
    fields, _ = _issue(capsys, folder, "--purpose", "studies", "--no-expiry")
    assert fields["expires"] == "never"


@pytest.mark.parametrize(
    "extra",
    [
        [],  # no purpose
        ["--purpose", "studies", "--expires-in", "0"],
        ["--purpose", "studies", "--expires-in", "nan"],
        ["--purpose", "studies", "--expires-in", "ten"],
        ["--purpose", "studies", "--expires-in", "3", "--no-expiry"],
    ],
)
def test_malformed_issue_commands_are_usage_errors(capsys, folder, extra):
    with pytest.raises(SystemExit) as raised:
        main(["token", "issue", str(folder), "--principal", "ana", *extra])
    assert raised.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_unknown_principal_or_purpose_is_an_error_naming_it(capsys, folder):
    status, out, err = _run(capsys, "issue", str(folder), "--principal", "zed", "--purpose", "care")
    assert status == 2 and out == "" and "no principal 'zed'" in err
    status, _, err = _run(capsys, "issue", str(folder), "--principal", "ana", "--purpose", "ads")
    assert status == 2 and "['ads'] are not registered" in err


def test_list_and_revoke(capsys, folder):
    first, _ = _issue(capsys, folder, "--purpose", "studies")
    status, out, _ = _run(capsys, "issue", str(folder), "--principal", "bo", "--purpose", "care")
    second = re.search(r"tok_[0-9a-f]{16}", out).group()
    assert status == 0
    assert _run(capsys, "revoke", str(folder), first["token"]) == (
        0, f"{first['token']} revoked\n", "",
    )  # fmt: skip
    status, out, _ = _run(capsys, "revoke", str(folder), first["token"])
    assert status == 0 and "already revoked at" in out
    status, out, _ = _run(capsys, "list", str(folder), "--json")
    records = json.loads(out)
    assert [(r["id"], r["principal"], r["purposes"], r["active"]) for r in records] == [
        (second, "bo", ["care"], True)
    ]
    status, out, _ = _run(capsys, "list", str(folder), "--all", "--principal", "ana", "--json")
    [revoked] = json.loads(out)
    assert revoked["id"] == first["token"] and revoked["revoked"] and not revoked["active"]
    assert set(revoked) == {"id", "principal", "purposes", "dpo", "created", "expires",
                            "revoked", "active"}  # fmt: skip
    status, out, _ = _run(capsys, "list", str(folder), "--all")
    assert status == 0 and first["token"] in out and second in out and "ana" in out
    status, out, _ = _run(capsys, "list", str(folder), "--principal", "ana")
    assert status == 0 and out == "no tokens\n"


def test_revoking_an_unknown_token_or_a_secret_is_an_error(capsys, folder):
    fields, _ = _issue(capsys, folder, "--purpose", "studies")
    status, _, err = _run(capsys, "revoke", str(folder), "tok_0123456789abcdef")
    assert status == 2 and "no token 'tok_0123456789abcdef'" in err
    status, out, err = _run(capsys, "revoke", str(folder), fields["secret"])
    assert status == 2 and "secret, not its id" in err
    assert fields["secret"] not in out + err


def test_token_commands_take_the_key_file_and_a_wrong_key_is_refused(
    capsys, folder, tmp_path, monkeypatch
):
    key_file = tmp_path / "vault.key"
    monkeypatch.delenv("PRIVML_VAULT_KEY")
    status, out, _ = _run(capsys, "list", str(folder), "--key-file", str(key_file))
    assert status == 0 and out == "no tokens\n"
    other = tmp_path / "other.key"
    other.write_bytes(privml.generate_key())
    other.chmod(0o600)
    status, _, err = _run(capsys, "list", str(folder), "--key-file", str(other))
    assert status == 2 and "does not open the vault" in err
