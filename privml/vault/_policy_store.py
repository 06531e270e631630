"""``vault.policy``: principals, purposes and grants, stored, versioned and audited.

Every change runs in one transaction that applies it, recomputes the policy
hash, bumps the version and writes an audit entry. Decisions come from a
compiled :class:`~privml.policy.PolicyModel`, rebuilt when the version moves
(also when another process changed the policy).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from .._canonical import canonical_json, utcnow
from .._validation import check_name
from ..audit import ADMIN_PURPOSE, AuditLog
from ..exceptions import ConfigurationError, NotFoundError
from ..policy import _grants
from ..policy import _yaml as _policy_yaml
from ..policy._diff import plan, present
from ..policy._grants import RECORD_FIELDS
from ..policy._model import PolicyModel
from ..schema import Schema
from ..storage import sealed
from ..storage.engine import Tx, read, transaction
from ..storage.tables import datasets, grants, policy_state, principals, purposes

if TYPE_CHECKING:
    from ._state import VaultState

__all__ = ["PolicyAdmin"]


class PolicyAdmin:
    """Principals, purposes and grants of one vault. Reach it as ``vault.policy``."""

    def __init__(self, state: VaultState, audit: AuditLog) -> None:
        self._state = state
        self._audit = audit
        self._model: PolicyModel | None = None
        self._model_version = -1

    # -- reading ----------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Bumped by every policy change (0 for a new vault)."""
        with read(self._state.engine) as conn:
            return _state(conn)[0]

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical policy (principals, purposes, active grants)."""
        with read(self._state.engine) as conn:
            return _state(conn)[1]

    def model(self) -> PolicyModel:
        """The compiled policy at the current version."""
        with read(self._state.engine) as conn:
            version, digest = _state(conn)
            if self._model is None or version != self._model_version:
                self._model = _compile(conn, digest)
                self._model_version = version
        return self._model

    def principals(self) -> pd.DataFrame:
        """Registered principals with their roles and attributes."""
        with read(self._state.engine) as conn:
            records = [{"name": r.name, **_principal(r)} for r in _principals(conn)]
        return pd.DataFrame(records, columns=["name", "roles", "attributes"])

    def purposes(self) -> pd.DataFrame:
        """Registered purposes with their description, lawful basis and parent."""
        with read(self._state.engine) as conn:
            records = [{"name": r.name, **_purpose(r)} for r in _purposes(conn)]
        columns = ["name", "description", "lawful_basis", "parent"]
        return pd.DataFrame(records, columns=columns, dtype=object)

    def grants(self, *, include_revoked: bool = False) -> pd.DataFrame:
        """Grants and denies, one row each (active ones unless ``include_revoked``)."""
        with read(self._state.engine) as conn:
            rows = _grants_in_order(conn)
        records = [
            {"id": r.grant_id, **_record(r), "created": r.created, "revoked": r.revoked}
            for r in rows
            if include_revoked or r.revoked is None
        ]
        columns = ["id", *RECORD_FIELDS, "created", "revoked"]
        return pd.DataFrame(records, columns=columns, dtype=object)

    # -- changing ---------------------------------------------------------------------
    def add_principal(
        self, name: str, *, roles: Sequence[str] = (), attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Register a principal (a person or service) with its roles."""
        check_name(name, "the principal name")
        if isinstance(roles, str):
            raise ConfigurationError("roles= takes a list, e.g. roles=['analyst']")
        with transaction(self._state.engine) as tx:
            if any(r.name == name for r in _principals(tx.conn)):
                raise ConfigurationError(f"principal {name!r} already exists")
            _insert_principal(tx.conn, name, roles, attributes or {}, utcnow())
            self._changed(tx, "policy.add_principal", {"principal": name, "roles": sorted(roles)})

    def add_purpose(
        self, name: str, *, description: str, lawful_basis: str, parent: str | None = None
    ) -> None:
        """Register a purpose; a grant for ``parent`` also covers this purpose."""
        check_name(name, "the purpose name")
        with transaction(self._state.engine) as tx:
            known = {r.name for r in _purposes(tx.conn)}
            if name in known:
                raise ConfigurationError(f"purpose {name!r} already exists")
            if parent is not None and parent not in known:
                raise ConfigurationError(f"parent purpose {parent!r} is not registered")
            about = {"description": description, "lawful_basis": lawful_basis, "parent": parent}
            _insert_purpose(tx.conn, name, about, utcnow())
            details = {"purpose": name, "parent": parent, "lawful_basis": lawful_basis}
            self._changed(tx, "policy.add_purpose", details)

    def add_grant(self, *, effect: str, **selectors: Any) -> str:
        """Store one grant or deny after checking it against the vault; return its id."""
        item = _grants.shape({"effect": effect, **selectors})
        with transaction(self._state.engine) as tx:
            record = _grants.check(
                item,
                purposes=(r.name for r in _purposes(tx.conn)),
                principals=(r.name for r in _principals(tx.conn)),
                schemas=_schemas(tx.conn),
                now=datetime.now(UTC),
            )
            grant_id = _insert_grant(tx.conn, record)
            self._changed(tx, f"policy.{effect}", {"grant_id": grant_id, **present(record)})
        return grant_id

    def revoke(self, grant_id: str) -> None:
        """Revoke a grant or deny; it stops matching at once."""
        with transaction(self._state.engine) as tx:
            found = sealed.update(
                tx.conn,
                grants,
                sa.and_(grants.c.grant_id == grant_id, grants.c.revoked.is_(None)),
                {"revoked": utcnow()},
            )
            if found != 1:
                raise NotFoundError(f"no active grant {grant_id!r}; see vault.policy.grants()")
            self._changed(tx, "policy.revoke", {"grant": grant_id})

    # -- policies as code -------------------------------------------------------------
    def to_yaml(self) -> str:
        """The whole policy as YAML (principals, purposes, active grants).

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> vault.add_purpose("care", description="Treating patients", lawful_basis="GDPR 9(2)(h)")
        >>> vault.add_principal("dr.lee", roles=["clinician"])
        >>> _ = vault.grant(role="clinician", dataset="patients", purpose="care", mode="raw")
        >>> text = vault.policy.to_yaml()
        >>> vault.policy.load_yaml(text)  # loading what was exported changes nothing
        >>> vault.policy.to_yaml() == text
        True
        """
        with read(self._state.engine) as conn:
            version = _state(conn)[0]
            people = {r.name: _principal(r) for r in _principals(conn)}
            why = {r.name: _purpose(r) for r in _purposes(conn)}
            rows = [r for r in _grants_in_order(conn) if r.revoked is None]
        rules = [{"id": r.grant_id, **present(_record(r))} for r in rows]
        return _policy_yaml.dump(version=version, principals=people, purposes=why, grants=rules)

    def load_yaml(self, text: str) -> None:
        """Replace the whole policy with the YAML document ``text`` (one audited change).

        Grants whose ``id`` and content are unchanged keep their ids; grants
        missing from the document are revoked. Errors name the line and field.
        """
        doc = _policy_yaml.parse(text)
        with contextlib.suppress(_Unchanged):
            self._load(doc)

    def _load(self, doc: _policy_yaml.PolicyDocument) -> None:
        with transaction(self._state.engine) as tx:
            active = {r.grant_id: _record(r) for r in _active_grants(tx.conn)}
            changes = plan(doc, active, schemas=_schemas(tx.conn), now=datetime.now(UTC))
            sealed.update(
                tx.conn,
                grants,
                sa.and_(grants.c.revoked.is_(None), grants.c.grant_id.not_in(changes.keep)),
                {"revoked": utcnow()},
            )
            sealed.delete(tx.conn, principals, None)
            sealed.delete(tx.conn, purposes, None)
            now = utcnow()
            for name, p in doc.principals.items():
                check_name(name, "the principal name")
                _insert_principal(tx.conn, name, p["roles"], p["attributes"], now)
            for name, p in doc.purposes.items():
                check_name(name, "the purpose name")
                _insert_purpose(tx.conn, name, p, now)
            for record in changes.add:
                _insert_grant(tx.conn, record)
            if _policy_hash(tx.conn) == _state(tx.conn)[1]:
                raise _Unchanged  # roll back the rewrite: same policy, same version
            counts = {"principals": len(doc.principals), "purposes": len(doc.purposes)}
            counts |= {"grants_kept": len(changes.keep), "grants_added": len(changes.add)}
            self._changed(tx, "policy.load", {**counts, "grants_revoked": len(changes.revoke)})

    # -- internals --------------------------------------------------------------------
    def _changed(self, tx: Tx, action: str, details: dict[str, Any]) -> None:
        version, _ = _state(tx.conn)
        digest = _policy_hash(tx.conn)
        values = {"version": version + 1, "hash": digest}
        if sealed.update(tx.conn, policy_state, None, values) == 0:
            sealed.insert(tx.conn, policy_state, {"id": 1, **values})
        self._audit.append(
            tx,
            principal=self._state.actor,
            purpose=ADMIN_PURPOSE,
            action=action,
            outcome="ok",
            details={**details, "policy_version": version + 1, "policy_hash": digest},
        )


