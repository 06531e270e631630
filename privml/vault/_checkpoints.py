"""DP-SGD checkpoints at rest: sealed state, authenticated rows, a durable drawn count, one holder.

Why a checkpoint is safe at rest: its payload (the model's and the optimizer's
state) is sealed with AES-256-GCM under a key of its own, wrapped by the vault
key, with associated data binding the run's request id, the checkpoint id and
its counts; the stored file's SHA-256 is recorded and checked before
decryption. Its row and its run's row are authenticated rows
(:mod:`privml.storage.sealed`): a copy of the folder without the key reveals
no parameter and cannot edit, swap or move a checkpoint unnoticed
(:class:`~privml.exceptions.IntegrityError`).

Why the ledger never settles on fewer batches than were drawn: the run's row
holds ``drawn_mark``, an upper bound on the batches drawn by every process of
the run since its first checkpoint. It is raised, durably, *before* a batch
past it is drawn, by a lease of :data:`LEASE` batches at a time, so a process
killed at any instant has drawn at most ``drawn_mark`` batches, and a resumed
run counts from it (over-charging at most ``LEASE - 1`` batches, only after a
crash). One live process holds a run at a time: an exclusive OS lock
(``flock``) on a file beside ``meta.db``, which the kernel drops when its
process dies, so a run whose process was killed can be resumed and a run whose
process lives cannot be continued twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._canonical import canonical_json, utcnow
from ..crypto.keys import new_data_key
from ..exceptions import (
    AccessDenied,
    ConfigurationError,
    DecryptionError,
    IntegrityError,
    NotFoundError,
)
from ..storage import sealed
from ..storage.engine import read, transaction
from ..storage.tables import training_checkpoints, training_runs
from ._model_bytes import seal, unseal

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..storage.objects import Storage
    from ._state import VaultState

__all__ = ["LEASE", "CheckpointRecord", "RunHold", "TrainingCheckpoints"]

#: Batches by which ``drawn_mark`` is raised at a time: one durable write per LEASE batches.
LEASE = 16


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint's authenticated metadata (no payload): its run and its counts."""

    id: str
    request_id: str
    dataset: str
    version: int
    spec: dict[str, Any]
    plan: dict[str, Any]
    drawn_mark: int
    steps_taken: int
    batches_drawn: int
    rows_drawn: int
    file: str
    content_hash: str
    wrapped_key: bytes


