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
from ..policy import _yaml as _policy_yaml
from ..policy._model import Grant, PolicyModel, Predicate, check_mode
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
            rows = _principals(conn)
        return pd.DataFrame(
            [
                {
                    "name": r.name,
                    "roles": json.loads(r.roles),
                    "attributes": json.loads(r.attributes),
                }
                for r in rows
            ],
            columns=["name", "roles", "attributes"],
        )

    def purposes(self) -> pd.DataFrame:
        """Registered purposes with their description, lawful basis and parent."""
        with read(self._state.engine) as conn:
            rows = _purposes(conn)
        columns = ["name", "description", "lawful_basis", "parent"]
        records = [{c: getattr(r, c) for c in columns} for r in rows]
        return pd.DataFrame(records, columns=columns, dtype=object)

    def grants(self, *, include_revoked: bool = False) -> pd.DataFrame:
        """Grants and denies, one row each (active ones unless ``include_revoked``)."""
        columns = ["id", "effect", "role", "principal", "dataset", "purpose", "mode"]
        columns += ["columns", "categories", "row_filter", "expires", "created", "revoked"]
        frame = pd.DataFrame(self._grant_rows(include_revoked), columns=columns, dtype=object)
        return frame

    def _grant_rows(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        with read(self._state.engine) as conn:
            rows = sorted(sealed.scope_rows(conn, grants), key=lambda r: (r.created, r.grant_id))
        return [_grant_dict(r) for r in rows if include_revoked or r.revoked is None]

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
            sealed.insert(
                tx.conn,
                principals,
                {
                    "name": name,
                    "roles": _json(sorted(set(roles))),
                    "attributes": _json(dict(attributes or {})),
                    "created": utcnow(),
                },
            )
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
            sealed.insert(
                tx.conn,
                purposes,
                {
                    "name": name,
                    "description": description,
                    "lawful_basis": lawful_basis,
                    "parent": parent,
                    "created": utcnow(),
                },
            )
            self._changed(
                tx,
                "policy.add_purpose",
                {"purpose": name, "parent": parent, "lawful_basis": lawful_basis},
            )

    def add_grant(self, *, effect: str, **selectors: Any) -> str:
        """Store one grant or deny after checking it against the vault; return its id."""
        item = _shape({"effect": effect, **selectors})
        with transaction(self._state.engine) as tx:
            row = _resolve(item, *_context(tx.conn))
            sealed.insert(tx.conn, grants, row)
            self._changed(tx, f"policy.{effect}", _public(row))
        return str(row["grant_id"])

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
        people = {
            r["name"]: {"roles": r["roles"], "attributes": r["attributes"]}
            for r in self.principals().to_dict("records")
        }
        why = {
            r["name"]: {k: r[k] for k in ("description", "lawful_basis", "parent")}
            for r in self.purposes().to_dict("records")
        }
        rules = []
        for g in self._grant_rows():
            rules.append(
                {k: v for k, v in g.items() if k not in ("created", "revoked") and v is not None}
            )
        return _policy_yaml.dump(version=version, principals=people, purposes=why, grants=rules)

    def load_yaml(self, text: str) -> None:
        """Replace the whole policy with the YAML document ``text`` (one audited change).

        Grants whose ``id`` and content are unchanged keep their ids; grants
        missing from the document are revoked. Errors name the line and field.
        """
        doc = _policy_yaml.parse(text, check_grant=_shape)
        for name, item in doc.purposes.items():
            parent = item.get("parent")
            if parent is not None and parent not in doc.purposes:
                line = doc.lines.get(f"purposes.{name}.parent", 0)
                raise ConfigurationError(
                    f"policy YAML line {line}, purposes.{name}.parent: unknown purpose {parent!r}"
                )
        with contextlib.suppress(_Unchanged):
            self._load(doc)

    def _load(self, doc: _policy_yaml.PolicyDocument) -> None:
        with transaction(self._state.engine) as tx:
            schemas = _schemas(tx.conn)
            active = {r.grant_id: _grant_dict(r) for r in _active_grants(tx.conn)}
            keep, new_rows = set(), []
            for i, raw in enumerate(doc.grants):
                item = _shape(raw)
                try:
                    row = _resolve(item, set(doc.purposes), set(doc.principals), schemas)
                except ConfigurationError as err:
                    line = doc.lines.get(f"grants[{i}]", 0)
                    raise ConfigurationError(
                        f"policy YAML line {line}, grants[{i}]: {err}"
                    ) from None
                old = active.get(raw.get("id", ""))
                if old is not None and _same(old, row):
                    keep.add(old["id"])
                else:
                    new_rows.append(row)
            sealed.update(
                tx.conn,
                grants,
                sa.and_(grants.c.revoked.is_(None), grants.c.grant_id.not_in(keep)),
                {"revoked": utcnow()},
            )
            sealed.delete(tx.conn, principals, None)
            sealed.delete(tx.conn, purposes, None)
            now = utcnow()
            for name, p in doc.principals.items():
                check_name(name, "the principal name")
                sealed.insert(
                    tx.conn,
                    principals,
                    {
                        "name": name,
                        "roles": _json(sorted(set(p["roles"]))),
                        "attributes": _json(p["attributes"]),
                        "created": now,
                    },
                )
            for name, p in doc.purposes.items():
                check_name(name, "the purpose name")
                sealed.insert(
                    tx.conn,
                    purposes,
                    {
                        "name": name,
                        "description": str(p["description"]),
                        "lawful_basis": str(p["lawful_basis"]),
                        "parent": p.get("parent"),
                        "created": now,
                    },
                )
            for row in new_rows:
                sealed.insert(tx.conn, grants, row)
            if _policy_hash(tx.conn) == _state(tx.conn)[1]:
                raise _Unchanged  # roll back the rewrite: same policy, same version
            self._changed(
                tx,
                "policy.load",
                {
                    "principals": len(doc.principals),
                    "purposes": len(doc.purposes),
                    "grants_kept": len(keep),
                    "grants_added": len(new_rows),
                    "grants_revoked": len(active) - len(keep),
                },
            )

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
        "grants": [_grant_dict(r, with_times=False) for r in _active_grants(conn)],
    }
    return hashlib.sha256(canonical_json(state)).hexdigest()