# --- helpers --------------------------------------------------------------------------------
class _Unchanged(Exception):
    """Raised inside a load whose result equals the current policy."""


_JSON_FIELDS = ("columns", "tags", "row_filter")  # stored as canonical JSON text
#: Record fields stored in a column of another name: tags live in the column first named
#: ``categories``, so vaults written before the rename open and hash as before.
_COLUMN = {"tags": "categories"}


def _json(value: Any) -> str:
    return canonical_json(value).decode()


def _state(conn: sa.Connection) -> tuple[int, str]:
    rows = sealed.scope_rows(conn, policy_state)
    row = rows[0] if rows else None
    return (int(row.version), str(row.hash)) if row else (0, hashlib.sha256(b"").hexdigest())


def _principals(conn: sa.Connection) -> list[Any]:
    """Every principal, by name, read whole and checked."""
    return sorted(sealed.scope_rows(conn, principals), key=lambda r: str(r.name))


def _purposes(conn: sa.Connection) -> list[Any]:
    """Every purpose, by name, read whole and checked."""
    return sorted(sealed.scope_rows(conn, purposes), key=lambda r: str(r.name))


def _active_grants(conn: sa.Connection) -> list[Any]:
    """Every grant and deny not revoked, by id, read whole and checked."""
    rows = [r for r in sealed.scope_rows(conn, grants) if r.revoked is None]
    return sorted(rows, key=lambda r: str(r.grant_id))


