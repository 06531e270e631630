"""The error for a ``where=`` condition its column's values could not be compared with.

Values are checked against their column's kind before any read or charge
(:meth:`privml.policy.Predicate.check`); this covers what is left, a comparison
that still fails while filtering. The error names the column, the operator and
the expected kind, never the value itself (it may be personal data).
"""

from __future__ import annotations

from ..exceptions import ConfigurationError
from ._model import Predicate

__all__ = ["compare_error"]

_EXPECTED = {
    "numeric": "a number",
    "integer": "a number",
    "datetime": "a date or time (datetime, pandas.Timestamp or an ISO 8601 string)",
}
_SCALAR = "a string, number or boolean"


def compare_error(predicate: Predicate, kind: str) -> ConfigurationError:
    """The error for a condition its column's values could not be compared with."""
    return ConfigurationError(
        f"row condition on column {predicate.column!r} ({predicate.op!r}) cannot be "
        f"compared with the column's values ({kind}); pass {_EXPECTED.get(kind, _SCALAR)}"
    )
