"""The audit log: append-only, hash-chained, MAC'd, with signed checkpoints and an external anchor.

Why tampering is detected:

* Each entry's ``hash`` is SHA-256 over a domain tag, the log id, its ``seq``,
  the previous entry's hash and the canonical JSON of the entry, so changing,
  inserting, deleting or reordering an entry breaks the chain at that ``seq``.
* Each hash also carries an HMAC under a key wrapped by the vault key, so a
  suffix whose hashes were recomputed after an edit ("re-chained") is caught
  at the first forged entry by anyone who can open the vault.
* Every ``checkpoint_every`` entries and at close, the head hash is signed
  with Ed25519 and stored both in ``meta.db`` and in an append-only anchor
  file. Truncating the log (and its checkpoint table) back to an earlier
  state is caught by the anchor, which should live on other storage.

The one window: entries written after the last checkpoint can be dropped from
the tail without a trace (as with any log that is not anchored per entry).
Lower ``checkpoint_every`` to narrow it.

The log also anchors the vault's authenticated metadata rows
(:mod:`privml.storage.sealed`): each entry records, in ``heads``, the scopes of
rows changed since the previous entry (generation and digest), and
:meth:`AuditLog.verify` checks every protected row, every scope's head and that
no head is older than the log (rows restored from an older copy).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._canonical import canonical_json, utcnow
from .exceptions import IntegrityError
from .storage import sealed
from .storage.engine import Tx, read
from .storage.tables import audit_log, checkpoints

__all__ = ["ADMIN_PURPOSE", "AuditLog", "VerifyReport", "route"]

#: The purpose recorded for the key holder's own acts (creating datasets, granting,
#: rotating keys, erasing subjects); no grant can name it.
ADMIN_PURPOSE = "administration"

#: How the request being served in this context reached the vault (client, token, request
#: id), set by the curator server around each request's work: see :func:`route`.
_ROUTE: ContextVar[Mapping[str, str] | None] = ContextVar("privml_route", default=None)


@contextmanager
def route(via: Mapping[str, str]) -> Iterator[None]:
    """Within the block, every audit entry written in this context records ``via``.

    The curator server wraps each request's work in it, so that every entry a served
    request causes (its release, a settlement, a model registered, a refusal written by
    the ledger) names the client's address, the token's id and the request id, as
    ``details["via"]``. An entry that names its own ``via`` keeps it.

    Examples
    --------
    >>> with route({"client": "10.0.0.7", "token": "tok_1"}):
    ...     _routed({"rows": 3})
    {'rows': 3, 'via': {'client': '10.0.0.7', 'token': 'tok_1'}}
    >>> _routed({"rows": 3})
    {'rows': 3}
    """
    token = _ROUTE.set(dict(via))
    try:
        yield
    finally:
        _ROUTE.reset(token)


def _routed(details: dict[str, Any]) -> dict[str, Any]:
    via = _ROUTE.get()
    if via is None or "via" in details:
        return details
    return {**details, "via": dict(via)}


_ENTRY_TAG = b"privml/audit-entry/v1\x00"
_MAC_TAG = b"privml/audit-mac/v1\x00"
_CHECKPOINT_TAG = b"privml/audit-checkpoint/v1\x00"
GENESIS = "0" * 64
_ENTRY_FIELDS = (
    "time",
    "principal",
    "purpose",
    "action",
    "dataset",
    "version",
    "outcome",
    "details",
    "heads",
)
# Statements of every append, built once.
_INSERT = audit_log.insert()
_LAST = sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)


@dataclass(frozen=True)
class VerifyReport:
    """Result of ``vault.audit.verify()``. True when the log is intact.

    Attributes
    ----------
    ok : bool
        No problem found.
    entries_checked : int
        Entries read from the log.
    checkpoints_checked : int
        Signed checkpoints checked (database and anchor file together).
    first_bad_seq : int or None
        Sequence number of the first entry found wrong, missing or forged.
    reason : str
        What was wrong there, or ``"ok"``.
    problems : tuple of (int, str)
        Every problem found in the log, in sequence order.
    row_problems : tuple of str
        Every authenticated metadata row (ledger, policy, datasets, versions,
        keys, models) found modified, added, deleted or rolled back.
    """

    ok: bool
    entries_checked: int
    checkpoints_checked: int
    first_bad_seq: int | None
    reason: str
    problems: tuple[tuple[int, str], ...] = field(default=())
    row_problems: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.ok

    def raise_if_failed(self) -> None:
        """Raise :class:`~privml.exceptions.IntegrityError` if the log is not intact."""
        if not self.ok:
            raise IntegrityError(str(self))

    def __str__(self) -> str:
        if self.ok:
            return (
                f"audit log OK: {self.entries_checked} entries, "
                f"{self.checkpoints_checked} signed checkpoints verified"
            )
        if self.first_bad_seq is None:
            return f"vault metadata TAMPERED: {self.reason}"
        return f"audit log TAMPERED at seq {self.first_bad_seq}: {self.reason}"


def entry_hash(log_id: str, seq: int, prev_hash: str, entry: dict[str, Any]) -> str:
    """Hash of one entry, chained to ``prev_hash``."""
    data = (
        _ENTRY_TAG
        + bytes.fromhex(log_id)
        + seq.to_bytes(8, "big")
        + bytes.fromhex(prev_hash)
        + canonical_json(entry)
    )
    return hashlib.sha256(data).hexdigest()


class AuditLog:
    """The vault's audit log. Reach it as ``vault.audit``; entries are written by the vault.

    Examples
    --------
    >>> vault = getfixture("demo_vault")
    >>> report = vault.audit.verify()
    >>> report.ok
    True
    >>> vault.audit.entries()[["seq", "action", "outcome"]].head(3)
       seq              action outcome
    0    1        vault.create      ok
    1    2         dataset.add      ok
    2    3  policy.add_purpose      ok
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        log_id: str,
        mac_key: bytes,
        signing_key: Ed25519PrivateKey,
        verify_key: Ed25519PublicKey,
        anchor_path: Path,
        checkpoint_every: int,
    ) -> None:
        self._engine = engine
        self.log_id = log_id
        self._mac_key = mac_key
        self._signing_key = signing_key
        self._verify_key = verify_key
        self.anchor_path = anchor_path
        self.checkpoint_every = checkpoint_every

    def close(self) -> None:
        """Drop the MAC and signing keys from memory (the vault calls this when it closes)."""
        for name in ("_mac_key", "_signing_key"):
            self.__dict__.pop(name, None)

    # -- writing ----------------------------------------------------------------------
    def append(
        self,
        tx: Tx,
        *,
        principal: str,
        purpose: str,
        action: str,
        outcome: str,
        dataset: str | None = None,
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Append one entry inside the open transaction ``tx``; return its ``seq``."""
        last_seq, prev = self._head(tx)
        seq = last_seq + 1
        entry = {
            "time": utcnow(),
            "principal": principal,
            "purpose": purpose,
            "action": action,
            "dataset": dataset,
            "version": version,
            "outcome": outcome,
            "details": _routed(details or {}),
            "heads": sealed.take_unlogged(tx.conn) or None,
        }
        digest = entry_hash(self.log_id, seq, prev, entry)
        row = {
            **entry,
            "details": canonical_json(entry["details"]).decode("utf-8"),
            "heads": None if entry["heads"] is None else canonical_json(entry["heads"]).decode(),
        }
        values = {"seq": seq, "prev_hash": prev, "hash": digest, "mac": self._mac(digest), **row}
        tx.conn.execute(_INSERT, values)
        tx.audit_head = (seq, digest)
        if seq % self.checkpoint_every == 0:
            self._checkpoint(tx, seq, digest)
        return seq

    def _head(self, tx: Tx) -> tuple[int, str]:
        """The last entry's ``(seq, hash)``, ``(0, GENESIS)`` for an empty log; read once per
        transaction (after its writer lock: see :func:`privml.storage.engine.transaction`)."""
        if tx.audit_head is None:
            last = tx.conn.execute(_LAST).first()
            tx.audit_head = (int(last.seq), str(last.hash)) if last else (0, GENESIS)
        return tx.audit_head

    def next_seq(self, tx: Tx) -> int:
        """The ``seq`` the next :meth:`append` in ``tx`` gets (``tx`` holds the write lock).

        Lets a change that names its audit entry be written before the entry, so the
        entry records the integrity heads the change moved (a rollback of the change
        is then visible to :meth:`verify`).
        """
        return self._head(tx)[0] + 1

    def checkpoint(self, tx: Tx) -> int | None:
        """Sign the current head if it has no checkpoint yet; return its seq."""
        last = tx.conn.execute(
            sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        if last is None:
            return None
        done = tx.conn.execute(sa.select(sa.func.max(checkpoints.c.seq))).scalar()
        if done is not None and done >= last.seq:
            return None
        self._checkpoint(tx, last.seq, last.hash)
        return int(last.seq)

    def _checkpoint(self, tx: Tx, seq: int, digest: str) -> None:
        taken = tx.conn.execute(sa.select(checkpoints.c.seq).where(checkpoints.c.seq == seq))
        if taken.first() is not None:
            return  # only after tampering (seq reused); verify() reports the mismatch
        time = utcnow()
        signature = self._signing_key.sign(self._checkpoint_message(seq, digest, time)).hex()
        tx.conn.execute(
            checkpoints.insert().values(seq=seq, hash=digest, time=time, signature=signature)
        )
        line = canonical_json(
            {
                "log_id": self.log_id,
                "seq": seq,
                "hash": digest,
                "time": time,
                "signature": signature,
            }
        )
        tx.after_commit.append(lambda: self._append_anchor(line))

    def _append_anchor(self, line: bytes) -> None:
        fd = os.open(self.anchor_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _checkpoint_message(self, seq: int, digest: str, time: str) -> bytes:
        return _CHECKPOINT_TAG + canonical_json(
            {"log_id": self.log_id, "seq": seq, "hash": digest, "time": time}
        )

    def _mac(self, digest: str) -> str:
        return hmac.new(self._mac_key, _MAC_TAG + bytes.fromhex(digest), hashlib.sha256).hexdigest()

    # -- reading ----------------------------------------------------------------------
    def entries(
        self,
        since: int | datetime | None = None,
        principal: str | None = None,
        action: str | None = None,
    ) -> pd.DataFrame:
        """Return audit entries as a DataFrame, oldest first.

        Parameters
        ----------
        since : int or datetime, optional
            Only entries with ``seq >= since`` (int) or written at or after ``since``
            (a naive datetime is read as local time).
        principal, action : str, optional
            Only entries of this principal / action.
        """
        query = sa.select(audit_log).order_by(audit_log.c.seq)
        if isinstance(since, datetime):
            # The log stores UTC ISO strings, which order as text only within one offset.
            stamp = (since if since.tzinfo else since.astimezone()).astimezone(UTC)
            query = query.where(audit_log.c.time >= stamp.isoformat(timespec="microseconds"))
        elif since is not None:
            query = query.where(audit_log.c.seq >= int(since))
        if principal is not None:
            query = query.where(audit_log.c.principal == principal)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        with read(self._engine) as conn:
            rows = [r._asdict() for r in conn.execute(query)]
        frame = pd.DataFrame(rows, columns=[c.name for c in audit_log.columns])
        frame["details"] = [json.loads(d) for d in frame["details"]]
        frame["time"] = pd.to_datetime(frame["time"], format="ISO8601")
        frame["version"] = frame["version"].astype("Int64")
        return frame.drop(columns=["mac", "heads"])

    # -- verification -----------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Check the whole log, its checkpoints and the anchor file.

        Detects modified, inserted, deleted and reordered entries, re-chained
        suffixes, forged checkpoints and truncation back to any state older than
        the last anchored checkpoint.
        """
        problems: list[tuple[int, str]] = []
        with read(self._engine) as conn:
            rows = list(conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)))
            cps = list(conn.execute(sa.select(checkpoints).order_by(checkpoints.c.seq)))
            row_problems = sealed.verify_rows(conn, _logged_heads(rows, problems))
        hashes = self._check_chain(rows, problems)
        last_seq = rows[-1].seq if rows else 0
        anchored = self._read_anchor(problems, last_seq)
        checked = 0
        for source, items in (("checkpoint table", cps), ("anchor file", anchored)):
            for cp in items:
                checked += 1
                self._check_checkpoint(source, cp, hashes, last_seq, problems)
        if cps and not anchored:
            problems.append(
                (
                    cps[0].seq,
                    f"anchor file {str(self.anchor_path)!r} is missing or empty, "
                    "so truncation cannot be ruled out",
                )
            )
        problems.sort(key=lambda p: p[0])
        found = tuple(problems), tuple(row_problems)
        if problems:
            seq, reason = problems[0]
            return VerifyReport(False, len(rows), checked, seq, reason, *found)
        if row_problems:
            return VerifyReport(False, len(rows), checked, None, row_problems[0], *found)
        return VerifyReport(True, len(rows), checked, None, "ok")

    def _check_chain(self, rows: Iterable[Any], problems: list[tuple[int, str]]) -> dict[int, str]:
        hashes: dict[int, str] = {}
        expected, prev = 1, GENESIS
        for row in rows:
            if row.seq != expected:
                problems.append((expected, f"entries {expected}..{row.seq - 1} are missing"))
                expected = row.seq
            entry = {name: getattr(row, name) for name in _ENTRY_FIELDS}
            try:
                entry["details"] = json.loads(row.details)
                entry["heads"] = None if row.heads is None else json.loads(row.heads)
            except ValueError:
                problems.append((row.seq, "details or heads are not valid JSON (entry modified)"))
            recomputed = entry_hash(self.log_id, row.seq, row.prev_hash, entry)
            if row.prev_hash != prev:
                problems.append(
                    (
                        row.seq,
                        "prev_hash does not match the previous entry (inserted, "
                        "deleted or reordered entries)",
                    )
                )
            elif recomputed != row.hash:
                problems.append((row.seq, "entry does not match its hash (entry modified)"))
            elif not hmac.compare_digest(self._mac(row.hash), row.mac):
                problems.append(
                    (
                        row.seq,
                        "entry MAC is invalid (hashes recomputed without the "
                        "vault key: re-chained or forged entry)",
                    )
                )
            hashes[row.seq] = row.hash
            prev, expected = row.hash, row.seq + 1
        return hashes

    def _read_anchor(self, problems: list[tuple[int, str]], last_seq: int) -> list[Any]:
        try:
            lines = self.anchor_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for number, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
                out.append(
                    _Anchored(
                        int(item["seq"]),
                        item["hash"],
                        item["time"],
                        item["signature"],
                        item["log_id"],
                    )
                )
            except (ValueError, KeyError, TypeError):
                problems.append((last_seq + 1, f"anchor file line {number} is not a checkpoint"))
        return out

    def _check_checkpoint(
        self,
        source: str,
        cp: Any,
        hashes: dict[int, str],
        last_seq: int,
        problems: list[tuple[int, str]],
    ) -> None:
        log_id = getattr(cp, "log_id", self.log_id)
        try:
            if log_id != self.log_id:
                raise InvalidSignature
            self._verify_key.verify(
                bytes.fromhex(cp.signature), self._checkpoint_message(cp.seq, cp.hash, cp.time)
            )
        except (InvalidSignature, ValueError):
            problems.append((cp.seq, f"{source}: checkpoint at seq {cp.seq} has a bad signature"))
            return
        if cp.seq > last_seq:
            problems.append(
                (
                    last_seq + 1,
                    f"log ends at seq {last_seq} but the {source} holds a "
                    f"signed checkpoint at seq {cp.seq}: entries were truncated",
                )
            )
        elif cp.seq not in hashes:
            problems.append((cp.seq, f"{source}: checkpointed entry {cp.seq} is missing"))
        elif hashes[cp.seq] != cp.hash:
            problems.append(
                (
                    cp.seq,
                    f"{source}: entry {cp.seq} differs from its signed checkpoint (log rewritten)",
                )
            )


def _logged_heads(
    rows: Iterable[Any], problems: list[tuple[int, str]]
) -> dict[tuple[str, str], tuple[int, str]]:
    """The newest (generation, digest) the log records for each metadata scope.

    A scope's generation grows with every change, so along the log each scope's
    recorded generations must strictly increase: a smaller one means the scope's
    rows were put back to an older copy and then changed again (which would
    otherwise hide the rollback behind the newest entry).
    """
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for row in rows:
        if row.heads is None:
            continue
        try:
            recorded = [(str(t), str(s), int(g), str(d)) for t, s, g, d in json.loads(row.heads)]
        except (ValueError, TypeError):
            problems.append((row.seq, "heads are not valid JSON (entry modified)"))
            continue
        for table, scope, generation, digest in recorded:
            before = out.get((table, scope))
            if before is not None and generation <= before[0]:
                problems.append(
                    (
                        row.seq,
                        f"{table} ({scope or 'whole table'}) went back from generation "
                        f"{before[0]} to {generation}: its rows were rolled back to an older "
                        "copy before this entry",
                    )
                )
            out[(table, scope)] = (generation, digest)
    return out


@dataclass(frozen=True)
class _Anchored:
    seq: int
    hash: str
    time: str
    signature: str
    log_id: str
