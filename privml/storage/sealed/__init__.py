"""Authenticated metadata rows: the one way to write and to read a protected table.

Someone with the vault folder but not the key can edit ``meta.db`` with any
SQLite tool. These rows decide budgets, access and what a read returns, so each
edit must be caught before anything depends on it:

* **Row MAC.** Every row of a protected table (``tables.PROTECTED``) carries
  ``mac`` = HMAC-SHA256 under a key derived (HKDF, label ``privml/rows/v1``)
  from the vault's audit MAC key, over a domain tag, the vault's log id, the
  table name and every other column, primary key included. A modified row, a
  row copied to another key, scope, table or vault, fails.
* **Scope head.** Each table is split into scopes (a dataset's ledger, its
  versions, a model's versions, or the whole table); ``row_heads`` holds, per
  scope, the number of rows and the sum (mod 2**256) of their MACs, itself
  MAC'd. Deleting or inserting a whole row (even a valid row from an older copy)
  changes the sum: :func:`scope_rows` reads a scope whole and checks it, so a
  decision never rests on a scope with a row missing. Heads of table-wide scopes
  exist from vault creation and those of a dataset's scopes from the dataset's,
  so deleting a head with its rows is caught too.
* **Rollback.** Restoring an older, consistent copy of rows and heads passes
  the checks above. Every change bumps the head's ``generation`` and clears
  ``logged``; the next audit entry records each unlogged head (generation and
  digest, :func:`take_unlogged`) in the hash-chained log, so
  :func:`verify_rows` finds a head older than the log. Changes made since the
  last audit entry are the one window, as for the log's own tail.
* **No way around it.** :func:`bind` installs an engine hook that refuses any
  INSERT, UPDATE or DELETE of a protected table not made through this module.

Heads are cached per connection: the first look at a scope reads all of its
heads and every unlogged one in one query, and each changed head is written
once, by :func:`flush` (:func:`take_unlogged` as the audit entry is written,
and the vault's ``transaction`` before committing). A row with an
autoincrement key takes its key first (:func:`~._rows.next_key`, under the
writer lock), so its MAC goes in with its one INSERT.

The package's modules: :mod:`._mac` (the MACs), :mod:`._binding` (the engine
hook and per-transaction state), :mod:`._heads`, :mod:`._rows` (writing and
reading), :mod:`._verify`.
"""

from ._binding import bind, mac_for, unbind
from ._heads import create_heads, dataset_tables, flush, global_tables, take_unlogged
from ._mac import RowSealer
from ._rows import check_rows, delete, insert, scope_rows, update, update_row
from ._verify import verify_rows

__all__ = [
    "RowSealer",
    "bind",
    "check_rows",
    "create_heads",
    "dataset_tables",
    "delete",
    "flush",
    "global_tables",
    "insert",
    "mac_for",
    "scope_rows",
    "take_unlogged",
    "unbind",
    "update",
    "update_row",
    "verify_rows",
]
