"""Opening a vault whose folder was edited without the key (privml.vault._opening)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

import privml
from privml.vault import _opening


@pytest.fixture
def engines(monkeypatch) -> list[sa.Engine]:
    """Every metadata engine an open makes."""
    made: list[sa.Engine] = []
    real = _opening.make_engine

    def recording(**kwargs: Any) -> sa.Engine:
        made.append(real(**kwargs))
        return made[-1]

    monkeypatch.setattr(_opening, "make_engine", recording)
    return made


def _edit(engine: sa.Engine, sql: str) -> None:
    """Run ``sql`` as someone with the metadata database but not the key."""
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE vault_info SET kdf = 'not json'",
        """UPDATE vault_info SET kdf = '{"salt": "%%%"}'""",
        """UPDATE vault_info SET kdf = '{"n": 1}'""",
        "UPDATE vault_info SET kdf = '[1]'",
        "DELETE FROM vault_info",
    ],
)
def test_an_edited_identity_row_is_an_integrity_error_and_releases_the_database(
    tmp_path, key, engines, sql, vaults
):
    folder = tmp_path / "v"
    vaults.create(folder, passphrase="correct horse battery").close()
    _edit(vaults.database(folder), sql)
    engines.clear()
    with pytest.raises(privml.IntegrityError, match="vault_info"):
        vaults.open(folder, passphrase="correct horse battery")
    [engine] = engines
    assert engine.pool.checkedin() == 0  # disposed: no connection is left open


@pytest.mark.parametrize("marker", ["not json", "[]", '{"format": 2}'])
def test_an_edited_marker_is_an_integrity_error(tmp_path, key, marker, vaults):
    folder = tmp_path / "v"
    vaults.create(folder, key=key).close()
    (folder / _opening.MARKER).write_text(marker)
    with pytest.raises(privml.IntegrityError, match=_opening.MARKER):
        vaults.open(folder, key=key)
