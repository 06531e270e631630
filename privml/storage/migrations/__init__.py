"""The metadata schema's version and the steps that bring an older vault up to date.

A vault records the schema version of its metadata in ``vault_info.format``, the
row whose MAC (under the vault's key) is checked before anything else is used.
This privml knows versions :data:`BASELINE` to :func:`current`:

* **New vault.** ``create_all`` makes the tables as this privml defines them and
  the vault records :func:`current`.
* **Older vault.** Opening it runs every pending step of :data:`STEPS`, in
  order, and records the new version, in **one** transaction
  (:func:`upgrade`): SQLite and PostgreSQL both roll DDL back, so a step that
  fails leaves the vault exactly as it was, at its old version.
* **Newer vault, or one from before authenticated rows:** refused with both
  versions and the fix (:func:`check_version`).

**Downgrade.** The version is read from ``vault_info`` and that row's MAC is
checked, inside the upgrade's transaction, before any step runs; the row is
re-MAC'd with the new version in the same transaction. Someone with the folder
but not the key who lowers the version gets an
:class:`~privml.exceptions.IntegrityError`, never a second run of a step.

**Row MACs.** A protected row's MAC covers every column of its table
(:mod:`privml.storage.sealed`), so a new column would change the MAC input of
every row already stored. A step therefore adds columns nullable, marked
``info={"added": <version>}`` in ``tables.py``; such a column enters a row's
MAC only when it holds a value. Rows written before the step keep their MACs,
and a value an attacker writes into the new column breaks the row's MAC like
any other edit. A step that changes stored values does so through
:mod:`privml.storage.sealed` (the vault's key is bound before the upgrade),
which checks each row's old MAC before writing its new one, so an edited row is
refused rather than re-MAC'd into validity.

Writing a step: a module ``vNNN_<what>.py`` here with ``upgrade(conn)``
(SQLAlchemy Core; :func:`add_column` for the one DDL Core lacks), registered at
the end of :data:`STEPS` in ``_registry.py``, with its test in
``tests/storage/test_migrations.py``.
"""

from ._ops import add_column
from ._registry import BASELINE, STEPS, Step, current
from ._runner import check_version, read_info, upgrade

__all__ = [
    "BASELINE",
    "STEPS",
    "Step",
    "add_column",
    "check_version",
    "current",
    "read_info",
    "upgrade",
]