def _grant_dict(row: Any, *, with_times: bool = True) -> dict[str, Any]:
    out = {
        "id": row.grant_id,
        "effect": row.effect,
        "role": row.role,
        "principal": row.principal,
        "dataset": row.dataset,
        "purpose": row.purpose,
        "mode": row.mode,
        "columns": json.loads(row.columns) if row.columns else None,
        "categories": json.loads(row.categories) if row.categories else None,
        "row_filter": json.loads(row.row_filter) if row.row_filter else None,
        "expires": row.expires,
    }
    if with_times:
        out.update(created=row.created, revoked=row.revoked)
    return out


def _bad(field: str, message: str) -> ConfigurationError:
    err = ConfigurationError(message)
    err.field = field  # type: ignore[attr-defined]  # lets YAML errors point at the field's line
    return err


def _shape(item: Mapping[str, Any]) -> dict[str, Any]:
    """Check one grant's fields on their own (no vault lookups)."""
    out = dict(item)
    effect = out.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise _bad("effect", f"effect must be 'allow' or 'deny', got {effect!r}")
    out["effect"] = effect
    try:
        out["mode"] = "deny" if effect == "deny" else check_mode(str(out.get("mode")))
    except ConfigurationError as err:
        raise _bad("mode", str(err)) from None
    if (out.get("role") is None) == (out.get("principal") is None):
        raise ConfigurationError("give exactly one of role= or principal=")
    for key in ("columns", "categories"):
        value = out.get(key)
        if value is not None and (isinstance(value, str) or not isinstance(value, Iterable)):
            raise _bad(key, f"{key}= takes a list of names, e.g. {key}=['age']")
        if value is not None:
            out[key] = sorted({str(v) for v in value})
    try:
        out["row_filter"] = [Predicate.parse(p) for p in out.get("row_filter") or []]
    except ConfigurationError as err:
        raise _bad("row_filter", str(err)) from None
    try:
        out["expires"] = _expiry(out.get("expires"))
    except ConfigurationError as err:
        raise _bad("expires", str(err)) from None
    return out


