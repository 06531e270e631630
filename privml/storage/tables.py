"""The vault's metadata tables (SQLAlchemy Core). One definition serves SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = [
    "PROTECTED",
    "audit_log",
    "checkpoints",
    "datasets",
    "grants",
    "keys",
    "metadata",
    "models",
    "policy_state",
    "principals",
    "protected_table",
    "purposes",
    "replies",
    "row_heads",
    "tokens",
    "training_checkpoints",
    "training_runs",
    "vault_info",
    "versions",
]

metadata = sa.MetaData()

# Tables whose rows are authenticated (see ``privml.storage.sealed``): table name -> the
# column whose value names a row's scope, or None when the whole table is one scope.
PROTECTED: dict[str, str | None] = {}


def protected_table(name: str, *columns: sa.Column[Any], scope: str | None) -> sa.Table:
    """A table whose every row carries a MAC and whose scopes each have a head row.

    ``scope`` names the column that splits the table into scopes (e.g. ``"dataset"``),
    or is None for one table-wide scope. Write and read such a table only through
    :mod:`privml.storage.sealed`.
    """
    table = sa.Table(name, metadata, *columns, sa.Column("mac", sa.String(64), nullable=False))
    if scope is not None and scope not in table.c:
        raise ValueError(f"internal: {name} has no scope column {scope!r}")
    PROTECTED[name] = scope
    return table


# One row: identity of the vault, its key-check value, and its wrapped audit keys.
vault_info = sa.Table(
    "vault_info",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("format", sa.Integer, nullable=False),
    sa.Column("log_id", sa.String(32), nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("key_check", sa.String(64), nullable=False),
    sa.Column("kdf", sa.Text, nullable=True),  # JSON: scrypt parameters and salt, for passphrases
    sa.Column("signing_key", sa.LargeBinary, nullable=False),  # Ed25519 seed, wrapped
    sa.Column("verify_key", sa.LargeBinary, nullable=False),  # Ed25519 public key
    sa.Column("mac_key", sa.LargeBinary, nullable=False),  # HMAC key for audit entries, wrapped
    sa.Column("checkpoint_every", sa.Integer, nullable=False),
    # HMAC of the other columns under the row key (privml.storage.sealed), checked at open:
    # a raised checkpoint interval or a swapped verify key is caught before anything is used.
    sa.Column("mac", sa.String(64), nullable=False),
)

datasets = protected_table(
    "datasets",
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("schema", sa.Text, nullable=False),  # canonical JSON
    sa.Column("budget_epsilon", sa.Float, nullable=False),
    sa.Column("budget_delta", sa.Float, nullable=False),
    sa.Column("derived_from", sa.String(128), nullable=True),  # source of a minimized view
    sa.Column("created", sa.String(40), nullable=False),
    # The privacy unit (schema version 4): "row" or an identifier column, with the most rows
    # one unit contributes. NULL in rows from before: those datasets are row-level.
    sa.Column("privacy_unit", sa.String(128), nullable=True, info={"added": 4}),
    sa.Column("max_rows_per_unit", sa.Integer, nullable=True, info={"added": 4}),
    scope=None,
)

# Data keys, each wrapped by the vault key. purpose: "column", "footer", "pseudonym",
# "pseudonym-domain" (column holds the domain name; shared by datasets) or "field".
keys = protected_table(
    "keys",
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("dataset", sa.ForeignKey("datasets.name"), nullable=False),
    sa.Column("column", sa.String(256), nullable=True),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("destroyed", sa.String(40), nullable=True),
    scope="dataset",
)

versions = protected_table(
    "versions",
    sa.Column("dataset", sa.ForeignKey("datasets.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),  # SHA-256 of the stored file
    sa.Column("file", sa.String(512), nullable=False),  # relative to the vault folder
    sa.Column("schema_fingerprint", sa.String(64), nullable=False),
    sa.Column("key_ids", sa.Text, nullable=False),  # canonical JSON list: the keys it needs
    sa.Column("created", sa.String(40), nullable=False),
    scope="dataset",
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("principal", sa.String(256), nullable=False),
    sa.Column("purpose", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("dataset", sa.String(128), nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # canonical JSON
    # canonical JSON [[table, scope, generation, digest], ...]: row heads this entry logs
    sa.Column("heads", sa.Text, nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)

# --- access policy -------------------------------------------------------------------------
principals = protected_table(
    "principals",
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("roles", sa.Text, nullable=False),  # canonical JSON list
    sa.Column("attributes", sa.Text, nullable=False),  # canonical JSON object
    sa.Column("created", sa.String(40), nullable=False),
    scope=None,
)

purposes = protected_table(
    "purposes",
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("lawful_basis", sa.String(256), nullable=False),
    sa.Column("parent", sa.String(256), nullable=True),
    sa.Column("created", sa.String(40), nullable=False),
    scope=None,
)

grants = protected_table(
    "grants",
    sa.Column("grant_id", sa.String(32), primary_key=True),
    sa.Column("effect", sa.String(8), nullable=False),  # "allow" or "deny"
    sa.Column("role", sa.String(256), nullable=True),
    sa.Column("principal", sa.String(256), nullable=True),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("purpose", sa.String(256), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("columns", sa.Text, nullable=True),  # canonical JSON list
    sa.Column("categories", sa.Text, nullable=True),  # the grant's tags= (canonical JSON list)
    sa.Column("row_filter", sa.Text, nullable=True),  # canonical JSON list of predicates
    sa.Column("expires", sa.String(40), nullable=True),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("revoked", sa.String(40), nullable=True),
    scope=None,
)

# One row: the policy version, bumped by every policy change, and its content hash.
policy_state = protected_table(
    "policy_state",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    scope=None,
)

# --- model registry ------------------------------------------------------------------------
models = protected_table(
    "models",
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("format", sa.String(16), nullable=False),  # "pickle" or "bytes"
    sa.Column("file", sa.String(512), nullable=False),  # relative to the vault folder
    sa.Column("content_hash", sa.String(64), nullable=False),  # SHA-256 of the stored file
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),  # per-version key, wrapped
    sa.Column("dataset", sa.String(128), nullable=True),
    sa.Column("dataset_version", sa.Integer, nullable=True),
    sa.Column("epsilon", sa.Float, nullable=True),
    sa.Column("delta", sa.Float, nullable=True),
    sa.Column("libraries", sa.Text, nullable=False),  # canonical JSON: name -> version
    sa.Column("metadata", sa.Text, nullable=False),  # canonical JSON: kind, notes, extras
    sa.Column("created", sa.String(40), nullable=False),
    # One scope for the whole registry, with its head made with the vault: a model deleted
    # together with a per-name head would read as "never registered" (and its name as free).
    scope=None,
)

# --- service mode (schema version 3) ----------------------------------------------------------
# Bearer tokens of analysts. Only an HMAC of the secret is stored (``privml.vault._tokens``).
# Each token is its own scope: authenticating reads one row and its head, and a revoke
# rolled back to the row's older copy (``revoked`` cleared) breaks the head's sum.
tokens = protected_table(
    "tokens",
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("principal", sa.String(256), nullable=False, index=True),
    sa.Column("purposes", sa.Text, nullable=False),  # canonical JSON list
    sa.Column("dpo", sa.Boolean, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("expires", sa.String(40), nullable=True),  # None: never
    sa.Column("revoked", sa.String(40), nullable=True),
    sa.Column("digest", sa.String(64), nullable=False),  # HMAC-SHA256 of the secret
    scope="id",
)

# --- DP-SGD checkpoints (schema version 5) ---------------------------------------------------
# One row per checkpointed DP-SGD run, named by its ledger reservation: who may continue it,
# its plan, and ``drawn_mark``, a durable upper bound on the batches every process of the run
# has drawn (``privml.vault._checkpoints``). Each run is its own scope, its head made with
# its first row.
training_runs = protected_table(
    "training_runs",
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("principal", sa.String(256), nullable=False),
    sa.Column("purpose", sa.String(256), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # canonical JSON: what a resume must match
    sa.Column("plan", sa.Text, nullable=False),  # canonical JSON: σ, q, C, N, steps, mode
    sa.Column("drawn_mark", sa.Integer, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    scope="request_id",
)

# One row per checkpoint: its counts and its sealed state (model and optimizer) in storage.
training_checkpoints = protected_table(
    "training_checkpoints",
    sa.Column("id", sa.String(200), primary_key=True),  # "ckpt-<random>:<request id>"
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("steps_taken", sa.Integer, nullable=False),
    sa.Column("batches_drawn", sa.Integer, nullable=False),
    sa.Column("rows_drawn", sa.Integer, nullable=False),
    sa.Column("file", sa.String(512), nullable=False),  # relative to the vault's storage
    sa.Column("content_hash", sa.String(64), nullable=False),  # SHA-256 of the stored file
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),  # its own key, wrapped
    sa.Column("created", sa.String(40), nullable=False),
    scope="request_id",
)

# The stored reply of each (principal, client request id), so that a retried request gets
# the same answer. Not a protected table: every row is AES-GCM encrypted with its identity
# (vault, principal, request id, action, media type, time) as associated data
# (``privml.vault._replies``), so an edited or moved row fails to decrypt, and a deleted
# one only makes the retry compute its answer again.
replies = sa.Table(
    "replies",
    metadata,
    sa.Column("principal", sa.String(256), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("media_type", sa.String(128), nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # nonce + AES-GCM ciphertext
)

# One head per (table, scope) of a protected table: how many rows the scope holds and
# the sum (mod 2**256) of their MACs, so deleting or inserting a whole row is caught.
# ``generation`` counts the transactions that changed the scope; ``logged`` says whether
# the audit log already records this generation (rollback of rows is caught against it).
row_heads = sa.Table(
    "row_heads",
    metadata,
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(300), primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("logged", sa.Boolean, nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
)