class RunHold:
    """The exclusive hold of one live process on a run (an OS file lock)."""

    def __init__(self, path: Path, request_id: str) -> None:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise ConfigurationError(
                f"the DP-SGD run of reservation {request_id!r} is being continued by a live "
                "process (its own block, or another resume): one process at a time continues "
                "a run; resume it once that process has ended"
            ) from None

    def release(self) -> None:
        """Let another process continue the run (the kernel also does when this one dies)."""
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class TrainingCheckpoints:
    """The DP-SGD checkpoints one session's principal and purpose may write and resume."""

    #: Batches by which a run's durable mark is raised at a time (:data:`LEASE`).
    lease = LEASE

    def __init__(
        self,
        *,
        state: VaultState,
        storage: Storage,
        audit: AuditLog,
        principal: str,
        purpose: str,
    ) -> None:
        self._state = state
        self._storage = storage
        self._audit = audit
        self.principal = principal
        self.purpose = purpose

    # -- writing ------------------------------------------------------------------------
    def save(
        self,
        *,
        request_id: str,
        dataset: str,
        version: int,
        spec: dict[str, Any],
        plan: dict[str, Any],
        taken: int,
        drawn: int,
        rows: int,
        payload: bytes,
    ) -> str:
        """Seal ``payload``, store it, and record the checkpoint (audited); its id."""
        checkpoint_id = f"ckpt-{secrets.token_hex(12)}:{request_id}"  # names its run
        key = new_data_key()
        slot = _slot(request_id, checkpoint_id, taken, drawn, rows)
        relative = self._storage.name_for(f"checkpoints/{dataset}/{checkpoint_id[:29]}", ".bin")
        digest = self._storage.write(relative, seal(key, slot, payload))
        with self._storage.uncommitted(relative), transaction(self._state.engine) as tx:
            run = _run_row(tx.conn, request_id)
            if run is None:
                sealed.insert(
                    tx.conn,
                    training_runs,
                    {
                        "request_id": request_id,
                        "dataset": dataset,
                        "version": version,
                        "principal": self.principal,
                        "purpose": self.purpose,
                        "spec": canonical_json(spec).decode(),
                        "plan": canonical_json(plan).decode(),
                        "drawn_mark": drawn,
                        "created": utcnow(),
                    },
                )
            else:
                self._check_owner(run, request_id)
                if int(run.drawn_mark) < drawn:
                    sealed.update_row(tx.conn, training_runs, run, {"drawn_mark": drawn})
            sealed.insert(
                tx.conn,
                training_checkpoints,
                {
                    "id": checkpoint_id,
                    "request_id": request_id,
                    "steps_taken": taken,
                    "batches_drawn": drawn,
                    "rows_drawn": rows,
                    "file": relative,
                    "content_hash": digest,
                    "wrapped_key": self._state.key.wrap(key, purpose=slot),
                    "created": utcnow(),
                },
            )
            self._audit.append(
                tx,
                principal=self.principal,
                purpose=self.purpose,
                action="dp.train.checkpoint",
                outcome="ok",
                dataset=dataset,
                version=version,
                details={
                    "request_id": request_id,
                    "checkpoint": checkpoint_id,
                    "steps_taken": taken,
                    "batches_drawn": drawn,
                    "content_hash": digest,
                },
            )
        return checkpoint_id

    def raise_mark(self, request_id: str, at_least: int) -> int:
        """Raise the run's durable drawn mark to at least ``at_least``; the mark now."""
        with transaction(self._state.engine) as tx:
            run = _run_row(tx.conn, request_id)
            if run is None:
                raise IntegrityError(
                    f"the checkpointed run {request_id!r} has no row any more: the vault's "
                    "metadata was edited without the key; no more batches are drawn"
                )
            mark = int(run.drawn_mark)
            if mark < at_least:
                sealed.update_row(tx.conn, training_runs, run, {"drawn_mark": at_least})
                mark = at_least
        return mark

    # -- reading ------------------------------------------------------------------------
    def find(self, checkpoint_id: str) -> CheckpointRecord:
        """A checkpoint of this principal and purpose, its rows checked (no payload read)."""
        if (
            not isinstance(checkpoint_id, str)
            or not checkpoint_id.startswith("ckpt-")
            or checkpoint_id[29:30] != ":"
        ):
            raise ConfigurationError(
                "resume= takes a checkpoint id as run.checkpoint() returned it ('ckpt-...')"
            )
        request_id = checkpoint_id[30:]
        with read(self._state.engine) as conn:
            # Every run row MAC-checked (a forged or copied one is caught here), then the
            # run's checkpoints as a whole against their head (a deleted one is caught).
            runs = sealed.check_rows(conn, training_runs, sa.true())
            rows = sealed.scope_rows(conn, training_checkpoints, request_id)
            run = _run_row(conn, request_id)
        found = [r for r in rows if r.id == checkpoint_id]
        if not found:
            if rows or any(r.request_id == request_id for r in runs):
                raise IntegrityError(
                    f"checkpoint {checkpoint_id!r} is missing from its run's rows: the "
                    "vault's metadata was edited without the key"
                )
            raise NotFoundError(f"no checkpoint {checkpoint_id!r} in this vault")
        row = found[0]
        if run is None:
            raise IntegrityError(
                f"checkpoint {checkpoint_id!r} names a run with no row: the vault's metadata "
                "was edited without the key"
            )
        self._check_owner(run, request_id)
        return CheckpointRecord(
            id=checkpoint_id,
            request_id=request_id,
            dataset=str(run.dataset),
            version=int(run.version),
            spec=json.loads(run.spec),
            plan=json.loads(run.plan),
            drawn_mark=int(run.drawn_mark),
            steps_taken=int(row.steps_taken),
            batches_drawn=int(row.batches_drawn),
            rows_drawn=int(row.rows_drawn),
            file=str(row.file),
            content_hash=str(row.content_hash),
            wrapped_key=bytes(row.wrapped_key),
        )

    def payload(self, record: CheckpointRecord) -> bytes:
        """The checkpoint's payload, its file's hash and its seal checked."""
        slot = _slot(
            record.request_id,
            record.id,
            record.steps_taken,
            record.batches_drawn,
            record.rows_drawn,
        )
        blob = self._storage.read_checked(record.file, expected_hash=record.content_hash)
        try:
            key = self._state.key.unwrap(record.wrapped_key, purpose=slot)
            return unseal(key, slot, blob, what=f"checkpoint {record.id!r}")
        except DecryptionError as err:
            raise IntegrityError(f"{err}: it was modified or moved") from None

    def hold(self, request_id: str) -> RunHold:
        """This process's exclusive hold on the run (refused while another process holds it)."""
        url = self._state.engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            raise ConfigurationError(
                "checkpointing a DP-SGD run needs a vault whose metadata is in its folder "
                "(SQLite): the lock that keeps one live process per run is a file beside it"
            )
        name = hashlib.sha256(f"privml-run|{request_id}".encode()).hexdigest()[:32]
        return RunHold(Path(url.database).parent / "runs" / f"{name}.lock", request_id)

    def _check_owner(self, run: Any, request_id: str) -> None:
        if (run.principal, run.purpose) != (self.principal, self.purpose):
            raise AccessDenied(
                f"the DP-SGD run {request_id!r} and its checkpoints belong to another principal "
                f"or purpose; principal {self.principal!r}, purpose {self.purpose!r} may not "
                "checkpoint or resume it",
                principal=self.principal,
                purpose=self.purpose,
                dataset=str(run.dataset),
            )


def _run_row(conn: sa.Connection, request_id: str) -> Any:
    rows = sealed.scope_rows(conn, training_runs, request_id)
    return rows[0] if rows else None


def _slot(request_id: str, checkpoint_id: str, taken: int, drawn: int, rows: int) -> str:
    return f"dp-checkpoint|{request_id}|{checkpoint_id}|{taken}|{drawn}|{rows}"
