"""Data entering the vault: read from a DataFrame, CSV or Parquet file, then validated.

Both steps refuse before anything is stored: a file that cannot be read is named
with the kind of problem (never the library's message, which can quote the
file), and data that breaks its schema is rejected with an audit entry that
records the columns, kinds and counts of the violations, never the values.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd
import pyarrow as pa

from ..audit import ADMIN_PURPOSE
from ..exceptions import ConfigurationError, NotFoundError, SchemaError
from ..storage.engine import transaction

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..schema import Schema
    from ._state import VaultState

__all__ = ["load_frame", "reject", "validate"]


def load_frame(data: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """Accept a DataFrame, or read a UTF-8 CSV or a Parquet file into one.

    A file that cannot be read raises :class:`~privml.ConfigurationError` naming
    the file and the kind of problem, never the library's message (which can
    quote the file's contents).
    """
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.exists():
            raise NotFoundError(f"data file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise ConfigurationError(
                f"cannot read {suffix!r} files; give a DataFrame, .csv or .parquet"
            )
        if not path.is_file():
            raise ConfigurationError(f"data file {str(path)!r} is not a regular file")
        return _read_file(path, csv=suffix == ".csv")
    raise ConfigurationError(f"data must be a DataFrame or a file path, got {type(data).__name__}")


def _read_file(path: Path, *, csv: bool) -> pd.DataFrame:
    kind = "CSV" if csv else "Parquet"
    try:
        if csv:
            with warnings.catch_warnings():
                # pandas only warns when it drops the fields of a row longer than the header.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, encoding="utf-8", index_col=False, on_bad_lines="error")
        return pd.read_parquet(path)
    except UnicodeDecodeError:
        problem = "it is not valid UTF-8 text; save it as UTF-8"
    except pd.errors.EmptyDataError:
        problem = "it holds no header and no rows"
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        problem = "it is malformed (unbalanced quotes, or rows with more fields than the header)"
    except (pa.ArrowException, ValueError):
        problem = f"it is not a readable {kind} file (corrupt, truncated or encrypted)"
    except OSError as err:
        problem = f"it could not be read ({type(err).__name__})"
    raise ConfigurationError(f"cannot read data file {str(path)!r} as {kind}: {problem}")


def validate(
    audit: AuditLog,
    state: VaultState,
    name: str,
    version: int | None,
    frame: pd.DataFrame,
    schema: Schema,
    on_violation: Literal["reject", "clip"],
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The frame validated against ``schema``; a rejection is audited (columns, kinds, counts)."""
    try:
        return schema.validate(frame, on_violation=on_violation)
    except SchemaError as err:
        reject(audit, state, name, version, err)
        raise


def reject(
    audit: AuditLog, state: VaultState, name: str, version: int | None, err: SchemaError
) -> None:
    """Audit a rejection of data for ``name``: columns, kinds and counts, never values."""
    summary = [{"column": v.column, "kind": v.kind, "rows": v.count} for v in err.violations]
    with transaction(state.engine) as tx:
        audit.append(
            tx,
            principal=state.actor,
            purpose=ADMIN_PURPOSE,
            action="dataset.add" if version is None else "dataset.add_version",
            outcome="rejected",
            dataset=name,
            details={"name": name, "violations": summary},
        )
