"""Dataset versions: validated frames in, encrypted Parquet files and audited reads out.

This is the vault's internal machinery; users reach it through ``Vault`` and ``Session``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._array_fields import ARRAY_KINDS, arrow_array
from .._canonical import canonical_json, utcnow
from .._records import DatasetInfo, DatasetVersion
from .._validation import check_name
from ..accounting._unit import ROW, PrivacyUnit
from ..accounting.budget import Budget
from ..audit import ADMIN_PURPOSE, AuditLog
from ..crypto.keyring import Keyring
from ..crypto.parquet import ParquetCrypto
from ..crypto.pseudonyms import pseudonymize
from ..exceptions import ConfigurationError, DecryptionError, NotFoundError
from ..schema import Schema
from ..storage import sealed
from ..storage.engine import Tx, read, transaction
from ..storage.objects import Storage
from ..storage.tables import datasets, versions
from . import _memory
from ._frame_cache import FrameCache

if TYPE_CHECKING:
    from ._intake_stream import ChunkedSource
    from ._state import VaultState

__all__ = ["DatasetInfo", "DatasetStore", "DatasetVersion"]


class DatasetStore:
    """Writes and reads dataset versions; every write and read is audited."""

    def __init__(
        self, state: VaultState, storage: Storage, keyring: Keyring, audit: AuditLog
    ) -> None:
        self._state = state
        self._storage = storage
        self._keyring = keyring
        self._audit = audit
        self._crypto = ParquetCrypto(keyring.get)
        # decrypted versions kept between reads: only in a curator server (keep_frames),
        # whose callers are not in its process; in-process, nothing keeps a table reachable
        self._frames: FrameCache | None = None
        #: The bound on what a streamed read or write holds (see privml.vault._memory).
        self.memory_limit = _memory.DEFAULT_MEMORY
        state.on_close(self._crypto.forget)

    # -- writing ----------------------------------------------------------------------
    def add(
        self,
        name: str,
        frame: pd.DataFrame | ChunkedSource,
        *,
        schema: Schema,
        budget: Budget,
        clipped: dict[str, int],
        actor: str,
        purpose: str = ADMIN_PURPOSE,
        action: str = "dataset.add",
        extra: dict[str, Any] | None = None,
        derived_from: str | None = None,
        unit: PrivacyUnit = ROW,
    ) -> DatasetVersion:
        with transaction(self._state.engine) as tx:
            taken = sealed.scope_rows(tx.conn, datasets)
            if any(r.name == name for r in taken):  # checked again: another process may have won
                raise ConfigurationError(f"dataset {name!r} exists; add data with add_version()")
            sealed.insert(
                tx.conn,
                datasets,
                {
                    "name": name,
                    "schema": canonical_json(schema.to_dict()).decode(),
                    "budget_epsilon": budget.epsilon,
                    "budget_delta": budget.delta,
                    "derived_from": derived_from,
                    "created": utcnow(),
                    # NULL for "row": what every dataset stored before units were declared reads as
                    "privacy_unit": unit.column,
                    "max_rows_per_unit": None if unit.is_row else unit.max_rows,
                },
            )
            sealed.create_heads(tx.conn, sealed.dataset_tables(), name)
            self._keyring.create(tx.conn, dataset=name, column=None, purpose="footer")
            self._keyring.create(tx.conn, dataset=name, column=None, purpose="pseudonym")
            for column in schema.sensitive:
                self._keyring.create(tx.conn, dataset=name, column=column, purpose="column")
            return self._write(
                tx,
                name,
                1,
                frame,
                schema,
                clipped,
                actor,
                action,
                {
                    "budget": {"epsilon": budget.epsilon, "delta": budget.delta},
                    "privacy_unit": {"unit": unit.name, "max_rows_per_unit": unit.max_rows},
                    **(extra or {}),
                },
                purpose=purpose,
            )

    def append(
        self,
        name: str,
        frame: pd.DataFrame | ChunkedSource,
        *,
        schema: Schema,
        clipped: dict[str, int],
        actor: str,
    ) -> DatasetVersion:
        with transaction(self._state.engine) as tx:
            last = _latest(tx.conn, name)
            return self._write(
                tx, name, last + 1, frame, schema, clipped, actor, "dataset.add_version", {}
            )

    def _write(
        self,
        tx: Tx,
        name: str,
        version: int,
        frame: pd.DataFrame | ChunkedSource,
        schema: Schema,
        clipped: dict[str, int],
        actor: str,
        action: str,
        extra: dict[str, Any],
        *,
        stored: bool = False,
        purpose: str = ADMIN_PURPOSE,
    ) -> DatasetVersion:
        """Encrypt ``frame`` as version ``version``; ``stored`` frames hold pseudonyms already.

        A :class:`ChunkedSource` is validated, encrypted and written chunk by chunk (one
        row group each); its file is committed only once every chunk passed.
        """
        keys = self._keyring.active(tx.conn, dataset=name)
        column_keys = {keys[(c, "column")]: [c] for c in schema.sensitive}
        properties = self._crypto.encryption(
            footer_key=keys[(None, "footer")], column_keys=column_keys
        )
        used = sorted([keys[(None, "footer")], keys[(None, "pseudonym")], *column_keys])
        relative = self._storage.name_for(f"data/{name}/{version}", ".parquet")
        # Written and verified before the row that names it commits: a crash from here on
        # leaves at most an orphan file, never a row without its file.
        if isinstance(frame, pd.DataFrame):
            table = self._encode(tx, name, frame, schema, stored)
            digest = self._storage.write_parquet(relative, table, encryption_properties=properties)
            rows = len(frame)
        else:
            tables = (self._encode(tx, name, chunk, schema, stored) for chunk in frame.chunks())
            digest, rows = self._storage.write_parquet_stream(
                relative, tables, encryption_properties=properties
            )
            clipped = dict(frame.clipped)
        with self._storage.uncommitted(relative):
            created = utcnow()
            sealed.insert(
                tx.conn,
                versions,
                {
                    "dataset": name,
                    "version": version,
                    "rows": rows,
                    "content_hash": digest,
                    "file": relative,
                    "schema_fingerprint": schema.fingerprint,
                    "key_ids": canonical_json(used).decode(),
                    "created": created,
                },
            )
            details = {
                "rows": rows,
                "columns": list(schema.names),
                "content_hash": digest,
                "schema": schema.fingerprint,
                "clipped": clipped,
                **extra,
            }
            self._audit.append(
                tx,
                principal=actor,
                purpose=purpose,
                action=action,
                outcome="ok",
                dataset=name,
                version=version,
                details=details,
            )
            return DatasetVersion(name, version, rows, digest, created)

    def _encode(
        self, tx: Tx, name: str, frame: pd.DataFrame, schema: Schema, stored: bool
    ) -> pa.Table:
        """``frame`` as the Arrow table stored: pseudonymized identifiers (unless ``stored``)."""
        replaced = {}
        for column, f in schema.items():
            if f.kind == "identifier" and f.pseudonymize and not stored:
                key = self._keyring.pseudonym_key(tx.conn, dataset=name, domain=f.domain)
                values = [v if isinstance(v, str) else None for v in frame[column].astype(object)]
                replaced[column] = pd.Series(pseudonymize(values, key), dtype="str")
        if replaced:
            frame = frame.assign(**replaced)
        arrays = {c: arrow_array(frame[c], f) for c, f in schema.items() if f.kind in ARRAY_KINDS}
        if not arrays:
            return pa.Table.from_pandas(frame, preserve_index=False)
        # lists of arrays are built whole (one buffer per column), not value by value
        plain = pa.Table.from_pandas(frame.drop(columns=list(arrays)), preserve_index=False)
        columns = [arrays[c] if c in arrays else plain.column(c) for c in frame.columns]
        names = [str(c) for c in frame.columns]
        return pa.Table.from_arrays(columns, names=names, metadata=plain.schema.metadata)

    # -- reading ----------------------------------------------------------------------
    def all(self) -> list[DatasetInfo]:
        with read(self._state.engine) as conn:
            rows = sorted(sealed.scope_rows(conn, datasets), key=lambda r: str(r.name))
            vers = {r.name: _versions(conn, r.name) for r in rows}
        out = []
        for row in rows:
            mine = tuple(
                DatasetVersion(v.dataset, v.version, v.rows, v.content_hash, v.created)
                for v in vers[row.name]
            )
            schema = Schema.from_dict(json.loads(row.schema))
            out.append(
                DatasetInfo(
                    row.name,
                    schema,
                    Budget(epsilon=row.budget_epsilon, delta=row.budget_delta),
                    mine,
                    PrivacyUnit.stored(row.privacy_unit, row.max_rows_per_unit),
                )
            )
        return out

    def schema(self, dataset: str) -> Schema:
        """The schema of ``dataset``; :class:`NotFoundError` if there is no such dataset."""
        check_name(dataset, "dataset name")
        with read(self._state.engine) as conn:
            row = _dataset_row(conn, dataset)
        if row is None:
            raise NotFoundError(f"no dataset {dataset!r}; see vault.datasets()")
        return Schema.from_dict(json.loads(row.schema))

    def unit(self, dataset: str) -> PrivacyUnit:
        """The privacy unit of ``dataset`` (read from its authenticated row)."""
        check_name(dataset, "dataset name")
        with read(self._state.engine) as conn:
            row = _dataset_row(conn, dataset)
        if row is None:
            raise NotFoundError(f"no dataset {dataset!r}; see vault.datasets()")
        return PrivacyUnit.stored(row.privacy_unit, row.max_rows_per_unit)

    def bounding_key(self, dataset: str, request_id: str) -> bytes:
        """The key that ranks a release's rows for contribution bounding (one per release).

        Derived (HKDF-SHA256) from the dataset's pseudonym key and the release's
        request id: unknown to anyone without the vault key, different for every
        release, and the same whenever one release is computed again.
        """
        with read(self._state.engine) as conn:
            keys = self._keyring.active(conn, dataset=dataset)
        info = b"privml/privacy-unit/v1\x00" + dataset.encode() + b"\x00" + request_id.encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._keyring.get(keys[(None, "pseudonym")])
        )

    def all_budgets(self) -> dict[str, Budget]:
        """Every dataset's budget, by name."""
        with read(self._state.engine) as conn:
            rows = sealed.scope_rows(conn, datasets)
        return {r.name: Budget(epsilon=r.budget_epsilon, delta=r.budget_delta) for r in rows}

    def budget(self, dataset: str) -> Budget:
        """The declared total budget of ``dataset``; :class:`NotFoundError` if unknown."""
        budgets = self.all_budgets()
        if dataset not in budgets:
            raise NotFoundError(f"no dataset {dataset!r}; see vault.datasets()")
        return budgets[dataset]

    def derived_from(self, dataset: str) -> str | None:
        """The source dataset of a derived view (e.g. a minimized one), else None."""
        check_name(dataset, "dataset name")
        with read(self._state.engine) as conn:
            row = _dataset_row(conn, dataset)
        return None if row is None else row.derived_from

    def latest_version(self, dataset: str) -> int:
        """The newest version number of ``dataset``; :class:`NotFoundError` if unknown."""
        check_name(dataset, "dataset name")
        with read(self._state.engine) as conn:
            found = _versions(conn, dataset)
        if not found:
            raise NotFoundError(f"no dataset {dataset!r}; see vault.datasets()")
        return int(found[-1].version)

    def load(
        self,
        dataset: str,
        columns: list[str],
        version: int | None,
        *,
        dictionary: Sequence[str] = (),
    ) -> tuple[pd.DataFrame, int, str]:
        """Decrypt ``columns`` of a version (the latest by default), unaudited.

        Only sessions call this, and they audit what they release.
        Returns the frame, the version number and the file's content hash.
        The ``dictionary`` columns (text or identifiers) come back as pandas
        categoricals of their stored values, read from the file's dictionary
        pages without hashing a value per row (for :meth:`tokens`).
        """
        ver, schema = self._readable(dataset, version)
        dictionary = [c for c in columns if c in dictionary]
        key = (dataset, ver.version, ver.content_hash, ver.file, tuple(columns), tuple(dictionary))
        kept = self._frames.get(key) if self._frames is not None else None
        if kept is not None:
            return kept, ver.version, ver.content_hash
        frame = self._storage.read_parquet(
            ver.file,
            expected_hash=ver.content_hash,
            convert=lambda table: schema.coerce(table.to_pandas(), categorical=dictionary),
            columns=columns,
            decryption_properties=self._crypto.decryption(),
            **({"read_dictionary": dictionary} if dictionary else {}),
        )
        if self._frames is not None:
            self._frames.put(key, frame)
        return frame, ver.version, ver.content_hash

    def _readable(self, dataset: str, version: int | None) -> tuple[Any, Schema]:
        """The checked row of a version (the latest by default) whose keys all still exist,
        and the dataset's schema, read in the same transaction."""
        check_name(dataset, "dataset name")
        with read(self._state.engine) as conn:
            found = _versions(conn, dataset)
            if version is not None:
                found = [v for v in found if v.version == version]
            ver = found[-1] if found else None
            if ver is None:
                raise NotFoundError(f"dataset {dataset!r} has no version {version!r}")
            shredded = self._keyring.destroyed(conn, json.loads(ver.key_ids))
            if shredded:
                raise DecryptionError(
                    f"version {ver.version} of dataset {dataset!r} was crypto-shredded: its data "
                    f"keys were destroyed at {shredded[0][1]} (key rotation or subject erasure); "
                    "read a newer version"
                )
            self._keyring.active(conn, dataset=dataset)
            row = _dataset_row(conn, dataset)
        if row is None:  # a version without its dataset row: the metadata was edited
            raise NotFoundError(f"no dataset {dataset!r}; see vault.datasets()")
        return ver, Schema.from_dict(json.loads(row.schema))

    def size(self, dataset: str, columns: list[str], version: int | None) -> tuple[int, int]:
        """A version's row count and an estimate of the bytes ``columns`` take decrypted
        (8 bytes a value; 32 for text; arrays by their size), from its checked metadata
        row: no file is read."""
        ver, schema = self._readable(dataset, version)
        width = sum(schema[c].stored_bytes for c in columns)
        return int(ver.rows), int(ver.rows) * max(width, 8)

    def stream(
        self, dataset: str, columns: list[str], version: int | None
    ) -> tuple[Iterator[pd.DataFrame], int, str]:
        """Decrypt ``columns`` of a version chunk by chunk, unaudited, in bounded memory.

        Returns the chunks (each at most :attr:`memory_limit`-sized, see
        :mod:`privml.vault._memory`), the version number and the file's content hash.
        The version is looked up (and a shredded one refused) now; the file is read,
        hashed before the first chunk and after the last, as the chunks are drawn.
        """
        ver, schema = self._readable(dataset, version)
        size = int(ver.rows) * max(sum(schema[c].stored_bytes for c in columns), 8)
        rows = _memory.chunk_rows(self.memory_limit, size / max(int(ver.rows), 1))
        batches = self._storage.read_parquet_stream(
            ver.file,
            expected_hash=ver.content_hash,
            columns=columns,
            batch_rows=rows,
            decryption_properties=self._crypto.decryption(),
        )
        chunks = (schema.coerce(b.to_pandas()) for b in batches)
        return chunks, int(ver.version), str(ver.content_hash)

    def keep_frames(self, max_bytes: int) -> None:
        """Keep decrypted versions between reads, up to ``max_bytes`` (dropped at close).

        For a curator server only: its callers reach the vault through its routes,
        never through its process's memory (see :mod:`privml.vault._frame_cache`).
        """
        if self._frames is None:
            self._frames = FrameCache(max_bytes)
            self._state.on_close(self._frames.clear)

    # -- rotation and erasure ---------------------------------------------------------
    def rotate(
        self,
        name: str,
        *,
        actor: str,
        action: str,
        keep: Callable[[pd.DataFrame], np.ndarray] | None = None,
        details: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """Rewrite the latest version under fresh keys and destroy the old ones.

        Every earlier version becomes unreadable (crypto-shredding). ``keep``
        selects the rows of the new version (all by default). The pseudonym key
        is kept, so pseudonyms stay stable across the rotation.
        """
        schema = self.schema(name)
        latest = self.latest_version(name)
        frame, _, _ = self.load(name, list(schema.names), latest)
        extra = dict(details or {})
        if keep is not None:
            before = len(frame)
            frame = frame.loc[keep(frame)].reset_index(drop=True)
            extra["rows_removed"] = before - len(frame)
        with transaction(self._state.engine) as tx:
            if _latest(tx.conn, name) != latest:
                raise ConfigurationError(f"dataset {name!r} changed during the rotation; retry")
            old = self._keyring.active(tx.conn, dataset=name)
            # Column and footer keys only: pseudonyms stay stable, field-cipher tokens stay valid.
            doomed = [k for (_, purpose), k in old.items() if purpose in ("column", "footer")]
            self._keyring.destroy(tx.conn, doomed)
            self._keyring.create(tx.conn, dataset=name, column=None, purpose="footer")
            for column in schema.sensitive:
                self._keyring.create(tx.conn, dataset=name, column=column, purpose="column")
            shredded = list(range(1, latest + 1))
            extra.update(destroyed_keys=len(doomed), shredded_versions=shredded)
            written = self._write(
                tx, name, latest + 1, frame, schema, {}, actor, action, extra, stored=True
            )
        self._crypto.forget()
        return written

    def tokens(
        self, dataset: str, column: str, values: pd.Series, *, every_category: bool = False
    ) -> pd.Series:
        """Stable keyed tokens for a column's values (HMAC-SHA256, per-dataset key).

        Each distinct value present is hashed once, and the result is categorical
        (codes into the distinct tokens, in order of first appearance), so this
        costs one HMAC per distinct value, not per row. A categorical ``values``
        is factorized on its codes; with ``every_category`` (a categorical
        field, whose categories are its declared domain) its categories keep
        their declared order, each hashed. Nulls stay null.
        """
        with read(self._state.engine) as conn:
            keys = self._keyring.active(conn, dataset=dataset)
        key = self._keyring.get(keys[(None, "pseudonym")])
        if every_category and isinstance(values.dtype, pd.CategoricalDtype):
            codes, uniques = values.cat.codes.to_numpy(), list(values.cat.categories)
        else:
            codes, found = pd.factorize(values, use_na_sentinel=True)
            uniques = list(found)
        prefix = f"{column}\x00"
        hashed = pseudonymize([prefix + _canonical_str(v) for v in uniques], key)
        tokens = pd.Categorical.from_codes(codes, categories=pd.Index(hashed, dtype="str"))
        return pd.Series(tokens, index=values.index)


def _dataset_row(conn: sa.Connection, dataset: str) -> Any:
    """One dataset's row, checked against its MAC (None if there is none)."""
    found = sealed.check_rows(conn, datasets, datasets.c.name == dataset)
    return found[0] if found else None


def _versions(conn: sa.Connection, dataset: str) -> list[Any]:
    """Every version of ``dataset``, oldest first, checked whole (none if unknown)."""
    return sorted(sealed.scope_rows(conn, versions, dataset), key=lambda v: int(v.version))


def _latest(conn: sa.Connection, dataset: str) -> int:
    found = _versions(conn, dataset)
    if not found:
        raise NotFoundError(f"no dataset {dataset!r}; see vault.datasets()")
    return int(found[-1].version)


def _canonical_str(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