def _expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"expires must be an ISO 8601 time, got {value!r}") from None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"expires must be a datetime, got {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _context(conn: sa.Connection) -> tuple[set[str], set[str], dict[str, Schema]]:
    known_purposes = {r.name for r in _purposes(conn)}
    known_principals = {r.name for r in _principals(conn)}
    return known_purposes, known_principals, _schemas(conn)


def _schemas(conn: sa.Connection) -> dict[str, Schema]:
    rows = sealed.scope_rows(conn, datasets)
    return {r.name: Schema.from_dict(json.loads(r.schema)) for r in rows}


def _resolve(
    item: dict[str, Any],
    known_purposes: set[str],
    known_principals: set[str],
    schemas: Mapping[str, Schema],
) -> dict[str, Any]:
    """Check a shaped grant against the vault and return its table row."""
    dataset, purpose = item["dataset"], item["purpose"]
    if dataset not in schemas:
        raise ConfigurationError(f"unknown dataset {dataset!r}; known: {sorted(schemas)}")
    if purpose not in known_purposes:
        raise ConfigurationError(
            f"unknown purpose {purpose!r}; register it with vault.add_purpose({purpose!r}, ...)"
        )
    if item.get("principal") is not None and item["principal"] not in known_principals:
        raise ConfigurationError(
            f"unknown principal {item['principal']!r}; register it with "
            f"vault.add_principal({item['principal']!r}, roles=[...])"
        )
    schema = schemas[dataset]
    for column in item.get("columns") or []:
        if column not in schema:
            raise ConfigurationError(f"dataset {dataset!r} has no column {column!r}")
    tags = {f.category for f in schema.values() if f.category}
    for tag in item.get("categories") or []:
        if tag not in tags:
            raise ConfigurationError(
                f"no column of {dataset!r} has category {tag!r}; categories are {sorted(tags)}"
            )
    kinds = {name: f.kind for name, f in schema.items()}
    for predicate in item["row_filter"]:
        predicate.check(kinds)
    expires = item["expires"]
    if expires is not None and expires <= datetime.now(UTC):
        raise ConfigurationError(f"expires={expires.isoformat()} is already past")
    return {
        "grant_id": "g-" + secrets.token_hex(6),
        "effect": item["effect"],
        "role": item.get("role"),
        "principal": item.get("principal"),
        "dataset": dataset,
        "purpose": purpose,
        "mode": item["mode"],
        "columns": _json(item["columns"]) if item.get("columns") is not None else None,
        "categories": _json(item["categories"]) if item.get("categories") is not None else None,
        "row_filter": _json([p.to_dict() for p in item["row_filter"]])
        if item["row_filter"]
        else None,
        "expires": expires.astimezone(UTC).isoformat() if expires else None,
        "created": utcnow(),
        "revoked": None,
    }


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    """A grant row for the audit log (the selectors are policy, not personal data)."""
    return {k: v for k, v in row.items() if k not in ("created", "revoked") and v is not None}


def _same(old: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    new = _grant_dict(_Row(row), with_times=False)
    return {k: v for k, v in old.items() if k not in ("id", "created", "revoked")} == {
        k: v for k, v in new.items() if k != "id"
    }


class _Row:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.__dict__.update(data)


def _compile(conn: sa.Connection, digest: str) -> PolicyModel:
    roles = {r.name: tuple(json.loads(r.roles)) for r in _principals(conn)}
    parents = {r.name: r.parent for r in _purposes(conn)}
    compiled = []
    for r in _active_grants(conn):
        g = _grant_dict(r)
        compiled.append(
            Grant(
                g["id"],
                g["effect"],
                g["dataset"],
                g["purpose"],
                g["mode"],
                role=g["role"],
                principal=g["principal"],
                columns=frozenset(g["columns"]) if g["columns"] is not None else None,
                categories=frozenset(g["categories"]) if g["categories"] is not None else None,
                row_filter=tuple(Predicate.parse(p) for p in g["row_filter"] or []),
                expires=datetime.fromisoformat(g["expires"]) if g["expires"] else None,
            )
        )
    return PolicyModel(compiled, parents=parents, roles=roles, policy_hash=digest)
