"""Write a vault's report: check the request, collect, audit the read, then write the file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError
from ._collect import collect
from ._report import DpoReport

if TYPE_CHECKING:
    from ..vault import Vault

__all__ = ["write_report"]

#: ``record(action, details=...)`` appends the report's own audit entry.
Record = Callable[..., None]


def _moment(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(
                f"{name}= is not an ISO 8601 time; pass e.g. {name}='2026-01-31T09:00'"
            ) from None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{name}= must be a datetime or an ISO 8601 string")
    # a naive time is the local time, as the audit log's own ``since=`` reads it
    return (value if value.tzinfo else value.astimezone()).astimezone(UTC)


def _target(path: object) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ConfigurationError("path must be a file path, e.g. 'report.html'")
    target = Path(path)
    if target.is_dir():
        raise ConfigurationError(f"{str(target)!r} is a folder; name the HTML file to write")
    if not target.parent.is_dir():
        raise ConfigurationError(
            f"the folder {str(target.parent)!r} does not exist; create it or choose another path"
        )
    return target


def write_report(
    vault: Vault,
    path: str | os.PathLike[str],
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    record: Record,
) -> DpoReport:
    """Collect ``vault``'s report, audit the read (figures only), write it to ``path``.

    Bad arguments are refused before anything is read. The file is written whole or
    not at all (a temporary file renamed over ``path``), readable by its owner only.
    """
    target = _target(path)
    start, end = _moment(since, "since"), _moment(until, "until")
    if start is not None and end is not None and end < start:
        raise ConfigurationError("until= is before since=; the period would be empty")
    report = collect(vault, since=start, until=end)
    details: dict[str, Any] = report.figures()
    record("vault.report", details=details)
    _write_file(target, report.html())
    return report


def _write_file(target: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
