"""``privml report VAULT -o report.html``: opens the vault as the other owner commands do."""

from __future__ import annotations

import sqlalchemy as sa

from privml.cli import main


def _args(vault, vaults, monkeypatch, key, tmp_path):
    folder = vault.path
    vault.close()
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    url = vaults.metadata_url(folder)
    if url is not None:
        monkeypatch.setenv("PRIVML_METADATA_URL", url)
    return folder, ["--key-file", str(key_file)]


def test_report_command_writes_the_file(
    busy_vault, vaults, monkeypatch, busy_key, tmp_path, capsys
):
    folder, keys = _args(busy_vault, vaults, monkeypatch, busy_key, tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(folder), *keys, "-o", str(out), "--since", "2020-01-01"]) == 0
    assert "Verification OK" in out.read_text(encoding="utf-8")
    assert capsys.readouterr().out.strip() == f"report written to {out}"


def test_a_tampered_vault_exits_1_and_still_writes(
    busy_vault, vaults, monkeypatch, busy_key, tmp_path, capsys, dba
):
    folder, keys = _args(busy_vault, vaults, monkeypatch, busy_key, tmp_path)
    with dba.edit(folder) as conn:
        conn.execute(sa.text("UPDATE audit_log SET principal = 'someone' WHERE seq = 3"))
    out = tmp_path / "report.html"
    assert main(["report", str(folder), *keys, "-o", str(out)]) == 1
    assert "VERIFICATION FAILED" in out.read_text(encoding="utf-8")
    assert "seq 3" in capsys.readouterr().err


def test_bad_times_and_paths_are_usage_errors(busy_vault, vaults, monkeypatch, busy_key, tmp_path):
    folder, keys = _args(busy_vault, vaults, monkeypatch, busy_key, tmp_path)
    missing = str(tmp_path / "nowhere" / "r.html")
    assert main(["report", str(folder), *keys, "-o", missing]) == 2
    try:
        main(["report", str(folder), *keys, "-o", "r.html", "--since", "yesterday"])
    except SystemExit as exit:
        assert exit.code == 2
    else:
        raise AssertionError("argparse accepted a time that is not ISO 8601")