def _policy_hash(conn: sa.Connection) -> str:
    state = {
        "principals": [[r.name, r.roles, r.attributes] for r in _principals(conn)],
        "purposes": [[r.name, r.lawful_basis, r.parent] for r in _purposes(conn)],
        "grants": [
            {"id": r.grant_id, **{_COLUMN.get(k, k): v for k, v in _record(r).items()}}
            for r in _active_grants(conn)
        ],
    }
    return hashlib.sha256(canonical_json(state)).hexdigest()


def _record(row: Any) -> dict[str, Any]:
    """A stored grant row as its record (see :mod:`privml.policy._grants`)."""
    out = {k: getattr(row, _COLUMN.get(k, k)) for k in RECORD_FIELDS}
    for key in _JSON_FIELDS:
        out[key] = json.loads(out[key]) if out[key] else None
    return out


def _grants_in_order(conn: sa.Connection) -> list[Any]:
    """Every grant and deny, revoked ones too, in the order they were made."""
    return sorted(sealed.scope_rows(conn, grants), key=lambda r: (r.created, r.grant_id))


def _principal(row: Any) -> dict[str, Any]:
    return {"roles": json.loads(row.roles), "attributes": json.loads(row.attributes)}


def _purpose(row: Any) -> dict[str, Any]:
    return {"description": row.description, "lawful_basis": row.lawful_basis, "parent": row.parent}


def _insert_grant(conn: sa.Connection, record: Mapping[str, Any]) -> str:
    grant_id = "g-" + secrets.token_hex(6)
    row = {k: record[k] for k in RECORD_FIELDS}
    for key in _JSON_FIELDS:
        row[key] = _json(record[key]) if record[key] is not None else None
    stored = {_COLUMN.get(k, k): v for k, v in row.items()}
    values = {"grant_id": grant_id, **stored, "created": utcnow(), "revoked": None}
    sealed.insert(conn, grants, values)
    return grant_id


def _insert_principal(
    conn: sa.Connection, name: str, roles: Iterable[str], attributes: Mapping[str, Any], now: str
) -> None:
    roles_json, attributes_json = _json(sorted(set(roles))), _json(dict(attributes))
    values = {"name": name, "roles": roles_json, "attributes": attributes_json, "created": now}
    sealed.insert(conn, principals, values)


def _insert_purpose(conn: sa.Connection, name: str, about: Mapping[str, Any], now: str) -> None:
    values = {
        "name": name,
        "description": str(about["description"]),
        "lawful_basis": str(about["lawful_basis"]),
        "parent": about.get("parent"),
        "created": now,
    }
    sealed.insert(conn, purposes, values)


def _schemas(conn: sa.Connection) -> dict[str, Schema]:
    rows = sealed.scope_rows(conn, datasets)
    return {r.name: Schema.from_dict(json.loads(r.schema)) for r in rows}


def _compile(conn: sa.Connection, digest: str) -> PolicyModel:
    roles = {r.name: tuple(json.loads(r.roles)) for r in _principals(conn)}
    parents = {r.name: r.parent for r in _purposes(conn)}
    compiled = [_grants.to_grant(r.grant_id, _record(r)) for r in _active_grants(conn)]
    return PolicyModel(compiled, parents=parents, roles=roles, policy_hash=digest)
